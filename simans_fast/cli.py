"""The ``simans-fast`` command line tool (also ``python -m simans_fast``).

Sub-commands::

    simans-fast mine    --queries Q.npy --corpus C.npy --query-ids qids.txt --doc-ids dids.txt
                        --qrels qrels.txt --out DIR [--k 200 --n 15 --a 0.5 --b 0 ...]
    simans-fast sample  --candidates DIR/candidates --epoch 1 --out FILE [--format ...]
    simans-fast inspect FILE_OR_DIR
    simans-fast demo    [--out DIR]

``simans-fast`` without a sub-command runs the demo.

Errors in the user's input (missing file, wrong shape or dtype, unknown ids, dimension
mismatch, id list length, k larger than the corpus) print one line on stderr naming the file or
argument and the fix, exit with status 2 and leave no output behind.

Mining is split into query chunks; each chunk's candidates are checkpointed atomically under
``DIR/.simans-work`` so that ``--resume`` continues an interrupted run (even one killed with
SIGKILL) and produces byte-for-byte the files an uninterrupted run writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time

# NumPy, Numba and the rest are imported after the thread limits are set (see main()).

_WORK = ".simans-work"
_CANDIDATES = "candidates"
_EXT = {"tevatron": ".jsonl", "sentence-transformers": ".parquet", "trec": ".trec",
        "simxns": ".tsv"}
_FORMATS = ("tevatron", "sentence-transformers", "trec", "simxns")


def _input_error():
    from .io import InputError

    return InputError


def _test_hook(point: str) -> None:
    """Crash points used by the resume tests (SIMANS_FAST_TEST_KILL_AT=point)."""
    if os.environ.get("SIMANS_FAST_TEST_KILL_AT") == point:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------- threads
def _set_thread_env(n: int | None) -> None:
    """Limit every thread pool (BLAS/OpenMP/Numba) to ``n`` threads, before they start."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)
    if "numba" not in sys.modules:
        os.environ["NUMBA_NUM_THREADS"] = str(n)


def _apply_threads(n: int | None) -> None:
    """Thread limits for libraries already loaded (numba pool, BLAS via threadpoolctl, ...)."""
    if n is None:
        return
    from ._numba import configure_threads

    configure_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    if "faiss" in sys.modules:
        try:
            sys.modules["faiss"].omp_set_num_threads(n)
        except Exception:
            pass
    if "torch" in sys.modules:
        try:
            sys.modules["torch"].set_num_threads(n)
        except Exception:
            pass


# --------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(msg, flush=True)


def _note(msg: str) -> None:
    print(f"simans-fast: {msg}", file=sys.stderr, flush=True)


def _want_progress(args) -> bool:
    if args.progress is None:
        return sys.stderr.isatty()
    return bool(args.progress)


