"""Numba kernels for the negative-selection strategies beside SimANS and for candidate filters.

Arrays in, arrays out: no Python objects, no I/O. The public layer (``simans_fast.strategies``)
validates input and picks the kernels.

Work is split as in ``kernels.sampling``: a ``prange`` over chunks of rows, each chunk owns its
scratch buffers and writes only its own output rows, so results do not depend on the thread count.

Definitions shared by every kernel here:

* a candidate is *valid* when its id is ``>= 0`` and its score is finite (as in the core);
* a candidate is a *marked positive* when the positive mask says so (``has_pos``); marked
  positives are never kept;
* a candidate *passes the filters* when its score is below the row's upper threshold
  ``thr = min(max_score, s_pos - margin, s_pos - (1 - perc) * |s_pos|)`` and above the lower
  threshold ``lthr = min_score`` (terms whose filter is off, or that need an unknown positive,
  are left out), computed in float64. ``inclusive=False`` (the default ``"strict"`` rule):
  ``lthr < s < thr``, a score equal to a threshold is removed; ``inclusive=True``
  (sentence-transformers' rule): ``lthr <= s <= thr``, a score equal to a threshold is kept;
* the *rank* of a candidate is its position, highest score first, ties broken by column (stable),
  among the candidates that *count* under the rank rule:

  - ``RANK_CANDIDATES`` (0): valid candidates that are not marked positives, before the filters;
  - ``RANK_RETRIEVED`` (1, FlagEmbedding's ``hn_mine.py``): every valid candidate, marked
    positives included, before the filters;
  - ``RANK_SURVIVORS`` (2, sentence-transformers' ``mine_hard_negatives``): only valid, unmarked
    candidates that pass the filters.

  Candidates that do not count have no rank. A candidate is *kept* when it is valid, not a marked
  positive, passes the filters and its rank ``r`` satisfies ``lo <= r < hi``.
"""

import math

import numpy as np
from numba import prange

from .._numba import jit, pjit
from .borrowed import borrow, row

_INF = np.inf

RANK_CANDIDATES = 0
RANK_RETRIEVED = 1
RANK_SURVIVORS = 2


# ----------------------------------------------------------------------------------------------
# per-row building blocks
# ----------------------------------------------------------------------------------------------
@jit(inline="always")
def row_threshold(p, max_score, use_margin, margin, use_perc, perc):
    """Upper score threshold of one row (float64)."""
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
def passes(s, thr, lthr, inclusive):
    """Score filters: ``lthr < s < thr`` (strict) or ``lthr <= s <= thr`` (inclusive)."""
    if inclusive:
        return s <= thr and s >= lthr
    return s < thr and s > lthr


@jit(inline="always")
def rank_step(v, p, s, thr, lthr, inclusive, rank, lo, hi, rank_rule):
    """One candidate in rank order: ``(kept, takes_a_rank)`` for a candidate that is valid
    ``v``, a marked positive ``p``, scored ``s``, when ``rank`` candidates came before it."""
    if not v:
        return False, False
    if rank_rule == RANK_SURVIVORS:
        if p or not passes(s, thr, lthr, inclusive):
            return False, False
        return rank >= lo and rank < hi, True
    if p:
        return False, rank_rule == RANK_RETRIEVED
    return rank >= lo and rank < hi and passes(s, thr, lthr, inclusive), True


@jit(inline="always")
def mask_row(idrow, srow, prow, has_pos, thr, lthr, inclusive, lo, hi, need_rank, rank_rule,
             keys, mrow):
    """Fill ``mrow`` (bool) for one row; return the number of candidates kept."""
    k = srow.shape[0]
    kept = 0
    if not need_rank:
        for c in range(k):
            s = np.float64(srow[c])
            ok = (is_valid(idrow[c], s) and not (has_pos and prow[c])
                  and passes(s, thr, lthr, inclusive))
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
            if rank >= hi:  # nothing after the window is kept
                mrow[c] = False
                continue
            s = np.float64(srow[c])
            ok, ranked = rank_step(is_valid(idrow[c], s), has_pos and prow[c], s, thr, lthr,
                                   inclusive, rank, lo, hi, rank_rule)
            mrow[c] = ok
            if ranked:
                rank += 1
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
        if rank >= hi:
            break
        c = order[t]
        s = np.float64(srow[c])
        v = is_valid(idrow[c], s)
        if not v:
            break  # only invalid candidates remain
        ok, ranked = rank_step(v, has_pos and prow[c], s, thr, lthr, inclusive, rank, lo, hi,
                               rank_rule)
        if ok:
            mrow[c] = True
            kept += 1
        if ranked:
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
def _mask_chunk(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
                use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, start,
                stop):
    _mask_rows(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
               use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, start,
               stop, np.empty(scores.shape[1], np.float64))


