"""backend="torch" exact top-k (simans_fast.torch.topk.topk_torch), run on the CPU.

References: the numba backend (sf.topk) and the plain-NumPy naive_topk. Integer-valued data
makes every score exact in float32 whatever the summation order, with many ties, so there the
results must be identical bit for bit (ties by lower id included); random float data checks
that the ids agree wherever the scores are not tied.
"""

import numpy as np
import pytest
import scipy.sparse as sps
import torch

import simans_fast as sf
from simans_fast import candidates_torch as tt
from simans_fast.torch.topk import topk_torch

from naive_topk import check_topk_close, naive_topk

BLOCKS = [(None, None), (7, 64), (40, 19), (3, 1000)]
SMALL = (8, 64)  # tiles small enough that the test data spans many of them


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # two cores shared with other jobs: tiny products are much faster on one thread
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setitem(tt._TILES, "cpu", SMALL)
    return SMALL


def _random(n_q=40, n_d=1000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_q, d)).astype(np.float32)
    c = rng.standard_normal((n_d, d)).astype(np.float32)
    return q, c, rng


def _integer(n_q=25, n_d=300, d=6, seed=1):
    rng = np.random.default_rng(seed)
    q = rng.integers(-3, 4, (n_q, d)).astype(np.float32)
    c = rng.integers(-2, 3, (n_d, d)).astype(np.float32)
    return q, c, rng