def _check_out_file(path: str, arg: str = "--out") -> None:
    InputError = _input_error()
    if os.path.isdir(path):
        raise InputError(f"{arg} {path}: is a directory, expected a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"{arg} {path}: directory {parent} does not exist; create it first")


def _resolve_format(fmt: str | None, path: str | None) -> str:
    from .io import format_from_extension

    if fmt:
        return fmt
    if path:
        f = format_from_extension(path)
        if f:
            return f
    return "tevatron"


def _check_parquet(path: str, arg: str) -> None:
    if path.lower().endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise _input_error()(
                f"{arg} {path}: writing Parquet needs pyarrow (pip install pyarrow); or name the "
                "file .jsonl"
            ) from None


def _check_text_args(args) -> None:
    InputError = _input_error()
    for arg, path in (("--query-texts", args.query_texts), ("--doc-texts", args.doc_texts)):
        if path is not None and not os.path.isfile(path):
            raise InputError(f"{arg} {path}: file not found; check the path")
    if args.texts is not None:
        if not os.path.isdir(args.texts):
            raise InputError(f"--texts {args.texts}: not a directory; pass a BEIR-style "
                             "folder with queries.jsonl and corpus.jsonl, or use "
                             "--query-texts/--doc-texts")
        for name in ("queries.jsonl", "corpus.jsonl"):
            if not os.path.isfile(os.path.join(args.texts, name)):
                raise InputError(f"--texts {args.texts}: {name} not found in it; pass a "
                                 "BEIR-style folder or use --query-texts/--doc-texts")
    has_q = args.query_texts is not None or args.texts is not None
    has_d = args.doc_texts is not None or args.texts is not None
    if has_q != has_d:
        raise InputError("--query-texts/--doc-texts: give both (or --texts DIR); texts are "
                         "written only when queries and documents both have them")


def _load_texts(args, neg) -> None:
    """Attach the texts of the ids ``neg`` refers to (only those are kept in memory)."""
    from .io import read_texts

    InputError = _input_error()
    if args.query_texts is None and args.doc_texts is None and args.texts is None:
        return
    want_q, want_d = neg.needed_ids()
    qpath = args.query_texts or os.path.join(args.texts, "queries.jsonl")
    dpath = args.doc_texts or os.path.join(args.texts, "corpus.jsonl")
    qarg = "--query-texts" if args.query_texts else "--texts"
    darg = "--doc-texts" if args.doc_texts else "--texts"
    qt = read_texts(qpath, want_q, arg=qarg)
    dt = read_texts(dpath, want_d, arg=darg)
    for arg, path, want, got, what in ((qarg, qpath, want_q, qt, "query"),
                                       (darg, dpath, want_d, dt, "document")):
        missing = want - got.keys()
        if missing:
            first = sorted(missing)[0]
            raise InputError(f"{arg} {path}: no text for {len(missing)} {what} id(s) "
                             f"(first: {first!r}); use the texts of the same collection")
    neg.query_texts = qt
    neg.doc_texts = dt


def epoch_negatives(cf, epoch: int, params: dict):
    """Draw one epoch from a loaded candidates file; returns an :class:`io.EpochNegatives`.

    ``params`` holds n, a, b, kernel, seed, positive_choice, fallback.
    """
    import numpy as np

    from .io import EpochNegatives
    from .sampler import SimANSSampler

    cids = np.asarray(cf.candidate_ids)
    cscores = np.asarray(cf.candidate_scores)
    pscores = np.asarray(cf.positive_scores)
    pos_ids = np.asarray(cf.positive_ids)
    sampler = SimANSSampler(
        cids, cscores, pscores[:, 0] if pscores.shape[1] == 1 else pscores,
        n=int(params["n"]), a=float(params["a"]), b=float(params["b"]),
        kernel=params["kernel"], seed=int(params["seed"]), fallback=params["fallback"],
        positive_choice=params["positive_choice"],
    )
    strategy = params.get("strategy", "simans")
    filters = {key: params.get(key) for key in ("max_score", "margin", "perc")}
    skip = int(params.get("skip") or 0)
    window = _parse_window(params.get("window"))
    if strategy == "simans" and skip == 0 and window is None and all(
            v is None for v in filters.values()):
        cols = sampler.sample_columns(epoch=epoch)
    else:
        from .strategies import select_negatives

        # column indices stand in for the ids, so the result is columns (scores, ranks follow)
        col_ids = np.where(cids >= 0, np.arange(cids.shape[1])[None, :], -1)
        cols = select_negatives(
            col_ids, cscores, pscores[:, 0] if pscores.shape[1] == 1 else pscores,
            int(params["n"]), strategy=strategy, a=float(params["a"]), b=float(params["b"]),
            kernel=params["kernel"], skip=skip, window=window, seed=int(params["seed"]),
            epoch=epoch, fallback=params["fallback"], **filters)
    n_q = cids.shape[0]
    rows = np.arange(n_q)[:, None]
    valid = cols >= 0
    safe = np.where(valid, cols, 0)
    neg_rows = np.where(valid, cids[rows, safe], -1)
    neg_scores = np.where(valid, cscores[rows, safe], np.float32(np.nan)).astype(np.float32)
    neg_ranks = np.where(valid, safe + 1, 0).astype(np.int64)
    # the positive used this epoch first, the others after it in qrels order
    m = pos_ids.shape[1]
    p = sampler.positive_index(epoch=epoch)
    p = np.where(p < 0, 0, p)[:, None]
    c = np.arange(m)[None, :]
    order = np.where(c == 0, p, np.where(c <= p, c - 1, c))
    pos_rows = pos_ids[rows, order]
    pos_scores = pscores[rows, order].astype(np.float32)
    return EpochNegatives(cf.query_ids, cf.doc_ids, pos_rows, pos_scores, neg_rows, neg_scores,
                          neg_ranks)


def _fmt_time(s: float) -> str:
    return f"{s:.2f} s" if s < 100 else f"{s / 60:.1f} min"


# --------------------------------------------------------------------------------- mine
def _job_identity(args, queries, corpus, qids, dids, qrels_info):
    from . import io as sio

    return {
        "k": args.k,
        "metric": args.metric,
        "backend": args.backend,
        "chunk_size": args.chunk_size,
        "parameters": _sampling_params(args),
        "inputs": {
            "queries": {"shape": list(queries.shape), "dtype": queries.dtype.str,
                        "fingerprint": sio.array_fingerprint(queries)},
            "corpus": {"shape": list(corpus.shape), "dtype": corpus.dtype.str,
                       "fingerprint": sio.array_fingerprint(corpus)},
            "query_ids_sha256": sio.ids_sha256(qids),
            "doc_ids_sha256": sio.ids_sha256(dids),
            "qrels_sha256": sio.file_sha256(args.qrels),
            "skip_missing_qrels": bool(args.skip_missing_qrels),
        },
        "qrels": qrels_info,
    }


_STRATEGY_KEYS = ("strategy", "skip", "window", "max_score", "margin", "perc")


def _parse_window(text):
    """``"LO-HI"`` (FlagEmbedding's rank range, e.g. ``10-210``) or ``"LO-"`` -> (lo, hi)."""
    if text in (None, ""):
        return None
    if isinstance(text, (list, tuple)):
        return (int(text[0]), None if text[1] is None else int(text[1]))
    lo, sep, hi = str(text).partition("-")
    try:
        if not sep:
            raise ValueError
        return (int(lo), int(hi) if hi else None)
    except ValueError:
        raise _input_error()(f"--window {text!r}: expected LO-HI or LO- (ranks, e.g. 10-210)")


def _sampling_params(args) -> dict:
    out = {"n": args.n, "a": float(args.a), "b": float(args.b), "kernel": args.kernel,
           "seed": args.seed, "positive_choice": args.positive_choice,
           "fallback": args.fallback}
    # strategy options are recorded only when used, so default runs keep their old header
    if getattr(args, "strategy", None) not in (None, "simans"):
        out["strategy"] = args.strategy
    for key in _STRATEGY_KEYS[1:]:
        v = getattr(args, key, None)
        if v not in (None, 0) or (key == "skip" and v):
            out[key] = v
    return out


def _diff_keys(a, b, prefix=""):
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix[:-1] or "(job)"]


