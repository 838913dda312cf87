"""simans_negatives_torch: the core path (zero-copy) and the torch-native path."""

import numpy as np
import pytest
import torch
from scipy import stats

import simans_fast as sf
from simans_fast.torch import _rng, simans_negatives_torch
from simans_fast.torch.sampling import tensor_to_numpy

import naive_torch as nv

IMPLS = ["core", "torch"]


def _random_inputs(seed, n_q=40, k=12, n_docs=500):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(n_docs, k, replace=False) for _ in range(n_q)]).astype(np.int64)
    scores = rng.normal(0, 1, (n_q, k)).astype(np.float32)
    pos = rng.normal(0.5, 0.5, n_q)
    ids[0, 7:] = -1                 # padding
    scores[1, [2, 5]] = np.nan      # invalid scores
    scores[2, 3] = -np.inf
    ids[3, 4] = -1                 # padding, whatever its score
    scores[3, 4] = np.inf
    pos[4] = np.nan                 # unknown positive -> fallback
    pos[5] = np.nan
    ids[6, 2:] = -1                 # fewer valid candidates than n
    return ids, scores, pos


# ------------------------------------------------------------------------------------ rng
@pytest.mark.parametrize("seed,epoch", [(0, 0), (7, 3), (-1, 2**64 - 1), (2**63 + 5, 12)])
def test_torch_rng_bits_equal_core_rng(seed, epoch):
    keys = np.array([0, 1, 2, -5, 2**62, -(2**63), 123456789], np.int64)
    want = sf.rng.uniforms(seed, epoch, keys, 9)
    got = _rng.uniforms(_rng.stream_states(seed, epoch, torch.from_numpy(keys)), 9).numpy()
    assert np.array_equal(want, got)


# ------------------------------------------------------------------------------------ core path
def test_core_path_equals_core_simans_negatives():
    ids, scores, pos = _random_inputs(1)
    for fallback in ("lowest", "uniform"):
        for kernel in ("gaussian", "laplace"):
            want = sf.simans_negatives(ids, scores, pos, 5, a=1.5, b=0.2, kernel=kernel, seed=3,
                                       epoch=2, fallback=fallback)
            got = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                         torch.from_numpy(pos), 5, a=1.5, b=0.2, kernel=kernel,
                                         seed=3, epoch=2, fallback=fallback)
            assert got.dtype == torch.int64 and got.device.type == "cpu"
            assert np.array_equal(got.numpy(), want)


def test_core_path_row_keys_and_several_positives():
    ids, scores, pos = _random_inputs(2)
    keys = np.arange(100, 100 + ids.shape[0], dtype=np.int64)
    want = sf.simans_negatives(ids, scores, pos, 4, row_keys=keys, seed=9)
    got = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                 torch.from_numpy(pos), 4, row_keys=torch.from_numpy(keys),
                                 seed=9)
    assert np.array_equal(got.numpy(), want)
    pos2 = np.stack([pos, pos - 0.3], axis=1)
    want = sf.simans_negatives(ids, scores, pos2, 4, seed=9)
    got = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                 torch.from_numpy(pos2), 4, seed=9)
    assert np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_core_path_low_precision_scores(dtype):
    ids, scores, pos = _random_inputs(3)
    s = torch.from_numpy(scores).to(dtype)
    p = torch.from_numpy(pos).to(dtype)
    want = sf.simans_negatives(ids, s.float().numpy() if dtype != torch.float64 else s.numpy(),
                               p.float().numpy() if dtype != torch.float64 else p.numpy(), 5)
    got = simans_negatives_torch(torch.from_numpy(ids), s, p, 5)
    assert np.array_equal(got.numpy(), want)


def test_cpu_tensors_are_shared_not_copied():
    t = torch.randn(5, 4)
    a = tensor_to_numpy(t, "x", floating=True)
    assert np.shares_memory(a, t.numpy())
    t.requires_grad_(True)
    a = tensor_to_numpy(t, "x", floating=True)
    assert np.shares_memory(a, t.detach().numpy())
    i = torch.arange(12).reshape(3, 4)
    assert np.shares_memory(tensor_to_numpy(i, "ids"), i.numpy())
    h = torch.randn(3, 4).half()
    assert tensor_to_numpy(h, "x", floating=True).dtype == np.float32


def test_requires_grad_scores_work():
    ids, scores, pos = _random_inputs(4)
    s = torch.from_numpy(scores).requires_grad_(True)
    got = simans_negatives_torch(torch.from_numpy(ids), s, torch.from_numpy(pos), 3)
    assert np.array_equal(got.numpy(), sf.simans_negatives(ids, scores, pos, 3))


# ------------------------------------------------------------------------------------ distribution
def _tuple_counts(out_cols, k, n):
    code = np.zeros(out_cols.shape[0], np.int64)
    for t in range(n):
        code = code * k + out_cols[:, t]
    return np.bincount(code, minlength=k ** n)


