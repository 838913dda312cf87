"""Numba kernels for the negative-selection strategies beside SimANS and for candidate filters.

Arrays in, arrays out: no Python objects, no I/O. The public layer (``simans_fast.strategies``)
validates input and picks the kernels.

Work is split as in ``kernels.sampling``: a ``prange`` over chunks of rows, each chunk owns its
scratch buffers and writes only its own output rows, so results do not depend on the thread count.

Definitions shared by every kernel here:

* a candidate is *valid* when its id is ``>= 0`` and its score is finite (as in the core);
* the *rank* of a valid candidate is its position when the row's valid candidates are ordered by
  score, highest first, ties broken by column (stable); invalid candidates have no rank;
* a candidate *passes the filters* when its score is strictly below the row's threshold
  ``thr = min(max_score, s_pos - margin, s_pos - (1 - perc) * |s_pos|)`` (terms whose filter is
  off, or that need an unknown positive, are left out of the minimum), computed in float64.
"""

import math

import numpy as np
from numba import prange

from .._numba import jit, pjit

_INF = np.inf


# ----------------------------------------------------------------------------------------------
# per-row building blocks
# ----------------------------------------------------------------------------------------------
@jit(inline="always")
def row_threshold(p, max_score, use_margin, margin, use_perc, perc):
    """Score threshold of one row (float64); candidates need ``s < thr`` to pass."""
    thr = max_score
    if math.isfinite(p):
        if use_margin:
            t = p - margin
            if t < thr:
                thr = t
        if use_perc:
            t = p - (1.0 - perc) * abs(p)
            if t < thr:
                thr = t
    return thr


@jit(inline="always")
def is_valid(cid, s):
    return cid >= 0 and math.isfinite(s)


@jit(inline="always")
def mask_row(idrow, srow, thr, lo, hi, need_rank, keys, mrow):
    """Fill ``mrow`` (bool) for one row; return the number of candidates kept."""
    k = srow.shape[0]
    kept = 0
    if not need_rank:
        for c in range(k):
            s = np.float64(srow[c])
            ok = is_valid(idrow[c], s) and s < thr
            mrow[c] = ok
            if ok:
                kept += 1
        return kept
    # fast path: valid scores already non-increasing in column order -> rank = running count
    sorted_row = True
    prev = _INF
    for c in range(k):
        s = np.float64(srow[c])
        if is_valid(idrow[c], s):
            if s > prev:
                sorted_row = False
                break
            prev = s
    if sorted_row:
        rank = 0
        for c in range(k):
            s = np.float64(srow[c])
            ok = False
            if is_valid(idrow[c], s):
                ok = rank >= lo and rank < hi and s < thr
                rank += 1
            mrow[c] = ok
            if ok:
                kept += 1
        return kept
    # general path: stable sort of the negated scores, invalid candidates last
    for c in range(k):
        s = np.float64(srow[c])
        mrow[c] = False
        keys[c] = -s if is_valid(idrow[c], s) else _INF
    order = np.argsort(keys, kind="mergesort")
    rank = 0
    for t in range(k):
        c = order[t]
        s = np.float64(srow[c])
        if not is_valid(idrow[c], s):
            continue
        if rank >= lo and rank < hi and s < thr:
            mrow[c] = True
            kept += 1
        rank += 1
    return kept


@jit(inline="always")
def top_row(srow, mrow, n, cols, sbuf):
    """Columns of the ``n`` highest-scoring kept candidates, best first (ties: lower column
    first), ``-1`` padded. Insertion into a sorted buffer of size ``n``."""
    k = srow.shape[0]
    for t in range(n):
        cols[t] = -1
    m = 0
    for c in range(k):
        if not mrow[c]:
            continue
        s = np.float64(srow[c])
        if m == n and not (s > sbuf[n - 1]):
            continue
        j = m if m < n else n - 1
        while j > 0 and sbuf[j - 1] < s:
            sbuf[j] = sbuf[j - 1]
            cols[j] = cols[j - 1]
            j -= 1
        sbuf[j] = s
        cols[j] = c
        if m < n:
            m += 1


# ----------------------------------------------------------------------------------------------
# chunk workers and drivers
# ----------------------------------------------------------------------------------------------
@jit
def _mask_chunk(ids, scores, pos, max_score, use_margin, margin, use_perc, perc, lo, hi,
                need_rank, mask, n_kept, start, stop):
    k = scores.shape[1]
    keys = np.empty(k, np.float64)
    for r in range(start, stop):
        thr = row_threshold(np.float64(pos[r]), max_score, use_margin, margin, use_perc, perc)
        n_kept[r] = mask_row(ids[r], scores[r], thr, lo, hi, need_rank, keys, mask[r])