def _exclusions(rng, n_q, n_d, m=6):
    ex = [rng.choice(n_d, int(rng.integers(0, m)), replace=False) for _ in range(n_q)]
    ex[0] = np.array([0, n_d - 1, n_d // 2])  # both ends of the corpus
    return ex


def _untied(ref_scores_k1, tol):
    """(n_q, k) mask of positions whose reference score is more than ``tol`` away from both
    neighbours (the (k+1)-th score included): there the ids must agree."""
    s = ref_scores_k1.astype(np.float64)
    gap = np.abs(np.diff(s, axis=1))
    gap = np.where(np.isfinite(gap), gap, np.inf)
    left = np.concatenate([np.full((s.shape[0], 1), np.inf), gap[:, :-1]], axis=1)
    right = gap
    return (left > tol) & (right > tol)


def _assert_agree_untied(got, want_ids, want_scores, ref_scores_k1, tol=1e-4, min_frac=0.9):
    mask = _untied(ref_scores_k1, tol)
    assert mask.mean() > min_frac  # the check is not vacuous
    assert np.array_equal(got.ids[mask], want_ids[mask])
    np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_random_data_matches_numba_and_naive(metric, monkeypatch):
    q, c, rng = _random()
    k = 25
    ex = _exclusions(rng, q.shape[0], c.shape[0])
    want = sf.topk(q, c, k, metric=metric, exclude=ex)
    ref_ids, ref_sc = naive_topk(q, c, k + 1, metric, ex)
    for tiles in (None, SMALL, (16, 8)):  # default tiles, many tiles, k > tile width
        if tiles:
            monkeypatch.setitem(tt._TILES, "cpu", tiles)
        first = None
        for qb, cb in BLOCKS:
            got = topk_torch(q, c, k, metric=metric, exclude=ex, query_block=qb,
                             corpus_block=cb)
            assert got.backend == "torch"
            assert got.ids.dtype == np.int64 and got.scores.dtype == np.float32
            _assert_agree_untied(got, want.ids, want.scores, ref_sc)
            _assert_agree_untied(got, ref_ids[:, :k], ref_sc[:, :k], ref_sc)
            check_topk_close(got.ids, got.scores, q, c, k, metric, ex)
            if first is None:
                first = got
                if tiles is None:  # and neither do threads
                    two = topk_torch(q, c, k, metric=metric, exclude=ex, n_threads=2)
                    assert np.array_equal(two.ids, got.ids)
                    assert np.array_equal(two.scores, got.scores)
            else:  # fixed-shape products: blocks change nothing, bit for bit
                assert np.array_equal(got.ids, first.ids)
                assert np.array_equal(got.scores, first.scores)


def test_offsets_reproduce_the_whole_problem_bit_for_bit(small_tiles):
    from simans_fast.torch.distributed import merge_topk

    q, c, rng = _random(n_q=30, n_d=500, d=16, seed=7)
    whole = topk_torch(q, c, 12, metric="cosine")
    for a, b in ((0, 13), (13, 30), (5, 6)):  # query chunks at any offset
        part = topk_torch(q[a:b], c, 12, metric="cosine", query_offset=a)
        assert np.array_equal(part.ids, whole.ids[a:b])
        assert np.array_equal(part.scores, whole.scores[a:b])
    cuts = [0, 77, 300, 500]  # corpus shards, merged as sharded_topk merges them
    ids, sc = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        p = topk_torch(q, c[lo:hi], 12, metric="cosine", corpus_offset=lo)
        ids.append(np.where(p.ids >= 0, p.ids + lo, -1))
        sc.append(p.scores)
    mids, msc = merge_topk(np.concatenate(sc, 1), np.concatenate(ids, 1), 12)
    assert np.array_equal(mids, whole.ids) and np.array_equal(msc, whole.scores)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_integer_data_identical_to_numba_with_ties(metric, small_tiles):
    q, c, rng = _integer()
    c[5] = 0.0  # an all-zero row (cosine score 0)
    ex = _exclusions(rng, q.shape[0], c.shape[0])
    for k in (1, 17, 40):
        want = sf.topk(q, c, k, metric=metric, exclude=ex)
        if metric == "ip":
            ref_ids, ref_sc = naive_topk(q, c, k, metric, ex)
            assert np.array_equal(want.ids, ref_ids) and np.array_equal(want.scores, ref_sc)
        for qb, cb in BLOCKS + [(25, 41), (1, 300)]:
            got = topk_torch(torch.from_numpy(q), torch.from_numpy(c), k, metric=metric,
                             exclude=ex, query_block=qb, corpus_block=cb)
            if metric == "cosine":  # normalised products are not exact: compare as floats
                _assert_agree_untied(got, want.ids, want.scores,
                                     naive_topk(q, c, k + 1, metric, ex)[1], tol=1e-5,
                                     min_frac=0.5)
                check_topk_close(got.ids, got.scores, q, c, k, metric, ex)
            else:
                assert np.array_equal(got.ids, want.ids), (k, qb, cb)
                assert np.array_equal(got.scores, want.scores), (k, qb, cb)


def test_exclusion_forms_padding_and_k_above_corpus(small_tiles):
    q, c, rng = _integer(n_q=6, n_d=30)
    ex = _exclusions(rng, 6, 30)
    ex[2] = np.arange(30)         # everything excluded: a row of padding
    ex[3] = np.arange(25)         # five documents left
    ptr = np.zeros(7, np.int64)
    np.cumsum([len(e) for e in ex], out=ptr[1:])
    csr_pair = (ptr, np.concatenate(ex))
    csr = sps.csr_matrix((np.ones(ptr[-1]), csr_pair[1], ptr), shape=(6, 30))
    for k in (10, 45):
        want = sf.topk(q, c, k, exclude=ex)
        ref_ids, ref_sc = naive_topk(q, c, k, "ip", ex)
        assert np.array_equal(want.ids, ref_ids)
        for form in (ex, csr_pair, csr):
            got = topk_torch(q, c, k, exclude=form, corpus_block=8)
            assert np.array_equal(got.ids, ref_ids) and np.array_equal(got.scores, ref_sc)
        assert (got.ids[2] == -1).all() and np.isneginf(got.scores[2]).all()
        assert (got.ids[3, :5] >= 25).all() and (got.ids[3, 5:] == -1).all()


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_reduced_precision_inputs(half, tmp_path, small_tiles):
    q, c, rng = _random(n_q=30, n_d=800, d=32, seed=3)
    ex = _exclusions(rng, 30, 800)
    tdt = getattr(torch, half)
    c_t = torch.from_numpy(c).to(tdt)
    c_vals = c_t.float().numpy()  # the values the reduced corpus holds, exactly
    want = sf.topk(q, c_vals, 20, exclude=ex) if half == "bfloat16" else \
        sf.topk(q, c.astype(np.float16), 20, exclude=ex)
    ref_sc = naive_topk(q, c_vals, 21, "ip", ex)[1]
    for qb, cb in BLOCKS:
        got = topk_torch(q, c_t, 20, exclude=ex, query_block=qb, corpus_block=cb)
        _assert_agree_untied(got, want.ids, want.scores, ref_sc)
    # both inputs reduced: the product takes the reduced dtype (float32 on the CPU)
    q_t = torch.from_numpy(q).to(tdt)
    got = topk_torch(q_t, c_t, 20, exclude=ex, metric="cosine")
    want = sf.topk(q_t.float().numpy(), c_vals, 20, exclude=ex, metric="cosine")
    _assert_agree_untied(got, want.ids, want.scores,
                         naive_topk(q_t.float().numpy(), c_vals, 21, "cosine", ex)[1])
    # explicit dtype rounds float32 inputs first
    got = topk_torch(q, c, 20, exclude=ex, dtype=half)
    want = sf.topk(q_t.float().numpy(), c_vals, 20, exclude=ex)
    assert np.array_equal(got.ids, want.ids)
    if half == "float16":  # a float16 memory map, read block by block
        path = tmp_path / "c16.npy"
        np.save(path, c.astype(np.float16))
        mm = np.load(path, mmap_mode="r")
        got = topk_torch(q, mm, 20, exclude=ex, corpus_block=100)
        want = topk_torch(q, c.astype(np.float16), 20, exclude=ex)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.scores, want.scores)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_reduced_product_path(metric, monkeypatch, small_tiles):
    # the CUDA path (float16 operands, float32 output, cosine scaled after the product),
    # emulated on the CPU: an exact float32 product of the float16 operands
    calls = []

    def fake_scores(Q, C, torch_):
        if Q.dtype != torch.float32:
            calls.append(Q.dtype)
            return torch.matmul(Q.float(), C.float().T)
        return torch.matmul(Q, C.T)

    monkeypatch.setattr(tt, "_reduced_mm_supported", lambda dt, dev, torch_: True)
    monkeypatch.setattr(tt, "_scores", fake_scores)
    q, c, rng = _random(n_q=20, n_d=500, d=16, seed=4)
    q16, c16 = q.astype(np.float16), c.astype(np.float16)
    got = topk_torch(q16, c16, 15, metric=metric, corpus_block=70)
    assert calls and all(dt == torch.float16 for dt in calls)
    want = sf.topk(q16, c16, 15, metric=metric)
    _assert_agree_untied(got, want.ids, want.scores,
                         naive_topk(q16, c16, 16, metric)[1])


def test_never_a_full_score_matrix(monkeypatch, small_tiles):
    shapes = []
    real = tt._scores

    def spy(Q, C, torch_):
        S = real(Q, C, torch_)
        shapes.append(tuple(S.shape))
        return S

    monkeypatch.setattr(tt, "_scores", spy)
    q, c, _ = _random(n_q=50, n_d=900, d=8)
    got = topk_torch(q, c, 10, query_block=16, corpus_block=128)
    assert set(shapes) == {SMALL}  # every product has the fixed tile shape
    assert len(shapes) >= 7 * 15  # every (query tile, corpus tile) pair at least once
    assert np.array_equal(got.ids, sf.topk(q, c, 10).ids)


def test_overflowing_scores_tensors_out_threads_and_empty(small_tiles):
    q, c, _ = _integer(n_q=8, n_d=60)
    c[17] = 0.0
    c[17, 0] = 3e38  # ip: a huge finite score; l2: 2 * ip overflows, inf - inf = NaN
    for metric in ("ip", "l2"):
        want = sf.topk(q, c, 12, metric=metric)
        got = topk_torch(q, c, 12, metric=metric)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.scores, want.scores)
    assert 17 not in got.ids  # a NaN score is never returned
    prev = torch.get_num_threads()
    got = topk_torch(torch.from_numpy(q), torch.from_numpy(c), 12, corpus_block=9,
                     return_tensors=True, n_threads=2)
    assert torch.get_num_threads() == prev
    want = sf.topk(q, c, 12)
    assert isinstance(got.ids, torch.Tensor) and got.ids.dtype == torch.int64
    assert got.scores.dtype == torch.float32
    assert np.array_equal(got.ids.numpy(), want.ids)
    assert np.array_equal(got.scores.numpy(), want.scores)
    ids, scores = topk_torch(q[:0], c, 3)  # Candidates unpacks like sf.topk's
    assert ids.shape == (0, 3) and scores.shape == (0, 3)
    got = topk_torch(q, c[:0], 3)
    assert (got.ids == -1).all() and np.isneginf(got.scores).all()
    x = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)  # float64 -> float32
    assert np.array_equal(topk_torch(x, x, 2).ids, [[0, 1]] * 3)


