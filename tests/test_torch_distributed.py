"""Sharded mining and sampling over torch.distributed (gloo, CPU), world sizes 1, 2 and 3,
with the numba and the torch top-k backends.

One spawn of three processes runs every check: on the default group (world size 3) and on the
subgroups {0} and {0, 1} (world sizes 1 and 2), so each world size is exercised without paying
for three separate spawns.
"""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

import simans_fast as sf
from simans_fast.pipeline import mine_candidates
from simans_fast.torch import distributed as sd
from simans_fast import candidates_torch as tt
from simans_fast.torch.topk import topk_torch

import naive_torch as nv

N_DOCS, N_Q, DIM, K, N = 50, 9, 6, 20, 4


def _data():
    rng = np.random.default_rng(2024)
    # small integers: every score is exact in float32 whatever the summation order, and ties
    # are frequent, which exercises the tie-break by lower document id
    queries = rng.integers(-3, 4, (N_Q, DIM)).astype(np.float32)
    corpus = rng.integers(-2, 3, (N_DOCS, DIM)).astype(np.float32)
    qrels = [rng.choice(N_DOCS, int(rng.integers(0, 3)), replace=False) for _ in range(N_Q)]
    qrels[0] = np.array([0, 49])  # positives at both ends of the corpus
    exclude = [np.concatenate([q, rng.choice(N_DOCS, 3, replace=False)]) for q in qrels]
    return queries, corpus, qrels, exclude


def _check_group(group, grank, gworld, splits=None):
    queries, corpus, qrels, exclude = _data()
    if splits is None:
        blk = sd.shard_range(N_DOCS, grank, gworld)
        lo, hi = blk.start, blk.stop
        offsets = None
    else:
        lo, hi = splits[grank], splits[grank + 1]
        offsets = np.asarray(splits)
    shard = corpus[lo:hi]

    # (1) sharded exact top-k == single-process sf.topk == plain NumPy reference
    got = sd.sharded_topk(queries, shard, K, exclude=exclude, offsets=offsets, group=group,
                          query_chunk=4)
    want = sf.topk(queries, corpus, K, exclude=exclude)
    ref_ids, ref_sc = nv.topk(queries, corpus, K, exclude)
    assert np.array_equal(got.ids, want.ids), (gworld, got.ids, want.ids)
    assert np.array_equal(got.scores, want.scores)
    assert np.array_equal(got.ids, ref_ids) and np.array_equal(got.scores, ref_sc)
    # ... and with backend="torch" (shard and queries as arrays or tensors; tiles of 4 x 16)
    as_t = torch.from_numpy
    for q_in, shard_in in ((queries, shard), (as_t(queries), as_t(np.ascontiguousarray(shard)))):
        got = sd.sharded_topk(q_in, shard_in, K, exclude=exclude, offsets=offsets, group=group,
                              query_chunk=5, backend="torch", corpus_block=7)
        assert np.array_equal(got.ids, want.ids), (gworld, got.ids, want.ids)
        assert np.array_equal(got.scores, want.scores)
    # random float data: the shards' scores are the single process's bits, so equal results
    rng = np.random.default_rng(11)  # the same data on every rank
    fq, fc = rng.standard_normal((N_Q, DIM)).astype(np.float32), \
        rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    got = sd.sharded_topk(fq, fc[lo:hi], K, metric="cosine", offsets=offsets, group=group,
                          query_chunk=5, backend="torch")
    one = topk_torch(fq, fc, K, metric="cosine")
    assert np.array_equal(got.ids, one.ids) and np.array_equal(got.scores, one.scores)

    # ... and the whole candidate stage (positives excluded, exact positive scores)
    m = sd.sharded_mine_candidates(queries, shard, qrels, k=K, offsets=offsets, group=group)
    w = mine_candidates(queries, corpus, qrels, k=K)
    for f in ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores"):
        assert np.array_equal(getattr(m, f), getattr(w, f), equal_nan=True), f

    # (2) sharded sampling: each rank draws its own queries with their global keys
    pos = w.positive_scores
    full = sf.SimANSSampler(w.candidate_ids, w.candidate_scores, pos, n=N, a=0.8, seed=5,
                            parallel=False)
    local, rows = sd.shard_sampler(w.candidate_ids, w.candidate_scores, pos, N, a=0.8, seed=5,
                                   group=group, parallel=False)
    assert rows == sd.shard_range(N_Q, grank, gworld)
    for epoch in (0, 3):
        mine = local.sample(epoch=epoch)
        assert np.array_equal(mine, full.sample(epoch=epoch)[rows])
        assert np.array_equal(sd.gather_rows(mine, N_Q, group=group), full.sample(epoch=epoch))
        both, _ = sd.sample_shard(full, epoch, group=group, gather=True)
        assert np.array_equal(both, full.sample(epoch=epoch))
    # the one-shot function with global row keys on the rank's rows
    one = sf.simans_negatives(w.candidate_ids[rows], w.candidate_scores[rows], pos[rows, 0], N,
                              seed=7, row_keys=np.arange(rows.start, rows.stop), parallel=False)
    assert np.array_equal(one, sf.simans_negatives(w.candidate_ids, w.candidate_scores,
                                                   pos[:, 0], N, seed=7, parallel=False)[rows])


