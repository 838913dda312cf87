"""The per-batch fast paths (int64 rows, plain-int epochs, CPU int64 tensors) give the numbers
and the errors of the general paths, and share no buffer between calls or threads."""

import threading

import numpy as np
import pytest
import torch

import simans_fast as sf
from simans_fast._validate import ParameterError, ParameterTypeError
from simans_fast.torch import SimANSDataset, collate_simans, negatives_for


def _sampler(n_q=300, k=24, n=6, seed=7, m=1, fallback="lowest"):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10_000, (n_q, k)).astype(np.int64)
    ids[rng.random((n_q, k)) < 0.1] = -1
    scores = rng.normal(size=(n_q, k)).astype(np.float32)
    pos = rng.normal(0.3, 0.5, (n_q, m)) if m > 1 else rng.normal(0.3, 0.5, n_q)
    if m > 1:
        pos[::11, 1:] = np.nan
        pos[::23] = np.nan
    else:
        pos[::13] = np.nan
    return sf.SimANSSampler(ids, scores, pos, n=n, seed=seed, fallback=fallback,
                            row_keys=rng.integers(0, 2**62, n_q))


def _forms(rows):
    """The same rows in forms that take the general (converting) path."""
    rows = np.asarray(rows, np.int64)
    strided = np.empty(2 * rows.size, np.int64)
    strided[::2] = rows
    return [rows.tolist(), rows.astype(np.int32), rows.astype(np.uint16), strided[::2],
            rows - 300, rows.astype(">i8")]


@pytest.mark.parametrize("m,fallback", [(1, "lowest"), (3, "lowest"), (3, "uniform")])
def test_int64_rows_fast_path_equals_general_path(m, fallback):
    s = _sampler(m=m, fallback=fallback)
    rows = np.random.default_rng(1).integers(0, s.n_queries, 64)
    for epoch in (0, 9, np.int64(9), 2**64 - 1):
        neg = s.sample(rows=rows, epoch=epoch)
        cols = s.sample_columns(rows=rows, epoch=epoch)
        pidx = s.positive_index(rows=rows, epoch=epoch)
        b_neg, b_pidx = s._sample_batch(rows, epoch)
        assert np.array_equal(b_neg, neg) and np.array_equal(b_pidx, pidx)
        for other in _forms(rows):
            assert np.array_equal(s.sample(rows=other, epoch=epoch), neg)
            assert np.array_equal(s.sample_columns(rows=other, epoch=epoch), cols)
            assert np.array_equal(s.positive_index(rows=other, epoch=epoch), pidx)
        assert np.array_equal(s.sample(epoch=epoch)[rows], neg)


def test_fast_path_keeps_the_bounds_check_and_the_caller_array():
    s = _sampler()
    rows = np.arange(10, dtype=np.int64)
    keep = rows.copy()
    s.sample(rows=rows, epoch=1)
    assert np.array_equal(rows, keep)  # rows are read, never written
    for bad, shown in ((np.array([0, 300]), "[0, 300]"), (np.array([-301, 5]), "[-301, 5]"),
                       (np.array([2**62]), f"[{2**62}, {2**62}]")):
        for fn in (s.sample, s.sample_columns, s.positive_index):
            with pytest.raises(ParameterError, match=r"rows must index rows 0\.\.299") as e:
                fn(rows=bad.astype(np.int64), epoch=0)
            assert shown in str(e.value) and e.value.parameter == "rows"
        with pytest.raises(ParameterError, match="rows must index"):
            negatives_for(s, bad, 0)
        with pytest.raises(ParameterError, match="rows must index"):
            negatives_for(s, torch.from_numpy(bad.astype(np.int64)), 0)
    # negative rows count from the end on the fast path's fallback too
    assert np.array_equal(s.sample(rows=np.array([-1, -300]), epoch=2),
                          s.sample(rows=np.array([299, 0]), epoch=2))


@pytest.mark.parametrize("bad,err", [(-1, ParameterError), (2**64, ParameterError),
                                     (True, ParameterTypeError), (1.0, ParameterTypeError),
                                     ("1", ParameterTypeError)])