def _chi2_against_exact(impl, ids_row, scores_row, pos, n, a, b, kernel, draws, seed):
    k = ids_row.size
    ids = np.tile(ids_row, (draws, 1))
    scores = np.tile(scores_row.astype(np.float32), (draws, 1))
    p = np.full(draws, pos)
    out = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                 torch.from_numpy(p), n, a=a, b=b, kernel=kernel, seed=seed,
                                 epoch=1, impl=impl).numpy()
    col_of = {int(d): c for c, d in enumerate(ids_row) if d >= 0}
    assert (out >= 0).all()
    cols = np.vectorize(col_of.__getitem__)(out)
    assert all(len(set(r)) == n for r in cols[:2000].tolist())  # no repeats within a row
    w = np.exp(nv.log_weights(scores_row.astype(np.float32), pos, a, b, kernel))
    w[ids_row < 0] = 0.0
    probs = nv.ordered_tuple_probs(w, n)
    counts = _tuple_counts(cols, k, n)
    obs, exp = [], []
    for tup, pr in probs.items():
        code = 0
        for c in tup:
            code = code * k + c
        obs.append(counts[code])
        exp.append(pr * draws)
    assert sum(obs) == draws  # only tuples of valid, distinct columns occurred
    exp = np.asarray(exp)
    assert exp.min() >= 5
    return stats.chisquare(obs, exp).pvalue


@pytest.mark.parametrize("impl", IMPLS)
def test_distribution_exact_k5_n3_gaussian(impl):
    ids_row = np.array([10, 11, 12, 13, 14], np.int64)
    scores_row = np.array([1.0, 0.6, 0.2, -0.1, 0.5])
    p = _chi2_against_exact(impl, ids_row, scores_row, 0.5, 3, 2.0, 0.0, "gaussian", 100_000,
                            seed=11)
    assert p > 1e-3, p


@pytest.mark.parametrize("impl", IMPLS)
def test_distribution_exact_invalid_columns_n2_laplace(impl):
    # column 3 has a NaN score, column 4 is padding: 4 valid candidates, 12 ordered pairs
    ids_row = np.array([20, 21, 22, 23, -1, 25], np.int64)
    scores_row = np.array([2.0, 1.2, 0.4, np.nan, 1.0, -0.5])
    p = _chi2_against_exact(impl, ids_row, scores_row, 1.0, 2, 1.5, 0.3, "laplace", 100_000,
                            seed=5)
    assert p > 1e-3, p


def test_torch_path_uniform_fallback_distribution():
    ids_row = np.array([1, 2, 3, 4, 5], np.int64)
    draws = 30_000
    ids = np.tile(ids_row, (draws, 1))
    scores = np.tile(np.array([3.0, 1.0, np.nan, -2.0, 0.0], np.float32), (draws, 1))
    out = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                 torch.full((draws,), float("nan")), 2, fallback="uniform",
                                 impl="torch", seed=2).numpy()
    assert set(np.unique(out).tolist()) == {1, 2, 4, 5}
    codes = out[:, 0] * 10 + out[:, 1]
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 12  # all ordered pairs of the 4 valid columns
    assert stats.chisquare(counts).pvalue > 1e-3


# ------------------------------------------------------------------------------------ torch path
def test_torch_path_semantics_match_core():
    ids, scores, pos = _random_inputs(6)
    n = 5
    got = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                                 torch.from_numpy(pos), n, a=0.7, seed=4, impl="torch").numpy()
    core = sf.simans_negatives(ids, scores, pos, n, a=0.7, seed=4)
    assert got.shape == core.shape and got.dtype == np.int64
    for r in range(ids.shape[0]):
        valid = (ids[r] >= 0) & np.isfinite(scores[r])
        row = got[r]
        m = min(n, int(valid.sum()))
        # same padding as the core, valid distinct ids first
        assert np.array_equal(row >= 0, core[r] >= 0)
        assert (row[:m] >= 0).all() and (row[m:] == -1).all()
        assert len(set(row[:m].tolist())) == m
        assert set(row[:m].tolist()) <= set(ids[r][valid].tolist())
        if not np.isfinite(pos[r]):  # "lowest" fallback is deterministic: equal to the core
            assert np.array_equal(row, core[r])
            want = nv.lowest_columns(valid, n)
            assert np.array_equal(row, np.where(want >= 0, ids[r][np.maximum(want, 0)], -1))


def test_torch_path_reproducible_and_keyed_by_row():
    ids, scores, pos = _random_inputs(7)
    T = [torch.from_numpy(x) for x in (ids, scores, pos)]
    a = simans_negatives_torch(*T, 4, seed=1, epoch=0, impl="torch")
    assert torch.equal(a, simans_negatives_torch(*T, 4, seed=1, epoch=0, impl="torch"))
    assert not torch.equal(a, simans_negatives_torch(*T, 4, seed=1, epoch=1, impl="torch"))
    assert not torch.equal(a, simans_negatives_torch(*T, 4, seed=2, epoch=0, impl="torch"))
    # a shard of the rows with its global keys reproduces those rows
    sub = simans_negatives_torch(T[0][10:25], T[1][10:25], T[2][10:25], 4, seed=1, epoch=0,
                                 row_keys=torch.arange(10, 25), impl="torch")
    assert torch.equal(sub, a[10:25])


