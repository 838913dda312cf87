"""Overhead of sharded mining and sampling with torch.distributed (gloo, CPU) vs one process.

Measured in one run on the same data:

* single process: ``sf.topk(queries, corpus, k)`` with all threads, and
  ``sampler.sample(epoch=e)`` over all queries;
* ``sharded_topk`` with world sizes 1 and 2 (each rank gets ``threads / world`` Numba threads and
  a contiguous block of the corpus): total time, and the part spent in all_gather + merge
  (the overhead of sharding; the local top-k is the work that sharding splits);
* sharded sampling: each rank draws its own queries (``sample_shard``) and, optionally,
  ``gather_rows`` reassembles the full matrix.

Every sharded result is checked equal to the single-process one. On a 2-core machine world 2
cannot be faster than one process with 2 threads: the point is the merge overhead, which is
what remains when the ranks are separate machines.

    python benchmarks/bench_distributed.py [--queries 2000] [--docs 100000] [--dim 128]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

K, N = 200, 15


def make_data(n_q, n_docs, dim):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((n_docs, dim), dtype=np.float32)
    queries = corpus[rng.choice(n_docs, n_q, replace=False)] + \
        0.5 * rng.standard_normal((n_q, dim), dtype=np.float32)
    return queries, corpus


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def make_sampling_data(n_q):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 10_000_000, (n_q, K)).astype(np.int64)
    scores = np.sort(rng.normal(size=(n_q, K)).astype(np.float32), axis=1)[:, ::-1].copy()
    return ids, scores, rng.normal(0.8, 0.5, n_q)


def _rank_main(rank, world, args, threads, init_file, out_file):
    import torch
    import torch.distributed as dist

    import simans_fast as sf
    from simans_fast.torch import distributed as sd

    sf.configure_threads(threads)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    queries, corpus = make_data(args.queries, args.docs, args.dim)
    blk = sd.shard_range(args.docs, rank, world)
    shard = np.ascontiguousarray(corpus[blk])
    del corpus
    t = {}

    # local top-k alone (the part that sharding divides among the ranks)
    sf.topk(queries[:64], shard, K)  # warm-up (compilation / cache load)
    dist.barrier()
    t["local_topk"] = _median_time(lambda: sf.topk(queries, shard, K), args.repeats)
    local = sf.topk(queries, shard, K)
    gids = np.where(local.ids >= 0, local.ids + blk.start, -1)
    # the sharding overhead: all_gather of (scores, ids) + merge, timed on its own
    dist.barrier()
    t["gather_merge"] = _median_time(lambda: sd.gather_merge(local.scores, gids, K),
                                     args.repeats)
    res = {}

    def run():
        res["c"] = sd.sharded_topk(queries, shard, K, offsets=offs)

    offs = sd.corpus_offsets(shard.shape[0])
    dist.barrier()
    t["sharded_topk"] = _median_time(run, args.repeats)
    ids = res["c"].ids

    # sharded sampling on a larger synthetic candidate set: every rank holds the full sampler
    # and draws its own rows; then gather_rows reassembles the matrix
    s_ids, s_scores, s_pos = make_sampling_data(args.sample_queries)
    sampler = sf.SimANSSampler(s_ids, s_scores, s_pos, n=N, seed=0)
    sampler.sample(rows=np.arange(4), epoch=0)
    dist.barrier()
    t["sample_shard"] = _median_time(lambda: sd.sample_shard(sampler, 1), args.repeats)
    mine, _ = sd.sample_shard(sampler, 1)
    dist.barrier()
    t["gather_rows"] = _median_time(lambda: sd.gather_rows(mine, sampler.n_queries),
                                    args.repeats)
    neg_full, _ = sd.sample_shard(sampler, 1, gather=True)
    names = sorted(t)
    vals = torch.tensor([t[k] for k in names], dtype=torch.float64)
    dist.all_reduce(vals, op=dist.ReduceOp.MAX)
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(dict(zip(names, vals.tolist())), f)
        np.save(out_file + ".ids.npy", ids, allow_pickle=False)
        np.save(out_file + ".neg.npy", neg_full, allow_pickle=False)
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample-queries", type=int, default=50_000,
                    help="queries of the sampling part (k=200 random candidates each)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch.multiprocessing as mp

    import simans_fast as sf

    sf.configure_threads(args.threads)
    queries, corpus = make_data(args.queries, args.docs, args.dim)
    sf.topk(queries[:64], corpus, K)
    single = _median_time(lambda: sf.topk(queries, corpus, K), args.repeats)
    cands = sf.topk(queries, corpus, K)
    sampler = sf.SimANSSampler(*make_sampling_data(args.sample_queries), n=N, seed=0)
    sampler.sample(rows=np.arange(4), epoch=0)
    single_samp = _median_time(lambda: sampler.sample(epoch=1), args.repeats)
    neg_single = sampler.sample(epoch=1)
    del corpus

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = os.path.join(tmp, f"res{world}.json")
            init = os.path.join(tmp, f"init{world}")
            threads = max(1, args.threads // world)
            mp.spawn(_rank_main, args=(world, args, threads, init, out), nprocs=world, join=True)
            with open(out) as f:
                results[world] = json.load(f)
            ids = np.load(out + ".ids.npy", allow_pickle=False)
            neg = np.load(out + ".neg.npy", allow_pickle=False)
            results[world]["equal"] = bool(np.array_equal(ids, cands.ids)
                                           and np.array_equal(neg, neg_single))

    print(f"\nSharded mining: {args.queries:,} queries x {args.docs:,} docs (dim {args.dim}), "
          f"k={K}; {args.threads} cores in total, gloo on one machine")
    print(f"{'':46s} {'time (s)':>10s} {'vs single':>10s} {'equal':>6s}")
    print(f"{'single process sf.topk (all threads)':46s} {single:10.3f} {1.0:9.2f}x {'-':>6s}")
    for world, r in results.items():
        print(f"{f'world {world}: sharded_topk, total':46s} {r['sharded_topk']:10.3f} "
              f"{r['sharded_topk'] / single:9.2f}x {str(r['equal']):>6s}")
        print(f"{f'world {world}:   local top-k of a block':46s} {r['local_topk']:10.3f} "
              f"{r['local_topk'] / single:9.2f}x")
        print(f"{f'world {world}:   all_gather + merge (overhead)':46s} "
              f"{r['gather_merge']:10.3f} {r['gather_merge'] / single:9.2f}x")
    print(f"\nSharded sampling: {args.sample_queries:,} queries, k={K}, n={N}")
    print(f"{'':46s} {'time (ms)':>10s} {'vs single':>10s}")
    print(f"{'single process sampler.sample (all rows)':46s} {single_samp * 1e3:10.2f} "
          f"{1.0:9.2f}x")
    for world, r in results.items():
        print(f"{f'world {world}: sample_shard (own rows)':46s} {r['sample_shard'] * 1e3:10.2f} "
              f"{r['sample_shard'] / single_samp:9.2f}x")
        print(f"{f'world {world}: gather_rows (reassemble)':46s} {r['gather_rows'] * 1e3:10.2f} "
              f"{r['gather_rows'] / single_samp:9.2f}x")
    print("\n(medians of --repeats runs; for world > 1 the slowest rank; 'vs single' < 1 is "
          "faster; 'equal': merged candidates and gathered negatives equal the single-process "
          "ones)")


if __name__ == "__main__":
    main()