def _prepare_out(out: str, job: dict, *, resume: bool, overwrite: bool):
    """Decide what is left to do in ``out``; returns 'fresh', 'chunks' or 'negatives'."""
    from . import io as sio

    InputError = _input_error()
    work = os.path.join(out, _WORK)
    cand = os.path.join(out, _CANDIDATES)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out}: exists and is not a directory; choose a directory name")
    has_run = os.path.exists(work) or os.path.exists(cand)
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cand, ignore_errors=True)
        if os.path.isdir(out):
            for name in os.listdir(out):
                if name.startswith("negatives.epoch0."):
                    os.unlink(os.path.join(out, name))
        has_run = False
    if has_run and not resume:
        raise InputError(f"--out {out}: already holds a run; pass --resume to continue or reuse "
                         "it, --overwrite to start again, or choose another --out")
    if os.path.isdir(cand):
        header = sio.read_header(cand, arg="--out")
        old = header.get("provenance", {}).get("job")
        diff = _diff_keys(old or {}, job)
        if diff:
            raise InputError(f"--out {out}: holds a run made with different inputs or parameters "
                             f"({', '.join(diff[:4])}); use another --out or --overwrite")
        return "negatives"
    if os.path.isdir(work):
        jp = os.path.join(work, "job.json")
        if os.path.exists(jp):
            with open(jp, encoding="utf-8") as f:
                old = json.load(f)
            diff = _diff_keys(old, job)
            if diff:
                raise InputError(f"--out {out}: holds an unfinished run made with different inputs "
                                 f"or parameters ({', '.join(diff[:4])}); re-run with the same "
                                 "arguments, use another --out, or --overwrite")
            return "chunks"
    os.makedirs(os.path.join(work, "chunks"), exist_ok=True)
    sio.atomic_write_text(os.path.join(work, "job.json"), sio._json_dumps(job))
    return "fresh"


def _chunk_name(c: int) -> str:
    return f"c{c:07d}"


