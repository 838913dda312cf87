"""DataLoader integration: datasets, collate, per-batch lookup, workers (fork and spawn)."""

import multiprocessing as mp

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import simans_fast as sf
from simans_fast.torch import (SimANSDataset, SimANSIterableDataset, collate_simans, in_worker,
                               negatives_for, shard_indices)


def _sampler(n_q=37, k=10, n=4, seed=3, m=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 1000, (n_q, k)).astype(np.int64)
    ids[0, 6:] = -1
    scores = rng.normal(size=(n_q, k)).astype(np.float32)
    pos = rng.normal(0.3, 0.5, (n_q, m)) if m > 1 else rng.normal(0.3, 0.5, n_q)
    if m > 1:
        pos[2, 1:] = np.nan
    else:
        pos[2] = np.nan
    return sf.SimANSSampler(ids, scores, pos, n=n, a=1.0, seed=seed)


def test_dataset_items_match_sampler():
    s = _sampler()
    pid = np.arange(100, 100 + s.n_queries)
    ds = SimANSDataset(s, positive_ids=pid, epoch=2)
    assert len(ds) == s.n_queries
    want = s.sample(epoch=2)
    for i in (0, 2, 5, 36, -1):
        item = ds[i]
        r = i % s.n_queries
        assert int(item["query_index"]) == r
        assert int(item["positive_id"]) == 100 + r
        assert item["negative_ids"].dtype == torch.int64
        assert np.array_equal(item["negative_ids"].numpy(), want[r])
    ds.set_epoch(3)
    assert np.array_equal(ds[5]["negative_ids"].numpy(), s.sample(rows=[5], epoch=3)[0])
    with pytest.raises(IndexError):
        ds[s.n_queries]
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_getitems_and_collate_equal_per_item_stacking():
    s = _sampler(m=3)
    pid = np.arange(3 * s.n_queries).reshape(-1, 3)
    ds = SimANSDataset(s, positive_ids=pid, epoch=1)
    rows = [4, 0, 2, 9]
    fast = collate_simans(ds.__getitems__(rows))
    slow = collate_simans([ds[i] for i in rows])
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    pidx = s.positive_index(rows=rows, epoch=1)
    assert np.array_equal(fast["positive_index"].numpy(), pidx)
    assert np.array_equal(fast["positive_id"].numpy(),
                          [pid[r, c] if c >= 0 else pid[r, 0] for r, c in zip(rows, pidx)])
    # default_collate on the same items gives the same tensors
    from torch.utils.data import default_collate

    dc = default_collate(list(ds.__getitems__(rows)))
    assert torch.equal(dc["negative_ids"], fast["negative_ids"])


def test_negatives_for():
    s = _sampler()
    q = torch.tensor([3, 1, 30])
    got = negatives_for(s, q, epoch=4)
    assert got.dtype == torch.int64
    assert np.array_equal(got.numpy(), s.sample(rows=[3, 1, 30], epoch=4))
    assert np.array_equal(negatives_for(s, [3, 1], 4).numpy(), s.sample(rows=[3, 1], epoch=4))
    with pytest.raises(ValueError, match="sampler"):
        negatives_for(object(), [0])
    with pytest.raises(ValueError, match="integers"):
        negatives_for(s, np.array([0.5]))


@pytest.mark.parametrize("n,world,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                               (2, 4, False), (7, 1, False)])
def test_shard_indices_match_distributed_sampler(n, world, drop_last):
    for r in range(world):
        ref = list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False,
                                      drop_last=drop_last))
        assert shard_indices(n, r, world, drop_last=drop_last).tolist() == ref
    # shuffled: a permutation shared by all ranks, depending on seed and epoch
    a = np.concatenate([shard_indices(n, r, world, shuffle=True, seed=1, epoch=0)
                        for r in range(world)])
    b = np.concatenate([shard_indices(n, r, world, shuffle=True, seed=1, epoch=1)
                        for r in range(world)])
    if not drop_last:
        assert set(a.tolist()) == set(range(n))
    if n > 3:
        assert not np.array_equal(a, b)