def test_bad_input():
    q = np.zeros((3, 4), np.float32)
    c = np.zeros((5, 4), np.float32)
    bad = [
        (dict(queries=torch.zeros(3, 4, dtype=torch.int64)), "queries"),
        (dict(corpus=torch.zeros(5)), "corpus"),
        (dict(corpus=np.zeros((5, 3), np.float32)), "dimension"),
        (dict(k=0), "k"),
        (dict(metric="dot"), "metric"),
        (dict(exclude=[[7]] * 3), "exclude"),
        (dict(exclude=[[1]] * 2), "exclude"),
        (dict(query_block=0), "query_block"),
        (dict(corpus_block=1.5), "corpus_block"),
        (dict(device="warp-drive"), "device"),
        (dict(dtype=torch.int8), "dtype"),
        (dict(dtype="float8"), "dtype"),
        (dict(return_tensors="yes"), "return_tensors"),
        (dict(query_offset=-1), "query_offset"),
        (dict(corpus_offset=2.0), "corpus_offset"),
        (dict(corpus=np.where(np.arange(20).reshape(5, 4) == 13, np.nan, c)), "corpus row 3"),
        (dict(queries=torch.tensor(q).index_fill(0, torch.tensor([2]), float("inf"))),
         "queries row 2"),
    ]
    if not torch.cuda.is_available():
        bad.append((dict(device="cuda"), "CUDA"))
    for kw, word in bad:
        args = dict(queries=q, corpus=c, k=2)
        args.update(kw)
        with pytest.raises(ValueError, match=word):
            topk_torch(args.pop("queries"), args.pop("corpus"), args.pop("k"), **args)


