"""topk(prefilter="bfloat16"): the certified bfloat16 first pass (simans_fast/candidates_bf16.py).

The result must be the exact top-k of :func:`simans_fast.rescore`'s scores over the whole corpus
(ties by lower id), whatever the blocks, threads, query order, or how often the certificate
fails; and the error bound the certificate rests on must hold for torch's bfloat16 product."""

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import simans_fast as sf  # noqa: E402
from simans_fast import candidates_bf16 as B  # noqa: E402
from simans_fast._validate import ParameterError  # noqa: E402

from naive_topk import check_topk_close  # noqa: E402


def _clustered(rng, n_d, n_q, d, dtype=np.float32, dups=0):
    """Clustered unit rows (scores dense near each query's k-th place), ``dups`` exact copies
    of one document, queries near documents."""
    centres = rng.standard_normal((20, d))
    c = centres[rng.integers(0, 20, n_d)] + 0.7 * rng.standard_normal((n_d, d))
    if dups:
        c[rng.choice(n_d, dups, replace=False)] = c[0]
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[rng.integers(0, n_d, n_q)] + 0.3 * rng.standard_normal((n_q, d))
    return q.astype(np.float32), c.astype(dtype)


def _reference(q, c, k, metric, exclude):
    """Plain NumPy: every pair scored by sf.rescore, ranked by score then lower id."""
    n_q, n_d = q.shape[0], c.shape[0]
    full = sf.rescore(q, c, np.tile(np.arange(n_d), (n_q, 1)), metric=metric).astype(np.float64)
    for i, e in enumerate(exclude or []):
        full[i, list(e)] = -np.inf
    ids = np.full((n_q, k), -1, np.int64)
    scores = np.full((n_q, k), -np.inf, np.float32)
    for i in range(n_q):
        order = np.lexsort((np.arange(n_d), -full[i]))
        order = order[np.isfinite(full[i][order])][:k]
        ids[i, :order.size] = order
        scores[i, :order.size] = full[i, order]
    return ids, scores


