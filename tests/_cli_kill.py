"""Test-only driver: run ``simans-fast`` and SIGKILL this very process at a named point.

    python tests/_cli_kill.py [--kill-at POINT] [--sleep-after-chunk S] -- ARGS...

POINT is a callback point of the mining job (``simans_fast.pipeline.CALLBACK_POINTS``, plus
``encoded`` and ``negatives_written`` of ``mine``), optionally with a chunk number
(``chunk_written:2``), or ``commit:NAME``: the moment an atomically written file NAME is
complete in its temporary file, just before it is renamed into place (``os.replace`` onto NAME).
The package itself holds no kill hook; this driver passes ``main`` a callback.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    argv = sys.argv[1:]
    kill_at, sleep = None, 0.0
    while argv and argv[0] != "--":
        opt = argv.pop(0)
        if opt == "--kill-at":
            kill_at = argv.pop(0)
        elif opt == "--sleep-after-chunk":
            sleep = float(argv.pop(0))
        else:
            raise SystemExit(f"unknown option {opt}")
    argv = argv[1:]
    name, _, arg = (kill_at or "").partition(":")
    if name == "commit":
        real_replace = os.replace

        def replace(src, dst, *a, **kw):
            if os.path.basename(os.fspath(dst)) == arg:
                _die()
            return real_replace(src, dst, *a, **kw)

        os.replace = replace

    def callback(point, info):
        if point == name and (not arg or str(info.get("chunk")) == arg):
            _die()
        if sleep and point == "chunk_written":
            time.sleep(sleep)

    from simans_fast.cli import main as cli_main

    return cli_main(argv, callback=callback)


if __name__ == "__main__":
    sys.exit(main())
