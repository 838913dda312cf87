"""``simans-fast sample``: the negatives of another epoch from saved candidates."""

from __future__ import annotations

import os
import time

from .. import _validate
from . import _lib, _negatives, _sampling
from . import flags as _flags
from ._common import (check_out_file, fmt_time, inside, note_compiling, resolve_candidates,
                      same_file, say, want_progress)
from .errors import CLIError, reading

NAME = "sample"
HELP = "negatives of another epoch from saved candidates"


def add_arguments(p, common) -> None:
    p.description = ("Re-draw negatives for an epoch from a candidates directory. Sampling "
                     "parameters default to those saved by 'mine'.")
    p.add_argument("--candidates", required=True, metavar="DIR",
                   help="candidates directory (OUT/candidates of 'mine', or OUT itself)")
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--format", choices=_flags.negatives_formats(), default=None,
                   help="default: from the file name (.jsonl tevatron, .parquet "
                        "sentence-transformers, .trec/.run trec, .tsv simxns)")
    common.add_sampling(p, defaults=False)
    common.add_texts(p)
    common.add_common(p)


def run(args, callback=None) -> int:
    t0 = time.perf_counter()
    progress = want_progress(args)
    cand = resolve_candidates(args.candidates)
    fmt = _negatives.resolve_format(args.format, args.out)
    implied = _lib.format_from_extension(args.out)
    if implied is not None and implied != fmt and not (
            args.out.lower().endswith(".jsonl") and fmt in _lib.TEXT_FORMATS):
        raise CLIError(f"--out {args.out}: the file name says {implied} but --format {fmt} "
                       f"was given; name the file *{_negatives.EXT[fmt]} or drop --format")
    # ---- arguments and output location first, then the files
    try:
        _validate.check_epoch(args.epoch)
    except _validate.ParameterError as e:
        raise CLIError(_flags.render(e, f"--epoch {args.epoch}")) from None
    _negatives.check_text_args(args)
    _negatives.check_format_options(args, fmt)
    check_out_file(args.out)
    if fmt == "sentence-transformers":
        _negatives.check_parquet(args.out, "--out")
    outs = [args.out]
    if fmt == "tevatron" and not args.ids_only:
        corpus_out = _lib.tevatron_corpus_path(args.out)
        check_out_file(corpus_out, "--out (its Tevatron corpus file)")
        outs.append(corpus_out)
    if os.path.isdir(cand):
        for o in outs:
            if inside(o, cand):
                raise CLIError(f"--out {args.out}: lies inside the candidates directory "
                               f"{cand}; write it elsewhere")
    for flag, path in (("--query-texts", args.query_texts), ("--doc-texts", args.doc_texts),
                       ("--texts", None if args.texts is None else
                        os.path.join(args.texts, "queries.jsonl")),
                       ("--texts", None if args.texts is None else
                        os.path.join(args.texts, "corpus.jsonl"))):
        if path is not None and any(same_file(path, o) for o in outs):
            raise CLIError(f"--out {args.out}: would replace the input {flag} {path}; choose "
                           "another --out")
    with reading("--candidates"):
        header = _lib.read_header(cand)
    hp = os.path.join(cand, "header.json")
    params = dict(header.get("parameters", {}))
    given = set()
    for key in _sampling.SAMPLING_KEYS + _sampling.STRATEGY_KEYS + ("score_scale",):
        v = getattr(args, key, None)
        if v is not None:
            params[key] = v
            given.add(key)
    missing = [k for k in _sampling.SAMPLING_KEYS if k not in params]
    if missing:
        raise CLIError(f"--candidates {hp}: parameters lack {', '.join(missing)}; pass "
                       + " ".join(_flags.flag(m) for m in missing))

    def label(key):
        return _flags.flag(key) if key in given else f"--candidates {hp}: parameters.{key}"

    _sampling.check_sampling_values(params, label)
    _sampling.check_feasible(params, header["k"], label, k_label=f"k of --candidates {cand} =")
    with reading("--candidates"):
        cf = _lib.load_candidates(cand, verify=True)
    from ..pipeline import epoch_negatives

    note_compiling()
    t1 = time.perf_counter()
    neg = epoch_negatives(cf, args.epoch, params)
    t_draw = time.perf_counter() - t1
    _negatives.load_texts(args, neg)
    t1 = time.perf_counter()
    _negatives.write_epoch(args.out, neg, fmt, args, progress)
    t_write = time.perf_counter() - t1
    say(f"epoch {args.epoch}: {neg.n} negatives for {len(cf.query_ids)} queries drawn in "
        f"{fmt_time(t_draw)}, written in {fmt_time(t_write)} -> {args.out} ({fmt}); "
        f"total {fmt_time(time.perf_counter() - t0)}")
    return 0