def test_iterable_dataset_shards_cover_every_query_once():
    s = _sampler(n_q=23)
    want = s.sample(epoch=0)
    seen = []
    for rank in range(3):
        ds = SimANSIterableDataset(s, rank=rank, world_size=3, drop_last=True, query_block=4)
        items = list(ds)
        assert len(items) == len(ds) == 7
        for it in items:
            r = int(it["query_index"])
            assert np.array_equal(it["negative_ids"].numpy(), want[r])
            seen.append(r)
    assert len(set(seen)) == len(seen) == 21
    # batch mode: batches of the rank's rows, in order
    ds = SimANSIterableDataset(s, batch_size=5, rank=1, world_size=2, epoch=2)
    rows = shard_indices(23, 1, 2)
    batches = list(ds)
    assert len(batches) == len(ds) == 3
    assert np.array_equal(torch.cat([b["query_index"] for b in batches]).numpy(), rows)
    assert np.array_equal(torch.cat([b["negative_ids"] for b in batches]).numpy(),
                          s.sample(rows=rows, epoch=2))


def _collect(loader, n_batches=2):
    out = []
    for i, b in enumerate(loader):
        out.append({k: v.clone() for k, v in b.items()})
        if i + 1 == n_batches:
            break
    return out


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


class _WorkerCheck(SimANSDataset):
    """Records whether items were produced inside a worker (serial kernels there)."""

    def __getitems__(self, indices):
        batch = super().__getitems__(indices)
        batch.tensors["in_worker"] = torch.full((len(indices),), int(in_worker()))
        return batch


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_dataloader_batches_identical_for_workers_and_start_methods():
    s = _sampler(n_q=40)
    # a parallel (multi-threaded Numba) call in the parent BEFORE any worker is forked: a forked
    # child that entered a parallel region after this would be aborted by Numba's OpenMP layer
    s.sample(epoch=0, parallel=True)
    sf.simans_negatives(s.candidate_ids, s.candidate_scores, s.positive_scores[:, 0], 3,
                        parallel=True)
    ds = _WorkerCheck(s, positive_ids=np.arange(40), epoch=5)
    ref = _collect(DataLoader(ds, batch_size=8, num_workers=0, collate_fn=collate_simans))
    assert all(int(b["in_worker"].max()) == 0 for b in ref)
    configs = [("fork", 2), ("fork", 4), ("spawn", 2), ("spawn", 4)]
    for method, workers in configs:
        if method not in mp.get_all_start_methods():
            continue
        loader = DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=collate_simans,
                            multiprocessing_context=method)
        got = _collect(loader)
        assert all(int(b["in_worker"].min()) == 1 for b in got), (method, workers)
        for b in got:
            b["in_worker"].zero_()
        for b in ref:
            b["in_worker"].zero_()
        _same(ref, got)
    # the iterable form in batch mode: same batch sequence with any number of workers
    it = SimANSIterableDataset(s, batch_size=6, epoch=1)
    ref_it = _collect(DataLoader(it, batch_size=None, num_workers=0), n_batches=7)
    got_it = _collect(DataLoader(it, batch_size=None, num_workers=3,
                                 multiprocessing_context="fork"), n_batches=7)
    assert len(ref_it) == 7
    _same(ref_it, got_it)


def test_parallel_default():
    from simans_fast.torch.sampling import PARALLEL_MIN_ROWS, _parallel

    assert _parallel(None, 64) is False  # small batches: serial
    assert _parallel(None, PARALLEL_MIN_ROWS) is True  # large, main process: threads
    assert _parallel(True, 64) is True and _parallel(False, 10**6) is False


