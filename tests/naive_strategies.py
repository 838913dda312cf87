"""Plain-NumPy references for simans_fast.strategies (written independently of the kernels)."""

from __future__ import annotations

import numpy as np


def valid(ids, scores):
    """Valid candidates: id >= 0 and a finite score."""
    return (np.asarray(ids) >= 0) & np.isfinite(np.asarray(scores, dtype=np.float64))


def lowest_positive(positive_scores):
    """Reference positive per row: the score itself, or the lowest finite one of a 2-D row."""
    p = np.asarray(positive_scores, dtype=np.float64)
    if p.ndim == 1:
        return p
    out = np.full(p.shape[0], np.nan)
    for r in range(p.shape[0]):
        f = p[r][np.isfinite(p[r])]
        if f.size:
            out[r] = f.min()
    return out


def thresholds(positive_scores, max_score=None, margin=None, perc=None):
    """Per-row upper threshold thr (positive-relative terms skipped for unknown positives)."""
    p = lowest_positive(positive_scores)
    thr = np.full(p.shape[0], np.inf)
    for r in range(p.shape[0]):
        terms = []
        if max_score is not None:
            terms.append(float(max_score))
        if np.isfinite(p[r]):
            if margin is not None:
                terms.append(p[r] - margin)
            if perc is not None:
                terms.append(p[r] - (1.0 - perc) * abs(p[r]))
        if terms:
            thr[r] = min(terms)
    return thr


def positive_flags(ids, positive_ids=None, positive_mask=None):
    """bool (n_q, k): the candidate's id is one of the row's positive ids (-1 never matches), or
    the mask marks it."""
    ids = np.asarray(ids)
    out = np.zeros(ids.shape, dtype=bool)
    if positive_mask is not None:
        out |= np.asarray(positive_mask, dtype=bool)
    if positive_ids is not None:
        pid = np.asarray(positive_ids)
        if pid.ndim == 1:
            pid = pid[:, None]
        for r in range(ids.shape[0]):
            wanted = pid[r][pid[r] >= 0]
            out[r] |= (ids[r] >= 0) & np.isin(ids[r], wanted)
    return out


def ranks_among(scores, counted):
    """0-based rank among the row's ``counted`` candidates (score descending, ties by column),
    -1 for the others (Python's ``sorted`` is stable: ties keep column order)."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, -1, dtype=np.int64)
    for r in range(s.shape[0]):
        cols = [c for c in range(s.shape[1]) if counted[r, c]]
        for rank, c in enumerate(sorted(cols, key=lambda c: -s[r, c])):
            out[r, c] = rank
    return out


def keep_mask(ids, scores, positive_scores=None, *, max_score=None, min_score=None, margin=None,
              perc=None, skip=0, window=None, rank_rule="candidates", threshold_rule="strict",
              positive_ids=None, positive_mask=None):
    """The kept candidates, from the rules as documented in simans_fast.strategies."""
    s = np.asarray(scores, dtype=np.float64)
    n_q = s.shape[0]
    pos = np.full(n_q, np.nan) if positive_scores is None else positive_scores
    thr = thresholds(pos, max_score, margin, perc)[:, None]
    lthr = -np.inf if min_score is None else float(min_score)
    v = valid(ids, s)
    p = positive_flags(ids, positive_ids, positive_mask)
    with np.errstate(invalid="ignore"):
        if threshold_rule == "strict":
            f = v & (s < thr) & (s > lthr)
        elif threshold_rule == "sentence-transformers":
            f = v & (s <= thr) & (s >= lthr)
        else:
            raise ValueError(threshold_rule)
    if rank_rule == "candidates":
        counted = v & ~p
    elif rank_rule == "flagembedding":
        counted = v
    elif rank_rule == "sentence-transformers":
        counted = v & ~p & f
    else:
        raise ValueError(rank_rule)
    rk = ranks_among(s, counted)
    lo, hi = skip, np.inf
    if window is not None:
        lo = max(lo, window[0])
        hi = np.inf if window[1] is None else window[1]
    return counted & ~p & f & (rk >= lo) & (rk < hi)


def flagembedding_window(ids, positive_ids, lo, hi, query_self=None):
    """FlagEmbedding ``hn_mine.py``'s rule, transcribed on raw retrieval rows (rank = column):
    the columns ``lo..hi-1`` of the list, stopping at the first ``-1`` (faiss padding), minus
    the positives (and the columns ``query_self`` marks: the query's own text). Returns a mask.
    """
    ids = np.asarray(ids)
    out = np.zeros(ids.shape, dtype=bool)
    for r in range(ids.shape[0]):
        pos = set(int(x) for x in np.atleast_1d(positive_ids[r]) if x >= 0)
        for c in range(lo, min(hi, ids.shape[1])):
            if ids[r, c] == -1:
                break
            if int(ids[r, c]) in pos or (query_self is not None and query_self[r, c]):
                continue
            out[r, c] = True
    return out


def st_window(ids, scores, positive_ids, positive_scores, range_min, range_max, *,
              max_score=None, min_score=None, absolute_margin=None, relative_margin=None):
    """sentence-transformers ``mine_hard_negatives``' rule, transcribed in NumPy (float64) on a
    raw retrieval row: positives and padding get -inf, then each filter in its own form
    (``s + absolute_margin > pos``, ``s > pos - |pos| * relative_margin``, ``s > max_score``,
    ``s < min_score`` remove), then the ``range_max`` best (stable sort) minus the first
    ``range_min``, minus the -inf ones. Margins use the lowest positive score. Returns a mask."""
    ids = np.asarray(ids)
    s = np.array(scores, dtype=np.float64)
    s[ids == -1] = -np.inf
    s[~np.isfinite(s)] = -np.inf
    s[positive_flags(ids, positive_ids)] = -np.inf
    low_pos = lowest_positive(positive_scores)[:, None]
    with np.errstate(invalid="ignore"):
        if absolute_margin is not None:
            s[s + absolute_margin > low_pos] = -np.inf
        if relative_margin is not None:
            s[s > low_pos - np.abs(low_pos) * relative_margin] = -np.inf
        if max_score is not None:
            s[s > max_score] = -np.inf
        if min_score is not None:
            s[s < min_score] = -np.inf
    out = np.zeros(ids.shape, dtype=bool)
    for r in range(ids.shape[0]):
        order = np.argsort(-s[r], kind="stable")[:range_max][range_min:]
        order = order[s[r, order] != -np.inf]
        out[r, order] = True
    return out


def top(ids, scores, mask, n):
    """The n highest-scoring kept candidates (ties: lower column first), ids, -1 padded."""
    ids = np.asarray(ids)
    s = np.asarray(scores, dtype=np.float64)
    out = np.full((s.shape[0], n), -1, dtype=np.int64)
    for r in range(s.shape[0]):
        cols = np.flatnonzero(mask[r])
        order = cols[np.lexsort((cols, -s[r, cols]))][:n]
        out[r, :order.size] = ids[r, order]
    return out


def compact(ids, scores, mask):
    """Kept ids/scores left-packed in column order, padded with -1 / NaN to the widest row."""
    ids = np.asarray(ids)
    s = np.asarray(scores)
    width = int(mask.sum(axis=1).max()) if mask.shape[0] else 0
    out_ids = np.full((s.shape[0], width), -1, dtype=np.int64)
    out_s = np.full((s.shape[0], width), np.nan, dtype=s.dtype)
    for r in range(s.shape[0]):
        cols = np.flatnonzero(mask[r])
        out_ids[r, :cols.size] = ids[r, cols]
        out_s[r, :cols.size] = s[r, cols]
    return out_ids, out_s
