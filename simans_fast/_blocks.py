"""Block helpers shared by the exact top-k paths (:mod:`simans_fast.candidates` and
:mod:`simans_fast.candidates_bf16`): float32 row blocks, the finiteness check, exclusions of a
subset of queries."""

from __future__ import annotations

import numpy as np


def empty_result(n_q, k, n_d, what):
    """The ``(ids, scores)`` arrays of a top-k, filled with -1 / -inf; ``what`` names the path
    in the error for a corpus too large for 32-bit document ids in the keys."""
    if n_d >= 2**32:
        raise ValueError(f"corpus has {n_d} rows; {what} supports fewer than 2**32")
    return (np.full((n_q, k), -1, dtype=np.int64), np.full((n_q, k), -np.inf, dtype=np.float32))


def sub_exclusions(excl, rows):
    """The CSR exclusion pair ``(indptr, ids)`` of the queries ``rows`` (in that order)."""
    indptr, eids = excl
    lens = indptr[rows + 1] - indptr[rows]
    sub_ptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lens, out=sub_ptr[1:])
    take = np.concatenate([np.arange(indptr[r], indptr[r + 1]) for r in rows]) \
        if sub_ptr[-1] else np.zeros(0, dtype=np.int64)
    return sub_ptr, eids[take]


def check_finite(x, name, row0, buf):
    """ValueError naming ``name`` and the first row of the float32 block ``x`` (rows
    ``row0 ...`` of the input) that holds a NaN or an infinity."""
    from .kernels import topk as K

    bad = buf[: x.shape[0]]
    K.nonfinite_rows(x.view(np.uint32), bad)
    if bad.any():
        r = row0 + int(np.argmax(bad))
        raise ValueError(f"{name} row {r} is not finite (it holds NaN or inf): embeddings must "
                         f"be finite numbers")


def block_f32(src, lo, hi, buf, normalize):
    """Rows ``lo:hi`` of ``src`` as C-contiguous float32 (a view when possible, else converted
    into ``buf``), row-normalised when ``normalize``. The Numba kernels only ever see
    C-contiguous arrays here (one compiled signature each)."""
    from .kernels import topk as K

    blk = np.asarray(src[lo:hi])
    n = hi - lo
    if blk.dtype == np.float32 and blk.flags.c_contiguous:
        if not normalize:
            return blk
        out = buf[:n]
        K.block_to_f32(blk, out, True)
        return out
    out = buf[:n]
    if blk.dtype == np.float16:
        K.block_f16_to_f32(np.ascontiguousarray(blk).view(np.uint16), out, normalize)
        return out
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range float64: checked later
        np.copyto(out, blk, casting="unsafe")  # float64 or strided float32
    if normalize:
        K.block_to_f32(out, out, True)
    return out
