"""Plain-NumPy references for simans_fast.strategies (written independently of the kernels)."""

from __future__ import annotations

import numpy as np


def valid(ids, scores):
    """Valid candidates: id >= 0 and a finite score."""
    return (np.asarray(ids) >= 0) & np.isfinite(np.asarray(scores, dtype=np.float64))


def ranks(ids, scores):
    """0-based rank among a row's valid candidates (score descending, ties by column), else -1."""
    ids = np.asarray(ids)
    s = np.asarray(scores, dtype=np.float64)
    v = valid(ids, s)
    out = np.full(s.shape, -1, dtype=np.int64)
    for r in range(s.shape[0]):
        cols = np.flatnonzero(v[r])
        # lexsort: last key is primary -> primary -score, secondary column index
        order = cols[np.lexsort((cols, -s[r, cols]))]
        out[r, order] = np.arange(order.size)
    return out


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
    """Per-row threshold: keep s < thr (positive-relative terms skipped for unknown positives)."""
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


def keep_mask(ids, scores, positive_scores=None, *, max_score=None, margin=None, perc=None,
              skip=0, window=None):
    s = np.asarray(scores, dtype=np.float64)
    n_q = s.shape[0]
    pos = np.full(n_q, np.nan) if positive_scores is None else positive_scores
    thr = thresholds(pos, max_score, margin, perc)
    rk = ranks(ids, s)
    lo, hi = skip, np.inf
    if window is not None:
        lo = max(lo, window[0])
        hi = np.inf if window[1] is None else window[1]
    with np.errstate(invalid="ignore"):
        return valid(ids, s) & (rk >= lo) & (rk < hi) & (s < thr[:, None])


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
