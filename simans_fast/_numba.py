"""Numba configuration shared by every kernel module.

* ``FASTMATH``: an explicit subset of LLVM fast-math flags. ``nnan`` and ``ninf`` are left out on
  purpose: they let LLVM fold away ``isnan``/``isfinite`` tests and break the ``-inf`` sentinels
  that mark invalid candidates.
* ``jit`` / ``pjit``: ``numba.njit`` with on-disk caching when it is safe. Caching is on by
  default and is switched off (silently, results are unchanged; only the first call is slower)
  when no writable cache location exists, e.g. a read-only install with a read-only home. Set
  ``SIMANS_FAST_NUMBA_CACHE=0`` to disable it. Numba writes cache files through a temporary file
  and an atomic rename, so several processes starting at once do not corrupt it.
"""

from __future__ import annotations

import os
import tempfile

import numba

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}  # numba wants a set (not frozenset)


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".simans_probe")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def _cache_possible() -> bool:
    env = os.environ.get("SIMANS_FAST_NUMBA_CACHE", "1").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR set by the user
        return _writable_dir(numba.config.CACHE_DIR)
    here = os.path.dirname(os.path.abspath(__file__))
    for sub in ("", "kernels"):
        d = os.path.join(here, sub, "__pycache__")
        if not _writable_dir(d):
            break
    else:
        return True
    # numba falls back to a user-wide cache directory when the source tree is read-only
    try:
        from numba.misc.appdirs import AppDirs

        user_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir
    except Exception:  # pragma: no cover - numba internals moved
        return False
    return _writable_dir(user_dir)


CACHE = _cache_possible()


def jit(*args, **kwargs):
    """``numba.njit`` with this package's defaults (cache when safe, no blanket fastmath)."""
    kwargs.setdefault("cache", CACHE)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)


def pjit(*args, **kwargs):
    """Parallel variant of :func:`jit` (``parallel=True``)."""
    kwargs.setdefault("parallel", True)
    return jit(*args, **kwargs)


def configure_threads(n: int | None = None) -> int:
    """Set the number of Numba threads (``None``: all cores). Returns the number in force.

    Numba, BLAS, faiss and torch each start their own thread pools; on a small machine give each
    stage the cores it needs instead of letting all of them use every core at once.
    """
    if n is None:
        n = numba.config.NUMBA_NUM_THREADS
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n