def _write_chunk(chunks_dir: str, c: int, arrays: dict) -> None:
    import tempfile

    import numpy as np

    from .io import fsync_dir

    tmp = tempfile.mkdtemp(dir=chunks_dir, prefix=".tmp-")
    for name, arr in arrays.items():
        with open(os.path.join(tmp, name + ".npy"), "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(tmp)
    _test_hook(f"chunk-tmp:{c}")
    os.replace(tmp, os.path.join(chunks_dir, _chunk_name(c)))
    fsync_dir(chunks_dir)


_CHUNK_ARRAYS = ("candidate_ids", "candidate_scores", "positive_scores")


def _read_chunk(chunks_dir: str, c: int, expect_rows: int, k: int, m: int):
    import numpy as np

    d = os.path.join(chunks_dir, _chunk_name(c))
    try:
        arrs = {n: np.load(os.path.join(d, n + ".npy"), allow_pickle=False)
                for n in _CHUNK_ARRAYS}
    except (OSError, ValueError):
        return None
    if (arrs["candidate_ids"].shape != (expect_rows, k)
            or arrs["candidate_scores"].shape != (expect_rows, k)
            or arrs["positive_scores"].shape != (expect_rows, m)):
        return None
    return arrs


def _mine_chunks(args, queries, corpus, indptr, pids, pos, work, progress):
    import numpy as np

    from .pipeline import _mine_block

    chunks_dir = os.path.join(work, "chunks")
    os.makedirs(chunks_dir, exist_ok=True)
    for name in os.listdir(chunks_dir):  # debris of a run killed mid-write
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(chunks_dir, name), ignore_errors=True)
    n_q = queries.shape[0]
    cs = args.chunk_size
    n_chunks = math.ceil(n_q / cs)
    m = pos.shape[1]
    done = set()
    for c in range(n_chunks):
        rows = min(n_q, (c + 1) * cs) - c * cs
        if os.path.isdir(os.path.join(chunks_dir, _chunk_name(c))):
            if _read_chunk(chunks_dir, c, rows, args.k, m) is not None:
                done.add(c)
            else:
                shutil.rmtree(os.path.join(chunks_dir, _chunk_name(c)), ignore_errors=True)
    if done:
        _note(f"resuming: {len(done)} of {n_chunks} chunks already mined")
    from ._progress import progress_bar
    from .candidates import rescore, topk

    sleep = float(os.environ.get("SIMANS_FAST_TEST_CHUNK_SLEEP", "0") or 0)
    with progress_bar(n_q, desc="top-k", enable=progress, unit="q",
                      initial=sum(min(n_q, (c + 1) * cs) - c * cs for c in done)) as bar:
        for c in range(n_chunks):
            if c in done:
                continue
            lo, hi = c * cs, min(n_q, (c + 1) * cs)
            sub_ptr = indptr[lo:hi + 1] - indptr[lo]
            sub_ids = pids[indptr[lo]:indptr[hi]]
            q = np.ascontiguousarray(queries[lo:hi])
            cids, cscores, pscores = _mine_block(
                q, corpus, sub_ptr, sub_ids, pos[lo:hi], k=args.k, metric=args.metric,
                backend=args.backend, index=None, topk=topk, rescore=rescore)
            _write_chunk(chunks_dir, c, {"candidate_ids": cids, "candidate_scores": cscores,
                                         "positive_scores": pscores})
            _test_hook(f"chunk:{c}")
            bar.update(hi - lo)
            if sleep:
                time.sleep(sleep)
    return n_chunks


