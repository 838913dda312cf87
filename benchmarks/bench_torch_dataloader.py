"""Per-batch cost of fetching SimANS negatives inside a training loop (batch 64, n = 15).

Compared in one run, on the same candidates (``--queries`` x ``k`` = 200, random scores):

* ``SimANSDataset`` + ``DataLoader`` (batched ``__getitems__`` + ``collate_simans``): draws from
  the alias tables built once by ``SimANSSampler``;
* ``negatives_for(sampler, rows, epoch)`` called directly (no DataLoader);
* ``simans_negatives_torch`` on the batch's rows, core (fused Numba) and torch-native paths
  (weights computed per batch, no tables);
* the baseline a PyTorch user writes: per batch, weights ``exp(-a (s - s_pos - b)^2)`` of the
  batch's rows and ``torch.multinomial(w, 15, replacement=False)``, both directly and inside an
  equivalent ``Dataset`` + ``DataLoader``.

Also the steady-state time per batch with 2 DataLoader workers (fork), SimANS vs the
multinomial dataset. Prints a table with times per batch and ratios to the multinomial
baseline measured in the same run.

    python benchmarks/bench_torch_dataloader.py [--queries 100000] [--batches 400]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import simans_fast as sf  # noqa: E402
from simans_fast.torch import (SimANSDataset, collate_simans, negatives_for,  # noqa: E402
                               simans_negatives_torch)

A, B, N, BATCH, K = 0.5, 0.0, 15, 64, 200


class MultinomialDataset(Dataset):
    """The plain-PyTorch baseline as a dataset: weights and torch.multinomial per batch."""

    def __init__(self, ids, scores, pos, epoch=0, seed=0):
        self.ids, self.scores, self.pos = ids, scores, pos
        self.epoch, self.seed = epoch, seed

    def __len__(self):
        return self.ids.shape[0]

    def __getitems__(self, idx):
        return multinomial_batch(self.ids, self.scores, self.pos, torch.as_tensor(idx), None)


def multinomial_batch(ids, scores, pos, rows, gen):
    s = scores[rows]
    w = torch.exp(-A * (s - pos[rows, None] - B) ** 2)
    cols = torch.multinomial(w, N, replacement=False, generator=gen)
    return {"query_index": rows, "negative_ids": torch.gather(ids[rows], 1, cols)}


class FixedBatchDataset(Dataset):
    """The DataLoader's own cost: every batch is one precomputed dict of tensors (no work)."""

    def __init__(self, n, batch):
        self.n, self.batch = n, batch

    def __len__(self):
        return self.n

    def __getitems__(self, idx):
        return self.batch


def passthrough(batch):
    return batch


def time_per_batch(fn, batches, repeats=3):
    """Median over ``repeats`` of (total time of ``batches`` calls) / batches, after a warm-up."""
    for i in range(5):
        fn(i)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(batches):
            fn(i)
        out.append((time.perf_counter() - t) / batches)
    return float(np.median(out))


