"""Negative quality of each selection strategy in a generated world with known relevance.

Run: ``python benchmarks/quality_synthetic.py`` (under a minute). Prints one table per scenario
and writes ``benchmarks/results/quality_synthetic.png`` and ``quality_synthetic.json``.

The world
---------
Each query has one labelled positive, a Poisson number of *unlabelled relevant* documents (the
false negatives the qrels miss), a set of *near-misses* (on topic, not relevant) and many *noise*
documents. Every document has a latent similarity to its query (relevant > near-miss > noise, plus
a per-query offset), and the retriever sees it through Gaussian noise. Scores are logits on the
MultipleNegativesRankingLoss scale (20 x cosine), the scale SimANS's ``a`` refers to. The
candidates are the retriever's top ``k`` documents with the labelled positive removed, exactly what
a miner sees.

Measures, over every sampled negative (rows padded with -1 are counted in ``fill``)
--------------------------------------------------------------------------------
* ``FN %``: share of sampled negatives that are unlabelled relevant documents;
  ``q w/ FN %``: share of queries with at least one;
* ``near %``: share that are near-misses (hard *true* negatives);
* ``rank``: mean / median 1-based retrieval rank; ``gap``: mean and 10/90th percentiles of
  ``s_neg - s_pos`` (logits);
* informativeness under the retriever's scores: in the InfoNCE loss over the positive and the
  sampled negatives, the gradient with respect to a negative's logit is its softmax weight ``p_i``.
  ``useful`` = mean per query of ``sum p_i`` over true negatives (pushes the model the right way),
  ``harmful`` = the same over false negatives (pushes relevant documents away).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

NOISE, NEAR, FALSE_NEG = 0, 1, 2
SCALE = 20.0  # logits = 20 * cosine (sentence-transformers MNRL default scale)


@dataclass
class World:
    """Candidates of a generated retrieval task (rows sorted by score, highest first).

    Attributes
    ----------
    scores : (n_q, k) float32
        Retriever logits of the candidates (labelled positive removed).
    types : (n_q, k) int8
        ``NOISE``, ``NEAR`` or ``FALSE_NEG`` (unlabelled relevant).
    positive_scores : (n_q,) float64
        Retriever logit of each query's labelled positive.
    n_false_neg : (n_q,) int64
        Unlabelled relevant documents per query (retrieved or not).
    """

    scores: np.ndarray
    types: np.ndarray
    positive_scores: np.ndarray
    n_false_neg: np.ndarray

    @property
    def ids(self) -> np.ndarray:
        """Candidate "ids" that are the column indices, so selections map back to ranks."""
        n_q, k = self.scores.shape
        return np.broadcast_to(np.arange(k, dtype=np.int64), (n_q, k))


def make_world(n_queries: int = 2000, *, k: int = 210, n_noise: int = 2000, n_near: int = 30,
               fn_mean: float = 1.0, retriever_noise: float = 0.06, seed: int = 0) -> World:
    """Generate a world (deterministic for a seed).

    Parameters
    ----------
    n_queries : int
    k : int
        Candidates kept per query (top ``k`` by retriever score).
    n_noise, n_near : int
        Noise documents and near-misses per query.
    fn_mean : float
        Mean (Poisson) number of unlabelled relevant documents per query.
    retriever_noise : float
        Standard deviation of the retriever's error, in cosine units.
    seed : int
    """
    rng = np.random.default_rng(seed)
    fmax = int(max(1, np.ceil(fn_mean + 6 * np.sqrt(fn_mean))))
    n_fn = np.minimum(rng.poisson(fn_mean, n_queries), fmax)
    offset = rng.normal(0.0, 0.05, (n_queries, 1))
    lat_pos = 0.60 + offset[:, 0] + rng.normal(0.0, 0.07, n_queries)
    lat_fn = 0.60 + offset + rng.normal(0.0, 0.07, (n_queries, fmax))
    lat_near = 0.48 + offset + rng.normal(0.0, 0.07, (n_queries, n_near))
    lat_noise = 0.20 + offset + rng.normal(0.0, 0.08, (n_queries, n_noise))
    latent = np.concatenate([lat_fn, lat_near, lat_noise], axis=1)
    obs = SCALE * (latent + rng.normal(0.0, retriever_noise, latent.shape))
    obs[:, :fmax][np.arange(fmax)[None, :] >= n_fn[:, None]] = -np.inf  # absent documents
    pos = SCALE * (lat_pos + rng.normal(0.0, retriever_noise, n_queries))
    col_type = np.concatenate([np.full(fmax, FALSE_NEG), np.full(n_near, NEAR),
                               np.full(n_noise, NOISE)]).astype(np.int8)
    top = np.argpartition(-obs, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(obs, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    scores = np.take_along_axis(obs, top, axis=1).astype(np.float32)
    return World(scores=scores, types=col_type[top],
                 positive_scores=pos.astype(np.float32).astype(np.float64),
                 n_false_neg=n_fn.astype(np.int64))


SCENARIOS = {
    "default": dict(fn_mean=1.0, retriever_noise=0.06),
    "clean qrels": dict(fn_mean=0.0, retriever_noise=0.06),
    "noisy retriever": dict(fn_mean=1.0, retriever_noise=0.12),
}

# name -> keyword arguments of sf.select_negatives. "b=-1" puts the peak one logit below the
# positive (the paper's NQ setting: its code's b = 1.0 is b = -1.0 in this package's sign).
# NV-Retriever thresholds: perc is scale-free; margin 0.05 cosine = 1.0 logit.
STRATEGIES = {
    "top": dict(strategy="top"),
    "top skip 10": dict(strategy="top", skip=10),
    "uniform 10-210": dict(strategy="uniform", window=(10, 210)),
    "simans gauss a=0.5": dict(strategy="simans", kernel="gaussian", a=0.5, b=0.0),
    "simans gauss b=-1": dict(strategy="simans", kernel="gaussian", a=0.5, b=-1.0),
    "simans laplace a=1": dict(strategy="simans", kernel="laplace", a=1.0, b=0.0),
    "top + PercPos .95": dict(strategy="top", perc=0.95),
    "simans + MarginPos 1": dict(strategy="simans", margin=1.0),
}


def evaluate(world: World, cols: np.ndarray) -> dict:
    """Quality measures of a selection ``cols`` (n_q, n) of candidate columns, -1 padded."""
    n_q, n = cols.shape
    got = cols >= 0
    safe = np.where(got, cols, 0)
    types = np.take_along_axis(world.types, safe, axis=1)
    scores = np.take_along_axis(world.scores, safe, axis=1).astype(np.float64)
    gap = (scores - world.positive_scores[:, None])[got]
    is_fn = (types == FALSE_NEG) & got
    is_near = (types == NEAR) & got
    # InfoNCE softmax over [positive, negatives] with the retriever's logits
    logits = np.concatenate([world.positive_scores[:, None], np.where(got, scores, -np.inf)], 1)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    pn = p[:, 1:]
    total = max(int(got.sum()), 1)
    ranks = (safe + 1)[got]
    return {
        "fill": float(got.mean()),
        "fn_pct": 100.0 * is_fn.sum() / total,
        "q_fn_pct": 100.0 * float(is_fn.any(axis=1).mean()),
        "near_pct": 100.0 * is_near.sum() / total,
        "rank_mean": float(ranks.mean()) if ranks.size else float("nan"),
        "rank_median": float(np.median(ranks)) if ranks.size else float("nan"),
        "gap_mean": float(gap.mean()) if gap.size else float("nan"),
        "gap_p10": float(np.percentile(gap, 10)) if gap.size else float("nan"),
        "gap_p90": float(np.percentile(gap, 90)) if gap.size else float("nan"),
        "useful": float(np.where(got & ~is_fn, pn, 0.0).sum(axis=1).mean()),
        "harmful": float(np.where(is_fn, pn, 0.0).sum(axis=1).mean()),
        "rank_hist": np.bincount(ranks - 1, minlength=world.scores.shape[1]).tolist(),
    }


def run(n_queries: int = 2000, *, n: int = 15, seed: int = 0, scenarios=None, strategies=None,
        plot_path: str | None = None, json_path: str | None = None, verbose: bool = True) -> dict:
    """Run every strategy on every scenario; return ``{scenario: {strategy: measures}}``."""
    import simans_fast as sf

    scenarios = list(SCENARIOS) if scenarios is None else list(scenarios)
    strategies = list(STRATEGIES) if strategies is None else list(strategies)
    results = {}
    for sc in scenarios:
        world = make_world(n_queries, seed=seed, **SCENARIOS[sc])
        res = {}
        for name in strategies:
            cols = sf.select_negatives(world.ids, world.scores, world.positive_scores, n,
                                       seed=seed, **STRATEGIES[name])
            res[name] = evaluate(world, cols)
        results[sc] = res
        if verbose:
            print_table(sc, world, res, n)
    if json_path:
        _atomic_write_text(json_path, json.dumps(
            {"n_queries": n_queries, "n": n, "seed": seed,
             "scenarios": {s: SCENARIOS[s] for s in scenarios},
             "strategies": {s: STRATEGIES[s] for s in strategies},
             "results": {sc: {st: {k: v for k, v in m.items() if k != "rank_hist"}
                              for st, m in r.items()} for sc, r in results.items()}},
            indent=1, default=str))
    if plot_path:
        plot(results, plot_path)
    return results


def print_table(scenario, world, res, n):
    n_q, k = world.scores.shape
    retrieved_fn = (world.types == FALSE_NEG).sum()
    print(f"\n### scenario: {scenario} ({n_q} queries, top-{k} candidates, {n} negatives; "
          f"{int(world.n_false_neg.sum())} unlabelled relevant docs, {int(retrieved_fn)} of them "
          f"retrieved)")
    head = ("| strategy | fill | FN % | q w/ FN % | near % | rank mean | rank med | gap mean "
            "| gap p10..p90 | useful | harmful |")
    print(head)
    print("|" + " --- |" + " ---: |" * (head.count("|") - 2))
    for name, m in res.items():
        print(f"| {name} | {m['fill']:.3f} | {m['fn_pct']:.2f} | {m['q_fn_pct']:.1f} | "
              f"{m['near_pct']:.1f} | {m['rank_mean']:.1f} | {m['rank_median']:.0f} | "
              f"{m['gap_mean']:.2f} | {m['gap_p10']:.2f}..{m['gap_p90']:.2f} | "
              f"{m['useful']:.3f} | {m['harmful']:.4f} |")


def _atomic_write_text(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=os.path.basename(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


def plot(results, path):
    """Rank histograms (first scenario) and harmful vs useful gradient (all scenarios)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = list(results)
    first = results[scen[0]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for name, m in first.items():
        h = np.asarray(m["rank_hist"], dtype=np.float64)
        bins = h.reshape(-1, 10).sum(axis=1) if h.size % 10 == 0 else h
        ax.step(np.arange(bins.size) * 10 + 1, bins / max(h.sum(), 1), where="post", label=name)
    ax.set_xlabel("retrieval rank of the negative (bins of 10)")
    ax.set_ylabel("share of sampled negatives")
    ax.set_yscale("log")
    ax.set_title(f"where negatives come from ({scen[0]})")
    ax.legend(fontsize=7)
    ax = axes[1]
    markers = "osd^v<>"
    for si, sc in enumerate(scen):
        for ni, (name, m) in enumerate(results[sc].items()):
            ax.scatter(m["useful"], m["harmful"], marker=markers[si % len(markers)],
                       color=f"C{ni}", s=40, label=name if si == 0 else None)
    for si, sc in enumerate(scen):
        ax.scatter([], [], marker=markers[si % len(markers)], color="gray", label=f"scenario: {sc}")
    ax.set_xlabel("useful gradient: InfoNCE weight on true negatives (per query)")
    ax.set_ylabel("harmful gradient: weight on false negatives")
    ax.set_title("informativeness vs false-negative harm (down-right is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-queries", type=int, default=2000)
    p.add_argument("--n", type=int, default=15, help="negatives per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=os.path.join(here, "results"))
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    run(args.n_queries, n=args.n, seed=args.seed,
        plot_path=None if args.no_plot else os.path.join(args.out_dir, "quality_synthetic.png"),
        json_path=os.path.join(args.out_dir, "quality_synthetic.json"))
    print(f"\n(done in {time.perf_counter() - t0:.1f} s; outputs in {args.out_dir})")


if __name__ == "__main__":
    sys.exit(main())
