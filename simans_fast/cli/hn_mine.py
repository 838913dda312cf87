"""``simans-fast hn-mine``: :func:`simans_fast.hn_mine.hn_mine` with FlagEmbedding's
``hn_mine.py`` flags (both ``--flag_name`` and ``--flag-name``)."""

from __future__ import annotations

import os
import sys
import time

from . import flags as _flags
from ._common import NoLoadBars, fmt_time, note_compiling, say, want_progress
from .errors import TRACEBACK_ENV, CLIError, one_line

NAME = "hn-mine"
HELP = "FlagEmbedding's hn_mine.py: JSONL in, the same JSONL with new 'neg' out"
#: hn-mine's errors name hn_mine's Python parameters; these are their flags
FLAG_TABLE = _flags.HN_MINE_FLAGS


def add_arguments(p, common) -> None:
    from ..hn_mine import add_hn_mine_arguments

    p.description = ("Mine hard negatives for a FlagEmbedding training file, with hn_mine.py's "
                     "flags (both --flag_name and --flag-name) and meaning (range_for_sampling "
                     "on raw retrieval ranks, candidate_pool), plus --strategy simans|top and a "
                     "seed.")
    add_hn_mine_arguments(p)
    common.add_common(p)


def _message(e) -> str:
    """hn_mine's errors name Python parameters; say the flag instead where it leads."""
    msg = one_line(str(e))
    param = getattr(e, "parameter", None)
    if param in FLAG_TABLE:
        return _flags.render(e, table=FLAG_TABLE)
    for param, flag in FLAG_TABLE.items():
        for sep in (" ", "="):
            if msg.startswith(param + sep) and not msg.startswith(flag):
                return flag + msg[len(param):]
    return _flags.to_flags(msg, FLAG_TABLE)


def run(args, callback=None) -> int:
    import warnings

    from ..diagnostics import FlatWeightsWarning
    from ..hn_mine import hn_mine, hn_mine_kwargs

    t0 = time.perf_counter()
    try:
        kwargs = hn_mine_kwargs(args)
    except ValueError as e:
        raise CLIError(_message(e)) from None
    kwargs["progress"] = want_progress(args)
    say(f"hn-mine: {kwargs['input_file']} -> {kwargs['output_file']} with "
        f"{kwargs['model']} (strategy {kwargs['strategy']}, range {kwargs['range_for_sampling']},"
        f" {kwargs['negative_number']} negatives); loading the model and encoding ...")
    note_compiling()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlatWeightsWarning)
        try:
            with NoLoadBars():
                res = hn_mine(**kwargs)
        except (ValueError, TypeError) as e:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise CLIError(_message(e)) from None
    for w in caught:
        if issubclass(w.category, FlatWeightsWarning):
            print(f"simans-fast: warning: {one_line(w.message)} (--score_scale, --a)",
                  file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    say(f"{res.n_records} records, {res.n_corpus} corpus texts searched, "
        f"{res.mean_window:.1f} candidates per record in the window on average")
    say(f"padded {res.padded_records} record(s) with {res.padded_negatives} random "
        f"negative(s); {res.short_records} record(s) have fewer than "
        f"{kwargs['negative_number']} negatives (corpus too small)")
    if res.effective:
        e = res.effective
        say(f"SimANS effective candidates per record (exp entropy): mean "
            f"{e['mean_effective']:.1f}, median {e['median_effective']:.1f} of "
            f"{e['mean_valid']:.1f} valid (score_scale {kwargs['score_scale']:g})")
    say(f"wrote {res.output_file} in {fmt_time(time.perf_counter() - t0)}")
    return 0
