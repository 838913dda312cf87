"""The sampling and strategy flags: parameter sets, their checks (the library's rules, said
with the flags) and the effective-candidates report."""

from __future__ import annotations

import sys

from .. import _validate
from . import flags as _flags
from ._common import say
from .errors import CLIError

SAMPLING_KEYS = ("n", "a", "b", "kernel", "seed", "positive_choice", "fallback")
STRATEGY_KEYS = ("strategy", "skip", "window", "max_score", "margin", "perc")


def sampling_params(args) -> dict:
    """The parameter set of the sampling flags (what mine records in the header):
    :func:`simans_fast.pipeline.parameter_set` of the flags' values."""
    from ..pipeline import parameter_set

    return parameter_set(n=args.n, a=args.a, b=args.b, kernel=args.kernel, seed=args.seed,
                         positive_choice=args.positive_choice, fallback=args.fallback,
                         **{key: getattr(args, key, None)
                            for key in ("score_scale",) + STRATEGY_KEYS})


def _rules():
    """parameter -> check (the library's rules: _validate's table and check functions)."""
    from ..diagnostics import parse_window

    v = _validate
    return {
        "n": lambda x: v.validate("n", x),
        "a": lambda x: v.validate("a", x),
        "b": lambda x: v.validate("b", x),
        "seed": lambda x: v.validate("seed", x),
        "kernel": lambda x: v.validate("kernel", x),
        "positive_choice": lambda x: v.validate("positive_choice", x),
        "fallback": lambda x: v.validate("fallback", x),
        "strategy": lambda x: None if x is None else v.validate("strategy", x),
        "skip": lambda x: None if x is None else v.check_int(x, "skip", min=0),
        "window": lambda x: parse_window(x),
        "max_score": lambda x: v.check_real(x, "max_score", allow_none=True),
        "margin": lambda x: v.check_real(x, "margin", allow_none=True),
        "perc": lambda x: v.check_real(x, "perc", min=0.0, max=1.0, allow_none=True),
        "score_scale": lambda x: v.check_real(x, "score_scale", min=0.0, min_exclusive=True,
                                              allow_none=True),
    }


def check_sampling_values(params: dict, label=None) -> None:
    """Every sampling and strategy value passes the library's rule; a failure names where the
    value came from (``label(key)``, default its flag) and the value."""
    label = label or _flags.flag
    for key, rule in _rules().items():
        if key not in params:
            continue
        try:
            rule(params[key])
        except _validate.ParameterError as e:
            where = label(key)
            if not str(e).startswith(repr(params[key])):  # the message says the value itself
                where = f"{where} {params[key]!r}"
            raise CLIError(_flags.render(e, where)) from None


def check_feasible(params: dict, k: int, label=None, k_label: str = "--k") -> None:
    """Refuse rank limits that leave fewer than n candidates for every query (the library's
    :func:`simans_fast.diagnostics.rank_room`)."""
    from ..diagnostics import rank_room

    label = label or _flags.flag
    n = params["n"]
    avail = rank_room(params, k)
    if n > avail:
        limits = [f"{k_label} {k}"]
        if params.get("skip"):
            limits.append(f"{label('skip')} {params['skip']}")
        if params.get("window") is not None:
            limits.append(f"{label('window')} {params['window']}")
        raise CLIError(f"{label('n')} {n}: more negatives than the {avail} candidate rank(s) "
                       f"left per query by {', '.join(limits)}; lower {label('n')} or widen the "
                       "ranks")


def report_effective(cf, params, indent: str = "  ") -> None:
    """Print the effective candidates per query; warn (stderr) when the weights are nearly flat."""
    import warnings

    from ..diagnostics import (FlatWeightsWarning, candidates_effective, score_scale_of,
                               summarize_effective, warn_if_flat)
    from .errors import one_line

    strategy = params.get("strategy") or "simans"
    if strategy != "simans":
        say(f"{indent}effective candidates: not applicable (--strategy {strategy} does not "
            "weight by score)")
        return
    eff = candidates_effective(cf, params)
    n = int(params["n"])
    s = summarize_effective(eff, n)
    c = score_scale_of(params)
    if s["rows"] == 0:
        say(f"{indent}SimANS effective candidates per query: no query has both a known "
            "positive score and a candidate")
        return
    say(f"{indent}SimANS effective candidates per query (exp entropy of the weights, "
        f"{params['kernel']} a={params['a']:g} b={params['b']:g} on {c:g} x score): mean "
        f"{s['mean_effective']:.1f}, median {s['median_effective']:.1f} of "
        f"{s['mean_valid']:.1f} valid; {s['flat_rows']} of {s['rows_compared']} queries with "
        f"more than n={n} candidates are nearly flat (> 90 % of uniform)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlatWeightsWarning)
        warn_if_flat(eff, n, hint=f" Raise --score-scale (now {c:g}) or --a (now "
                                  f"{params['a']:g}); see docs/cli.md.")
    for w in caught:
        if issubclass(w.category, FlatWeightsWarning):
            print(f"simans-fast: warning: {one_line(w.message)}", file=sys.stderr, flush=True)