@jit
def _mask_rows(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
               use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, start,
               stop, keys):
    # borrowed arrays: no reference counting per row (see kernels.borrowed)
    ids, scores, pos, is_pos = borrow(ids), borrow(scores), borrow(pos), borrow(is_pos)
    mask, n_kept, keys = borrow(mask), borrow(n_kept), borrow(keys)
    for r in range(start, stop):
        thr = row_threshold(np.float64(pos[r]), max_score, use_margin, margin, use_perc, perc)
        prow = row(is_pos, r) if has_pos else row(is_pos, 0)
        n_kept[r] = mask_row(row(ids, r), row(scores, r), prow, has_pos, thr, min_score,
                             inclusive, lo, hi, need_rank, rank_rule, keys, row(mask, r))


@pjit
def mask_par(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
             use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, chunk):
    """Filter/rank-window mask of every candidate, multi-threaded.

    ``is_pos``: bool ``(n_q, k)`` marked positives when ``has_pos`` (else any ``(1, k)`` array);
    ``pos``: the row's reference positive score (NaN: unknown); ``max_score``/``min_score``:
    ``+inf``/``-inf`` when off.
    """
    n_rows = scores.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _mask_chunk(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
                    use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, start,
                    stop)


@jit
def mask_ser(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
             use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, chunk):
    """Serial twin of :func:`mask_par`."""
    _mask_chunk(ids, scores, pos, is_pos, has_pos, max_score, min_score, use_margin, margin,
                use_perc, perc, inclusive, lo, hi, need_rank, rank_rule, mask, n_kept, 0,
                scores.shape[0])


@jit
def _positive_mask_chunk(ids, pos_ids, out, start, stop):
    k = ids.shape[1]
    m = pos_ids.shape[1]
    for r in range(start, stop):
        for c in range(k):
            cid = ids[r, c]
            hit = False
            if cid >= 0:
                for j in range(m):
                    if pos_ids[r, j] == cid:
                        hit = True
                        break
            out[r, c] = out[r, c] or hit


@pjit
def positive_mask_par(ids, pos_ids, out, chunk):
    """``out[r, c] |= ids[r, c] >= 0 and ids[r, c] in pos_ids[r]`` (``-1`` in ``pos_ids`` never
    matches), multi-threaded."""
    n_rows = ids.shape[0]
    n_chunks = (n_rows + chunk - 1) // chunk
    for ci in prange(n_chunks):
        start = ci * chunk
        stop = min(start + chunk, n_rows)
        _positive_mask_chunk(ids, pos_ids, out, start, stop)


@jit
def positive_mask_ser(ids, pos_ids, out, chunk):
    """Serial twin of :func:`positive_mask_par`."""
    _positive_mask_chunk(ids, pos_ids, out, 0, ids.shape[0])


@jit
def _top_chunk(ids, scores, mask, n, out_cols, out_ids, start, stop):
    _top_rows(ids, scores, mask, n, out_cols, out_ids, start, stop, np.empty(n, np.float64))


@jit
def _top_rows(ids, scores, mask, n, out_cols, out_ids, start, stop, sbuf):
    ids, scores, mask, out_cols = borrow(ids), borrow(scores), borrow(mask), borrow(out_cols)
    out_ids, sbuf = borrow(out_ids), borrow(sbuf)
    for r in range(start, stop):
        top_row(row(scores, r), row(mask, r), n, row(out_cols, r), sbuf)
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
