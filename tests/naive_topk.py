"""Plain-NumPy references for top-k retrieval and rescoring (owner: topk engineer).

Everything here is deliberately simple: full score matrices in float64, one row at a time.
"""

from __future__ import annotations

import numpy as np


def naive_scores(queries, corpus, metric="ip"):
    """Full (n_q, n_d) float64 score matrix."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(corpus, dtype=np.float64)
    if metric == "cosine":
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        cn = np.linalg.norm(c, axis=1, keepdims=True)
        q = q / np.where(qn == 0, 1.0, qn)
        c = c / np.where(cn == 0, 1.0, cn)
        return q @ c.T
    if metric == "l2":
        return -(((q[:, None, :] - c[None, :, :]) ** 2).sum(axis=2))
    return q @ c.T


def exclusion_lists(exclude, n_q):
    """Per-query Python sets from a CSR pair, a list of arrays or None."""
    if exclude is None:
        return [set() for _ in range(n_q)]
    if isinstance(exclude, tuple):
        indptr, ids = exclude
        return [set(int(x) for x in ids[indptr[i] : indptr[i + 1]]) for i in range(n_q)]
    return [set(int(x) for x in np.asarray(e).ravel()) for e in exclude]


def naive_topk(queries, corpus, k, metric="ip", exclude=None):
    """Reference top-k: (ids int64, scores float32), rows sorted by score descending, ties by
    lower id, excluded ids removed, padded with -1 / -inf. Scores are float64 rounded to
    float32 (exact when the inputs are small integers)."""
    s = naive_scores(queries, corpus, metric)
    n_q, n_d = s.shape
    excl = exclusion_lists(exclude, n_q)
    ids = np.full((n_q, k), -1, dtype=np.int64)
    out = np.full((n_q, k), -np.inf, dtype=np.float32)
    for i in range(n_q):
        row = s[i].astype(np.float32).astype(np.float64)
        doc = np.array([j for j in range(n_d) if j not in excl[i]], dtype=np.int64)
        if doc.size == 0:
            continue
        order = np.lexsort((doc, -row[doc]))[:k]
        ids[i, : order.size] = doc[order]
        out[i, : order.size] = row[doc[order]]
    return ids, out


def naive_rescore(queries, corpus, ids, metric="ip"):
    """Reference rescoring: float64 scores of the given ids, -inf where id == -1."""
    s = naive_scores(queries, corpus, metric)
    out = np.take_along_axis(s, np.where(ids < 0, 0, ids), axis=1)
    out = np.where(ids < 0, -np.inf, out)
    return out


def check_topk_close(ids, scores, queries, corpus, k, metric="ip", exclude=None, rtol=1e-5,
                     atol=1e-5):
    """Assert ``(ids, scores)`` is an exact top-k up to float32 rounding.

    For data whose scores are not exactly representable the k-th place may legitimately differ
    between two correct implementations when two scores differ by less than the rounding
    error. So this checks: the sorted score lists equal the reference's (within tolerance);
    each returned id really has the returned score; ids are distinct, valid and not excluded;
    padding matches.
    """
    ref_ids, ref_scores = naive_topk(queries, corpus, k, metric, exclude)
    full = naive_scores(queries, corpus, metric)
    excl = exclusion_lists(exclude, ids.shape[0])
    assert ids.shape == ref_ids.shape and scores.shape == ref_scores.shape
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids < 0, ref_ids < 0)
    np.testing.assert_array_equal(np.isneginf(scores), ref_ids < 0)
    valid = ids >= 0
    np.testing.assert_allclose(scores[valid], ref_scores[valid], rtol=rtol, atol=atol)
    true = np.take_along_axis(full, np.where(valid, ids, 0), axis=1)
    np.testing.assert_allclose(scores[valid], true[valid], rtol=rtol, atol=atol)
    for i in range(ids.shape[0]):
        row = ids[i][valid[i]]
        assert np.unique(row).size == row.size, f"duplicate ids in row {i}"
        assert not (set(row.tolist()) & excl[i]), f"excluded id returned in row {i}"
        assert np.all(np.diff(scores[i][valid[i]]) <= 0), f"row {i} not sorted"
