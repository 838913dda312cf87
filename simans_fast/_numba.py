"""Numba configuration shared by every kernel module.

* ``FASTMATH``: an explicit subset of LLVM fast-math flags. ``nnan`` and ``ninf`` are left out on
  purpose: they let LLVM fold away ``isnan``/``isfinite`` tests and break the ``-inf`` sentinels
  that mark invalid candidates.
* ``jit`` / ``pjit``: ``numba.njit`` with this package's on-disk cache (:class:`PackageCache`).
  Caching is on by default; ``SIMANS_FAST_NUMBA_CACHE=0`` switches it off (results are unchanged,
  only the first call in a process is slower). ``python -m simans_fast.warmup`` compiles every
  kernel into the cache ahead of time (:mod:`simans_fast._warmup`).

Where the cache lives, per kernel (first match): ``NUMBA_CACHE_DIR`` when writable; the same
directory read-only when it exists but cannot be written (a cache prepared at install time and
shared read-only); the package's ``__pycache__`` when writable; the package's ``__pycache__``
read-only when it already holds this module's cache index; numba's user-wide cache directory.
No usable location: the kernel compiles in memory (no error).

Safety of the cache, beyond numba's own checks (an entry is used only for the same source file
contents (sha256), numba version, Python version, CPU and signature):

* read-only: entries are loaded, and a kernel missing from a read-only cache is compiled in
  memory and not saved (never an error);
* shared by processes starting together: a save takes an exclusive lock (``fcntl.flock``) on a
  lock file in the cache directory, writes the compiled code to a data file name that is not in
  use, and only then points the index at it (each write through a temporary file and an atomic
  rename). A process reading the cache meanwhile sees either the old index or the new one, whose
  data file is complete; a stale data file is never reused under a new index entry.
* stale: a changed source file changes its sha256, which invalidates its index (numba).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numba
from numba.core import caching as _caching
from numba.core import config as _nb_config

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}  # numba wants a set (not frozenset)

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_LOCK_NAME = ".simans_fast_cache.lock"


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".simans_probe")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def _holds_index(path: str) -> bool:
    """``path`` (or a directory below it, one level) holds numba cache index files."""
    try:
        for entry in os.scandir(path):
            if entry.name.endswith(".nbi"):
                return True
            if entry.is_dir() and any(n.endswith(".nbi") for n in os.listdir(entry.path)):
                return True
    except OSError:
        pass
    return False


def _cache_possible() -> bool:
    """Caching is on unless ``SIMANS_FAST_NUMBA_CACHE=0`` or no location can be written or read
    (then every kernel compiles in memory, as numba without ``cache=True``)."""
    env = os.environ.get("SIMANS_FAST_NUMBA_CACHE", "1").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if _nb_config.CACHE_DIR:  # NUMBA_CACHE_DIR set by the user: writable, or read-only and filled
        return _writable_dir(_nb_config.CACHE_DIR) or _holds_index(_nb_config.CACHE_DIR)
    trees = [os.path.join(_PKG_DIR, sub, "__pycache__") for sub in ("", "kernels")]
    if all(_writable_dir(d) for d in trees) or _holds_index(trees[1]):
        return True
    try:  # numba falls back to a user-wide cache directory when the source tree is read-only
        from numba.misc.appdirs import AppDirs

        user_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir
    except Exception:  # pragma: no cover - numba internals moved
        return False
    return _writable_dir(user_dir)


CACHE = _cache_possible()


def _ours(py_file) -> bool:
    try:
        return os.path.commonpath([_PKG_DIR, os.path.abspath(py_file)]) == _PKG_DIR
    except ValueError:
        return False


class _ReadOnlyMixin:
    """A cache location that is used for loading only: saving raises ``OSError`` (caught by
    :meth:`PackageCache.save_overload`)."""

    read_only = True

    def ensure_cache_path(self):
        raise OSError(f"read-only cache directory {self.get_cache_path()}")


class _ReadOnlyUserProvided(_ReadOnlyMixin, _caching.UserProvidedCacheLocator):
    @classmethod
    def from_function(cls, py_func, py_file):
        if not _nb_config.CACHE_DIR or not os.path.exists(py_file) or not _ours(py_file):
            return None
        self = cls(py_func, py_file)
        return self if os.path.isdir(self.get_cache_path()) else None


class _ReadOnlyInTree(_ReadOnlyMixin, _caching.InTreeCacheLocator):
    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.exists(py_file) or not _ours(py_file):
            return None
        self = cls(py_func, py_file)
        prefix = os.path.splitext(os.path.basename(py_file))[0] + "."
        try:
            names = os.listdir(self.get_cache_path())
        except OSError:
            return None
        return self if any(n.startswith(prefix) and n.endswith(".nbi") for n in names) else None


class _Impl(_caching.CompileResultCacheImpl):
    _locator_classes = [
        _caching.UserProvidedCacheLocator,
        _ReadOnlyUserProvided,
        _caching.InTreeCacheLocator,
        _ReadOnlyInTree,
        _caching.UserWideCacheLocator,
    ]


class _IndexDataFile(_caching.IndexDataCacheFile):
    """Numba's index + data files, saved under a lock, data first, never reusing a data file
    name that exists on disk (see the module docstring)."""

    def save(self, key, data):
        with _locked(self._cache_path):
            overloads = self._load_index()
            existing = set(overloads.values())
            i = 1
            while True:
                name = self._data_name(i)
                if name not in existing and not os.path.exists(self._data_path(name)):
                    break
                i += 1
            self._save_data(name, data)
            old = overloads.get(key)
            overloads[key] = name
            self._save_index(overloads)
            if old is not None and old != name:
                with contextlib.suppress(OSError):
                    os.unlink(self._data_path(old))


@contextlib.contextmanager
def _locked(directory):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: numba's own atomic renames only
        yield
        return
    fd = os.open(os.path.join(directory, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class PackageCache(_caching.FunctionCache):
    """Numba's per-function cache with this package's locations and safe saving."""

    _impl_class = _Impl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file.__class__ = _IndexDataFile

    @property
    def read_only(self) -> bool:
        return getattr(self._impl.locator, "read_only", False)

    def save_overload(self, sig, data):
        if self.read_only:
            return
        try:
            super().save_overload(sig, data)
        except OSError:  # cache directory became unwritable (or full): keep the compiled code
            pass


def _with_cache(disp):
    if CACHE:
        try:
            disp._cache = PackageCache(disp.py_func)
        except RuntimeError:  # no cache location at all: compile in memory
            pass
    return disp


def jit(*args, **kwargs):
    """``numba.njit`` with this package's defaults (:class:`PackageCache`, ``nogil``, no
    blanket fastmath). Used as ``@jit``, ``@jit(...)`` or ``@jit("signature", ...)``."""
    kwargs.pop("cache", None)
    kwargs.setdefault("nogil", True)
    if len(args) == 1 and callable(args[0]):
        return _with_cache(numba.njit(**kwargs)(args[0]))
    sigs = args[0] if args else None
    sigs = [sigs] if isinstance(sigs, str) else sigs

    def deco(f):
        disp = _with_cache(numba.njit(**kwargs)(f))
        for sig in sigs or ():  # eager signatures compile after the cache is in place
            disp.compile(sig)
        if sigs:
            disp.disable_compile()
        return disp

    return deco


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