def _assemble(args, out, work, n_q, pos, qids, dids, job, n_chunks):
    """Concatenate the chunks into the final candidates directory (built, then renamed)."""
    import numpy as np
    from numpy.lib.format import open_memmap

    from . import io as sio

    chunks_dir = os.path.join(work, "chunks")
    adir = os.path.join(work, "assemble")
    shutil.rmtree(adir, ignore_errors=True)
    os.makedirs(adir)
    k, m = args.k, pos.shape[1]
    shapes = {"candidate_ids": ((n_q, k), np.int64), "candidate_scores": ((n_q, k), np.float32),
              "positive_scores": ((n_q, m), np.float32)}
    mms = {name: open_memmap(os.path.join(adir, name + ".npy"), mode="w+", dtype=dt, shape=shp)
           for name, (shp, dt) in shapes.items()}
    cs = args.chunk_size
    for c in range(n_chunks):
        lo, hi = c * cs, min(n_q, (c + 1) * cs)
        arrs = _read_chunk(chunks_dir, c, hi - lo, k, m)
        if arrs is None:  # pragma: no cover - chunks are validated before
            raise RuntimeError(f"chunk {c} of {work} is damaged; re-run with --resume")
        for name in _CHUNK_ARRAYS:
            mms[name][lo:hi] = arrs[name]
    hashes = {}
    for name, mm in mms.items():
        mm.flush()
        del mm
    mms.clear()
    with open(os.path.join(adir, "positive_ids.npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(pos, dtype=np.int64), allow_pickle=False)
    for name in ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores"):
        fp = os.path.join(adir, name + ".npy")
        with open(fp, "rb+") as f:
            os.fsync(f.fileno())
        hashes[name] = sio.file_sha256(fp)
    shape_view = {
        "candidate_ids": _Shape((n_q, k)),
        "candidate_scores": _Shape((n_q, k)),
        "positive_ids": _Shape((n_q, m)),
        "positive_scores": _Shape((n_q, m)),
    }
    params = dict(job["parameters"], k=args.k, metric=args.metric)
    provenance = {"job": job}
    sio.write_candidates_dir_finish(adir, shape_view, qids, dids, params, provenance, hashes)
    _test_hook("assemble")
    cand = os.path.join(out, _CANDIDATES)
    os.replace(adir, cand)
    sio.fsync_dir(out)


class _Shape:
    """Stand-in with only a ``shape`` (the header writer reads nothing else)."""

    def __init__(self, shape):
        self.shape = shape


def _qrels_summary(indptr) -> tuple[int, int]:
    import numpy as np

    counts = np.diff(indptr)
    return int(np.count_nonzero(counts == 0)), int(counts.max()) if counts.size else 0


def cmd_mine(args) -> int:
    import numpy as np

    from . import io as sio
    from .pipeline import positive_matrix

    InputError = sio.InputError
    t_start = time.perf_counter()
    progress = _want_progress(args)
    # ---- validate everything before writing anything
    queries = sio.read_embeddings(args.queries, arg="--queries")
    corpus = sio.read_embeddings(args.corpus, arg="--corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise InputError(
            f"--queries {args.queries}: dimension {queries.shape[1]} differs from --corpus "
            f"{args.corpus} ({corpus.shape[1]}); embed queries and corpus with the same model")
    qids = sio.read_ids(args.query_ids, arg="--query-ids")
    if len(qids) != queries.shape[0]:
        raise InputError(
            f"--query-ids {args.query_ids}: {len(qids)} ids but --queries {args.queries} has "
            f"{queries.shape[0]} rows; give one id per embedding row, in row order")
    dids = sio.read_ids(args.doc_ids, arg="--doc-ids")
    if len(dids) != corpus.shape[0]:
        raise InputError(
            f"--doc-ids {args.doc_ids}: {len(dids)} ids but --corpus {args.corpus} has "
            f"{corpus.shape[0]} rows; give one id per embedding row, in row order")
    n_docs = corpus.shape[0]
    if args.k > n_docs:
        raise InputError(f"--k {args.k}: larger than the corpus (--corpus {args.corpus} has "
                         f"{n_docs} rows); lower --k")
    fmt = _resolve_format(args.format, None)
    if fmt == "sentence-transformers":
        try:
            import pyarrow.parquet  # noqa: F401

            ext = ".parquet"
        except ImportError:
            ext = ".jsonl"
    else:
        ext = _EXT[fmt]
    neg_name = "negatives.epoch0" + ext
    _check_text_args(args)
    if args.chunk_size is None:
        args.chunk_size = 4096
    qindex = {s: i for i, s in enumerate(qids)}
    dindex = {s: i for i, s in enumerate(dids)}
    indptr, pids, qinfo = sio.read_qrels(args.qrels, qindex, dindex,
                                         query_arg=f"--query-ids {args.query_ids}",
                                         doc_arg=f"--doc-ids {args.doc_ids}",
                                         skip_missing=args.skip_missing_qrels)
    job = _job_identity(args, queries, corpus, qids, dids, qinfo)
    out = args.out
    state = _prepare_out(out, job, resume=args.resume, overwrite=args.overwrite)
    if qinfo["n_skipped"]:
        _note(f"--skip-missing-qrels: dropped {qinfo['n_skipped']} judgement(s) with unknown ids")
    n_q = queries.shape[0]
    no_pos, max_pos = _qrels_summary(indptr)
    if no_pos:
        _note(f"{no_pos} of {n_q} queries have no positive in --qrels; they get the "
              f"'{args.fallback}' fallback negatives")
    pos = positive_matrix(indptr, pids)
    work = os.path.join(out, _WORK)
    t_mine = t_asm = 0.0
    if state in ("fresh", "chunks"):
        t0 = time.perf_counter()
        n_chunks = _mine_chunks(args, queries, corpus, indptr, pids, pos, work, progress)
        t_mine = time.perf_counter() - t0
        t0 = time.perf_counter()
        _assemble(args, out, work, n_q, pos, qids, dids, job, n_chunks)
        t_asm = time.perf_counter() - t0
        _test_hook("candidates")
    shutil.rmtree(work, ignore_errors=True)
    _test_hook("cleanup")
    # ---- epoch 0 negatives from the saved candidates (same code path as `sample`)
    cand = os.path.join(out, _CANDIDATES)
    t0 = time.perf_counter()
    cf = sio.load_candidates(cand, arg="--out")
    neg = epoch_negatives(cf, 0, cf.parameters)
    t_draw = time.perf_counter() - t0
    _load_texts(args, neg)
    neg_path = os.path.join(out, neg_name)
    t0 = time.perf_counter()
    sio.write_negatives(neg_path, neg, fmt, progress=progress)
    t_write = time.perf_counter() - t0
    _test_hook("negatives")
    total = time.perf_counter() - t_start
    if state == "negatives":
        _say(f"candidates already complete in {cand} (reused)")
    else:
        _say(f"mined {n_q} queries x k={args.k} candidates over {n_docs} documents "
             f"in {_fmt_time(t_mine)} (assembly {_fmt_time(t_asm)}) -> {cand}")
    _say(f"epoch 0: {neg.n} negatives per query drawn in {_fmt_time(t_draw)}, written in "
         f"{_fmt_time(t_write)} -> {neg_path} ({fmt})")
    _say(f"total {_fmt_time(total)}; other epochs: simans-fast sample --candidates {cand} "
         f"--epoch 1 --out FILE")
    return 0


# --------------------------------------------------------------------------------- sample
def _resolve_candidates(path: str) -> str:
    if os.path.isfile(os.path.join(path, _CANDIDATES, "header.json")) and not os.path.isfile(
            os.path.join(path, "header.json")):
        return os.path.join(path, _CANDIDATES)
    return path


def cmd_sample(args) -> int:
    from . import io as sio

    InputError = sio.InputError
    t0 = time.perf_counter()
    progress = _want_progress(args)
    cand = _resolve_candidates(args.candidates)
    header = sio.read_header(cand)
    fmt = _resolve_format(args.format, args.out)
    _check_out_file(args.out)
    if fmt == "sentence-transformers":
        _check_parquet(args.out, "--out")
    _check_text_args(args)
    if args.epoch < 0:
        raise InputError(f"--epoch {args.epoch}: must be >= 0")
    params = dict(header.get("parameters", {}))
    for key in ("n", "a", "b", "kernel", "seed", "positive_choice", "fallback") + _STRATEGY_KEYS:
        v = getattr(args, key, None)
        if v is not None:
            params[key] = v
    missing = [k for k in ("n", "a", "b", "kernel", "seed", "positive_choice", "fallback")
               if k not in params]
    if missing:
        raise InputError(f"--candidates {cand}: header.json lacks {', '.join(missing)}; pass "
                         + " ".join(f"--{m.replace('_', '-')}" for m in missing))
    _check_sampling_values(params)
    cf = sio.load_candidates(cand)
    t1 = time.perf_counter()
    neg = epoch_negatives(cf, args.epoch, params)
    t_draw = time.perf_counter() - t1
    _load_texts(args, neg)
    t1 = time.perf_counter()
    sio.write_negatives(args.out, neg, fmt, progress=progress)
    t_write = time.perf_counter() - t1
    _say(f"epoch {args.epoch}: {neg.n} negatives for {len(cf.query_ids)} queries drawn in "
         f"{_fmt_time(t_draw)}, written in {_fmt_time(t_write)} -> {args.out} ({fmt}); "
         f"total {_fmt_time(time.perf_counter() - t0)}")
    return 0


def _check_sampling_values(params: dict) -> None:
    InputError = _input_error()
    if not isinstance(params["n"], int) or params["n"] < 1:
        raise InputError(f"--n {params['n']}: must be a positive integer")
    if not (math.isfinite(float(params["a"])) and float(params["a"]) >= 0):
        raise InputError(f"--a {params['a']}: must be a finite number >= 0")
    if not math.isfinite(float(params["b"])):
        raise InputError(f"--b {params['b']}: must be finite")
    if params.get("skip") is not None and int(params["skip"]) < 0:
        raise InputError(f"--skip {params['skip']}: must be >= 0")
    _parse_window(params.get("window"))
    if params.get("perc") is not None and not 0.0 <= float(params["perc"]) <= 1.0:
        raise InputError(f"--perc {params['perc']}: must be between 0 and 1")


# --------------------------------------------------------------------------------- inspect
def _short(s, width=60):
    s = str(s).replace("\n", " ")
    return s if len(s) <= width else s[: width - 3] + "..."


def _inspect_candidates(path: str, rows: int) -> None:
    import numpy as np

    from . import io as sio

    cf = sio.load_candidates(path, arg="inspect")
    h = cf.header
    _say(f"{path}: {h['format']} version {h['version']} (written by simans_fast "
         f"{h.get('simans_fast_version', '?')})")
    _say(f"  queries: {h['n_queries']}   candidates per query (k): {h['k']}   "
         f"max positives per query: {h['max_positives']}   corpus: {h['n_docs']} documents")
    params = h.get("parameters", {})
    _say("  parameters: " + " ".join(f"{k}={params[k]}" for k in sorted(params)))
    for name, spec in h["arrays"].items():
        _say(f"  {spec['file']}: shape {tuple(spec['shape'])} dtype {np.dtype(spec['dtype'])}")
    pos = np.asarray(cf.positive_ids)
    no_pos = int(np.count_nonzero((pos >= 0).sum(axis=1) == 0))
    short = int(np.count_nonzero((np.asarray(cf.candidate_ids) < 0).any(axis=1)))
    _say(f"  queries without positives: {no_pos}   rows with fewer than k candidates: {short}")
    for i in range(min(rows, cf.candidate_ids.shape[0])):
        p = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.positive_ids[i], cf.positive_scores[i]) if d >= 0]
        c = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.candidate_ids[i][:5], cf.candidate_scores[i][:5]) if d >= 0]
        _say(f"  query {cf.query_ids[i]}: positives {', '.join(p) or '-'}; "
             f"top candidates {', '.join(c)}, ...")