def loader_per_batch(loader, batches, repeats=3):
    """Steady-state seconds per batch of iterating ``loader`` (first 5 batches excluded)."""
    out = []
    for _ in range(repeats):
        it = iter(loader)
        for _ in range(5):
            next(it)
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        out.append((time.perf_counter() - t) / batches)
        del it
    return float(np.median(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2,
                    help="Numba threads (building the sampler; per-batch draws are serial)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads for the per-batch ops (a 64-row batch is too "
                         "small for a thread pool to pay off)")
    args = ap.parse_args(argv)
    sf.configure_threads(args.threads)
    torch.set_num_threads(args.torch_threads)

    rng = np.random.default_rng(0)
    n_q = args.queries
    ids_np = rng.integers(0, 10_000_000, (n_q, K)).astype(np.int64)
    scores_np = np.sort(rng.normal(0, 1, (n_q, K)).astype(np.float32), axis=1)[:, ::-1].copy()
    pos_np = rng.normal(0.8, 0.5, n_q)
    ids_t, scores_t = torch.from_numpy(ids_np), torch.from_numpy(scores_np)
    pos_t = torch.from_numpy(pos_np).float()
    t = time.perf_counter()
    sampler = sf.SimANSSampler(ids_np, scores_np, pos_np, n=N, a=A, b=B, seed=0)
    build_s = time.perf_counter() - t
    perm = np.random.default_rng(1).permutation(n_q)
    nb = n_q // BATCH

    batches_np = [np.ascontiguousarray(perm[j * BATCH:(j + 1) * BATCH]) for j in range(nb)]
    batches_t = [torch.from_numpy(b) for b in batches_np]

    def rows_of(i):
        return batches_np[i % nb]

    def trows_of(i):
        return batches_t[i % nb]

    gen = torch.Generator().manual_seed(0)
    dataset = SimANSDataset(sampler)
    base_ds = MultinomialDataset(ids_t, scores_t, pos_t)
    sampler.sample(rows=rows_of(0), epoch=0, parallel=True)

    def dl(ds, collate, workers=0):
        return DataLoader(ds, batch_size=BATCH, shuffle=True, collate_fn=collate,
                          num_workers=workers, generator=torch.Generator().manual_seed(0),
                          multiprocessing_context="fork" if workers else None)

    rows = {}
    nbat = args.batches
    rows["torch.multinomial per batch (baseline)"] = time_per_batch(
        lambda i: multinomial_batch(ids_t, scores_t, pos_t, trows_of(i), gen),
        nbat)
    rows["negatives_for (alias tables), parallel=False"] = time_per_batch(
        lambda i: negatives_for(sampler, rows_of(i), i, parallel=False), nbat)
    rows["negatives_for (alias tables), parallel=True (2 threads)"] = time_per_batch(
        lambda i: negatives_for(sampler, rows_of(i), i, parallel=True), nbat)
    idx_lists = [b.tolist() for b in batches_np]
    rows["SimANSDataset.__getitems__ (a batch of 64 indices)"] = time_per_batch(
        lambda i: dataset.__getitems__(idx_lists[i % nb]), nbat)
    rows["simans_negatives_torch impl=core (fused, no tables)"] = time_per_batch(
        lambda i: simans_negatives_torch(ids_t[trows_of(i)], scores_t[trows_of(i)],
                                         pos_t[trows_of(i)], N, a=A, b=B, epoch=i,
                                         row_keys=trows_of(i), impl="core"), nbat)
    rows["simans_negatives_torch impl=torch"] = time_per_batch(
        lambda i: simans_negatives_torch(ids_t[trows_of(i)], scores_t[trows_of(i)],
                                         pos_t[trows_of(i)], N, a=A, b=B, epoch=i,
                                         row_keys=trows_of(i), impl="torch"), nbat)
    loader_rows = {}
    loader_rows["DataLoader(MultinomialDataset), 0 workers (baseline)"] = loader_per_batch(
        dl(base_ds, passthrough), nbat)
    loader_rows["DataLoader(SimANSDataset), 0 workers"] = loader_per_batch(
        dl(dataset, collate_simans), nbat)
    fixed = collate_simans(dataset.__getitems__(idx_lists[0]))
    loader_rows["DataLoader floor: a precomputed batch, 0 workers"] = loader_per_batch(
        dl(FixedBatchDataset(n_q, fixed), passthrough), nbat)
    loader_rows["DataLoader(MultinomialDataset), 2 workers"] = loader_per_batch(
        dl(base_ds, passthrough, 2), nbat)
    loader_rows["DataLoader(SimANSDataset), 2 workers"] = loader_per_batch(
        dl(dataset, collate_simans, 2), nbat)

    print(f"\nSimANS negatives per batch: {n_q:,} queries x k={K}, batch {BATCH}, n={N}; "
          f"torch {args.torch_threads} thread(s); SimANSSampler built once in {build_s:.2f} s "
          f"({args.threads} Numba threads)")
    base = rows["torch.multinomial per batch (baseline)"]
    print(f"\n{'direct call':56s} {'us/batch':>10s} {'vs multinomial':>15s}")
    for name, v in rows.items():
        print(f"{name:56s} {v * 1e6:10.1f} {base / v:14.2f}x")
    print(f"\n{'inside a DataLoader (steady state)':56s} {'us/batch':>10s} {'vs multinomial':>15s}")
    for name, v in loader_rows.items():
        ref = loader_rows["DataLoader(MultinomialDataset), 2 workers" if "2 workers" in name
                          else "DataLoader(MultinomialDataset), 0 workers (baseline)"]
        print(f"{name:56s} {v * 1e6:10.1f} {ref / v:14.2f}x")
    floor = loader_rows["DataLoader floor: a precomputed batch, 0 workers"]
    own = loader_rows["DataLoader(SimANSDataset), 0 workers"] - floor
    print(f"\nDataLoader(SimANSDataset), 0 workers, less the floor (the DataLoader's index "
          f"sampling, fetch and collate): {own * 1e6:.1f} us/batch: the dataset's own work")
    print("\n(ratio > 1: faster than torch.multinomial; medians of 3 runs of "
          f"{nbat} batches each)")


if __name__ == "__main__":
    main()
