"""A self-contained demo: synthetic retrieval data, mining, sampling, a summary and a plot.

``simans-fast demo`` (or :func:`run_demo`) builds a small retrieval set in memory: documents in
topical clusters, queries close to one planted positive document each, and for every query a few
*unlabelled near-duplicates of its positive* in the corpus. Those near-duplicates are relevant
but not in the qrels, i.e. false negatives, as in real training sets. It then mines the top-k
candidates (positives removed), draws SimANS negatives and compares them with the two usual
choices, the top-n candidates and n uniform draws from the top-k:

* the false-negative rate (share of chosen negatives that are planted near-duplicates),
* where in the ranking the negatives come from, and how far their scores sit from the
  positive's,
* the time of every stage.

The plot (PNG, needs matplotlib) shows the rank distribution of the three choices.
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["make_synthetic", "run_demo", "SyntheticRetrieval"]


class SyntheticRetrieval:
    """The arrays of a synthetic retrieval set.

    Attributes
    ----------
    queries : ndarray (n_queries, dim) float32
    corpus : ndarray (n_docs, dim) float32
    positives : ndarray (n_queries,) int64
        Corpus row of each query's labelled positive.
    false_negatives : ndarray (n_queries, n_dups) int64
        Corpus rows of each query's unlabelled near-duplicates of its positive.
    """

    def __init__(self, queries, corpus, positives, false_negatives):
        self.queries = queries
        self.corpus = corpus
        self.positives = positives
        self.false_negatives = false_negatives

    @property
    def qrels(self):
        """Positives as a CSR pair ``(indptr, ids)``, one per query."""
        n_q = self.positives.shape[0]
        return (np.arange(n_q + 1, dtype=np.int64), self.positives.astype(np.int64))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_synthetic(n_docs: int = 20000, n_queries: int = 2000, dim: int = 64, *,
                   n_topics: int = 100, n_dups: int = 2, scale: float = 20.0,
                   doc_noise: float = 0.7, query_noise: float = 1.5, dup_noise: float = 0.5,
                   seed: int = 0) -> SyntheticRetrieval:
    """Build a synthetic retrieval set with planted positives and unlabelled near-duplicates.

    Parameters
    ----------
    n_docs : int, default=20000
        Documents besides the near-duplicates.
    n_queries : int, default=2000
        Queries, each with one labelled positive (distinct documents).
    dim : int, default=64
        Embedding dimension.
    n_topics : int, default=100
        Topical clusters the documents belong to (gives every query many plausible negatives).
    n_dups : int, default=2
        Unlabelled near-duplicates of each query's positive added to the corpus.
    scale : float, default=20.0
        Scores are ``scale`` times a cosine, so they spread over several units like the inner
        products of trained retrievers (the range SimANS' ``a = 0.5`` is tuned for).
    seed : int, default=0

    Returns
    -------
    SyntheticRetrieval
    """
    if n_queries > n_docs:
        raise ValueError(f"n_queries ({n_queries}) must not exceed n_docs ({n_docs})")
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((n_topics, dim)))
    topic = rng.integers(0, n_topics, size=n_docs)
    docs = _unit(centers[topic] + doc_noise * _unit(rng.standard_normal((n_docs, dim))))
    pos = rng.choice(n_docs, size=n_queries, replace=False)
    queries = _unit(docs[pos] + query_noise * _unit(rng.standard_normal((n_queries, dim))))
    dups = _unit(np.repeat(docs[pos], n_dups, axis=0)
                 + dup_noise * _unit(rng.standard_normal((n_queries * n_dups, dim))))
    corpus = np.concatenate([docs, dups])
    # shuffle the corpus so near-duplicates are not recognisable by their row numbers
    perm = rng.permutation(corpus.shape[0])
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    corpus = corpus[perm]
    positives = inv[pos].astype(np.int64)
    fn = inv[n_docs + np.arange(n_queries * n_dups)].reshape(n_queries, n_dups).astype(np.int64)
    s = np.float32(np.sqrt(scale))
    return SyntheticRetrieval((queries * s).astype(np.float32), (corpus * s).astype(np.float32),
                              positives, fn)


def _uniform_columns(n_valid, k, n, seed):
    """n columns per row drawn uniformly without replacement among the first n_valid."""
    rng = np.random.default_rng(seed)
    keys = rng.random((n_valid.shape[0], k))
    keys[np.arange(k)[None, :] >= n_valid[:, None]] = np.inf
    cols = np.argsort(keys, axis=1, kind="stable")[:, :n]
    cols[np.arange(n)[None, :] >= n_valid[:, None]] = -1
    return cols


def _rank_bins(k):
    edges = [1, 11, 26, 51, 101, 201, 501, 1001]
    edges = [e for e in edges if e <= k] + [k + 1]
    return edges


def _save_plot(path, ranks: dict, gaps: dict, k: int, n: int, a: float, b: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import _tmp_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.arange(1, k + 2) - 0.5
    styles = {"SimANS": "C0", "top-n": "C3", "uniform": "C2"}
    for name, r in ranks.items():
        axes[0].hist(r, bins=bins, density=True, histtype="step", lw=1.6, color=styles[name],
                     label=name)
    axes[0].set_xlabel("rank of the negative among the top-k candidates (positives removed)")
    axes[0].set_ylabel("share of negatives")
    axes[0].set_title(f"Where negatives come from (k={k}, n={n})")
    axes[0].legend()
    lo = min(float(np.min(g)) for g in gaps.values())
    hi = max(float(np.max(g)) for g in gaps.values())
    gb = np.linspace(lo, hi, 60)
    for name, g in gaps.items():
        axes[1].hist(g, bins=gb, density=True, histtype="step", lw=1.6, color=styles[name],
                     label=name)
    axes[1].axvline(b, color="k", lw=0.8, ls="--")
    axes[1].set_xlabel("score of negative - score of positive")
    axes[1].set_title(f"Scores relative to the positive (SimANS a={a}, b={b})")
    axes[1].legend()
    fig.tight_layout()
    tmp = _tmp_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_demo(out: str | None = "simans_fast_demo", *, seed: int = 0, plot: bool = True,
             n_docs: int = 20000, n_queries: int = 2000, dim: int = 64, k: int = 100, n: int = 15,
             a: float = 0.5, b: float = 0.0, print_fn=print) -> dict:
    """Run the demo and print its summary.

    Parameters
    ----------
    out : str or None, default="simans_fast_demo"
        Directory for ``ranks.png`` (created); ``None`` writes nothing.
    seed : int, default=0
        Seed of the synthetic data and of the samplers.
    plot : bool, default=True
        Write the PNG (skipped with a note when matplotlib is missing).
    n_docs, n_queries, dim : int
        Size of the synthetic set (see :func:`make_synthetic`).
    k, n : int
        Candidates per query and negatives per query.
    a, b : float
        SimANS parameters.
    print_fn : callable
        Receives each line of the summary.

    Returns
    -------
    dict
        ``times`` (seconds per stage), ``false_negative_rate``, ``mean_rank``,
        ``mean_gap`` (per method), ``plot`` (path or None).
    """
    from .candidates import rescore, topk
    from .pipeline import mine
    from .sampler import SimANSSampler

    times = {}
    t0 = time.perf_counter()
    # warm-up on a tiny set: compiles the Numba kernels (or loads them from the cache)
    tiny = make_synthetic(300, 20, 8, n_topics=5, n_dups=1, seed=seed + 1)
    mine(tiny.queries, tiny.corpus, tiny.qrels, k=20, n=3, seed=seed).sample(epoch=0)
    times["warm-up (Numba compile or cache load)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = make_synthetic(n_docs, n_queries, dim, seed=seed)
    times["synthetic data"] = time.perf_counter() - t0
    n_q = data.queries.shape[0]

    t0 = time.perf_counter()
    cands = topk(data.queries, data.corpus, k, exclude=data.qrels)
    times["top-k (positives excluded)"] = time.perf_counter() - t0
    cids = np.asarray(cands.ids, dtype=np.int64)
    cscores = np.asarray(cands.scores, dtype=np.float32)

    t0 = time.perf_counter()
    pscores = rescore(data.queries, data.corpus, data.positives[:, None])[:, 0]
    times["positive scores (rescore)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sampler = SimANSSampler(cids, cscores, pscores, n=n, a=a, b=b, seed=seed)
    times["SimANS weights + alias tables"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cols_simans = sampler.sample_columns(epoch=0)
    times["SimANS draw, one epoch"] = time.perf_counter() - t0

    n_valid = (cids >= 0).sum(axis=1)
    cols_top = np.where(np.arange(n)[None, :] < n_valid[:, None], np.arange(n)[None, :], -1)
    cols_uni = _uniform_columns(n_valid, k, n, seed)

    # positive ranks (how hard the task is) -- a positive above every candidate has rank 1
    pos_rank = 1 + (cscores > pscores[:, None]).sum(axis=1)
    fn_set = data.false_negatives
    rows = np.arange(n_q)[:, None]
    stats = {}
    ranks = {}
    gaps = {}
    for name, cols in (("SimANS", cols_simans), ("top-n", cols_top), ("uniform", cols_uni)):
        valid = cols >= 0
        safe = np.where(valid, cols, 0)
        ids = cids[rows, safe]
        is_fn = (ids[:, :, None] == fn_set[:, None, :]).any(axis=2) & valid
        r = (safe + 1)[valid]
        g = (cscores[rows, safe] - pscores[:, None])[valid]
        stats[name] = {
            "false_negative_rate": float(is_fn.sum() / max(1, valid.sum())),
            "queries_with_a_false_negative": float(is_fn.any(axis=1).mean()),
            "mean_rank": float(r.mean()),
            "median_rank": float(np.median(r)),
            "mean_gap": float(g.mean()),
            "rank_hist": np.histogram(r, bins=_rank_bins(k))[0] / r.size,
        }
        ranks[name] = r
        gaps[name] = g
    # where the planted false negatives sit among the candidates
    fn_in = (cids[:, :, None] == fn_set[:, None, :]).any(axis=2)
    fn_ranks = (np.nonzero(fn_in)[1] + 1)

    p = print_fn
    p("simans-fast demo: synthetic retrieval set")
    p(f"  {n_q} queries, {data.corpus.shape[0]} documents (dim {dim}), one labelled positive per "
      f"query, {fn_set.shape[1]} unlabelled near-duplicates of it per query (false negatives)")
    p(f"  top-k = {k} candidates per query (positives removed), n = {n} negatives, "
      f"SimANS a = {a}, b = {b}")
    p(f"  positive's rank among the candidates: median {np.median(pos_rank):.0f}; false "
      f"negatives retrieved: {fn_in.sum()} of {fn_set.size} (median rank "
      f"{np.median(fn_ranks) if fn_ranks.size else float('nan'):.0f})")
    p("")
    p("time per stage")
    for key, v in times.items():
        p(f"  {key:<40s} {v * 1000:9.1f} ms")
    p("")
    edges = _rank_bins(k)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    p("negatives by method          " + "SimANS".rjust(10) + "top-n".rjust(10)
      + "uniform".rjust(10))
    p("  false-negative rate        " + "".join(
        f"{stats[m]['false_negative_rate'] * 100:9.2f}%" for m in stats))
    p("  queries with a false neg.  " + "".join(
        f"{stats[m]['queries_with_a_false_negative'] * 100:9.1f}%" for m in stats))
    p("  mean rank                  " + "".join(f"{stats[m]['mean_rank']:10.1f}" for m in stats))
    p("  mean s_neg - s_pos         " + "".join(f"{stats[m]['mean_gap']:10.2f}" for m in stats))
    p("  rank distribution:")
    for j, lab in enumerate(labels):
        p(f"    ranks {lab:<19s}" + "".join(
            f"{stats[m]['rank_hist'][j] * 100:9.1f}%" for m in stats))
    plot_path = None
    if out is not None and plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p("")
            p("note: matplotlib is not installed, no plot written (pip install matplotlib)")
        else:
            os.makedirs(out, exist_ok=True)
            plot_path = os.path.join(out, "ranks.png")
            t0 = time.perf_counter()
            _save_plot(plot_path, ranks, gaps, k, n, a, b)
            p("")
            p(f"plot: {plot_path} ({(time.perf_counter() - t0) * 1000:.0f} ms)")
    return {
        "times": times,
        "false_negative_rate": {m: stats[m]["false_negative_rate"] for m in stats},
        "mean_rank": {m: stats[m]["mean_rank"] for m in stats},
        "mean_gap": {m: stats[m]["mean_gap"] for m in stats},
        "plot": plot_path,
    }