def _inspect_sampler(path: str) -> None:
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    _say(f"{path}: {meta.get('format')} version {meta.get('version')} (a saved SimANSSampler)")
    _say("  " + " ".join(f"{k}={meta[k]}" for k in sorted(meta)
                         if k not in ("format", "version")))


def _inspect_negatives(path: str, rows: int) -> None:
    from . import io as sio

    fmt = sio.detect_format(path)
    recs = sio.read_negatives(path, fmt)
    counts = [len(r["negatives"]) for r in recs]
    layout = ("Parquet" if path.lower().endswith(".parquet")
              else {"tevatron": "JSONL", "sentence-transformers": "JSONL", "trec": "TREC run",
                    "simxns": "TSV"}[fmt])
    texts = any(r.get("positive_passages") for r in recs) or (
        fmt == "simxns" and any(r["query"] for r in recs))
    if fmt == "sentence-transformers":
        texts = "ids or texts (see rows)"
    _say(f"{path}: {sio.NEGATIVES_FORMAT_NAME} in format {fmt} ({layout})")
    _say(f"  queries: {len(recs)}   negatives per query: "
         f"{'min ' + str(min(counts)) + ', max ' + str(max(counts)) if counts else '-'}   "
         f"texts: {texts if isinstance(texts, str) else ('yes' if texts else 'no')}")
    for r in recs[:rows]:
        q = r["query_id"] if r["query_id"] is not None else _short(r["query"], 40)
        pos = r["positives"]
        negs = r["negatives"]
        if fmt == "sentence-transformers":
            pos = [_short(x, 30) for x in pos] if pos else pos
            negs = [_short(x, 30) for x in negs]
        line = f"  query {q}:"
        if pos is not None:
            line += f" positives {pos};"
        line += f" negatives {negs[:6]}{' ...' if len(negs) > 6 else ''}"
        if r.get("negative_scores"):
            line += f" scores {[round(s, 4) for s in r['negative_scores'][:6]]}"
        _say(line)