def test_torch_path_n_larger_than_k_and_empty():
    ids = torch.tensor([[5, 6, 7]])
    s = torch.tensor([[0.1, 0.2, 0.3]])
    out = simans_negatives_torch(ids, s, torch.tensor([0.2]), 5, impl="torch")
    assert out.shape == (1, 5)
    assert sorted(out[0, :3].tolist()) == [5, 6, 7] and out[0, 3:].tolist() == [-1, -1]
    out = simans_negatives_torch(torch.zeros((0, 3), dtype=torch.int64), torch.zeros((0, 3)),
                                 torch.zeros(0), 2, impl="torch")
    assert out.shape == (0, 2)


def test_torch_path_large_scores_and_peaked_rows_do_not_underflow():
    # dot-product scores in the tens (SimXNS issue 7) and a very sharp kernel
    ids = torch.arange(6).repeat(200, 1)
    s = torch.tensor([[80.0, 79.0, 60.0, 40.0, 20.0, 0.0]]).repeat(200, 1)
    out = simans_negatives_torch(ids, s, torch.full((200,), 79.0), 3, a=1000.0, impl="torch")
    assert (out[:, 0] == 1).all()      # the candidate at the positive's score always first
    assert (out[:, 1] == 0).all()      # then the next closest (weight e^-1000 vs e^-361000)
    assert (out >= 0).all()


def test_torch_path_half_precision_inputs():
    ids, scores, pos = _random_inputs(8)
    for dt in (torch.float16, torch.bfloat16):
        out = simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores).to(dt),
                                     torch.from_numpy(pos).to(dt), 4, impl="torch")
        assert out.dtype == torch.int64 and out.shape == (ids.shape[0], 4)


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("impl", IMPLS)
def test_fallback_raise(impl):
    ids, scores, pos = _random_inputs(9)
    with pytest.raises(ValueError, match="fallback='raise'"):
        simans_negatives_torch(torch.from_numpy(ids), torch.from_numpy(scores),
                               torch.from_numpy(pos), 3, fallback="raise", impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments(impl):
    ids = torch.zeros((2, 3), dtype=torch.int64)
    s = torch.zeros((2, 3))
    p = torch.zeros(2)
    with pytest.raises(ValueError, match="impl"):
        simans_negatives_torch(ids, s, p, 2, impl="cuda")
    with pytest.raises(ValueError, match="candidate_ids"):
        simans_negatives_torch(ids[:1], s, p, 2, impl=impl)
    with pytest.raises(ValueError, match="positive_scores"):
        simans_negatives_torch(ids, s, p[:1], 2, impl=impl)
    with pytest.raises(ValueError, match="n must"):
        simans_negatives_torch(ids, s, p, 0, impl=impl)
    with pytest.raises(ValueError, match="a must be >= 0"):
        simans_negatives_torch(ids, s, p, 2, a=-1.0, impl=impl)
    with pytest.raises(ValueError, match="kernel"):
        simans_negatives_torch(ids, s, p, 2, kernel="cauchy", impl=impl)
    with pytest.raises(ValueError, match="fallback"):
        simans_negatives_torch(ids, s, p, 2, fallback="skip", impl=impl)
    with pytest.raises(ValueError, match="candidate_ids must be an integer"):
        simans_negatives_torch(s, s, p, 2, impl=impl)
    with pytest.raises(ValueError, match="row_keys"):
        simans_negatives_torch(ids, s, p, 2, row_keys=torch.zeros(3, dtype=torch.int64),
                               impl=impl)


def test_mixed_devices_rejected():
    ids = torch.zeros((2, 3), dtype=torch.int64)
    with pytest.raises(ValueError, match="one device"):
        simans_negatives_torch(ids, torch.zeros((2, 3), device="meta"), torch.zeros(2), 2)


@pytest.mark.parametrize("impl", ["core", "torch"])
def test_value_rules_equal_core(impl):
    """Both implementations apply the core's rules: +inf on a real candidate, an id below -1
    and an infinite positive are errors naming the parameter; +inf on id -1 is padding."""
    ids, scores, pos = _random_inputs(3)
    t = lambda x: torch.as_tensor(np.ascontiguousarray(x))  # noqa: E731
    bad = scores.copy()
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"candidate_scores is \+inf at index \(7, 1\)"):
        simans_negatives_torch(t(ids), t(bad), t(pos), 3, impl=impl)
    bad_ids = ids.copy()
    bad_ids[8, 2] = -2
    with pytest.raises(ValueError, match=r"candidate_ids .* -2 at index \(8, 2\)"):
        simans_negatives_torch(t(bad_ids), t(scores), t(pos), 3, impl=impl)
    bad_pos = pos.copy()
    bad_pos[9] = -np.inf
    with pytest.raises(ValueError, match=r"positive_scores is -inf at index \(9,?\)"):
        simans_negatives_torch(t(ids), t(scores), t(bad_pos), 3, impl=impl)
    out = simans_negatives_torch(t(ids), t(scores), t(pos), 3, impl=impl).numpy()
    assert set(out[3]) <= set(ids[3][np.isfinite(scores[3]) & (ids[3] >= 0)].tolist())
