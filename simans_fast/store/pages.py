"""Memory-mapped arrays: give back the pages a block of rows used.

The top-k and rescoring loops stream a corpus larger than RAM block by block; after a block its
pages are dropped from this process' resident set (they stay in the page cache), so the
process' memory stays at a block, not at the corpus.
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["release_rows", "release_all"]


def release_rows(arr, row_lo, row_hi):
    """Drop the pages of rows ``row_lo:row_hi`` of a shared read memory map from this process'
    resident set (the data stays in the page cache). A no-op for ordinary arrays."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "mode", "c") not in ("r", "r+", "readonly", "readwrite"):
        return
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        start = arr.__array_interface__["data"][0] - base + row_lo * arr.strides[0]
        stop = start + (row_hi - row_lo) * arr.strides[0]
        page = mmap.PAGESIZE
        start = max(0, (start // page) * page)
        stop = min(len(mm), stop)
        if stop > start:
            mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
    except (ValueError, OSError, TypeError, BufferError):  # pragma: no cover - best effort
        pass


def release_all(arr):
    if getattr(arr, "_mmap", None) is not None and arr.ndim == 2:
        release_rows(arr, 0, arr.shape[0])
