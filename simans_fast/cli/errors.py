"""Exit statuses and the one-line error policy of ``simans-fast``.

Every error the user can cause (a bad file, flag or value, an output location that cannot be
written) prints one line ``simans-fast: error: <message>`` on stderr and exits with
:data:`EXIT_INPUT`; an unexpected failure prints one line too and exits with
:data:`EXIT_INTERNAL` (``SIMANS_FAST_TRACEBACK=1`` shows the traceback). No input makes the
tool print a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .._validate import ParameterError
from . import flags as _flags

#: success
EXIT_OK = 0
#: an unexpected failure (a bug): one line, ``SIMANS_FAST_TRACEBACK=1`` shows the traceback
EXIT_INTERNAL = 1
#: bad input: a file, a flag or a value (also argparse's usage errors)
EXIT_INPUT = 2
#: interrupted (Ctrl-C)
EXIT_INTERRUPTED = 130

TRACEBACK_ENV = "SIMANS_FAST_TRACEBACK"


class CLIError(Exception):
    """An error already worded in the command line's terms (flags); exit status 2."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        self.code = code
        super().__init__(message)


@contextlib.contextmanager
def reading(flag: str, table=None):
    """Library errors inside the block are shown as the flag's: ``--queries PATH: ...``.

    Use it around a library call given the value (a file, a directory) of ``flag``.
    """
    try:
        yield
    except CLIError:
        raise
    except _library_errors() as e:
        raise CLIError(_flags.render(e, flag, table)) from None


def _library_errors():
    from . import _lib

    return _lib.LIBRARY_ERRORS


def one_line(text) -> str:
    return " ".join(str(text).split()) or "(no message)"


def note(msg: str) -> None:
    """A note on stderr (not an error)."""
    print(f"simans-fast: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"simans-fast: warning: {one_line(msg)}", file=sys.stderr, flush=True)


def fail(msg: str, code: int = EXIT_INPUT) -> int:
    """Print the one error line; returns ``code``."""
    print(f"simans-fast: error: {one_line(msg)}", file=sys.stderr, flush=True)
    return code


def os_error_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    if getattr(e, "filename2", None):
        where = f"{where} -> {e.filename2}"
    what = e.strerror or str(e)
    return f"{where}: {what}" if where else what


def run_guarded(fn, *args, table=None) -> int:
    """Run ``fn(*args)``; every failure becomes one line on stderr and an exit status."""
    try:
        return int(fn(*args) or 0)
    except CLIError as e:
        return fail(str(e), e.code)
    except KeyboardInterrupt:
        print("simans-fast: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `simans-fast inspect ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except ParameterError as e:  # a library check: name its flag
        if os.environ.get(TRACEBACK_ENV):
            raise
        return fail(_flags.render(e, table=table))
    except (ValueError, TypeError) as e:  # a library check without a parameter
        if os.environ.get(TRACEBACK_ENV):
            raise
        return fail(_flags.to_flags(one_line(e), table))
    except OSError as e:  # disk full, permissions, ... (names the file)
        if os.environ.get(TRACEBACK_ENV):
            raise
        return fail(os_error_message(e))
    except MemoryError:
        return fail("not enough memory; lower --query-block or --k, or use a larger machine")
    except Exception as e:  # a bug: one line, not a traceback
        if os.environ.get(TRACEBACK_ENV):
            raise
        return fail(f"internal error ({type(e).__name__}: {e}); please report it "
                    f"({TRACEBACK_ENV}=1 shows the traceback)", EXIT_INTERNAL)
