"""``main`` and the parser: one module a command, registered by name in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import _args
from .errors import EXIT_INPUT, EXIT_OK, fail, run_guarded

#: command name -> module (``simans_fast.cli.<module>``) with NAME, HELP, add_arguments(p,
#: common), run(args, callback) and optionally validate(args) (checks before any file is read)
COMMANDS = {
    "mine": "mine",
    "sample": "sample",
    "inspect": "inspect",
    "hn-mine": "hn_mine",
    "demo": "demo",
    "warmup": "warmup",
}


def command_module(name: str):
    return importlib.import_module(f"{__package__}.{COMMANDS[name]}")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), like every other error of the tool."""

    def error(self, message):
        msg = " ".join(str(message).split())
        self.exit(EXIT_INPUT, f"simans-fast: error: {msg} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``simans-fast``."""
    from .. import __version__

    parser = _Parser(
        prog="simans-fast",
        description="Fast, exact, reproducible SimANS negative mining. Without a sub-command: "
                    "run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"simans-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name in COMMANDS:
        mod = command_module(name)
        p = sub.add_parser(name, help=mod.HELP)
        mod.add_arguments(p, _args)
        p.set_defaults(command=name)
    return parser


def main(argv=None, *, callback=None) -> int:
    """Entry point of ``simans-fast``; returns the exit status.

    ``callback(point, info)`` is passed to the mining job (see
    :data:`simans_fast.pipeline.CALLBACK_POINTS`; ``mine`` adds ``"encoded"`` and
    ``"negatives_written"``): for tools that report progress and for the resume tests, which
    kill the process at a named point.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo"] + argv
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_INPUT)
    threads = getattr(args, "threads", None)
    if threads is not None and not 1 <= threads <= _args.MAX_THREADS:
        return fail(f"--threads {threads}: must be between 1 and {_args.MAX_THREADS}")
    from .._config import thread_env

    thread_env(threads)  # before NumPy, Numba, BLAS, faiss or torch start their pools
    mod = command_module(args.command)
    table = getattr(mod, "FLAG_TABLE", None)

    def go():
        from .._config import thread_limits

        validate = getattr(mod, "validate", None)
        if validate is not None:
            validate(args)
        with thread_limits(threads):  # Numba, BLAS, and faiss/torch when loaded
            return mod.run(args, callback)

    return run_guarded(go, table=table)