def _worker(rank, world, init_file):
    sf.configure_threads(1)  # three ranks share two cores: one Numba thread each
    torch.set_num_threads(1)
    tt._TILES["cpu"] = (4, 16)  # (spawned process) tiles smaller than the shards
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        groups = {1: dist.new_group([0]), 2: dist.new_group([0, 1])}
        for size in (1, 2):
            if rank < size:
                _check_group(groups[size], rank, size)
            dist.barrier()
        _check_group(None, rank, world)
        # uneven blocks, one of them empty
        _check_group(None, rank, world, splits=[0, 0, 31, N_DOCS])
    finally:
        dist.destroy_process_group()


def test_sharded_mining_and_sampling_world_sizes_1_2_3(tmp_path, monkeypatch):
    # NUMBA_NUM_THREADS is not touched in this process: Numba re-reads its environment at
    # every compilation and refuses a new thread count once its pool runs. The ranks set
    # their own thread counts; OMP_NUM_THREADS only reaches the spawned children's BLAS.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # compile (or load) the kernels once here so that the three children find them in Numba's
    # on-disk cache instead of compiling them concurrently
    q, c, qrels, _ = _data()
    w = mine_candidates(q, c, qrels, k=5)
    sf.SimANSSampler(w.candidate_ids, w.candidate_scores, w.positive_scores, n=2,
                     parallel=False).sample(epoch=0)
    sf.simans_negatives(w.candidate_ids, w.candidate_scores, w.positive_scores[:, 0], 2,
                        parallel=False)
    tmp.spawn(_worker, args=(3, str(tmp_path / "init")), nprocs=3, join=True)


# ---------------------------------------------------------------------- single-process helpers
def test_merge_topk_ties_and_padding():
    scores = np.array([[3, 1, -np.inf, 3, 2, -np.inf]], np.float32)
    ids = np.array([[7, 2, -1, 4, 9, -1]], np.int64)
    mids, msc = sd.merge_topk(scores, ids, 5)
    assert mids.tolist() == [[4, 7, 9, 2, -1]]
    assert msc.tolist() == [[3, 3, 2, 1, -np.inf]]
    mids, msc = sd.merge_topk(scores[:, :2], ids[:, :2], 4)
    assert mids.tolist() == [[7, 2, -1, -1]]


def test_shard_range_partitions():
    for n in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            blocks = [sd.shard_range(n, r, world) for r in range(world)]
            got = [(b.start, b.stop) for b in blocks]
            assert got == nv.shard_blocks(n, world)


def test_functions_need_an_initialised_group():
    import pytest

    with pytest.raises(ValueError, match="init_process_group"):
        sd.sharded_topk(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), 2)
    with pytest.raises(ValueError, match="rank"):
        sd.shard_range(5, 3, 3)
    assert not os.environ.get("RANK")
