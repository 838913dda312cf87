"""Helpers every command uses: output lines, progress, paths and output locations."""

from __future__ import annotations

import os
import sys

from .._progress import fmt_time  # noqa: F401  (the commands' timings)
from ..store.atomic import inside, same_file  # noqa: F401  (the commands' output checks)
from .errors import CLIError, note  # noqa: F401  (note is re-exported for the commands)


def say(msg: str) -> None:
    print(msg, flush=True)


def want_progress(args) -> bool:
    if getattr(args, "progress", None) is None:
        return sys.stderr.isatty()
    return bool(args.progress)


def short(s, width=60):
    s = str(s).replace("\n", " ")
    return s if len(s) <= width else s[: width - 3] + "..."


# ------------------------------------------------------------------------ first-use compile
_COLD_NOTED = False


def numba_cache_is_cold() -> bool:
    """No compiled kernel of this package is cached on disk yet: a cheap look for Numba's
    ``*.nbi`` index files where Numba keeps them (``NUMBA_CACHE_DIR`` when set, else the
    kernels' ``__pycache__``)."""
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        dirs = [cache_dir]
    else:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        dirs = [os.path.join(here, "kernels", "__pycache__")]
    for d in dirs:
        for _root, _subdirs, files in os.walk(d):
            if any(f.endswith(".nbi") for f in files):
                return False
    return True


def note_compiling() -> None:
    """Before the first Numba call of a command: say that the kernels compile on first use
    (once per process, and only when the cache is cold)."""
    global _COLD_NOTED
    if _COLD_NOTED:
        return
    _COLD_NOTED = True
    if numba_cache_is_cold():
        note("compiling kernels on first use (cached afterwards)...")


# ------------------------------------------------------------------------ output locations
def _probe_writable(d: str, arg: str, path: str) -> None:
    """Create and remove a temporary file in ``d`` (a real test; root passes os.access)."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".simans-fast-probe-")
    except OSError as e:
        raise CLIError(f"{arg} {path}: cannot write in {d} ({e.strerror or e}); choose a "
                       "writable location") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:  # pragma: no cover
        pass


def _nearest_existing(p: str) -> str:
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_out_dir(path: str, arg: str = "--out") -> None:
    """``path`` is (or can be created as) a directory we can write in."""
    if path == "":
        raise CLIError(f"{arg}: empty path; name a directory")
    p = os.path.abspath(path)
    if os.path.lexists(p) and not os.path.isdir(p):
        raise CLIError(f"{arg} {path}: exists and is not a directory; choose a directory name")
    d = p if os.path.isdir(p) else _nearest_existing(os.path.dirname(p))
    if not os.path.isdir(d):
        raise CLIError(f"{arg} {path}: {d} is a file, not a directory; choose another {arg}")
    _probe_writable(d, arg, path)


def check_out_file(path: str, arg: str = "--out") -> None:
    """``path`` can be written (atomically) as a file: its directory exists and is writable."""
    if path == "":
        raise CLIError(f"{arg}: empty path; name a file")
    if os.path.isdir(path):
        raise CLIError(f"{arg} {path}: is a directory, expected a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise CLIError(f"{arg} {path}: exists and is not a regular file; choose another name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        anc = _nearest_existing(parent)
        if os.path.lexists(anc) and not os.path.isdir(anc):
            raise CLIError(f"{arg} {path}: {anc} is a file, not a directory; choose another "
                           f"{arg}")
        raise CLIError(f"{arg} {path}: directory {parent} does not exist; create it first")
    _probe_writable(parent, arg, path)


def resolve_candidates(path: str) -> str:
    """OUT of ``mine`` or OUT/candidates itself -> the candidates directory."""
    from ..pipeline import CANDIDATES_DIR

    if os.path.isfile(os.path.join(path, CANDIDATES_DIR, "header.json")) and not os.path.isfile(
            os.path.join(path, "header.json")):
        return os.path.join(path, CANDIDATES_DIR)
    return path


class NoLoadBars:
    """transformers' own "Loading weights" bars off while a model loads (stderr stays for
    errors and our notes); the previous setting is restored."""

    def __enter__(self):
        self._was = None
        try:
            from transformers.utils import logging as tlog
        except Exception:  # pragma: no cover - transformers comes with sentence-transformers
            return self
        self._tlog = tlog
        self._was = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        if self._was:
            self._tlog.enable_progress_bar()
        return False
