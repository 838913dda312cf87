"""Core kernels: RNG, log-weights, alias tables, exact sampling (against tests/naive.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import simans_fast as sf
from simans_fast.kernels import sampling as K

import naive

P_MIN = 1e-4  # fixed seeds make every test deterministic; reject only on overwhelming evidence


# ---------------------------------------------------------------------------------------------
# counter-based RNG
# ---------------------------------------------------------------------------------------------
def test_splitmix64_known_answers():
    # published outputs of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c; the values
    # used by e.g. rand_xoshiro's SplitMix64 tests)
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                4593380528125082431, 16408922859458223821]
    assert [int(x) for x in sf.rng.splitmix64(1234567, 5)] == expected
    assert naive.splitmix64(1234567, 5) == expected


def test_stream_uniforms_match_reference():
    keys = np.array([0, 1, 2, 12345, -1, 2**62], dtype=np.int64)
    got = sf.rng.uniforms(2024, 3, keys, 7)
    for r, key in enumerate(keys):
        st_ = naive.stream_state(2024, 3, int(key))
        assert [naive.uniform(st_, j) for j in range(7)] == list(got[r])


def test_uniforms_are_uniform_and_streams_independent():
    u = sf.rng.uniforms(0, 0, np.arange(2000), 50)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > P_MIN
    # neighbouring keys / epochs are uncorrelated
    r = np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]
    assert abs(r) < 0.01
    v = sf.rng.uniforms(0, 1, np.arange(2000), 50)
    assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.01


# ---------------------------------------------------------------------------------------------
# log-weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_weights_match_reference(kernel, dtype):
    rng = np.random.default_rng(1)
    s = rng.normal(0, 3, (50, 30)).astype(dtype)
    s[3, 4] = np.nan
    s[5, :] = -np.inf
    pos = rng.normal(0, 3, 50)
    got = sf.ambiguity_log_weights(s, pos, a=0.7, b=0.3, kernel=kernel)
    ref = naive.log_weights(s, pos, 0.7, 0.3, kernel)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    assert np.isneginf(got[3, 4]) and np.isneginf(got[5]).all()
    # +inf is no padding marker (it has no log-weight): an error naming the entry (issue 8)
    s[6, 7] = np.inf
    with pytest.raises(ValueError, match=r"scores is \+inf at index \(6, 7\)"):
        sf.ambiguity_log_weights(s, pos, a=0.7, b=0.3, kernel=kernel)


def test_log_weights_no_underflow_and_clamp():
    # dot-product scores in the tens (SimXNS issue 7): linear weights would underflow
    s = np.array([[80.0, 60.0, 40.0, 1e30]])
    got = sf.ambiguity_log_weights(s, [75.0], a=0.5)
    assert np.all(np.isfinite(got))  # a huge but finite score stays a valid candidate
    assert got[0, 3] == -np.finfo(np.float32).max
    w = naive.normalised_weights(got)
    assert w[0, 0] > 0.99 and w[0, 1] > 0


def test_log_weights_memory_layouts_without_copy(tmp_path):
    rng = np.random.default_rng(2)
    s = rng.normal(size=(40, 25)).astype(np.float32)
    pos = rng.normal(size=40)
    ref = sf.ambiguity_log_weights(s, pos)
    np.testing.assert_array_equal(sf.ambiguity_log_weights(np.asfortranarray(s), pos), ref)
    np.save(tmp_path / "s.npy", s)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert not mm.flags.writeable
    np.testing.assert_array_equal(sf.ambiguity_log_weights(mm, pos), ref)
    np.testing.assert_array_equal(sf.ambiguity_log_weights(s[:, ::2], pos), ref[:, ::2])


def test_log_weights_ids_padding_and_missing_positive():
    s = np.zeros((2, 4))
    ids = np.array([[1, 2, -1, 4], [5, 6, 7, 8]])
    got = sf.ambiguity_log_weights(s, [0.0, np.nan], candidate_ids=ids,
                                   fallback="uniform")
    np.testing.assert_array_equal(got, [[0, 0, -np.inf, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="positive_scores"):
        sf.ambiguity_log_weights(s, [0.0, np.nan])


# ---------------------------------------------------------------------------------------------
# alias tables
# ---------------------------------------------------------------------------------------------
logw_rows = st.lists(
    st.one_of(st.floats(-60, 0), st.just(-np.inf), st.floats(-2000, -100)), min_size=1,
    max_size=40)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(logw_rows, min_size=1, max_size=6))
def test_alias_tables_reproduce_weights(rows):
    k = max(len(r) for r in rows)
    lw = np.full((len(rows), k), -np.inf, np.float32)
    for i, r in enumerate(rows):
        lw[i, :len(r)] = r
    t = sf.build_alias(lw)
    ref = naive.normalised_weights(lw)
    np.testing.assert_array_equal(t.n_valid, np.isfinite(lw).sum(1))
    live = t.n_valid > 0  # an empty row's table is never drawn from (sample returns -1)
    np.testing.assert_allclose(naive.alias_weights(t.prob, t.alias)[live], ref[live], atol=1e-6,
                               rtol=0)
    np.testing.assert_allclose(t.weights()[live], ref[live], atol=1e-6, rtol=0)
    # an invalid column is never kept and never an alias target
    for i in range(len(rows)):
        bad = ~np.isfinite(lw[i])
        if (~bad).any():
            assert np.all(t.prob[i][bad] == 0)
            assert not bad[t.alias[i][t.prob[i] < 1]].any()


def test_alias_table_layout_contract():
    t = sf.build_alias(np.zeros((3, 5), np.float32))
    assert t.prob.shape == (3, 5) and t.prob.dtype == np.float32
    assert t.alias.shape == (3, 5) and t.alias.dtype == np.int32
    assert t.n_valid.dtype == np.int32
    np.testing.assert_array_equal(t.prob, 1.0)  # uniform rows: every column keeps itself
    t2 = sf.AliasTables.from_arrays(t.prob, t.alias, t.n_valid, t.logw)
    np.testing.assert_array_equal(t2.packed, t.packed)


# ---------------------------------------------------------------------------------------------
# statistical exactness
# ---------------------------------------------------------------------------------------------
def chi2_pvalue(observed: dict, expected_probs: dict, n_draws: int) -> float:
    """Chi-square goodness of fit; cells with expected count < 5 are pooled into one."""
    assert set(observed) <= set(expected_probs), set(observed) - set(expected_probs)
    keys = list(expected_probs)
    exp = np.array([expected_probs[t] for t in keys]) * n_draws
    obs = np.array([observed.get(t, 0) for t in keys], float)
    big = exp >= 5
    o = list(obs[big])
    e = list(exp[big])
    if (~big).any():
        if exp[~big].sum() < 1e-6:  # cells that essentially never happen must not happen
            if obs[~big].sum() > 0:
                return 0.0
        else:
            o.append(obs[~big].sum())
            e.append(exp[~big].sum())
    o, e = np.array(o), np.array(e)
    e = e * (o.sum() / e.sum())
    if len(o) < 2:
        return 1.0
    return stats.chisquare(o, e).pvalue


def tally(cols):
    out = {}
    for row in map(tuple, cols.tolist()):
        out[row] = out.get(row, 0) + 1
    return out


ROWS = {
    "flat": [0.0] * 5,
    "ordinary": [0.0, -1.0, -2.0, -0.5, -3.0, -1.5],
    "peaked": [0.0, -0.01, -9.0, -12.0, -14.0],
    "very_peaked": [0.0, -40.0, -41.0, -45.0, -300.0],
    "underflow": [0.0, -1000.0, -1001.0, -1002.5, -np.inf],
    "padded": [-np.inf, 0.0, -np.inf, -2.0, -0.3],
}
N_DRAWS = 120_000


@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("n", [1, 3])
def test_sample_without_replacement_is_exact(name, n):
    row = np.array(ROWS[name], np.float32)
    lw = np.tile(row, (N_DRAWS, 1))
    cols = sf.sample(lw, n, seed=11)
    ref = naive.ordered_sample_probs(row, n)
    assert chi2_pvalue(tally(cols), ref, N_DRAWS) > P_MIN


@pytest.mark.parametrize("name", ["ordinary", "very_peaked", "padded"])
def test_sample_with_replacement_is_exact(name):
    row = np.array(ROWS[name], np.float32)
    cols = sf.sample(np.tile(row, (N_DRAWS, 1)), 2, replace=True, seed=5)
    assert chi2_pvalue(tally(cols), naive.with_replacement_probs(row, 2), N_DRAWS) > P_MIN


@pytest.mark.parametrize("name", list(ROWS))
def test_simans_negatives_single_shot_is_exact(name):
    # Laplace kernel with a = 1 and a positive score of 0 maps scores s >= 0 to log-weight -s
    row = np.array(ROWS[name], np.float64)
    k = row.size
    scores = np.tile(np.where(np.isfinite(row), -row, np.nan), (N_DRAWS, 1))
    ids = np.tile(np.arange(k) + 100, (N_DRAWS, 1))
    neg = sf.simans_negatives(ids, scores, np.zeros(N_DRAWS), 3, a=1.0, kernel="laplace", seed=3)
    cols = np.where(neg >= 0, neg - 100, -1)
    lw = naive.log_weights(scores[:1], [0.0], 1.0, 0.0, "laplace")[0]
    assert chi2_pvalue(tally(cols), naive.ordered_sample_probs(lw, 3), N_DRAWS) > P_MIN


def test_exactness_matches_numpy_choice_on_marginals():
    """Rank marginals of a k = 200, n = 15 Gaussian row against numpy Generator.choice."""
    rng = np.random.default_rng(0)
    s = np.sort(rng.normal(0.5, 0.1, 200))[::-1]
    lw = naive.log_weights(s[None], [0.6], 100.0, 0.0, "gaussian")[0]
    p = naive.normalised_weights(lw[None])[0]
    reps = 20_000
    ours = sf.sample(np.tile(lw, (reps, 1)), 15, seed=1)
    g = np.random.default_rng(1)
    theirs = np.array([g.choice(200, 15, replace=False, p=p) for _ in range(reps)])
    a = np.bincount(ours.ravel(), minlength=200)
    b = np.bincount(theirs.ravel(), minlength=200)
    keep = (a + b) > 20
    table = np.vstack([a[keep], b[keep]])
    assert stats.chi2_contingency(table).pvalue > P_MIN
    # the first draw alone must follow p exactly
    first = np.bincount(ours[:, 0], minlength=200)
    keep = p * reps >= 5
    o = np.append(first[keep], first[~keep].sum())
    e = np.append(p[keep], p[~keep].sum()) * reps
    assert stats.chisquare(o, e * o.sum() / e.sum()).pvalue > P_MIN


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(logw_rows, min_size=1, max_size=5), st.integers(1, 45), st.integers(0, 2**63),
       st.booleans())
def test_sample_properties(rows, n, seed, fused):
    k = max(len(r) for r in rows)
    lw = np.full((len(rows), k), -np.inf, np.float32)
    for i, r in enumerate(rows):
        lw[i, :len(r)] = r
    if fused:
        scores = np.where(np.isfinite(lw), -lw.astype(np.float64), np.nan)
        ids = np.arange(lw.size).reshape(lw.shape)
        neg = sf.simans_negatives(ids, scores, np.zeros(len(rows)), n, a=1.0,
                                  kernel="laplace", seed=seed)
        cols = np.where(neg >= 0, neg % k, -1)
    else:
        cols = sf.sample(lw, n, seed=seed)
    assert cols.shape == (len(rows), n)
    for i in range(len(rows)):
        nv = int(np.isfinite(lw[i]).sum())
        got = cols[i][cols[i] >= 0]
        assert got.size == min(n, nv)
        assert np.all(cols[i][:got.size] >= 0) and np.all(cols[i][got.size:] == -1)
        assert len(set(got.tolist())) == got.size  # no duplicates
        assert np.all(np.isfinite(lw[i][got]))  # never an invalid column


def test_a_zero_is_uniform_and_rows_with_few_candidates():
    s = np.zeros((30_000, 4))
    s[:, 3] = np.nan
    ids = np.tile(np.arange(4), (30_000, 1))
    neg = sf.simans_negatives(ids, s, np.full(30_000, 5.0), 2, a=0.0, seed=9)
    first = np.bincount(neg[:, 0], minlength=4)
    assert first[3] == 0
    assert stats.chisquare(first[:3]).pvalue > P_MIN
    few = sf.simans_negatives(ids[:5], s[:5], np.zeros(5), 6)
    assert np.all((few[:, 3:] == -1)) and np.all(np.sort(few[:, :3], 1) == [0, 1, 2])


def test_all_invalid_rows():
    s = np.full((3, 5), np.nan)
    ids = np.zeros((3, 5), np.int64)
    assert np.all(sf.simans_negatives(ids, s, np.zeros(3), 4) == -1)
    assert np.all(sf.sample(np.full((3, 5), -np.inf, np.float32), 4) == -1)
    assert np.all(sf.sample(np.full((3, 5), -np.inf, np.float32), 4, replace=True) == -1)


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------
def _data(n_q=300, k=50, seed=0):
    rng = np.random.default_rng(seed)
    s = -np.sort(-rng.normal(0.5, 0.2, (n_q, k)), axis=1).astype(np.float32)
    ids = rng.permutation(n_q * k * 2)[: n_q * k].reshape(n_q, k).astype(np.int64)
    pos = rng.normal(0.6, 0.2, n_q)
    return ids, s, pos


def test_rows_subsets_and_order_are_consistent():
    ids, s, pos = _data()
    lw = sf.ambiguity_log_weights(s, pos, a=20.0)
    t = sf.build_alias(lw)
    full = sf.sample(t, 15, seed=4, epoch=2)
    np.testing.assert_array_equal(sf.sample(t, 15, seed=4, epoch=2, rows=[7])[0], full[7])
    rows = np.array([299, 3, 3, 150, 0])
    np.testing.assert_array_equal(sf.sample(t, 15, seed=4, epoch=2, rows=rows), full[rows])
    np.testing.assert_array_equal(sf.sample(lw, 15, seed=4, epoch=2), full)
    assert not np.array_equal(sf.sample(t, 15, seed=4, epoch=3), full)
    assert not np.array_equal(sf.sample(t, 15, seed=5, epoch=2), full)
    # serial and parallel kernels agree
    np.testing.assert_array_equal(sf.sample(t, 15, seed=4, epoch=2, parallel=False), full)
    neg = sf.simans_negatives(ids, s, pos, 15, a=20.0, seed=4, epoch=2)
    np.testing.assert_array_equal(
        sf.simans_negatives(ids, s, pos, 15, a=20.0, seed=4, epoch=2, parallel=False), neg)


def test_row_keys_let_a_shard_reproduce_global_draws():
    ids, s, pos = _data()
    full = sf.simans_negatives(ids, s, pos, 10, a=5.0, seed=1)
    shard = np.arange(100, 200)
    part = sf.simans_negatives(ids[shard], s[shard], pos[shard], 10, a=5.0, seed=1,
                               row_keys=shard)
    np.testing.assert_array_equal(part, full[shard])
    smp = sf.SimANSSampler(ids, s, pos, n=10, a=5.0, seed=1)
    smp_shard = sf.SimANSSampler(ids[shard], s[shard], pos[shard], n=10, a=5.0, seed=1,
                                 row_keys=shard)
    np.testing.assert_array_equal(smp_shard.sample(epoch=3), smp.sample(epoch=3)[shard])


def test_int64_offsets_beyond_int32_range():
    # 1.1M rows x 2048 columns = 2.25e9 logical elements (> 2**31): an overlapping strided view
    # keeps the memory tiny while every flat offset r * k + c exceeds the int32 range.
    n_q, k = 1_100_000, 2048
    rng = np.random.default_rng(0)
    base = rng.normal(size=n_q + k).astype(np.float32)
    scores = np.lib.stride_tricks.as_strided(base, (n_q, k), (4, 4), writeable=False)
    ibase = np.arange(n_q + k, dtype=np.int64)
    ids = np.lib.stride_tricks.as_strided(ibase, (n_q, k), (8, 8), writeable=False)
    pos = rng.normal(size=n_q)
    rows = np.array([0, 1_000_001, n_q - 1])
    # the same rows computed alone (with their global keys) must match the full run
    sub = sf.simans_negatives(ids[rows], scores[rows], pos[rows], 15, seed=2, row_keys=rows)
    full = sf.simans_negatives(ids[-200_000:], scores[-200_000:], pos[-200_000:], 15, seed=2,
                               row_keys=np.arange(n_q - 200_000, n_q))
    np.testing.assert_array_equal(full[-1], sub[-1])
    assert sub[1].min() >= 1_000_001 and sub[2].min() >= n_q - 1
    lw = sf.ambiguity_log_weights(scores[-3:], pos[-3:])
    np.testing.assert_array_equal(lw, naive.log_weights(scores[-3:], pos[-3:], 0.5, 0.0,
                                                        "gaussian"))


# ---------------------------------------------------------------------------------------------
# fallbacks and input errors
# ---------------------------------------------------------------------------------------------
def test_fallbacks():
    ids, s, pos = _data(n_q=20, k=30)
    pos = pos.copy()
    pos[[2, 5]] = np.nan
    ids = ids.copy()
    ids[5, 25:] = -1
    neg = sf.simans_negatives(ids, s, pos, 4, fallback="lowest")
    np.testing.assert_array_equal(neg[2], ids[2, 26:30])
    np.testing.assert_array_equal(neg[5], ids[5, 21:25])
    smp = sf.SimANSSampler(ids, s, pos, n=4, fallback="lowest")
    np.testing.assert_array_equal(smp.sample(epoch=7)[[2, 5]], neg[[2, 5]])
    uni = sf.simans_negatives(ids, s, pos, 4, fallback="uniform")
    assert np.all(uni[2] >= 0) and len(set(uni[2])) == 4
    with pytest.raises(ValueError, match="fallback='raise'"):
        sf.simans_negatives(ids, s, pos, 4, fallback="raise")
    with pytest.raises(ValueError, match="fallback"):
        sf.simans_negatives(ids, s, pos, 4, fallback="nope")


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=-1.0), "a must be >= 0"),
    (dict(a=float("nan")), "a must be finite"),
    (dict(b=float("inf")), "b must be finite"),
    (dict(n=0), "n must be >= 1"),
    (dict(n=2.5), "n must be a positive integer"),
    (dict(kernel="cauchy"), "kernel must be one of"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(epoch="1"), "epoch must be an integer"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    ids, s, pos = _data(n_q=5, k=6)
    args = dict(n=3)
    args.update(kwargs)
    n = args.pop("n")
    with pytest.raises(ValueError, match=match):
        sf.simans_negatives(ids, s, pos, n, **args)


def test_bad_shapes_and_dtypes():
    ids, s, pos = _data(n_q=5, k=6)
    with pytest.raises(ValueError, match="candidate_ids must have shape"):
        sf.simans_negatives(ids[:, :5], s, pos, 3)
    with pytest.raises(ValueError, match="candidate_ids must be an integer array"):
        sf.simans_negatives(ids.astype(float), s, pos, 3)
    with pytest.raises(ValueError, match=r"positive_scores must have shape \(5,\)"):
        sf.simans_negatives(ids, s, pos[:4], 3)
    with pytest.raises(ValueError, match="candidate_scores must be a float32 or float64"):
        sf.simans_negatives(ids, s.astype(object), pos, 3)
    with pytest.raises(ValueError, match="candidate_scores must be 2-dimensional"):
        sf.simans_negatives(ids, s[0], pos, 3)
    with pytest.raises(ValueError, match="logw contains NaN"):
        sf.build_alias(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="rows must index rows"):
        sf.sample(np.zeros((2, 2), np.float32), 1, rows=[2])
    with pytest.raises(ValueError, match="row_keys must have shape"):
        sf.sample(np.zeros((2, 2), np.float32), 1, row_keys=[1])


def _grouped_peaked_row(layout):
    """k = 200 log-weights in three tiers far apart: 8 near 0, 5 near -80 (their total is below
    2**-100 of the first tier's, so drawing them needs a re-exponentiation), 8 near -200 (zero
    in float32 relative to the first tier), the rest near -400. With n = 15 a row draws all
    of tier 1, all of tier 2 and 2 of tier 3, across two re-exponentiations. ``sorted``: tiers
    in adjacent columns (the finish scans a short span); ``shuffled``: spread over the row (the
    finish uses the two-level CDF)."""
    rng = np.random.default_rng(42)
    lw = np.concatenate([rng.uniform(-0.7, 0.0, 8), rng.uniform(-80.7, -80.0, 5),
                         rng.uniform(-200.7, -200.0, 8), rng.uniform(-400.7, -400.0, 179)])
    if layout == "shuffled":
        lw = lw[rng.permutation(200)]
    return lw


@pytest.mark.parametrize("layout", ["sorted", "shuffled"])
@pytest.mark.parametrize("path", ["tables", "single_shot"])
def test_peaked_rows_across_rebases_match_numpy_choice(layout, path):
    """Rank of each draw within the successive sample (draw t's column), tier by tier, against
    numpy ``Generator.choice(replace=False, p=...)`` in float64: the finish after the rejection
    phase (alias tables: weights re-exponentiated; single shot: the row's CDF reused)."""
    lw = _grouped_peaked_row(layout)
    reps = 20_000
    if path == "tables":
        ours = sf.sample(np.tile(lw.astype(np.float32), (reps, 1)), 15, seed=7)
    else:  # Laplace, a = 1, positive score 0: log-weight -s for s >= 0
        scores = np.tile(-lw, (reps, 1))
        ids = np.tile(np.arange(200), (reps, 1))
        ours = sf.simans_negatives(ids, scores, np.zeros(reps), 15, a=1.0, kernel="laplace",
                                   seed=7)
    assert ours.shape == (reps, 15) and np.all(ours >= 0)
    assert all(len(set(r)) == 15 for r in ours[:500].tolist())
    p = np.exp(lw - lw.max())
    p /= p.sum()
    g = np.random.default_rng(3)
    theirs = np.array([g.choice(200, 15, replace=False, p=p) for _ in range(reps)])
    order = np.argsort(-lw)
    tier1, tier2, tier3 = order[:8], order[8:13], order[13:21]
    for name, sel in (("ours", ours), ("numpy", theirs)):  # the tiers come out in order
        assert set(np.unique(sel[:, :8])) <= set(tier1.tolist()), name
        assert set(np.unique(sel[:, 8:13])) <= set(tier2.tolist()), name
        assert set(np.unique(sel[:, 13:])) <= set(tier3.tolist()), name
    # the order inside each tier: the column at draw t, for t in 0, 4, 8, 11, 13, 14
    for t in (0, 4, 8, 11, 13, 14):
        a = np.bincount(ours[:, t], minlength=200)
        b = np.bincount(theirs[:, t], minlength=200)
        keep = (a + b) > 10
        assert stats.chi2_contingency(np.vstack([a[keep], b[keep]])).pvalue > P_MIN, t