class _AdversarialTorch:
    """torch, except that ``topk`` of float scores keeps the *highest* column among equal
    values (torch.topk does not specify which tied element it keeps; on the CPU it happens to
    keep the lowest, on CUDA it may keep any)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def topk(x, k, dim=-1, largest=True, sorted=True):
        if x.dtype != torch.float32:
            return torch.topk(x, k, dim=dim, largest=largest, sorted=sorted)
        v, i = torch.topk(x.flip(1), k, dim=1, largest=largest, sorted=sorted)
        return torch.return_types.topk((v, x.shape[1] - 1 - i))


@pytest.mark.parametrize("tiles", [(8, 512), (8, 64)])  # the corpus in one tile, in five
def test_ties_at_the_cut_keep_lower_ids_whatever_topk_keeps(monkeypatch, tiles):
    monkeypatch.setitem(tt._TILES, "cpu", tiles)
    monkeypatch.setattr(tt, "_torch", lambda: _AdversarialTorch())
    q, c, rng = _integer()
    ex = _exclusions(rng, q.shape[0], c.shape[0])
    for k in (3, 17, 40):
        want = sf.topk(q, c, k, exclude=ex)
        got = topk_torch(q, c, k, exclude=ex)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.scores, want.scores)


def test_sf_topk_backend_torch_dispatches():
    """``sf.topk(..., backend="torch")`` is the torch backend, and agrees with numba's ids."""
    import simans_fast as sf
    from simans_fast.torch import topk_torch

    rng = np.random.default_rng(5)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    c = rng.normal(size=(300, 16)).astype(np.float32)
    got = sf.topk(q, c, 7, backend="torch", exclude=[[1, 2]] * 20)
    want = topk_torch(q, c, 7, exclude=[[1, 2]] * 20)
    assert got.backend == "torch"
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    ref = sf.topk(q, c, 7, backend="numba", exclude=[[1, 2]] * 20)
    np.testing.assert_array_equal(got.ids, ref.ids)
    with pytest.raises(ValueError, match="device and dtype are only used by backend='torch'"):
        sf.topk(q, c, 7, backend="numba", device="cpu")


def test_n_threads_is_the_package_thread_policy_during_the_call(monkeypatch):
    """``n_threads`` limits torch's pool and Numba's during the call (one rule:
    ``_config.thread_limits``) and both come back afterwards, also after an error."""
    import numba

    import simans_fast.candidates_torch as ct

    seen = []
    real = ct._run

    def spy(*a, **k):
        seen.append((torch.get_num_threads(), numba.get_num_threads()))
        return real(*a, **k)

    monkeypatch.setattr(ct, "_run", spy)
    q, c, _ = _integer(n_q=4, n_d=30)
    before = (torch.get_num_threads(), numba.get_num_threads())
    topk_torch(q, c, 5, n_threads=1)
    assert seen == [(1, 1)] and (torch.get_num_threads(), numba.get_num_threads()) == before

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(ct, "_run", boom)
    with pytest.raises(RuntimeError, match="boom"):
        topk_torch(q, c, 5, n_threads=1)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
