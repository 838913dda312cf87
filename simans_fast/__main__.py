"""``python -m simans_fast``: the ``simans-fast`` command line tool (see :mod:`simans_fast.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