def cmd_inspect(args) -> int:
    InputError = _input_error()
    path = args.path
    if not os.path.exists(path):
        raise InputError(f"inspect {path}: not found; check the path")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "meta.json")) and not os.path.isfile(
                os.path.join(path, "header.json")):
            _inspect_sampler(path)
            return 0
        cand = _resolve_candidates(path)
        _inspect_candidates(cand, args.rows)
        if cand != path:
            for name in sorted(os.listdir(path)):
                if name.startswith("negatives."):
                    _say("")
                    _inspect_negatives(os.path.join(path, name), args.rows)
        return 0
    _inspect_negatives(path, args.rows)
    return 0


# --------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed, plot=not args.no_plot, print_fn=_say)
    return 0


# --------------------------------------------------------------------------------- parser
def _add_common(p):
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for Numba, BLAS and faiss (default: all cores)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal; needs tqdm)")


def _add_texts(p):
    p.add_argument("--texts", metavar="DIR", default=None,
                   help="BEIR-style folder with queries.jsonl and corpus.jsonl")
    p.add_argument("--query-texts", metavar="FILE", default=None,
                   help="query texts: TSV 'id<TAB>text' or JSONL {_id, text}")
    p.add_argument("--doc-texts", metavar="FILE", default=None,
                   help="document texts: TSV 'id<TAB>text[<TAB>title]' or JSONL {_id, title, text}")


