"""Embedding matrices (``.npy``, float32, float16 or float64, 2-D) and id lists (one id per line).

Every problem is an :class:`simans_fast._validate.InputError` whose message starts with the
file (``"<file>: ..."``) and whose ``.parameter`` is the Python parameter the file came through
(``parameter=``, default ``"path"``).
"""

from __future__ import annotations

import numpy as np

from .._validate import InputError
from ..store.arrays import load_npy
from ..store.ids import check_file, read_ids

__all__ = ["read_embeddings", "read_ids", "check_finite"]

_FIX = "save embeddings with numpy.save(path, array.astype('float32'))"


def read_embeddings(path, *, parameter: str = "path") -> np.ndarray:
    """Memory-map a ``.npy`` embedding matrix (2-D float32, float16 or float64).

    Parameters
    ----------
    path : str
        A ``.npy`` file (``.npz`` and pickles are not accepted).
    parameter : str, default="path"
        The Python parameter errors name (``.parameter`` of the exception).

    Returns
    -------
    numpy.memmap of shape (rows, dim)

    Raises
    ------
    InputError
        Missing file, not a ``.npy`` file, truncated, a pickle, wrong dtype or number of
        dimensions, empty.
    """
    import os

    path = os.fspath(path)
    check_file(path, parameter)

    def err(msg):
        return InputError(f"{path}: {msg}", parameter=parameter, path=path)

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise err(f"cannot read it ({e.strerror})") from None
    if magic[:4] == b"PK\x03\x04":
        raise err(f"is an .npz archive, expected one .npy array; {_FIX}")
    if magic != b"\x93NUMPY":
        raise err(f"not a .npy file; {_FIX}")
    arr = load_npy(path, mmap=True, fix=_FIX, parameter=parameter)
    if arr.dtype not in (np.float32, np.float16, np.float64):
        # the one rule (_validate.check_embeddings, docs/vocabulary.md): float64 is accepted
        # and computed in float32 block by block, like every array the library is given
        raise err(f"dtype {arr.dtype} not supported; save it as float32, float16 or float64 "
                  "(array.astype('float32'))")
    if arr.ndim != 2:
        raise err(f"expected a 2-D array (rows, dim), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise err(f"empty array of shape {tuple(arr.shape)}")
    return arr


def check_finite(arr, *, path, parameter: str = "path", block: int = 1 << 14) -> None:
    """Raise unless every value of the 2-D embedding matrix ``arr`` is finite.

    A NaN or infinite row would be ranked silently wrong by any search. ``arr`` may be a memory
    map: it is read ``block`` rows at a time. The message names ``path`` (the file ``arr`` was
    read from or written to) and the first bad row.
    """
    for lo in range(0, arr.shape[0], block):
        ok = np.isfinite(np.asarray(arr[lo:lo + block])).all(axis=1)
        if not ok.all():
            r = lo + int(np.flatnonzero(~ok)[0])
            raise InputError(f"{path}: row {r} holds NaN or infinite values; fix the embeddings "
                             "(every value must be finite)", parameter=parameter, path=str(path))
