"""Floor 2: one policy for a directory of ``.npy`` arrays described by a JSON header.

Both saved directories of simans_fast follow it: the candidates directory
(``header.json``, :mod:`simans_fast.store.candidates`) and the sampler directory
(``meta.json``, :meth:`simans_fast.SimANSSampler.save`). An :class:`ArrayDirFormat` names

* the format (``"format"`` in the header) and the version written (``"version"``),
* the versions this build reads (``readable``): an unknown or newer version is refused with a
  message that says which versions are readable (and, for a newer one, to upgrade),
* each array's entry ``{"dtype", "shape", "sha256"}`` (plus ``"file"`` where the format names
  files): :meth:`ArrayDirFormat.write_array` hashes the bytes while it writes them (one pass,
  fsynced); :meth:`ArrayDirFormat.verify` recomputes the digests on request;
  :meth:`ArrayDirFormat.load_array` loads without pickles and checks dtype, shape and order.

Every failure is one exception class per format (``error``, an
:class:`simans_fast._validate.InputError` subclass), with a one-line message naming the file.
The directory itself is written with :func:`simans_fast.store.atomic.atomic_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .._validate import InputError
from .atomic import file_sha256, fsync_file

__all__ = ["ArrayDirFormat", "HashingWriter", "write_npy", "load_npy"]


class HashingWriter:
    """File wrapper that hashes what is written (``np.save`` writes through ``.write``)."""

    def __init__(self, f):
        self._f = f
        self.h = hashlib.sha256()

    def write(self, data):
        self.h.update(data)
        return self._f.write(data)


def write_npy(fpath, arr) -> str:
    """Write ``arr`` as ``.npy`` (never pickled) to ``fpath``, fsynced; returns its sha256.

    The digest is computed from the bytes as they are written (no second read). Not atomic by
    itself: for files inside a directory built with :func:`simans_fast.store.atomic.atomic_dir`.
    """
    arr = np.asanyarray(arr)
    if arr.dtype.hasobject:
        raise ValueError(f"refusing to save an object array to {fpath}")
    with open(fpath, "wb") as f:
        w = HashingWriter(f)
        np.lib.format.write_array(w, arr, allow_pickle=False)
        fsync_file(f)
    return w.h.hexdigest()


def load_npy(fp, *, mmap: bool, fix: str = "", error=InputError, parameter: str = "path"):
    """``np.load`` without pickles; every failure is an ``error`` naming ``fp``.

    ``fix`` (what to do about it) ends each message after ``"; "``.
    """
    tail = f"; {fix}" if fix else ""
    try:
        arr = np.load(fp, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "object" in str(e):
            raise error(f"{fp}: holds Python objects (a pickle), not numbers; this tool never "
                        f"loads pickles{tail}", parameter=parameter, path=fp) from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{fp}: not a readable .npy array ({first}){tail}", parameter=parameter,
                    path=fp) from None
    except OSError as e:
        raise error(f"{fp}: not a readable .npy array (cannot be read: {e.strerror or e})"
                    f"{tail}", parameter=parameter, path=fp) from None
    except Exception as e:  # EOFError, SyntaxError from a damaged header, ...
        raise error(f"{fp}: not a readable .npy array ({type(e).__name__}){tail}",
                    parameter=parameter, path=fp) from None
    if not isinstance(arr, np.ndarray):  # np.load of an .npz returns an NpzFile
        try:
            arr.close()
        except Exception:  # pragma: no cover
            pass
        raise error(f"{fp}: not a .npy array (an .npz archive?){tail}", parameter=parameter,
                    path=fp)
    return arr


class ArrayDirFormat:
    """The header/version policy and array entries of one saved-directory format.

    Parameters
    ----------
    name : str
        The ``"format"`` value of the header.
    version : int
        The version this build writes.
    readable : tuple of int
        The versions this build reads.
    header_file : str
        Name of the JSON header inside the directory.
    error : type
        Exception class raised (an ``InputError`` subclass taking ``(message, *, parameter,
        path)``).
    fix : str
        What to do about a damaged directory (ends messages about damage).
    """

    def __init__(self, name: str, version: int, readable, header_file: str, *,
                 error=InputError, fix: str = ""):
        self.name = name
        self.version = int(version)
        self.readable = tuple(int(v) for v in readable)
        self.header_file = header_file
        self.error = error
        self.fix = fix

    def __repr__(self) -> str:
        return (f"ArrayDirFormat({self.name!r}, version={self.version}, "
                f"readable={self.readable}, header_file={self.header_file!r})")

    def _err(self, message, path, parameter="path"):
        return self.error(message, parameter=parameter, path=path)

    def _tail(self, extra=""):
        fix = self.fix if not extra else (extra + ("; " + self.fix if self.fix else ""))
        return f"; {fix}" if fix else ""

    # ---------------------------------------------------------------------------- header
    def header_fields(self) -> dict:
        """``{"format": name, "version": version}``: the first fields of a header written."""
        return {"format": self.name, "version": self.version}

    def read_header(self, hp, *, parameter: str = "path") -> dict:
        """Read the JSON header ``hp``: a UTF-8 JSON object of this format and a readable
        version (see :meth:`check_version`). Field checks are the caller's."""
        try:
            with open(hp, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise self._err(f"{hp}: cannot be read ({e.strerror or e})", hp, parameter) from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self._err(f"{hp}: not UTF-8 text (damaged){self._tail()}", hp,
                            parameter) from None
        except (json.JSONDecodeError, RecursionError) as e:
            why = getattr(e, "msg", "nested too deeply")
            raise self._err(f"{hp}: not valid JSON ({why}; truncated or edited?)"
                            f"{self._tail()}", hp, parameter) from None
        if not isinstance(header, dict):
            raise self._err(f"{hp}: not a JSON object (got {type(header).__name__}); "
                            f"expected a {self.name!r} header{self._tail()}", hp, parameter)
        self.check_version(header, hp, parameter=parameter)
        return header

    def check_version(self, header: dict, hp, *, parameter: str = "path") -> int:
        """The header's version, if its ``format`` is this one and the version is readable."""
        fmt = header.get("format")
        if fmt != self.name:
            raise self._err(f"{hp}: format {fmt!r} is not {self.name!r}", hp, parameter)
        v = header.get("version")
        readable = list(self.readable)
        if isinstance(v, bool) or not isinstance(v, int) or v not in self.readable:
            if not isinstance(v, bool) and isinstance(v, int) and v > max(self.readable):
                why = (f"it is newer than this simans_fast reads (versions {readable}); "
                       "upgrade simans_fast")
            else:
                why = (f"this build reads versions {readable} of {self.name!r}; re-create it "
                       "with this version")
            raise self._err(f"{hp}: version {v!r} not supported ({why})", hp, parameter)
        return v

    # ---------------------------------------------------------------------------- arrays
    def write_array(self, directory, name: str, arr, *, file: str | None = None) -> dict:
        """Write ``arr`` (made C-contiguous) to ``directory/<file or name.npy>``; returns its
        header entry ``{"dtype", "shape", "sha256"}`` (plus ``"file"`` when ``file`` is given)."""
        arr = np.ascontiguousarray(arr)
        fname = file if file is not None else name + ".npy"
        entry = {"dtype": arr.dtype.str, "shape": [int(s) for s in arr.shape],
                 "sha256": write_npy(os.path.join(directory, fname), arr)}
        if file is not None:
            entry["file"] = file
        return entry

    def verify(self, files: dict, entries: dict, *, parameter: str = "path") -> None:
        """Recompute the sha256 of each ``files[name]`` and compare with ``entries[name]``
        (files hashed concurrently: hashlib releases the GIL)."""
        for fpath in files.values():
            if not os.path.isfile(fpath):
                raise self._err(f"{fpath}: file is missing{self._tail()}", fpath, parameter)

        def digest(fpath):
            try:
                return file_sha256(fpath)
            except OSError as e:
                return e

        names = list(files)
        if len(names) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as ex:
                got = list(ex.map(digest, [files[n] for n in names]))
        else:
            got = [digest(files[n]) for n in names]
        for name, d in zip(names, got):
            fpath = files[name]
            if isinstance(d, OSError):
                raise self._err(f"{fpath}: cannot be read ({d.strerror or d})", fpath, parameter)
            want = entries[name]["sha256"]
            if d != want:
                raise self._err(f"{fpath}: sha256 {d[:16]}... differs from the {want[:16]}... "
                                f"recorded in {self.header_file} (file truncated, edited or "
                                f"replaced){self._tail()}", fpath, parameter)

    def check_array(self, fpath, arr, shape=None, dtypes=None, *, parameter: str = "path"):
        """``arr`` has one of ``dtypes`` (``.str`` spellings), ``shape`` (``None`` entries are
        free) and C order; else an error naming ``fpath``."""
        if dtypes is not None and arr.dtype.str not in tuple(dtypes):
            raise self._err(f"{fpath}: dtype {arr.dtype.str} where {' or '.join(dtypes)} is "
                            f"expected{self._tail()}", fpath, parameter)
        if shape is not None and None not in shape and arr.shape != tuple(shape):
            raise self._err(f"{fpath}: shape {arr.shape} disagrees with {self.header_file}, "
                            f"which implies {tuple(shape)}{self._tail()}", fpath, parameter)
        if arr.ndim > 1 and not arr.flags.c_contiguous:
            raise self._err(f"{fpath}: array is not stored in C order{self._tail()}", fpath,
                            parameter)

    def load_array(self, fpath, *, mmap: bool = True, shape=None, dtypes=None,
                   parameter: str = "path"):
        """Load one array (no pickles; memory-mapped unless ``mmap=False`` or it is empty) and
        :meth:`check_array` it."""
        if not os.path.isfile(fpath):
            raise self._err(f"{fpath}: file is missing{self._tail()}", fpath, parameter)
        use_mmap = mmap and not (shape is not None and None not in shape and 0 in shape)
        arr = load_npy(fpath, mmap=use_mmap, fix=self.fix, error=self.error,
                       parameter=parameter)
        self.check_array(fpath, arr, shape, dtypes, parameter=parameter)
        return arr