def _add_sampling(p, defaults: bool):
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--n", type=int, default=d(15), help="negatives per query (default 15)")
    p.add_argument("--a", type=float, default=d(0.5), help="SimANS sharpness a (default 0.5)")
    p.add_argument("--b", type=float, default=d(0.0),
                   help="SimANS shift b, paper's sign: exp(-a (s - s_pos - b)^2) (default 0)")
    p.add_argument("--kernel", choices=("gaussian", "laplace"), default=d("gaussian"))
    p.add_argument("--seed", type=int, default=d(0), help="seed of the sampling stream")
    p.add_argument("--positive-choice", dest="positive_choice",
                   choices=("random", "highest", "lowest"), default=d("random"),
                   help="queries with several positives: one drawn per epoch, or the "
                        "highest/lowest-scored one")
    p.add_argument("--fallback", choices=("lowest", "uniform", "raise"), default=d("lowest"),
                   help="queries without a positive: the n lowest-ranked candidates, uniform, "
                        "or fail")
    g = p.add_argument_group("strategy (sf.select_negatives; default: SimANS on all candidates)")
    g.add_argument("--strategy", choices=("simans", "top", "uniform"), default=None,
                   help="simans (default), top (the n best), or uniform over the kept ranks")
    g.add_argument("--skip", type=int, default=None, help="drop the R best-ranked candidates")
    g.add_argument("--window", default=None, metavar="LO-HI",
                   help="keep ranks LO <= rank < HI (FlagEmbedding's 10-210; LO- for no bound)")
    g.add_argument("--max-score", dest="max_score", type=float, default=None,
                   help="TopK-Abs: keep scores < T")
    g.add_argument("--margin", type=float, default=None,
                   help="TopK-MarginPos: keep scores < s_pos - M")
    g.add_argument("--perc", type=float, default=None,
                   help="TopK-PercPos: keep scores < s_pos - (1 - F) |s_pos|")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``simans-fast``."""
    parser = argparse.ArgumentParser(
        prog="simans-fast",
        description="Fast, exact, reproducible SimANS negative mining. Without a sub-command: "
                    "run the demo.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"simans-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{mine,sample,inspect,demo}")

    p = sub.add_parser("mine", help="top-k candidates + epoch-0 negatives from embeddings",
                       description="Mine candidates (exact top-k, positives removed, exact "
                                   "positive scores) and write the negatives of epoch 0.")
    p.add_argument("--queries", required=True, metavar="Q.npy",
                   help="query embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--corpus", required=True, metavar="C.npy",
                   help="document embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--query-ids", dest="query_ids", required=True, metavar="FILE",
                   help="one query id per line, row order of --queries")
    p.add_argument("--doc-ids", dest="doc_ids", required=True, metavar="FILE",
                   help="one document id per line, row order of --corpus")
    p.add_argument("--qrels", required=True, metavar="FILE",
                   help="TREC 'qid 0 docid rel' or TSV 'qid<TAB>docid[<TAB>rel]'; rel > 0 counts")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--k", type=int, default=200, help="candidates per query (default 200)")
    _add_sampling(p, defaults=True)
    p.add_argument("--metric", choices=("ip", "cosine", "l2"), default="ip",
                   help="similarity (default ip)")
    p.add_argument("--backend", default="auto", help="top-k backend (default auto)")
    p.add_argument("--format", choices=_FORMATS, default="tevatron",
                   help="format of the epoch-0 negatives file (default tevatron)")
    _add_texts(p)
    p.add_argument("--chunk-size", dest="chunk_size", type=int, default=None, metavar="Q",
                   help="queries per checkpointed chunk (default 4096)")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse) a run in --out made with the same arguments")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous run in --out first")
    p.add_argument("--skip-missing-qrels", dest="skip_missing_qrels", action="store_true",
                   help="drop qrels lines whose ids are not in the id lists instead of failing")
    _add_common(p)
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("sample", help="negatives of another epoch from saved candidates",
                       description="Re-draw negatives for an epoch from a candidates directory. "
                                   "Sampling parameters default to those saved by 'mine'.")
    p.add_argument("--candidates", required=True, metavar="DIR",
                   help="candidates directory (OUT/candidates of 'mine', or OUT itself)")
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="default: from the file name (.jsonl tevatron, .parquet "
                        "sentence-transformers, .trec/.run trec, .tsv simxns)")
    _add_sampling(p, defaults=False)
    _add_texts(p)
    _add_common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("inspect", help="describe a candidates directory or negatives file")
    p.add_argument("path", metavar="FILE_OR_DIR")
    p.add_argument("--rows", type=int, default=3, help="rows to show (default 3)")
    p.set_defaults(func=cmd_inspect, threads=None)

    p = sub.add_parser("demo", help="synthetic end-to-end demo with a rank plot (< 30 s)")
    p.add_argument("--out", default="simans_fast_demo", metavar="DIR",
                   help="where the plot goes (default ./simans_fast_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", dest="no_plot", action="store_true", help="skip the PNG")
    _add_common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _validate_args(args) -> None:
    InputError = _input_error()
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be >= 1")
    if args.command == "mine":
        if args.k < 1:
            raise InputError(f"--k {args.k}: must be >= 1")
        if args.chunk_size is not None and args.chunk_size < 1:
            raise InputError(f"--chunk-size {args.chunk_size}: must be >= 1")
        _check_sampling_values(_sampling_params(args))


def main(argv=None) -> int:
    """Entry point of ``simans-fast``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo"] + argv
    args = parser.parse_args(argv)
    _set_thread_env(getattr(args, "threads", None))
    from .io import InputError

    try:
        _validate_args(args)
        _apply_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"simans-fast: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("simans-fast: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. `simans-fast inspect ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
