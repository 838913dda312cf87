"""Train a small dual encoder with SimANS negatives in a plain PyTorch loop.

What it shows:

* ``simans_fast.mine`` (a function) builds the first candidates with the untrained model (exact top-k,
  positives excluded) and a :class:`simans_fast.SimANSSampler`;
* :class:`simans_fast.torch.SimANSDataset` feeds a ``DataLoader`` with worker processes
  (identical batches for any number of workers; serial kernels inside the workers);
* :class:`simans_fast.torch.SimANSRefresher` re-mines the candidates with the model being
  trained every ``--refresh-every`` steps (ANCE/SimANS style); the loader is re-created after a
  refresh so the workers see the new sampler;
* recall@10 and MRR@10 on held-out queries before and after training.

The data are synthetic (no download): documents are bags of topic words, a query is a noisy
subset of its document's words. Runs in about a minute on 2 CPU cores::

    python examples/train_plain_pytorch.py --steps 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import simans_fast as sf
from simans_fast.torch import SimANSDataset, SimANSRefresher, collate_simans


def make_data(n_docs, n_queries, vocab, doc_len, query_len, seed):
    """Documents: ``doc_len`` words drawn from one of 50 topics (shared words make hard
    negatives); query ``i`` asks for document ``i`` with ``query_len`` of its words plus noise."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, vocab, (50, 40))
    doc_topic = rng.integers(0, 50, n_docs)
    docs = np.empty((n_docs, doc_len), np.int64)
    for d in range(n_docs):
        own = rng.integers(0, vocab, doc_len // 2)
        docs[d] = np.concatenate([rng.choice(topics[doc_topic[d]], doc_len - own.size), own])
    queries = np.empty((n_queries, query_len), np.int64)
    for q in range(n_queries):
        keep = rng.choice(docs[q], query_len - 2, replace=False)
        queries[q] = np.concatenate([keep, rng.integers(0, vocab, 2)])
    return docs, queries  # positive of query q is document q


class Encoder(torch.nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(vocab, dim, mode="mean")
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, tokens):
        return F.normalize(self.proj(self.emb(tokens)), dim=-1)


@torch.no_grad()
def encode(model, tokens, batch=4096):
    model.eval()
    out = torch.cat([model(torch.as_tensor(tokens[i:i + batch]))
                     for i in range(0, len(tokens), batch)])
    model.train()
    return out.numpy()


def evaluate(model, queries, docs, rows):
    Q, C = encode(model, queries[rows]), encode(model, docs)
    top = sf.topk(Q, C, 10).ids
    hit = top == rows[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return float(hit.any(1).mean()), float(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=6000)
    ap.add_argument("--dev", type=int, default=1000, help="held-out queries (the last ones)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=100, help="candidates per query")
    ap.add_argument("--n", type=int, default=7, help="SimANS negatives per query")
    ap.add_argument("--a", type=float, default=0.5)
    ap.add_argument("--b", type=float, default=0.0)
    ap.add_argument("--refresh-every", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    vocab = 5000
    docs, queries = make_data(args.docs, args.queries, vocab, 24, 8, args.seed)
    train_rows = np.arange(args.queries - args.dev)
    dev_rows = np.arange(args.queries - args.dev, args.queries)
    model = Encoder(vocab, 64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    r10, mrr = evaluate(model, queries, docs, dev_rows)
    print(f"before training: recall@10 {r10:.3f}  MRR@10 {mrr:.3f}")

    # first candidates: the untrained model's exact top-k, positives excluded
    positives = train_rows.copy()  # query q's positive is document q
    t0 = time.perf_counter()
    sampler = sf.mine(encode(model, queries[train_rows]), encode(model, docs),
                      [[int(p)] for p in positives], k=args.k, n=args.n, a=args.a, b=args.b,
                      seed=args.seed)
    print(f"mined {args.k} candidates for {len(train_rows)} queries in "
          f"{time.perf_counter() - t0:.2f} s")
    dataset = SimANSDataset(sampler, positive_ids=positives)
    refresher = SimANSRefresher(
        sampler, lambda: encode(model, queries[train_rows]), lambda: encode(model, docs),
        positive_ids=positives, every=args.refresh_every, datasets=[dataset], mode="mine",
        k=args.k)

    def loader():
        return DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                          num_workers=args.workers, collate_fn=collate_simans,
                          generator=torch.Generator().manual_seed(args.seed + dataset.epoch))

    doc_t = torch.as_tensor(docs)
    q_t = torch.as_tensor(queries)
    step, epoch = 0, 0
    t0 = time.perf_counter()
    while step < args.steps:
        dataset.set_epoch(epoch)
        for batch in loader():
            qi = batch["query_index"]
            neg = batch["negative_ids"]  # (B, n), -1 padded
            pos = batch["positive_id"]
            q = model(q_t[train_rows[qi]])
            cand = torch.cat([pos[:, None], neg], 1)  # column 0 is the positive
            d = model(doc_t[cand.clamp(min=0)].reshape(-1, docs.shape[1]))
            d = d.reshape(cand.shape[0], cand.shape[1], -1)
            logits = torch.einsum("bd,bcd->bc", q, d) / 0.05
            logits = logits.masked_fill(cand < 0, float("-inf"))
            loss = F.cross_entropy(logits, torch.zeros(len(qi), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step:5d}  loss {loss.item():.4f}  ({time.perf_counter() - t0:.1f} s)")
            if step < args.steps and refresher.step(step):
                print(f"step {step:5d}  refreshed the candidates with the current model")
                break  # re-create the loader: its workers hold the old sampler
            if step >= args.steps:
                break
        epoch += 1  # a new epoch (fresh negatives) after a full pass or a refresh
    r10, mrr = evaluate(model, queries, docs, dev_rows)
    print(f"after {step} steps: recall@10 {r10:.3f}  MRR@10 {mrr:.3f}")


if __name__ == "__main__":
    main()
