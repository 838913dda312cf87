"""``python -m simans_fast.warmup``: the same as ``simans-fast warmup`` (see
:mod:`simans_fast.cli.warmup` and :mod:`simans_fast._warmup`)."""

import sys

from ._warmup import warmup  # noqa: F401  (the library call)


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(["warmup", *(sys.argv[1:] if argv is None else list(argv))])


if __name__ == "__main__":
    sys.exit(main())