@pjit
def mask_par(ids, scores, pos, max_score, use_margin, margin, use_perc, perc, lo, hi, need_rank,
             mask, n_kept, chunk):
    """Filter/rank-window mask of every candidate, multi-threaded."""
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _mask_chunk(ids, scores, pos, max_score, use_margin, margin, use_perc, perc, lo, hi,
                    need_rank, mask, n_kept, start, stop)


@jit
def mask_ser(ids, scores, pos, max_score, use_margin, margin, use_perc, perc, lo, hi, need_rank,
             mask, n_kept, chunk):
    """Serial twin of :func:`mask_par`."""
    _mask_chunk(ids, scores, pos, max_score, use_margin, margin, use_perc, perc, lo, hi,
                need_rank, mask, n_kept, 0, scores.shape[0])


@jit
def _top_chunk(ids, scores, mask, n, out_cols, out_ids, start, stop):
    sbuf = np.empty(n, np.float64)
    for r in range(start, stop):
        top_row(scores[r], mask[r], n, out_cols[r], sbuf)
        for t in range(n):
            c = out_cols[r, t]
            out_ids[r, t] = ids[r, c] if c >= 0 else -1


@pjit
def top_par(ids, scores, mask, n, out_cols, out_ids, chunk):
    """The ``n`` best kept candidates of every row (columns and ids), multi-threaded."""
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _top_chunk(ids, scores, mask, n, out_cols, out_ids, start, stop)


@jit
def top_ser(ids, scores, mask, n, out_cols, out_ids, chunk):
    """Serial twin of :func:`top_par`."""
    _top_chunk(ids, scores, mask, n, out_cols, out_ids, 0, scores.shape[0])


@jit
def _uniform_logw_chunk(mask, out, start, stop):
    k = mask.shape[1]
    for r in range(start, stop):
        for c in range(k):
            out[r, c] = np.float32(0.0) if mask[r, c] else np.float32(-np.inf)


@pjit
def uniform_logw_par(mask, out, chunk):
    """Log-weights 0 on kept candidates and -inf elsewhere (float32), multi-threaded."""
    n_rows = mask.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _uniform_logw_chunk(mask, out, start, stop)


@jit
def uniform_logw_ser(mask, out, chunk):
    """Serial twin of :func:`uniform_logw_par`."""
    _uniform_logw_chunk(mask, out, 0, mask.shape[0])


@jit
def _apply_chunk(ids, scores, mask, out_ids, out_scores, start, stop):
    k = ids.shape[1]
    for r in range(start, stop):
        for c in range(k):
            if mask[r, c]:
                out_ids[r, c] = ids[r, c]
                out_scores[r, c] = scores[r, c]
            else:
                out_ids[r, c] = -1
                out_scores[r, c] = np.nan


@jit
def _compact_chunk(ids, scores, mask, out_ids, out_scores, start, stop):
    k = ids.shape[1]
    width = out_ids.shape[1]
    for r in range(start, stop):
        t = 0
        for c in range(k):
            if mask[r, c]:
                out_ids[r, t] = ids[r, c]
                out_scores[r, t] = scores[r, c]
                t += 1
        while t < width:
            out_ids[r, t] = -1
            out_scores[r, t] = np.nan
            t += 1


@pjit
def apply_par(ids, scores, mask, out_ids, out_scores, compact, chunk):
    """Masked (``compact=False``) or left-packed (``compact=True``) copies of ids and scores."""
    n_rows = ids.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        if compact:
            _compact_chunk(ids, scores, mask, out_ids, out_scores, start, stop)
        else:
            _apply_chunk(ids, scores, mask, out_ids, out_scores, start, stop)


@jit
def apply_ser(ids, scores, mask, out_ids, out_scores, compact, chunk):
    """Serial twin of :func:`apply_par`."""
    if compact:
        _compact_chunk(ids, scores, mask, out_ids, out_scores, 0, ids.shape[0])
    else:
        _apply_chunk(ids, scores, mask, out_ids, out_scores, 0, ids.shape[0])


@jit
def _gather_chunk(ids, cols, out, start, stop):
    n = cols.shape[1]
    for r in range(start, stop):
        for t in range(n):
            c = cols[r, t]
            out[r, t] = ids[r, c] if c >= 0 else -1


@pjit
def gather_par(ids, cols, out, chunk):
    """``out[r, t] = ids[r, cols[r, t]]`` (``-1`` where ``cols`` is ``-1``), multi-threaded."""
    n_rows = cols.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _gather_chunk(ids, cols, out, start, stop)


@jit
def gather_ser(ids, cols, out, chunk):
    """Serial twin of :func:`gather_par`."""
    _gather_chunk(ids, cols, out, 0, cols.shape[0])
