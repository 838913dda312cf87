"""Plain NumPy references for the torch adapter tests (no torch, no Numba)."""

from __future__ import annotations

import itertools

import numpy as np


def log_weights(scores, pos, a, b, kernel="gaussian"):
    """SimANS log-weights of one row (float64), -inf for non-finite scores."""
    s = np.asarray(scores, np.float64)
    d = s - float(pos) - b
    lw = -a * d * d if kernel == "gaussian" else -a * np.abs(d)
    return np.where(np.isfinite(s), lw, -np.inf)


def ordered_tuple_probs(w, n):
    """Exact probability of every ordered n-tuple of distinct columns under successive sampling
    (draw proportional to w, remove, renormalise). Returns {tuple: prob}."""
    w = np.asarray(w, np.float64)
    total = w.sum()
    out = {}
    for tup in itertools.permutations(np.flatnonzero(w > 0).tolist(), n):
        p, rem = 1.0, total
        for c in tup:
            p *= w[c] / rem
            rem -= w[c]
        out[tup] = p
    return out


def lowest_columns(valid_row, n):
    """The last ``n`` valid columns in column order, -1 padded (the core's "lowest" fallback)."""
    cols = np.flatnonzero(valid_row)[-n:] if n else np.zeros(0, np.int64)
    out = np.full(n, -1, np.int64)
    out[: cols.size] = cols
    return out


def topk(queries, corpus, k, exclude=None):
    """Exact inner-product top-k, score descending then lower id; -1/-inf padding.

    ``exclude``: list of arrays of corpus rows per query."""
    S = np.asarray(queries, np.float64) @ np.asarray(corpus, np.float64).T
    n_q, n_d = S.shape
    ids = np.full((n_q, k), -1, np.int64)
    sc = np.full((n_q, k), -np.inf, np.float32)
    for q in range(n_q):
        allowed = np.ones(n_d, bool)
        if exclude is not None:
            allowed[np.asarray(exclude[q], np.int64)] = False
        cand = np.flatnonzero(allowed)
        order = sorted(cand.tolist(), key=lambda d: (-S[q, d], d))[:k]
        ids[q, : len(order)] = order
        sc[q, : len(order)] = S[q, order]
    return ids, sc


def shard_blocks(n, world):
    """Contiguous blocks like numpy.array_split: list of (lo, hi)."""
    edges = np.cumsum([0] + [len(x) for x in np.array_split(np.arange(n), world)])
    return [(int(edges[r]), int(edges[r + 1])) for r in range(world)]
