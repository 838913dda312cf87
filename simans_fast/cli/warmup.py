"""``simans-fast warmup``: compile every Numba kernel into the on-disk cache ahead of time
(:mod:`simans_fast._warmup`), so that later processes load them instead of compiling."""

from __future__ import annotations

NAME = "warmup"
HELP = ("compile the Numba kernels into the cache once (after install or upgrade), so the "
        "first call of a later process is fast")


def add_arguments(p, common) -> None:
    from .._warmup import DTYPES, GROUPS

    p.add_argument("--group", action="append", choices=GROUPS, default=None,
                   help="kernel group to compile (repeatable; default: all)")
    p.add_argument("--dtype", action="append", choices=DTYPES, default=None,
                   help="score dtype to compile for (repeatable; default: all)")
    p.add_argument("--json", action="store_true",
                   help="print the full report (kernels, signatures, compile seconds) as JSON "
                        "on stdout")
    p.set_defaults(threads=None)


def run(args, callback=None) -> int:
    import json

    from .. import _warmup
    from ._common import note, say

    rep = _warmup.run_report(args.group, tuple(args.dtype or _warmup.DTYPES), note)
    if args.json:
        say(json.dumps(_warmup.json_report(rep), indent=1))
    return 0