def test_set_sampler_and_errors():
    s = _sampler()
    ds = SimANSDataset(s)
    assert "positive_id" not in ds[0]
    s2 = _sampler(seed=9)
    ds.set_sampler(s2)
    assert np.array_equal(ds[1]["negative_ids"].numpy(), s2.sample(rows=[1], epoch=0)[0])
    with pytest.raises(ValueError, match="queries"):
        ds.set_sampler(_sampler(n_q=5))
    with pytest.raises(ValueError, match="positive_ids"):
        SimANSDataset(s, positive_ids=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="positive_ids"):
        SimANSDataset(s, positive_ids=np.zeros(s.n_queries))
    with pytest.raises(ValueError, match="rank"):
        SimANSIterableDataset(s, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        SimANSIterableDataset(s, batch_size=0)


@pytest.mark.parametrize("m, fallback, choice", [(1, "lowest", "random"), (3, "lowest", "random"),
                                                 (3, "uniform", "random"),
                                                 (3, "lowest", "highest")])
def test_one_pass_batch_equals_sample_and_positive_index(m, fallback, choice):
    """The batch path (negatives and positive index from one kernel pass) gives exactly
    ``sample`` and ``positive_index``, for rows in any order and with repeats, serial and
    parallel, including rows whose positive is unknown (fallback) or chosen among several."""
    rng = np.random.default_rng(7)
    n_q, k = 60, 12
    ids = rng.integers(0, 1000, (n_q, k)).astype(np.int64)
    ids[3, 5:] = -1
    scores = rng.normal(size=(n_q, k)).astype(np.float32)
    pos = rng.normal(0.3, 0.5, (n_q, m)) if m > 1 else rng.normal(0.3, 0.5, n_q)
    if m > 1:
        pos[rng.random((n_q, m)) < 0.4] = np.nan
        pos[4] = np.nan
    else:
        pos[4] = np.nan
    s = sf.SimANSSampler(ids, scores, pos, n=5, seed=11, fallback=fallback,
                         positive_choice=choice)
    rows = np.concatenate([rng.permutation(n_q), [4, 4, 0]]).astype(np.int64)
    for epoch in (0, 3):
        want_neg = s.sample(rows=rows, epoch=epoch)
        want_pidx = s.positive_index(rows=rows, epoch=epoch)
        assert (want_pidx == -1).any() and (want_pidx >= 0).any()
        for par in (False, True):
            neg, pidx = s._sample_batch(rows, epoch, par)
            np.testing.assert_array_equal(neg, want_neg)
            np.testing.assert_array_equal(pidx, want_pidx)
        ds = SimANSDataset(s, epoch=epoch)
        b = collate_simans(ds.__getitems__(rows.tolist()))
        np.testing.assert_array_equal(b["negative_ids"].numpy(), want_neg)
        np.testing.assert_array_equal(b["positive_index"].numpy(), want_pidx)
        np.testing.assert_array_equal(b["query_index"].numpy(), rows)


def test_getitems_index_forms_and_bounds():
    """``__getitems__`` takes a list, an array, a tensor-free range or negative indices alike;
    out-of-range indices raise IndexError before anything is drawn."""
    s = _sampler()
    ds = SimANSDataset(s, epoch=1)
    want = collate_simans(ds.__getitems__([0, 5, 36]))
    for form in (np.array([0, 5, 36]), np.array([0, 5, -1], np.int32), (0, 5, 36),
                 iter([0, 5, 36])):
        got = collate_simans(ds.__getitems__(form))
        for name in want:
            np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())
    assert collate_simans(ds.__getitems__(range(3, 6)))["query_index"].tolist() == [3, 4, 5]
    for bad in ([0, 37], [-38], [5, 100, 2]):
        with pytest.raises(IndexError, match="out of range"):
            ds.__getitems__(bad)
    with pytest.raises(ValueError, match="integers"):
        ds.__getitems__([0.5, 1.0])


def test_batch_kernel_without_positive_index_gives_the_samplers_numbers():
    """The batch kernel with no positive index wanted gives the sampler's numbers."""
    from simans_fast import core as _core
    from simans_fast.kernels import sampling as K

    s = _sampler(m=2)
    rows = np.arange(s.n_queries - 1, -1, -1, dtype=np.int64)
    t = s.tables
    e, nb = np.empty(0, np.int64), np.zeros(0, np.bool_)  # no positive index wanted
    for fn in (K.sample_batch_ser, K.sample_batch_par):
        out = np.empty((rows.size, s.n), np.int64)
        fn(t.packed, t.n_valid, t.peak, t.logw, s._indptr, s._keys, rows, s._seed_u,
           np.uint64(2), s.n, False, _core.default_max_reject(s.n), bool(s._fb_rows.size),
           s._fb_index, s._fb_cols, s.candidate_ids, True, out, e, nb, e, 16)
        np.testing.assert_array_equal(out, s.sample(rows=rows, epoch=2))
