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
    """The bound of candidates_bf16.error_bound, on rows with a wide dynamic range and mixed
    signs (the worst case for relative errors), at the shapes topk uses."""
    rng = np.random.default_rng(d)
    q = (rng.standard_normal((300, d)) * np.exp(rng.uniform(-6, 6, (300, d)))).astype(np.float32)
    c = (rng.standard_normal((2000, d)) * np.exp(rng.uniform(-6, 6, (2000, d)))).astype(np.float32)
    approx = torch.mm(torch.from_numpy(q).to(torch.bfloat16),
                      torch.from_numpy(c).to(torch.bfloat16).T).float().numpy()
    exact = q.astype(np.float64) @ c.astype(np.float64).T
    bound = B.error_bound(d) * np.outer(np.linalg.norm(q.astype(np.float64), axis=1),
                                        np.linalg.norm(c.astype(np.float64), axis=1))
    err = np.abs(approx - exact)
    assert (err <= bound).all(), float((err / bound).max())
    assert (err / bound).max() > 1e-3  # the bound is not vacuous: real errors come near it


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


def test_auto_is_a_property_of_the_machine(tmp_path):
    """auto = bfloat16 exactly when the CPU multiplies bfloat16 natively (never a timing);
    a memory-mapped corpus stays on the float32 path (rescoring would read it at random)."""
    rng = np.random.default_rng(2)
    q, c = _clustered(rng, 500, 9, 16)
    auto = sf.topk(q, c, 10, prefilter="auto")
    want = sf.topk(q, c, 10, prefilter="bfloat16" if B.native_bf16() else None)
    np.testing.assert_array_equal(auto.scores, want.scores)
    np.testing.assert_array_equal(auto.ids, want.ids)
    np.save(tmp_path / "c.npy", c)
    mapped = sf.topk(q, np.load(tmp_path / "c.npy", mmap_mode="r"), 10, prefilter="auto")
    fp32 = sf.topk(q, c, 10)
    np.testing.assert_array_equal(mapped.scores, fp32.scores)
