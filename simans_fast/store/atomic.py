"""Floor 2: the package's one atomic writer.

Every file and directory simans_fast writes goes through here: the bytes go to a temporary
name in the destination's directory (same filesystem), the file is fsynced, renamed over the
destination with :func:`os.replace`, and the directory is fsynced so the rename survives a power
loss. One exception policy: if anything fails (an exception, KeyboardInterrupt included) before
the rename, the temporary is removed and the exception propagates unchanged; the destination
is untouched. A killed process can leave ``.<name>.<8 characters>.tmp`` beside the destination;
:func:`remove_stale_temp_files` removes those.

Imports only the standard library and NumPy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile

__all__ = [
    "AtomicFile",
    "atomic_dir",
    "commit_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save_npy",
    "write_synced",
    "fsync_file",
    "fsync_dir",
    "tmp_path",
    "tmp_dir",
    "commit_dir",
    "remove_stale_temp_files",
    "json_dumps",
    "file_sha256",
]


def same_file(a, b) -> bool:
    """Both paths exist and are the same file (or directory)."""
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def inside(path, directory) -> bool:
    """``path`` is ``directory`` or lies below it (symbolic links resolved)."""
    p = os.path.realpath(path)
    d = os.path.realpath(directory)
    return p == d or p.startswith(d.rstrip(os.sep) + os.sep)


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _prefix(path: str) -> str:
    return "." + os.path.basename(os.path.abspath(path)) + "."


def tmp_path(path: str) -> str:
    """A new empty temp file beside ``path`` (same filesystem, so os.replace is atomic).

    ``mkstemp`` creates files readable by the owner only; they get the mode an ordinary
    ``open`` would give (0o666 minus the umask) so the renamed output is not private.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        pass
    os.close(fd)
    return tmp


def tmp_dir(path: str) -> str:
    """A new empty temp directory beside ``path`` (``.<name>.<8 characters>.tmp``)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    t = tempfile.mkdtemp(dir=d, prefix=_prefix(path), suffix=".tmp")
    os.chmod(t, _DIR_MODE)  # mkdtemp makes it private; use the usual mode
    return t


def _commit(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def commit_file(tmp, path) -> None:
    """Finish a file written in place at ``tmp`` (e.g. a memory map filled chunk by chunk):
    fsync it, rename it onto ``path`` and fsync the directory."""
    _commit(os.fspath(tmp), os.fspath(path))


def _discard(p: str) -> None:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.unlink(p)
    except OSError:
        pass


class AtomicFile:
    """Context manager: yields a file object on a temp file, renamed to ``path`` on success.

    ``mode`` and ``kwargs`` go to :func:`open` (``"w"`` text or ``"wb"`` binary). On an
    exception inside the block the temp file is removed and ``path`` is left as it was.
    """

    def __init__(self, path, mode: str = "w", **kwargs):
        if "r" in mode or "a" in mode or "+" in mode:
            raise ValueError(f"mode must be a write mode ('w' or 'wb'), got {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        self.kwargs = kwargs

    def __enter__(self):
        self.tmp = tmp_path(self.path)
        try:
            self.f = open(self.tmp, self.mode, **self.kwargs)
        except BaseException:
            _discard(self.tmp)
            raise
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            self.f.close()
            if exc_type is None:
                _commit(self.tmp, self.path)
                return False
        except BaseException:
            _discard(self.tmp)
            raise
        _discard(self.tmp)
        return False


def fsync_file(f) -> None:
    """Flush and fsync an open file object (for files inside a directory built by
    :func:`atomic_dir`)."""
    f.flush()
    os.fsync(f.fileno())


def write_synced(path, data) -> None:
    """Write ``data`` (bytes or str, UTF-8 with ``\\n`` line ends) to ``path`` and fsync it.

    Not atomic by itself: for files inside a directory built by :func:`atomic_dir`.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
        fsync_file(f)


def commit_dir(tmp: str, path: str, *, replace: bool = False) -> None:
    """Rename the finished directory ``tmp`` onto ``path`` (fsyncing ``tmp`` and the parent).

    ``path`` must not exist or be an empty directory, unless ``replace=True``: then an existing
    ``path`` is first renamed aside and removed after the new one is in place.
    """
    fsync_dir(tmp)
    parent = os.path.dirname(os.path.abspath(path))
    if replace and os.path.lexists(path):
        old = tmp_dir(path)
        os.rmdir(old)
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)  # put the old one back
            raise
        fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, path)
    fsync_dir(parent)


@contextlib.contextmanager
def atomic_dir(path, *, replace: bool = False):
    """Context manager yielding a temp directory beside ``path``; the block fills it (use
    :func:`write_synced` or :class:`AtomicFile`-free ``open`` + fsync), and on success it is
    renamed onto ``path`` (see :func:`commit_dir`). On an exception it is removed."""
    path = os.fspath(path)
    tmp = tmp_dir(path)
    try:
        yield tmp
        commit_dir(tmp, path, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp_files(path: str) -> list:
    """Remove the temporary files (or directories) that interrupted atomic writes of ``path`` left.

    They are named ``.<name>.<8 random characters>.tmp`` beside ``path``; nothing else is touched.
    Returns the names removed.
    """
    d = os.path.dirname(os.path.abspath(path))
    pat = re.compile(r"\." + re.escape(os.path.basename(os.path.abspath(path)))
                     + r"\.[a-z0-9_]{8}\.tmp\Z")
    removed = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return removed
    for name in names:
        if not pat.match(name):
            continue
        p = os.path.join(d, name)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
            removed.append(name)
        except OSError:
            pass
    return removed


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename)."""
    with AtomicFile(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``\\n`` line ends on every platform)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path, arr) -> None:
    """``np.save`` to ``path`` atomically (never pickles: object arrays are refused)."""
    import numpy as np

    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise ValueError(f"refusing to save an object array to {path}")
    with AtomicFile(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def json_dumps(obj) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, NaN refused, final newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