def test_epoch_fast_path_refuses_what_the_check_refuses(bad, err):
    s = _sampler()
    rows = np.arange(4, dtype=np.int64)
    for call in (lambda: s.sample(rows=rows, epoch=bad),
                 lambda: s.positive_index(rows=rows, epoch=bad),
                 lambda: s._sample_batch(rows, bad),
                 lambda: negatives_for(s, rows, bad)):
        with pytest.raises(err, match="epoch must be an integer >= 0"):
            call()


def test_negatives_for_input_forms():
    s = _sampler()
    rows = np.random.default_rng(2).integers(0, s.n_queries, 50)
    want = s.sample(rows=rows, epoch=4)
    t = torch.from_numpy(rows.copy())
    forms = [rows, rows.tolist(), t, t.to(torch.int32), rows.reshape(5, 10),
             torch._neg_view(-t)]  # a tensor with the negative bit set takes the general path
    for q in forms:
        got = negatives_for(s, q, 4)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
    assert np.array_equal(negatives_for(s, rows, 4, parallel=True).numpy(), want)
    assert negatives_for(s, np.empty(0, np.int64), 4).shape == (0, s.n)
    with pytest.raises(ValueError, match="query_indices must be integers"):
        negatives_for(s, torch.tensor([1.0]), 0)
    with pytest.raises(ValueError, match="query_indices must be numeric"):
        negatives_for(s, torch.tensor([True]), 0)
    with pytest.raises(TypeError, match="sampler must be"):
        negatives_for(object(), rows, 0)


def test_getitems_fast_path_equals_items_and_fresh_buffers():
    s = _sampler(m=3)
    ds = SimANSDataset(s, epoch=5)
    pid = np.arange(3 * s.n_queries).reshape(-1, 3)
    ds_p = SimANSDataset(s, epoch=5, positive_ids=pid)
    idx = [5, 0, 299, -1, 17, 17]
    a = collate_simans(ds.__getitems__(idx))
    b = collate_simans(ds.__getitems__(np.array(idx)))
    c = collate_simans(ds_p.__getitems__(idx))  # the general path (positive ids)
    d = collate_simans([ds[i] for i in idx])
    rows = np.array(idx) % s.n_queries
    assert np.array_equal(a["query_index"].numpy(), rows)
    assert np.array_equal(a["negative_ids"].numpy(), s.sample(rows=rows, epoch=5))
    assert np.array_equal(a["positive_index"].numpy(), s.positive_index(rows=rows, epoch=5))
    for other in (b, c, d):
        for key in a:
            assert torch.equal(a[key], other[key]), key
    assert a["negative_ids"].is_contiguous() and a["query_index"].dtype == torch.int64
    # every call has its own arrays: nothing is reused or shared between batches
    e = collate_simans(ds.__getitems__(idx))
    for key in a:
        assert a[key].data_ptr() != e[key].data_ptr()
    with pytest.raises(IndexError, match="index out of range"):
        ds.__getitems__([0, 300])
    with pytest.raises(IndexError, match="index out of range"):
        ds.__getitems__(np.array([-301], np.int64))
    with pytest.raises(ValueError, match="indices must be integers"):
        ds.__getitems__([0.5])


def test_getitems_from_threads_equals_serial():
    s = _sampler(n_q=2000, k=40, n=8)
    ds = SimANSDataset(s, epoch=3)
    batches = [list(range(j, 2000, 31))[:64] for j in range(31)]
    want = [collate_simans(ds.__getitems__(b))["negative_ids"].numpy().copy() for b in batches]
    got = [None] * len(batches)

    def work(lo):
        for _ in range(20):
            for j in range(lo, len(batches), 4):
                got[j] = collate_simans(ds.__getitems__(batches[j]))["negative_ids"].numpy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        assert np.array_equal(w, g)


def test_sampler_subclass_takes_the_general_path():
    class Sub(sf.SimANSSampler):
        pass

    s = _sampler()
    sub = Sub(s.candidate_ids, s.candidate_scores, s.positive_scores, n=s.n, seed=s.seed,
              row_keys=s.row_keys)
    rows = [3, 1, 4, 1, 5]
    a = collate_simans(SimANSDataset(s, epoch=2).__getitems__(rows))
    b = collate_simans(SimANSDataset(sub, epoch=2).__getitems__(rows))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert torch.equal(negatives_for(s, rows, 2), negatives_for(sub, rows, 2))
