"""Plain-NumPy references for the mining pipeline (sf.mine / sf.mine_candidates).

Everything is computed densely in float64: the full score matrix, positives masked out, a stable
argsort for the top-k, positive scores read from the same matrix.
"""

from __future__ import annotations

import numpy as np


def dense_scores(queries, corpus, metric="ip"):
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(corpus, dtype=np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)
    s = q @ c.T
    if metric == "l2":
        s = -(np.sum(q * q, axis=1)[:, None] - 2 * s + np.sum(c * c, axis=1)[None, :])
    return s


def brute_force_mine(queries, corpus, positives, k, metric="ip"):
    """Reference candidates and positive scores.

    Parameters
    ----------
    positives : list of lists of corpus rows (duplicates allowed; first occurrence kept)

    Returns
    -------
    cand_ids (n_q, k) int64 -1 padded, cand_scores (n_q, k) float64 (-inf pad),
    pos_ids (n_q, m) int64 -1 padded, pos_scores (n_q, m) float64 NaN padded
    """
    s = dense_scores(queries, corpus, metric)
    n_q, n_d = s.shape
    dedup = []
    for p in positives:
        seen = []
        for x in p:
            if int(x) not in seen:
                seen.append(int(x))
        dedup.append(seen)
    m = max(1, max((len(p) for p in dedup), default=0))
    cand_ids = np.full((n_q, k), -1, dtype=np.int64)
    cand_scores = np.full((n_q, k), -np.inf)
    pos_ids = np.full((n_q, m), -1, dtype=np.int64)
    pos_scores = np.full((n_q, m), np.nan)
    for i in range(n_q):
        row = s[i].copy()
        row[dedup[i]] = -np.inf
        order = np.argsort(-row, kind="stable")
        order = order[np.isfinite(row[order])][:k]
        cand_ids[i, : order.size] = order
        cand_scores[i, : order.size] = row[order]
        pos_ids[i, : len(dedup[i])] = dedup[i]
        pos_scores[i, : len(dedup[i])] = s[i, dedup[i]]
    return cand_ids, cand_scores, pos_ids, pos_scores


def simans_probabilities(cand_scores, pos_score, a, b, kernel="gaussian"):
    """First-draw probabilities of SimANS over one candidate row (paper's sign of b)."""
    d = np.asarray(cand_scores, dtype=np.float64) - pos_score - b
    logw = -a * d * d if kernel == "gaussian" else -a * np.abs(d)
    logw[~np.isfinite(np.asarray(cand_scores, dtype=np.float64))] = -np.inf
    w = np.exp(logw - np.max(logw))
    return w / w.sum()