@pytest.mark.parametrize("metric", ["ip", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bf16_is_the_exact_top_k_of_rescored_scores(metric, dtype):
    rng = np.random.default_rng(7)
    q, c = _clustered(rng, 3000, 37, 48, dtype=dtype, dups=40)
    if metric == "ip":
        q = q * rng.uniform(0.5, 3.0, (q.shape[0], 1)).astype(np.float32)  # not unit norm
    exclude = [rng.choice(c.shape[0], int(rng.integers(0, 6)), replace=False)
               for _ in range(q.shape[0])]
    for k in (1, 10, 150):
        got = sf.topk(q, c, k, metric=metric, exclude=exclude, prefilter="bfloat16")
        ids, scores = _reference(q, c, k, metric, exclude)
        np.testing.assert_array_equal(got.ids, ids)
        np.testing.assert_array_equal(got.scores, scores)
        # and it is an exact top-k of the float64 scores up to float32 rounding
        check_topk_close(got.ids, got.scores, q, c.astype(np.float32), k, metric=metric,
                         exclude=exclude)
        # the scores are sf.rescore's bit for bit
        np.testing.assert_array_equal(got.scores, sf.rescore(q, c, got.ids, metric=metric))


def test_failed_certificates_are_searched_again(caplog):
    """40 copies of one document sit at the k-th place of many queries: with m = k + 1 the
    certificate fails for them, they are searched again with more candidates, and the result
    is the same as with the default m (and the reference)."""
    rng = np.random.default_rng(3)
    q, c = _clustered(rng, 2000, 25, 32, dups=40)
    q = np.concatenate([q, np.repeat(c[:1], 5, axis=0)])  # queries whose top k is the copies
    k = 20
    excl = None
    with caplog.at_level(logging.DEBUG, logger="simans_fast.candidates_bf16"):
        forced = B.topk_bf16(q, c, k, "ip", excl, m=k + 1)
    assert any("not certified" in r.getMessage() for r in caplog.records)
    default = B.topk_bf16(q, c, k, "ip", excl)
    ids, scores = _reference(q, c, k, "ip", None)
    for got in (forced, default):
        np.testing.assert_array_equal(got[0], ids)
        np.testing.assert_array_equal(got[1], scores)


def test_near_ties_are_certified_at_the_first_try(caplog):
    """Uniform unit rows: the top few hundred scores of a query lie within a few hundredths,
    closer than the worst-case bound (2 delta = 0.0236 for unit rows, the first release's,
    under which half of these rows failed). The bound from the actual rounding errors
    certifies nearly all of them at the first try, and the result is the reference's."""
    rng = np.random.default_rng(21)
    d, k = 384, 50
    c = rng.standard_normal((20_000, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[:200] + 0.08 * rng.standard_normal((200, d)).astype(np.float32)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    with caplog.at_level(logging.DEBUG, logger="simans_fast.candidates_bf16"):
        got = B.topk_bf16(q, c, k, "ip", None)
    failed = [int(r.getMessage().split()[1]) for r in caplog.records
              if "not certified" in r.getMessage()]
    assert sum(failed) <= 10, failed  # of 200
    # the rows really are that close: the worst-case bound would fail most of them
    s = -np.sort(-(torch.from_numpy(q).to(torch.bfloat16) @ torch.from_numpy(c)
                   .to(torch.bfloat16).T).float().numpy(), axis=1)
    m = B.first_pass_m(k, c.shape[0])
    assert np.mean(s[:, k - 1] - s[:, m - 1] > 0.0236) < 0.8
    ids, scores = _reference(q, c, k, "ip", None)
    np.testing.assert_array_equal(got[0], ids)
    np.testing.assert_array_equal(got[1], scores)


def test_bf16_does_not_depend_on_blocks_threads_or_query_order():
    rng = np.random.default_rng(11)
    q, c = _clustered(rng, 9000, 300, 64)
    k = 50
    base = sf.topk(q, c, k, prefilter="bfloat16")
    for kw in (dict(query_block=7), dict(n_threads=1), dict(query_block=100, n_threads=2),
               dict(corpus_offset=123, query_offset=5)):
        other = sf.topk(q, c, k, prefilter="bfloat16", **kw)
        np.testing.assert_array_equal(other.ids, base.ids, err_msg=str(kw))
        np.testing.assert_array_equal(other.scores, base.scores, err_msg=str(kw))
    perm = rng.permutation(q.shape[0])
    shuffled = sf.topk(q[perm], c, k, prefilter="bfloat16")
    np.testing.assert_array_equal(shuffled.ids, base.ids[perm])
    # corpus slices merged by score give the same result (the drop-in's streamed search)
    halves = [sf.topk(q, c[lo:hi], k, prefilter="bfloat16") for lo, hi in ((0, 4000),
                                                                           (4000, 9000))]
    all_ids = np.concatenate([halves[0].ids, np.where(halves[1].ids >= 0, halves[1].ids + 4000,
                                                      -1)], axis=1)
    all_sc = np.concatenate([halves[0].scores, halves[1].scores], axis=1)
    order = np.lexsort((all_ids, -all_sc), axis=1)[:, :k]
    np.testing.assert_array_equal(np.take_along_axis(all_ids, order, 1), base.ids)


def test_k_above_the_corpus_and_empty_rows_are_padded():
    rng = np.random.default_rng(5)
    q, c = _clustered(rng, 30, 4, 8)
    exclude = [np.arange(30), [], [1, 2], np.arange(25)]
    got = sf.topk(q, c, 40, exclude=exclude, prefilter="bfloat16")
    ids, scores = _reference(q, c, 40, "ip", exclude)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.scores, scores)
    assert (got.ids[0] == -1).all() and (got.ids[3, 5:] == -1).all()


@pytest.mark.parametrize("d", [3, 64, 384, 1024])
def test_the_error_bound_holds_for_torch_bfloat16_products(d):
    """The bound of candidates_bf16.product_bound (from the norms of the rows' bfloat16
    roundings and rounding errors), on rows with a wide dynamic range and mixed signs (the
    worst case for relative errors) and on unit rows, at the shapes topk uses."""
    from simans_fast.kernels import topk as K

    rng = np.random.default_rng(d)
    wide = lambda n: (rng.standard_normal((n, d))  # noqa: E731
                      * np.exp(rng.uniform(-6, 6, (n, d)))).astype(np.float32)
    unit = rng.standard_normal((2300, d)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    worst = 0.0
    for q, c in ((wide(300), wide(2000)), (unit[:300], unit[300:])):
        qt, ct = (torch.from_numpy(x).to(torch.bfloat16) for x in (q, c))
        approx = torch.mm(qt, ct.T).float().numpy().astype(np.float64)
        exact = q.astype(np.float64) @ c.astype(np.float64).T
        norms = []
        for x, t in ((q, qt), (c, ct)):
            r2, e2, f2 = np.empty(len(x)), np.empty(len(x)), np.empty(len(x))
            K.bf16_norms(x, t.view(torch.int16).numpy().view(np.uint16), r2, e2, f2)
            np.testing.assert_allclose(f2, (x.astype(np.float64) ** 2).sum(1), rtol=1e-12)
            np.testing.assert_allclose(r2, (t.double() ** 2).sum(1).numpy(), rtol=1e-12)
            np.testing.assert_allclose(e2, ((x.astype(np.float64) - t.double().numpy()) ** 2)
                                       .sum(1), rtol=1e-12)
            norms.append((np.sqrt(r2), np.sqrt(e2)))
        (q_t, q_e), (c_t, c_e) = norms
        bound = B.product_bound(q_t[:, None], q_e[:, None], c_t[None, :], c_e[None, :], approx, d)
        err = np.abs(approx - exact)
        assert (err <= bound).all(), float((err / bound).max())
        worst = max(worst, float((err / bound).max()))
        # tighter than the worst case of every coordinate off by half a unit on both sides
        old = (2 * 2.0**-8 + 2.0**-16 + B._gamma(d)) * np.outer(q_t, c_t) + 2.0**-8 * np.abs(approx)
        assert (bound <= old * (1 + 1e-9)).all()
    assert worst > 0.05, worst  # the bound is not vacuous: real errors come near it


def test_prefilter_errors_name_the_parameter():
    q = np.ones((2, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    with pytest.raises(ParameterError, match="prefilter must be None, 'none', 'auto' or "
                                             "'bfloat16', got 'bf16'") as e:
        sf.topk(q, c, 2, prefilter="bf16")
    assert e.value.parameter == "prefilter"
    with pytest.raises(ParameterError, match="supports metric 'ip' and 'cosine', not 'l2'"):
        sf.topk(q, c, 2, metric="l2", prefilter="bfloat16")
    with pytest.raises(ParameterError, match="runs with the numba backend, not "
                                             "backend='faiss'"):
        sf.topk(q, c, 2, backend="faiss", prefilter="bfloat16")
    with pytest.raises(ParameterError, match="runs with the numba backend, not "
                                             "backend='torch'"):
        sf.topk(q, c, 2, backend="torch", prefilter="bfloat16")
    # auto never fails: l2 and other backends search in float32
    for kw in (dict(metric="l2"), dict(backend="faiss")):
        a = sf.topk(q, c, 2, prefilter="auto", **kw)
        assert a.ids.shape == (2, 2)


def test_auto_is_a_property_of_the_machine(tmp_path, monkeypatch):
    """auto = bfloat16 exactly when the CPU multiplies bfloat16 natively (never a timing);
    a memory-mapped corpus larger than a quarter of the physical memory stays on the float32
    path (rescoring would read it at random from the disk), a smaller one does not."""
    import simans_fast.candidates as C

    rng = np.random.default_rng(2)
    q, c = _clustered(rng, 500, 9, 16)
    auto = sf.topk(q, c, 10, prefilter="auto")
    native = "bfloat16" if B.native_bf16() else None
    want = sf.topk(q, c, 10, prefilter=native)
    np.testing.assert_array_equal(auto.scores, want.scores)
    np.testing.assert_array_equal(auto.ids, want.ids)
    np.save(tmp_path / "c.npy", c)
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    assert C.physical_memory() > 4 * c.nbytes
    small = sf.topk(q, mapped, 10, prefilter="auto")
    np.testing.assert_array_equal(small.scores, want.scores)
    assert C.resolve_prefilter("auto", "ip", "numba", mapped) == native
    fp32 = sf.topk(q, c, 10)
    monkeypatch.setattr(C, "physical_memory", lambda: 4 * c.nbytes - 4)
    assert C.resolve_prefilter("auto", "ip", "numba", mapped) is None
    assert C.resolve_prefilter("auto", "ip", "numba", c) == native  # in memory: no limit
    big = sf.topk(q, mapped, 10, prefilter="auto")
    np.testing.assert_array_equal(big.scores, fp32.scores)
    # an explicit bfloat16 is what it says, memory map or not
    np.testing.assert_array_equal(sf.topk(q, mapped, 10, prefilter="bfloat16").scores,
                                  sf.topk(q, c, 10, prefilter="bfloat16").scores)
