"""Readers and writers: embeddings, id lists, qrels, texts, candidates files, negatives files.

Everything here is pickle-free and every writer is atomic: it writes a temporary file in the
destination's directory and renames it over the destination with :func:`os.replace`, so a
reader (or a crashed run) never sees a half-written file; :func:`remove_stale_temp_files`
removes what a killed writer left behind. Writers produce deterministic bytes (no timestamps;
JSON with sorted keys), so two runs with the same inputs give identical files.

Readers check what they read and raise :class:`InputError` (a ``ValueError``) with one line that
names the file and what is wrong: text files must be UTF-8 (a byte-order mark is allowed), ``.npy``
files are never unpickled, a candidates directory is checked against its ``header.json``. The
``arg`` parameter of a reader is the name its messages give the file (a Python parameter name by
default; the command line passes its flag).

Candidates file (format ``simans-fast-candidates``, version 1)
-------------------------------------------------------------
A directory::

    header.json           format name, version, shapes, parameters, sha256 of every file
    candidate_ids.npy     (n_queries, k) int64   corpus rows of the candidates, best first, -1 pad
    candidate_scores.npy  (n_queries, k) float32 their scores (padding: -inf or NaN)
    positive_ids.npy      (n_queries, m) int64   corpus rows of each query's positives, -1 pad
    positive_scores.npy   (n_queries, m) float32 exact positive scores, NaN pad
    query_ids.txt         one query id per line (row i of the arrays)
    doc_ids.txt           one document id per line (corpus row j)

Negatives files (one epoch)
---------------------------
``tevatron``              Tevatron 2.x training JSONL ``{"query_id", "query_text",
                          "positive_document_ids", "negative_document_ids"}`` plus its corpus
                          JSONL ``{"docid", "title", "text"}`` (every document the training file
                          names; default name: ``X.corpus.jsonl`` beside ``X.jsonl``). Needs query
                          and document texts; ``ids_only=True`` writes the records without
                          ``query_text`` and no corpus (Tevatron would train on empty queries:
                          give it the texts another way).
``tevatron-legacy``       Tevatron's older layout ``{"query_id", "query", "positive_passages",
                          "negative_passages"}``, passages ``{"docid", "title", "text"}``.
``sentence-transformers`` columns ``anchor, positive, negative_1..n`` (texts; ids with
                          ``ids_only=True``); Parquet when the file name ends in ``.parquet``,
                          else JSONL.
``trec``                  run file ``qid Q0 docid rank score tag`` with the negatives, rank =
                          the negative's 1-based rank among the query's candidates.
``simxns``                TSV ``qid \\t query \\t "pid score,..." \\t "pid score,..."`` (positives,
                          then negatives), the layout read by the SimANS code.

Rows of the training formats (``tevatron``, ``tevatron-legacy``, ``sentence-transformers``): a
query without a positive or without any negative cannot form a training example and is dropped
(the writers return and warn the counts). A sentence-transformers row needs exactly ``n``
negatives: a row with fewer is filled by cycling its own negatives in draw order
(``on_short="repeat"``, the default, which is also :func:`simans_fast.torch.to_sentence_transformers`'
default), or dropped (``"drop"``: the rule of sentence-transformers' own ``mine_hard_negatives``
n-tuple output), or refused (``"raise"``). Tevatron rows keep the negatives drawn (Tevatron
samples with replacement when a group is short). ``trec`` and ``simxns`` list every query as
drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "InputError",
    "CANDIDATES_FORMAT",
    "CANDIDATES_VERSION",
    "NEGATIVES_FORMATS",
    "TEXT_FORMATS",
    "ST_ON_SHORT",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save_npy",
    "fsync_dir",
    "remove_stale_temp_files",
    "read_embeddings",
    "read_ids",
    "ids_sha256",
    "array_fingerprint",
    "file_sha256",
    "read_qrels",
    "read_texts",
    "text_coverage",
    "read_beir_texts",
    "CandidatesFile",
    "save_candidates",
    "load_candidates",
    "read_header",
    "EpochNegatives",
    "st_fill_negatives",
    "tevatron_corpus_path",
    "write_negatives",
    "read_negatives",
    "detect_format",
    "format_from_extension",
]

CANDIDATES_FORMAT = "simans-fast-candidates"
CANDIDATES_VERSION = 1
NEGATIVES_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers", "trec", "simxns")
NEGATIVES_FORMAT_NAME = "simans-fast-negatives"
#: formats a trainer reads texts from: they need texts (or ``ids_only=True``), and drop queries
#: without a positive or without any negative
TEXT_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers")
#: what a sentence-transformers row with fewer than n negatives becomes (see the module docstring)
ST_ON_SHORT = ("repeat", "drop", "raise")

_ARRAYS = ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores")
_ARRAY_DTYPES = {
    "candidate_ids": np.int64,
    "candidate_scores": np.float32,
    "positive_ids": np.int64,
    "positive_scores": np.float32,
}


class InputError(ValueError):
    """A problem with a user's input file or argument; the message is one line with the fix."""


# --------------------------------------------------------------------------- atomic writes
def fsync_dir(path: str) -> None:
    """fsync a directory so a rename in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _tmp_path(path: str) -> str:
    """A new empty temp file beside ``path`` (same filesystem, so os.replace is atomic).

    ``mkstemp`` creates files readable by the owner only; they get the mode an ordinary
    ``open`` would give (0o666 minus the umask) so the renamed output is not private.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        pass
    os.close(fd)
    return tmp


def _test_kill_point(point: str) -> None:
    """SIGKILL this process at a named point (``SIMANS_FAST_TEST_KILL_AT=point``, resume tests)."""
    if os.environ.get("SIMANS_FAST_TEST_KILL_AT") == point:
        import signal
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _commit(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    _test_kill_point("commit:" + os.path.basename(path))
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


class _AtomicFile:
    """Context manager: yields a file object on a temp file, renamed to ``path`` on success."""

    def __init__(self, path: str, mode: str = "w", **kwargs):
        self.path = path
        self.mode = mode
        self.kwargs = kwargs

    def __enter__(self):
        self.tmp = _tmp_path(self.path)
        self.f = open(self.tmp, self.mode, **self.kwargs)
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            _commit(self.tmp, self.path)
        else:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
        return False


def remove_stale_temp_files(path: str) -> list:
    """Remove the temporary files (or directories) that interrupted atomic writes of ``path`` left.

    They are named ``.<name>.<8 random characters>.tmp`` beside ``path``; nothing else is touched.
    Returns the names removed.
    """
    d = os.path.dirname(os.path.abspath(path))
    pat = re.compile(r"\." + re.escape(os.path.basename(path)) + r"\.[a-z0-9_]{8}\.tmp\Z")
    removed = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return removed
    for name in names:
        if not pat.match(name):
            continue
        p = os.path.join(d, name)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
            removed.append(name)
        except OSError:
            pass
    return removed


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename)."""
    with _AtomicFile(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``\\n`` line ends on every platform)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str, arr) -> None:
    """``np.save`` to ``path`` atomically (never pickles: object arrays are refused)."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise ValueError(f"refusing to save an object array to {path}")
    with _AtomicFile(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _json_dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- inputs
# --------------------------------------------------------------------------- inputs
def _check_file(path, arg):
    if not os.path.exists(path):
        raise InputError(f"{arg} {path}: file not found; check the path")
    if os.path.isdir(path):
        raise InputError(f"{arg} {path}: is a directory, expected a file")


def _iter_lines(path, arg):
    """``(line number, text)`` of a UTF-8 text file, line ends (``\\n``, ``\\r\\n``) removed.

    A UTF-8 byte-order mark at the start is dropped. Bytes that are not UTF-8 raise
    :class:`InputError` naming the line.
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{arg} {path}: cannot read it ({e.strerror})") from None
    with f:
        lineno = 0
        it = iter(f)
        while True:
            try:
                raw = next(it)
            except StopIteration:
                return
            except OSError as e:
                raise InputError(f"{arg} {path}: cannot read it ({e.strerror})") from None
            lineno += 1
            try:
                s = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{arg} {path}: line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                    f"byte {e.start + 1} of the line); save the file as UTF-8") from None
            if lineno == 1 and s.startswith("\ufeff"):
                s = s[1:]
            if s[-1:] == "\n":
                s = s[:-2] if s[-2:-1] == "\r" else s[:-1]
            elif s[-1:] == "\r":
                s = s[:-1]
            yield lineno, s


def _load_npy(fp: str, arg: str, mmap: bool, fix: str):
    """``np.load`` without pickles; every failure is an :class:`InputError` naming ``fp``."""
    try:
        return np.load(fp, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "object" in str(e):
            raise InputError(f"{arg} {fp}: holds Python objects (a pickle), not numbers; this "
                             f"tool never loads pickles; {fix}") from None
        raise InputError(f"{arg} {fp}: cannot read it as a .npy array "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         f"{fix}") from None
    except OSError as e:
        raise InputError(f"{arg} {fp}: cannot read it ({e.strerror or e}); {fix}") from None
    except Exception as e:  # EOFError, SyntaxError from a damaged header, ...
        raise InputError(f"{arg} {fp}: cannot read it as a .npy array ({type(e).__name__}); "
                         f"{fix}") from None


def read_embeddings(path: str, *, arg: str = "path") -> np.ndarray:
    """Memory-map a ``.npy`` embedding matrix (float32 or float16, 2-D).

    Parameters
    ----------
    path : str
        A ``.npy`` file (``.npz`` and pickles are not accepted).
    arg : str
        Name of the file in error messages (the command line passes its flag).

    Returns
    -------
    numpy.memmap of shape (rows, dim)

    Raises
    ------
    InputError
        Missing file, not a ``.npy`` file, truncated, a pickle, wrong dtype or number of
        dimensions, empty.
    """
    _check_file(path, arg)
    fix = "save embeddings with numpy.save(path, array.astype('float32'))"
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputError(f"{arg} {path}: cannot read it ({e.strerror})") from None
    if magic[:4] == b"PK\x03\x04":
        raise InputError(f"{arg} {path}: is an .npz archive, expected one .npy array; {fix}")
    if magic != b"\x93NUMPY":
        raise InputError(f"{arg} {path}: not a .npy file; {fix}")
    arr = _load_npy(path, arg, True, fix)
    if arr.dtype not in (np.float32, np.float16):
        raise InputError(
            f"{arg} {path}: dtype {arr.dtype} not supported; save it as float32 or float16 "
            "(array.astype('float32'))"
        )
    if arr.ndim != 2:
        raise InputError(
            f"{arg} {path}: expected a 2-D array (rows, dim), got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{arg} {path}: empty array of shape {tuple(arr.shape)}")
    return arr


def _bad_id(s: str) -> bool:
    return s == "" or not s.isprintable() or any(c.isspace() for c in s)


def read_ids(path: str, *, arg: str = "path") -> list[str]:
    """Read an id list: one id per line, no whitespace or control characters in ids, no repeats.

    A final newline is optional; ``\\r\\n`` line ends and a UTF-8 byte-order mark are accepted.

    Raises
    ------
    InputError
        Missing file, not UTF-8, empty lines, ids with whitespace, repeated ids.
    """
    _check_file(path, arg)
    ids = [s for _, s in _iter_lines(path, arg)]
    if not ids:
        raise InputError(f"{arg} {path}: the id list is empty; write one id per line")
    for i, s in enumerate(ids):
        if _bad_id(s):
            raise InputError(
                f"{arg} {path}: line {i + 1}: id {s!r} is empty or contains whitespace or control "
                "characters; write one id per line without spaces"
            )
    if len(set(ids)) != len(ids):
        seen = set()
        for i, s in enumerate(ids):
            if s in seen:
                raise InputError(
                    f"{arg} {path}: line {i + 1}: id {s!r} appears twice; ids must be unique"
                )
            seen.add(s)
    return ids


def ids_sha256(ids) -> str:
    """sha256 of an id list in its canonical form (ids joined by ``\\n``, final ``\\n``)."""
    h = hashlib.sha256()
    for s in ids:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def array_fingerprint(arr, max_rows: int = 1024) -> str:
    """Cheap identity of a (possibly huge, memory-mapped) array: shape, dtype, sampled rows.

    Hashes the shape, dtype and up to ``max_rows`` evenly spaced rows (always the first and
    the last). Used to refuse resuming a run on different inputs; not a full checksum.
    """
    arr = np.asarray(arr)
    h = hashlib.sha256()
    h.update(repr((tuple(arr.shape), arr.dtype.str)).encode())
    n = arr.shape[0] if arr.ndim else 0
    if n:
        rows = np.unique(np.linspace(0, n - 1, num=min(n, max_rows)).astype(np.int64))
        h.update(np.ascontiguousarray(arr[rows]).tobytes())
    return h.hexdigest()


def read_qrels(
    path: str,
    query_index: dict,
    doc_index: dict,
    *,
    arg: str = "path",
    query_arg: str = "query_index",
    doc_arg: str = "doc_index",
    skip_missing: bool = False,
    skip_arg: str = "skip_missing=True",
):
    """Read qrels as TREC (``qid 0 docid rel``) or TSV (``qid docid [rel]``) lines.

    The layout is told per line by its number of whitespace-separated fields: 4 = TREC, 3 = TSV
    with relevance, 2 = TSV (relevant). Only lines with ``rel > 0`` count; a relevance must be a
    finite number. A first line whose relevance is not a number (a header such as
    ``query-id corpus-id score``) is skipped. Blank lines and lines starting with ``#`` are
    ignored. The file must be UTF-8.

    Parameters
    ----------
    path : str
        The qrels file.
    query_index, doc_index : dict
        Maps id string -> row (of the query embeddings / corpus).
    arg, query_arg, doc_arg, skip_arg : str
        Names of the file, the id lists and of the skip option in error messages.
    skip_missing : bool, default=False
        Drop judgements whose query or document id is not in the lists instead of failing.

    Returns
    -------
    indptr : ndarray of shape (n_queries + 1,), int64
    ids : ndarray, int64
        CSR of positive corpus rows per query row, in file order, repeats dropped.
    info : dict
        ``n_judgements`` (rel > 0 lines used), ``n_skipped`` (missing ids dropped),
        ``n_queries_with_positives``.
    """
    _check_file(path, arg)
    n_q = len(query_index)
    pairs_q = []
    pairs_d = []
    missing_q = missing_d = 0
    first_missing = None
    n_rel = 0
    first = True
    for lineno, line in _iter_lines(path, arg):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 4:
            qid, docid, rel = fields[0], fields[2], fields[3]
        elif len(fields) == 3:
            qid, docid, rel = fields
        elif len(fields) == 2:
            (qid, docid), rel = fields, "1"
        else:
            raise InputError(
                f"{arg} {path}: line {lineno}: expected 'qid 0 docid rel' (TREC) or "
                f"'qid<TAB>docid[<TAB>rel]' (TSV), got {len(fields)} fields"
            )
        try:
            relv = float(rel)
        except ValueError:
            if first:
                first = False
                continue  # header line
            raise InputError(
                f"{arg} {path}: line {lineno}: relevance {rel!r} is not a number"
            ) from None
        first = False
        if not math.isfinite(relv):
            raise InputError(f"{arg} {path}: line {lineno}: relevance {rel!r} is not a finite "
                             "number")
        if not relv > 0:
            continue
        qrow = query_index.get(qid)
        drow = doc_index.get(docid)
        if qrow is None or drow is None:
            if qrow is None:
                missing_q += 1
            if drow is None:
                missing_d += 1
            if first_missing is None:
                first_missing = (lineno, qid if qrow is None else None,
                                 docid if drow is None else None)
            continue
        n_rel += 1
        pairs_q.append(qrow)
        pairs_d.append(drow)
    if first_missing is not None and not skip_missing:
        lineno, mq, md = first_missing
        parts = []
        if missing_q:
            parts.append(f"{missing_q} judgement(s) name query ids not in {query_arg}")
        if missing_d:
            parts.append(f"{missing_d} name document ids not in {doc_arg}")
        what = f"query id {mq!r}" if mq is not None else f"document id {md!r}"
        raise InputError(
            f"{arg} {path}: {' and '.join(parts)} (first: {what}, line {lineno}); use the id "
            f"lists the embeddings were made from, or pass {skip_arg} to drop them"
        )
    if not pairs_q:
        raise InputError(
            f"{arg} {path}: no judgement with rel > 0 matches the id lists; check the file "
            "and the id lists"
        )
    q = np.asarray(pairs_q, dtype=np.int64)
    d = np.asarray(pairs_d, dtype=np.int64)
    order = np.argsort(q, kind="stable")
    q, d = q[order], d[order]
    from .pipeline import normalize_qrels

    counts = np.bincount(q, minlength=n_q).astype(np.int64)
    indptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indptr, ids = normalize_qrels((indptr, d), n_q, len(doc_index), name=arg)
    info = {
        "n_judgements": n_rel,
        "n_skipped": missing_q + missing_d if skip_missing else 0,
        "n_queries_with_positives": int(np.count_nonzero(np.diff(indptr))),
    }
    return indptr, ids, info


_ID_KEYS = ("_id", "id", "docid", "doc_id", "query_id", "qid", "pid")
_TEXT_KEYS = ("text", "contents", "query", "body", "passage")
_TSV_HEADER_IDS = ("id", "_id", "docid", "qid", "pid")


def _is_jsonl(path: str) -> bool:
    return path.lower().endswith((".jsonl", ".json", ".jsonl.txt"))


def _iter_texts(path: str, arg: str):
    """``(line number, id, title, text)`` of every record of a texts file, checked."""
    if _is_jsonl(path):
        for lineno, line in _iter_lines(path, arg):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{arg} {path}: line {lineno}: not JSON ({e.msg}); expected "
                                 "one JSON object per line (JSON Lines)") from None
            except RecursionError:
                raise InputError(f"{arg} {path}: line {lineno}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise InputError(f"{arg} {path}: line {lineno}: expected a JSON object")
            key = next((k for k in _ID_KEYS if k in obj), None)
            tkey = next((k for k in _TEXT_KEYS if k in obj), None)
            if key is None or tkey is None:
                raise InputError(
                    f"{arg} {path}: line {lineno}: needs an id field ({'/'.join(_ID_KEYS)}) "
                    f"and a text field ({'/'.join(_TEXT_KEYS)})"
                )
            i = obj[key]
            if isinstance(i, bool) or not isinstance(i, (str, int)) or i == "":
                raise InputError(f"{arg} {path}: line {lineno}: {key!r} must be a non-empty "
                                 f"string (or an integer), got {json.dumps(i)[:40]}")
            text = obj[tkey]
            if not isinstance(text, str):
                raise InputError(f"{arg} {path}: line {lineno}: {tkey!r} must be a string, got "
                                 f"{json.dumps(text)[:40]}")
            title = obj.get("title")
            if title is None:
                title = ""
            elif not isinstance(title, str):
                raise InputError(f"{arg} {path}: line {lineno}: 'title' must be a string, got "
                                 f"{json.dumps(title)[:40]}")
            for v in (i, title, text):
                if isinstance(v, str) and not v.isascii():
                    try:
                        v.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InputError(f"{arg} {path}: line {lineno}: holds an unpaired "
                                         "surrogate escape (\\ud800-\\udfff), which is not "
                                         "text; fix the file") from None
            yield lineno, str(i), title, text
        return
    for lineno, line in _iter_lines(path, arg):
        if not line:
            continue
        fields = line.split("\t")
        if lineno == 1 and fields[0].lower() in _TSV_HEADER_IDS:
            continue
        i = fields[0]
        if len(fields) == 2:
            title, text = "", fields[1]
        elif len(fields) == 3:
            title, text = fields[2], fields[1]
        elif len(fields) == 4:
            title, text = fields[2], fields[3]
        else:
            raise InputError(
                f"{arg} {path}: line {lineno}: expected 'id<TAB>text', "
                f"'id<TAB>text<TAB>title' or 'id<TAB>url<TAB>title<TAB>body', "
                f"got {len(fields)} field(s)"
            )
        if i == "":
            raise InputError(f"{arg} {path}: line {lineno}: the id (first field) is empty")
        yield lineno, i, title, text


def read_texts(path: str, wanted=None, *, arg: str = "path") -> dict:
    """Read id -> (title, text) from a TSV or JSONL file, keeping only ``wanted`` ids.

    * JSONL (``.jsonl``/``.json``, BEIR style): one object per line with an id (``_id``,
      ``id``, ``docid``, ``query_id``...; a string or an integer), a string ``text`` (or
      ``contents``/``query``) and an optional string ``title``.
    * TSV (anything else): ``id<TAB>text`` (MS MARCO), ``id<TAB>text<TAB>title`` (DPR), or
      ``id<TAB>url<TAB>title<TAB>body`` (MS MARCO documents); a first line starting with
      ``id<TAB>`` is a header.

    The file must be UTF-8; an id kept twice is an error (which text would be meant?).

    Parameters
    ----------
    path : str
    wanted : set of str, optional
        Ids to keep (``None`` keeps every id).
    arg : str
        Name of the file in error messages.

    Returns
    -------
    dict
        id -> (title, text); title is ``""`` when the file has none.
    """
    _check_file(path, arg)
    out = {}
    for lineno, i, title, text in _iter_texts(path, arg):
        if wanted is None or i in wanted:
            if i in out:
                raise InputError(f"{arg} {path}: line {lineno}: id {i!r} appears a second time; "
                                 "keep one text per id")
            out[i] = (title, text)
    return out


def text_coverage(path: str, index: dict, *, arg: str = "path") -> np.ndarray:
    """Which ids of ``index`` (id -> row ``0..len-1``) have a text in ``path``.

    Reads and checks the whole file like :func:`read_texts` without keeping any text, so a run
    can refuse missing texts before it writes anything. Returns a bool array over the rows.
    """
    _check_file(path, arg)
    found = np.zeros(len(index), dtype=bool)
    for lineno, i, _title, _text in _iter_texts(path, arg):
        r = index.get(i)
        if r is not None:
            if found[r]:
                raise InputError(f"{arg} {path}: line {lineno}: id {i!r} appears a second "
                                 "time; keep one text per id")
            found[r] = True
    return found


def read_beir_texts(directory: str, *, want_queries=None, want_docs=None, arg: str = "directory"):
    """Query and document texts of a BEIR-layout directory (``queries.jsonl``, ``corpus.jsonl``).

    Returns
    -------
    (query_texts, doc_texts) : (dict, dict)
    """
    if not os.path.isdir(directory):
        raise InputError(f"{arg} {directory}: not a directory (expected queries.jsonl and "
                         "corpus.jsonl)")
    qp = os.path.join(directory, "queries.jsonl")
    cp = os.path.join(directory, "corpus.jsonl")
    return read_texts(qp, want_queries, arg=arg), read_texts(cp, want_docs, arg=arg)



# --------------------------------------------------------------------------- candidates file
@dataclass
class CandidatesFile:
    """A loaded candidates file (see the module docstring for the layout).

    Attributes
    ----------
    path : str
    header : dict
    candidate_ids, candidate_scores, positive_ids, positive_scores : ndarray
        Memory-mapped (read-only) unless loaded with ``mmap=False``.
    query_ids, doc_ids : list of str
    """

    path: str
    header: dict
    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray
    query_ids: list = field(repr=False)
    doc_ids: list = field(repr=False)

    @property
    def parameters(self) -> dict:
        return dict(self.header.get("parameters", {}))


def _candidates_header(arrays: dict, query_ids, doc_ids, parameters: dict, extra: dict | None,
                       file_hashes: dict) -> dict:
    from . import __version__

    n_q, k = arrays["candidate_ids"].shape
    header = {
        "format": CANDIDATES_FORMAT,
        "version": CANDIDATES_VERSION,
        "simans_fast_version": __version__,
        "n_queries": int(n_q),
        "k": int(k),
        "max_positives": int(arrays["positive_ids"].shape[1]),
        "n_docs": len(doc_ids),
        "parameters": parameters,
        "ids": {
            "query_ids": {"file": "query_ids.txt", "count": len(query_ids),
                          "sha256": ids_sha256(query_ids)},
            "doc_ids": {"file": "doc_ids.txt", "count": len(doc_ids),
                        "sha256": ids_sha256(doc_ids)},
        },
        "arrays": {
            name: {
                "file": f"{name}.npy",
                "dtype": np.dtype(_ARRAY_DTYPES[name]).str,
                "shape": [int(s) for s in arrays[name].shape],
                "sha256": file_hashes[name],
            }
            for name in _ARRAYS
        },
    }
    if extra:
        header["provenance"] = extra
    return header


def _check_arrays(arrays: dict, n_docs: int) -> None:
    for name in _ARRAYS:
        if name not in arrays:
            raise ValueError(f"missing array {name!r}")
    n_q, k = arrays["candidate_ids"].shape
    if arrays["candidate_scores"].shape != (n_q, k):
        raise ValueError("candidate_scores must have the shape of candidate_ids")
    if arrays["positive_ids"].ndim != 2 or arrays["positive_ids"].shape[0] != n_q:
        raise ValueError("positive_ids must be (n_queries, m)")
    if arrays["positive_scores"].shape != arrays["positive_ids"].shape:
        raise ValueError("positive_scores must have the shape of positive_ids")


def save_candidates(path: str, candidate_ids, candidate_scores, positive_ids, positive_scores,
                    query_ids, doc_ids, *, parameters: dict | None = None,
                    provenance: dict | None = None) -> None:
    """Write a candidates directory atomically (built beside ``path``, then renamed).

    Parameters
    ----------
    path : str
        Destination directory; must not exist yet (or be an empty directory).
    candidate_ids, candidate_scores, positive_ids, positive_scores : ndarray
        As returned by :func:`simans_fast.mine_candidates` (ids are corpus rows).
    query_ids, doc_ids : sequence of str
        Id of each query row and corpus row.
    parameters : dict, optional
        Sampling parameters (n, a, b, kernel, seed, positive_choice, fallback, metric, ...),
        used as the defaults of ``simans-fast sample``.
    provenance : dict, optional
        Anything else to record in the header (must be JSON; keep it deterministic).
    """
    arrays = {
        "candidate_ids": np.ascontiguousarray(candidate_ids, dtype=np.int64),
        "candidate_scores": np.ascontiguousarray(candidate_scores, dtype=np.float32),
        "positive_ids": np.ascontiguousarray(positive_ids, dtype=np.int64),
        "positive_scores": np.ascontiguousarray(positive_scores, dtype=np.float32),
    }
    _check_arrays(arrays, len(doc_ids))
    if arrays["candidate_ids"].shape[0] != len(query_ids):
        raise ValueError("query_ids must have one id per candidates row")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmpdir = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmpdir, 0o777 & ~_umask())  # mkdtemp makes it private; use the usual mode
        hashes = {}
        for name, arr in arrays.items():
            fp = os.path.join(tmpdir, f"{name}.npy")
            with open(fp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            hashes[name] = file_sha256(fp)
        write_candidates_dir_finish(tmpdir, arrays, query_ids, doc_ids, parameters or {},
                                    provenance, hashes)
        os.replace(tmpdir, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def write_candidates_dir_finish(tmpdir, arrays, query_ids, doc_ids, parameters, provenance,
                                hashes) -> None:
    """Write the id lists and header.json of a candidates directory being built in ``tmpdir``.

    ``arrays`` may be memory maps (only shapes are read); ``hashes`` maps array name -> sha256
    of its ``.npy`` file. The header is written last.
    """
    for name, ids in (("query_ids.txt", query_ids), ("doc_ids.txt", doc_ids)):
        fp = os.path.join(tmpdir, name)
        with open(fp, "w", encoding="utf-8", newline="\n") as f:
            for s in ids:
                f.write(s)
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    header = _candidates_header(arrays, query_ids, doc_ids, parameters, provenance, hashes)
    fp = os.path.join(tmpdir, "header.json")
    with open(fp, "w", encoding="utf-8", newline="\n") as f:
        f.write(_json_dumps(header))
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmpdir)


_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")


def _check_header(header, hp: str, arg: str) -> None:
    """Check the structure of a parsed ``header.json`` (types, names, shapes agree)."""

    def bad(what):
        return InputError(f"{arg} {hp}: {what}; the candidates directory is damaged or was "
                          "edited (re-create it with 'simans-fast mine')")

    def count(obj, key, where):
        v = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"{where}{key} must be a non-negative integer, got {json.dumps(v)[:40]}")
        return v

    def plain_file(spec, where):
        f = spec.get("file")
        if not isinstance(f, str) or f in ("", ".", "..") or os.path.basename(f) != f or (
                os.sep != "/" and "/" in f):
            raise bad(f"{where}file must be a file name inside the directory, got "
                      f"{json.dumps(f)[:60]}")
        sha = spec.get("sha256")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise bad(f"{where}sha256 must be 64 hex digits")
        return f

    for key in ("n_queries", "k", "max_positives", "n_docs"):
        count(header, key, "")
    if not isinstance(header.get("parameters", {}), dict):
        raise bad("parameters must be a JSON object")
    ids = header.get("ids")
    if not isinstance(ids, dict):
        raise bad("ids must be a JSON object")
    for key, total in (("query_ids", "n_queries"), ("doc_ids", "n_docs")):
        spec = ids.get(key)
        if not isinstance(spec, dict):
            raise bad(f"ids.{key} is missing")
        plain_file(spec, f"ids.{key}.")
        if count(spec, "count", f"ids.{key}.") != header[total]:
            raise bad(f"ids.{key}.count {spec['count']} differs from {total} {header[total]}")
    arrays = header.get("arrays")
    if not isinstance(arrays, dict):
        raise bad("arrays must be a JSON object")
    shapes = {"candidate_ids": "k", "candidate_scores": "k", "positive_ids": "max_positives",
              "positive_scores": "max_positives"}
    files = set()
    for name in _ARRAYS:
        spec = arrays.get(name)
        if not isinstance(spec, dict):
            raise bad(f"arrays.{name} is missing")
        files.add(plain_file(spec, f"arrays.{name}."))
        want_dtype = np.dtype(_ARRAY_DTYPES[name]).str
        if spec.get("dtype") != want_dtype:
            raise bad(f"arrays.{name}.dtype must be {want_dtype!r}, got "
                      f"{json.dumps(spec.get('dtype'))[:20]}")
        want = [header["n_queries"], header[shapes[name]]]
        if spec.get("shape") != want:
            raise bad(f"arrays.{name}.shape {json.dumps(spec.get('shape'))[:40]} differs from "
                      f"[n_queries, {shapes[name]}] = {want}")
    files |= {ids["query_ids"]["file"], ids["doc_ids"]["file"]}
    if len(files) != 6 or "header.json" in files:
        raise bad("two entries name the same file")


def read_header(path: str, *, arg: str = "path") -> dict:
    """Read and check the ``header.json`` of a candidates directory.

    Raises :class:`InputError` for a missing directory or header, a header that is not JSON, of
    another format or a newer version, or whose fields are missing, of the wrong type or
    disagree with each other.
    """
    if not os.path.exists(path):
        raise InputError(f"{arg} {path}: not found; pass the candidates directory written by "
                         "'simans-fast mine' (OUT/candidates)")
    if not os.path.isdir(path):
        raise InputError(f"{arg} {path}: expected a candidates directory, got a file")
    hp = os.path.join(path, "header.json")
    if not os.path.exists(hp):
        sub = os.path.join(path, "candidates", "header.json")
        if os.path.exists(sub):
            raise InputError(f"{arg} {path}: this is a mine output directory; pass "
                             f"{os.path.join(path, 'candidates')}")
        raise InputError(f"{arg} {path}: no header.json; not a candidates directory (or the run "
                         "did not finish: re-run 'simans-fast mine' with --resume)")
    try:
        with open(hp, "rb") as f:
            raw = f.read()
        header = json.loads(raw.decode("utf-8"))
    except OSError as e:
        raise InputError(f"{arg} {hp}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{arg} {hp}: not UTF-8 text; the candidates directory is "
                         "damaged") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{arg} {hp}: not valid JSON "
                         f"({getattr(e, 'msg', 'nested too deeply')}); the candidates directory "
                         "is damaged (cut or edited)") from None
    if not isinstance(header, dict):
        raise InputError(f"{arg} {hp}: not a JSON object; the candidates directory is damaged")
    if header.get("format") != CANDIDATES_FORMAT:
        raise InputError(f"{arg} {hp}: format {header.get('format')!r} is not "
                         f"{CANDIDATES_FORMAT!r}")
    v = header.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"{arg} {hp}: version {v!r} is not a version of "
                         f"{CANDIDATES_FORMAT!r}")
    if v > CANDIDATES_VERSION:
        raise InputError(f"{arg} {hp}: version {v!r} is newer than this "
                         f"simans_fast reads ({CANDIDATES_VERSION}); upgrade simans_fast")
    _check_header(header, hp, arg)
    return header


def load_candidates(path: str, *, mmap: bool = True, verify: bool = False,
                    arg: str = "path") -> CandidatesFile:
    """Load a candidates directory written by ``simans-fast mine`` or :func:`save_candidates`.

    Every array's dtype and shape is checked against ``header.json`` and its ids against the
    corpus size (``-1 <= id < n_docs``) before anything uses it; a damaged, cut, pickled or
    edited directory raises :class:`InputError` naming the file.

    Parameters
    ----------
    path : str
        The candidates directory.
    mmap : bool, default=True
        Memory-map the arrays read-only.
    verify : bool, default=False
        Also recompute the sha256 of every file and compare with the header.
    arg : str
        Name of the directory in error messages.

    Returns
    -------
    CandidatesFile
    """
    header = read_header(path, arg=arg)
    fix = "the candidates directory is damaged (re-create it with 'simans-fast mine')"
    arrays = {}
    for name in _ARRAYS:
        spec = header["arrays"][name]
        fp = os.path.join(path, spec["file"])
        if not os.path.isfile(fp):
            raise InputError(f"{arg} {path}: {spec['file']} is missing; {fix}")
        if verify:
            try:
                digest = file_sha256(fp)
            except OSError as e:
                raise InputError(f"{arg} {fp}: cannot read it ({e.strerror})") from None
            if digest != spec["sha256"]:
                raise InputError(f"{arg} {fp}: sha256 differs from header.json; the file "
                                 f"changed; {fix}")
        arr = _load_npy(fp, arg, mmap and 0 not in spec["shape"], fix)
        if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
            raise InputError(f"{arg} {fp}: shape/dtype {tuple(arr.shape)}/{arr.dtype.str} differ "
                             f"from header.json ({tuple(spec['shape'])}/{spec['dtype']}); {fix}")
        arrays[name] = arr
    n_docs = header["n_docs"]
    for name in ("candidate_ids", "positive_ids"):
        a = arrays[name]
        if a.size and (int(a.min()) < -1 or int(a.max()) >= n_docs):
            raise InputError(f"{arg} {os.path.join(path, header['arrays'][name]['file'])}: ids "
                             f"outside [-1, n_docs={n_docs}) (min {int(a.min())}, max "
                             f"{int(a.max())}); {fix}")
    ids = {}
    for key in ("query_ids", "doc_ids"):
        spec = header["ids"][key]
        fp = os.path.join(path, spec["file"])
        if not os.path.isfile(fp):
            raise InputError(f"{arg} {path}: {spec['file']} is missing; {fix}")
        lst = read_ids(fp, arg=arg)
        if len(lst) != spec["count"] or (verify and ids_sha256(lst) != spec["sha256"]):
            raise InputError(f"{arg} {fp}: id list differs from header.json; {fix}")
        ids[key] = lst
    return CandidatesFile(path, header, arrays["candidate_ids"], arrays["candidate_scores"],
                          arrays["positive_ids"], arrays["positive_scores"], ids["query_ids"],
                          ids["doc_ids"])


# --------------------------------------------------------------------------- negatives files
@dataclass
class EpochNegatives:
    """One epoch's negatives with everything the writers need (rows index the id lists).

    Attributes
    ----------
    query_ids : sequence of str
        Id of each query row.
    doc_ids : sequence of str
        Id of each corpus row.
    positive_rows : ndarray of shape (n_queries, m), int64
        Corpus rows of the positives, the positive used this epoch first, ``-1`` padded.
    positive_scores : ndarray of shape (n_queries, m), float32
    negative_rows : ndarray of shape (n_queries, n), int64
        Corpus rows of the sampled negatives in draw order, ``-1`` padded.
    negative_scores : ndarray of shape (n_queries, n), float32
    negative_ranks : ndarray of shape (n_queries, n), int64
        1-based rank of each negative among the query's candidates (0 where padded).
    query_texts, doc_texts : dict, optional
        id -> (title, text).
    """

    query_ids: list
    doc_ids: list
    positive_rows: np.ndarray
    positive_scores: np.ndarray
    negative_rows: np.ndarray
    negative_scores: np.ndarray
    negative_ranks: np.ndarray
    query_texts: dict | None = None
    doc_texts: dict | None = None

    @property
    def n(self) -> int:
        return int(self.negative_rows.shape[1])

    def needed_ids(self):
        """(query ids, document ids) referenced by this epoch (for loading only their texts)."""
        d = np.unique(np.concatenate([self.positive_rows.ravel(), self.negative_rows.ravel()]))
        d = d[d >= 0]
        return set(self.query_ids), {self.doc_ids[int(i)] for i in d}


def format_from_extension(path: str) -> str | None:
    """Negatives format implied by a file name, or None."""
    low = path.lower()
    if low.endswith(".parquet"):
        return "sentence-transformers"
    if low.endswith((".trec", ".run")):
        return "trec"
    if low.endswith(".tsv"):
        return "simxns"
    if low.endswith(".jsonl"):
        return "tevatron"
    return None


def tevatron_corpus_path(path: str) -> str:
    """Default name of the corpus JSONL written beside a ``tevatron`` training file."""
    base = path[:-6] if path.lower().endswith(".jsonl") else path
    return base + ".corpus.jsonl"


def st_fill_negatives(negatives, n: int, on_short: str = "repeat"):
    """The ``n`` negative columns of one sentence-transformers row, by the package's one rule.

    ``negatives`` are the row's negatives in draw order. A row with ``n`` or more keeps its
    first ``n``; a shorter one is filled by cycling its own negatives (``on_short="repeat"``:
    ``[d1, d2, d1, d2, d1]`` for ``n = 5``) or dropped (``"drop"``, sentence-transformers'
    ``mine_hard_negatives`` rule). A row without any negative is always dropped. Returns the
    list, or ``None`` for a dropped row. ``"raise"`` is the caller's business: it returns the
    row as ``"repeat"`` would.
    """
    if on_short not in ST_ON_SHORT:
        raise ValueError(f"on_short must be one of {list(ST_ON_SHORT)}, got {on_short!r}")
    c = len(negatives)
    if c >= n:
        return list(negatives[:n])
    if c == 0 or on_short == "drop":
        return None
    return [negatives[t % c] for t in range(n)]


def _score_str(x) -> str:
    return str(np.float32(x))


def _clean_tsv(s: str) -> str:
    return s.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _rows(neg: EpochNegatives, keep, progress=False, desc="writing"):
    from ._progress import progress_bar

    n_q = len(neg.query_ids)
    with progress_bar(n_q, desc=desc, enable=progress, unit="q") as bar:
        for i in range(n_q):
            if keep[i]:
                pos = [int(r) for r in neg.positive_rows[i] if r >= 0]
                pos_s = [neg.positive_scores[i, j] for j in range(len(pos))]
                sel = neg.negative_rows[i] >= 0
                negs = [int(r) for r in neg.negative_rows[i][sel]]
                neg_s = list(neg.negative_scores[i][sel])
                neg_r = [int(r) for r in neg.negative_ranks[i][sel]]
                yield i, pos, pos_s, negs, neg_s, neg_r
            if (i & 1023) == 1023 or i == n_q - 1:
                bar.update((i & 1023) + 1)


def _plan_rows(neg: EpochNegatives, fmt: str, on_short: str):
    """Which rows a writer keeps, and the counts it reports."""
    n_q = len(neg.query_ids)
    n = neg.n
    has_pos = (neg.positive_rows >= 0).any(axis=1) if neg.positive_rows.shape[1] else \
        np.zeros(n_q, dtype=bool)
    n_neg = (neg.negative_rows >= 0).sum(axis=1)
    stats = {"format": fmt, "queries": n_q, "dropped_no_positive": 0, "dropped_no_negative": 0,
             "short": 0, "dropped_short": 0}
    if fmt not in TEXT_FORMATS:
        keep = np.ones(n_q, dtype=bool)
        stats["short"] = int(np.count_nonzero(n_neg < n))
    else:
        keep = has_pos & (n_neg > 0)
        stats["dropped_no_positive"] = int(np.count_nonzero(~has_pos))
        stats["dropped_no_negative"] = int(np.count_nonzero(has_pos & (n_neg == 0)))
        short = keep & (n_neg < n)
        stats["short"] = int(np.count_nonzero(short))
        if fmt == "sentence-transformers":
            if on_short == "raise" and short.any():
                i = int(np.flatnonzero(short)[0])
                raise ValueError(
                    f"on_short='raise': {stats['short']} query row(s) have fewer than n={n} "
                    f"negatives (first: query {neg.query_ids[i]!r}, {int(n_neg[i])}); use "
                    "on_short='repeat' or 'drop'")
            if on_short == "drop":
                keep = keep & ~short
                stats["dropped_short"] = stats["short"]
                stats["short"] = 0
        if not keep.any():
            raise ValueError(
                f"no query has both a positive and {'n' if on_short == 'drop' else 'a'} "
                f"negative, so a {fmt} file would be empty ({stats['dropped_no_positive']} "
                f"without a positive, {stats['dropped_no_negative']} without negatives"
                + (f", {stats['dropped_short']} short of n={n}" if stats["dropped_short"] else "")
                + ")")
    stats["rows"] = int(np.count_nonzero(keep))
    return keep, stats


def _check_text_entry(texts, key, name):
    try:
        v = texts[key]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{name} has no text for id {key!r}") from None
    if not (isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
            and isinstance(v[1], str)):
        raise ValueError(f"{name}[{key!r}] must be a (title, text) pair of strings, got "
                         f"{type(v).__name__}")


def _check_texts(neg: EpochNegatives, fmt: str, keep, ids_only: bool) -> bool:
    """Check the texts a writer will need (before anything is written); True if it uses texts."""
    needs_text = fmt in TEXT_FORMATS and not ids_only
    if fmt == "tevatron-legacy" and ids_only:
        raise ValueError("fmt='tevatron-legacy' holds passages (texts); ids_only=True is not "
                         "possible with it: use fmt='tevatron'")
    has_q = neg.query_texts is not None
    has_d = neg.doc_texts is not None
    if needs_text and not (has_q and has_d):
        why = {"tevatron": "Tevatron 2.x trains on query_text and reads documents from a corpus "
                           "file, it would train on empty queries",
               "tevatron-legacy": "its passages hold texts",
               "sentence-transformers": "the trainer encodes the columns as texts"}[fmt]
        raise ValueError(f"fmt={fmt!r} needs query and document texts (neg.query_texts and "
                         f"neg.doc_texts): {why}; attach the texts, or pass ids_only=True to "
                         "write ids in their place")
    uses_q = (needs_text or (fmt == "simxns" and has_q)) and not ids_only
    uses_d = needs_text
    rows = np.flatnonzero(keep)
    if uses_q:
        for i in rows:
            _check_text_entry(neg.query_texts, neg.query_ids[int(i)], "neg.query_texts")
    if uses_d:
        if fmt == "sentence-transformers":
            pos = neg.positive_rows[rows, :1].ravel()
        else:
            pos = neg.positive_rows[rows].ravel()
        d = np.unique(np.concatenate([pos, neg.negative_rows[rows].ravel()]))
        for r in d[d >= 0]:
            _check_text_entry(neg.doc_texts, neg.doc_ids[int(r)], "neg.doc_texts")
    return uses_q or uses_d


def _passage(neg, doc_id):
    title, text = neg.doc_texts[doc_id]
    return {"docid": doc_id, "title": title, "text": text}


def _write_tevatron(path, neg: EpochNegatives, keep, progress, use_texts, corpus_path):
    doc_ids = neg.doc_ids
    stats = {}
    if use_texts:
        rows = np.flatnonzero(keep)
        d = np.unique(np.concatenate([neg.positive_rows[rows].ravel(),
                                      neg.negative_rows[rows].ravel()]))
        d = d[d >= 0]
        with _AtomicFile(corpus_path, "w", encoding="utf-8", newline="\n") as f:
            for r in d:
                f.write(json.dumps(_passage(neg, doc_ids[int(r)]), ensure_ascii=False))
                f.write("\n")
        stats = {"corpus_path": corpus_path, "corpus_documents": int(d.size)}
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, _, negs, _, _ in _rows(neg, keep, progress):
            qid = neg.query_ids[i]
            rec = {"query_id": qid}
            if use_texts:
                rec["query_text"] = neg.query_texts[qid][1]
            rec["positive_document_ids"] = [doc_ids[r] for r in pos]
            rec["negative_document_ids"] = [doc_ids[r] for r in negs]
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")
    return stats


def _write_tevatron_legacy(path, neg: EpochNegatives, keep, progress):
    doc_ids = neg.doc_ids
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, _, negs, _, _ in _rows(neg, keep, progress):
            qid = neg.query_ids[i]
            rec = {
                "query_id": qid,
                "query": neg.query_texts[qid][1],
                "positive_passages": [_passage(neg, doc_ids[r]) for r in pos],
                "negative_passages": [_passage(neg, doc_ids[r]) for r in negs],
            }
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")
    return {}


def _st_text(texts, key):
    title, text = texts[key]
    return f"{title} {text}" if title else text


def _st_columns(neg: EpochNegatives, keep, progress, use_texts, on_short):
    n = neg.n
    cols = {"anchor": [], "positive": []}
    for j in range(n):
        cols[f"negative_{j + 1}"] = []
    doc_ids = neg.doc_ids
    for i, pos, _, negs, _, _ in _rows(neg, keep, progress):
        qid = neg.query_ids[i]
        filled = st_fill_negatives([doc_ids[r] for r in negs], n, on_short)
        if use_texts:
            cols["anchor"].append(_st_text(neg.query_texts, qid))
            cols["positive"].append(_st_text(neg.doc_texts, doc_ids[pos[0]]))
            filled = [_st_text(neg.doc_texts, d) for d in filled]
        else:
            cols["anchor"].append(qid)
            cols["positive"].append(doc_ids[pos[0]])
        for j in range(n):
            cols[f"negative_{j + 1}"].append(filled[j])
    return cols


def _write_st(path, neg: EpochNegatives, keep, progress, use_texts, on_short):
    if path.lower().endswith(".parquet"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"path {path}: writing Parquet needs pyarrow (pip install pyarrow), "
                             "or use a .jsonl file name") from None
    cols = _st_columns(neg, keep, progress, use_texts, on_short)
    names = list(cols)
    if path.lower().endswith(".parquet"):
        table = pa.table({c: pa.array(cols[c], type=pa.string()) for c in names})
        with _AtomicFile(path, "wb") as f:
            pq.write_table(table, f)
        return {}
    n_q = len(cols["anchor"])
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(n_q):
            f.write(json.dumps({c: cols[c][i] for c in names}, ensure_ascii=False))
            f.write("\n")
    return {}


def _write_trec(path, neg: EpochNegatives, keep, progress, tag="simans-fast"):
    doc_ids = neg.doc_ids
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, _, _, negs, neg_s, neg_r in _rows(neg, keep, progress):
            qid = neg.query_ids[i]
            order = sorted(range(len(negs)), key=lambda j: neg_r[j])
            for j in order:
                f.write(f"{qid} Q0 {doc_ids[negs[j]]} {neg_r[j]} {_score_str(neg_s[j])} {tag}\n")
    return {}


def _write_simxns(path, neg: EpochNegatives, keep, progress, use_texts):
    doc_ids = neg.doc_ids
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, pos_s, negs, neg_s, _ in _rows(neg, keep, progress):
            qid = neg.query_ids[i]
            q = _clean_tsv(neg.query_texts[qid][1]) if use_texts else ""
            p = ",".join(f"{doc_ids[r]} {_score_str(s)}" for r, s in zip(pos, pos_s))
            ng = ",".join(f"{doc_ids[r]} {_score_str(s)}" for r, s in zip(negs, neg_s))
            f.write(f"{qid}\t{q}\t{p}\t{ng}\n")
    return {}


def write_negatives(path: str, neg: EpochNegatives, fmt: str, *, progress: bool = False,
                    tag: str = "simans-fast", ids_only: bool = False, on_short: str = "repeat",
                    corpus_path: str | None = None) -> dict:
    """Write one epoch's negatives in ``fmt`` (see the module docstring), atomically.

    Everything is checked before the first byte is written (texts present for every id that
    will be written, rows left to write); a failure leaves neither the file nor a temporary.

    Parameters
    ----------
    path : str
        Output file.
    neg : EpochNegatives
    fmt : {"tevatron", "tevatron-legacy", "sentence-transformers", "trec", "simxns"}
    progress : bool, default=False
        Progress bar on stderr.
    tag : str, default="simans-fast"
        Run tag of TREC run files.
    ids_only : bool, default=False
        ``tevatron`` and ``sentence-transformers`` normally need texts; ``True`` writes ids
        instead (and no Tevatron corpus).
    on_short : {"repeat", "drop", "raise"}, default="repeat"
        sentence-transformers rows with fewer than ``n`` negatives (see the module docstring).
    corpus_path : str, optional
        Where ``tevatron`` writes its corpus JSONL (default :func:`tevatron_corpus_path`).

    Returns
    -------
    dict
        ``rows`` written, ``queries``, ``dropped_no_positive``, ``dropped_no_negative``,
        ``short`` (rows written with fewer than ``n`` negatives; filled by cycling in the
        sentence-transformers format), ``dropped_short``, and for ``tevatron`` with texts
        ``corpus_path`` and ``corpus_documents``. Dropped rows are also warned about.
    """
    if fmt not in NEGATIVES_FORMATS:
        raise ValueError(f"fmt must be one of {list(NEGATIVES_FORMATS)}, got {fmt!r}")
    if on_short not in ST_ON_SHORT:
        raise ValueError(f"on_short must be one of {list(ST_ON_SHORT)}, got {on_short!r}")
    if not isinstance(ids_only, (bool, np.bool_)):
        raise ValueError(f"ids_only must be True or False, got {ids_only!r}")
    if tag != tag.strip() or not tag or any(c.isspace() for c in tag):
        raise ValueError(f"tag must be a non-empty word without whitespace, got {tag!r}")
    if fmt == "tevatron" and not ids_only:
        corpus_path = corpus_path or tevatron_corpus_path(path)
        if os.path.abspath(corpus_path) == os.path.abspath(path):
            raise ValueError(f"corpus_path {corpus_path!r} is the training file itself; name it "
                             "differently")
    keep, stats = _plan_rows(neg, fmt, on_short)
    use_texts = _check_texts(neg, fmt, keep, bool(ids_only))
    if fmt == "tevatron":
        extra = _write_tevatron(path, neg, keep, progress, use_texts, corpus_path)
    elif fmt == "tevatron-legacy":
        extra = _write_tevatron_legacy(path, neg, keep, progress)
    elif fmt == "sentence-transformers":
        extra = _write_st(path, neg, keep, progress, use_texts, on_short)
    elif fmt == "trec":
        extra = _write_trec(path, neg, keep, progress, tag=tag)
    else:
        extra = _write_simxns(path, neg, keep, progress, use_texts)
    stats.update(extra)
    stats["path"] = path
    dropped = [f"{stats[k]} {what}" for k, what in (
        ("dropped_no_positive", "without a positive"),
        ("dropped_no_negative", "without any negative"),
        ("dropped_short", f"with fewer than n={neg.n} negatives (on_short='drop')")) if stats[k]]
    if dropped:
        warnings.warn(f"write_negatives: {path}: dropped query row(s): {', '.join(dropped)}",
                      stacklevel=2)
    return stats


# --------------------------------------------------------------------------- reading back
def _not_ours(path, lineno, what):
    loc = f" line {lineno}:" if lineno else ""
    return InputError(f"{path}:{loc} {what}; not a negatives file this tool writes (tevatron "
                      "JSONL, sentence-transformers Parquet/JSONL, TREC run, SimXNS TSV)")


def _json_line(path, lineno, line):
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise _not_ours(path, lineno, "not a JSON object") from None


def detect_format(path: str) -> str:
    """Tell which negatives format a file holds (by extension, then by content).

    Returns one of :data:`NEGATIVES_FORMATS`, or ``"tevatron-corpus"`` for the corpus file
    written beside a ``tevatron`` file.
    """
    _check_file(path, "path")
    if path.lower().endswith(".parquet"):
        return "sentence-transformers"
    first = ""
    lineno = 0
    for lineno, line in _iter_lines(path, "path"):
        if line.strip():
            first = line
            break
    if not first:
        return format_from_extension(path) or "tevatron"
    if first.lstrip().startswith("{"):
        obj = _json_line(path, lineno, first)
        if isinstance(obj, dict):
            if "anchor" in obj:
                return "sentence-transformers"
            if "positive_passages" in obj:
                return "tevatron-legacy"
            if "positive_document_ids" in obj:
                return "tevatron"
            if "docid" in obj and "text" in obj:
                return "tevatron-corpus"
        raise _not_ours(path, lineno, "a JSON record of no known layout")
    if "\t" in first and len(first.split("\t")) == 4:
        return "simxns"
    if len(first.split()) == 6:
        return "trec"
    raise _not_ours(path, lineno, "a line of no known layout")


def _parse_pairs(s):
    if not s:
        return [], []
    ids, scores = [], []
    for part in s.split(","):
        i, sc = part.split(" ")
        ids.append(i)
        scores.append(float(sc))
    return ids, scores


def _str_list(r, key):
    v = r[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError(key)
    return list(v)


def _read_tevatron(path):
    out = []
    for lineno, line in _iter_lines(path, "path"):
        if not line.strip():
            continue
        r = _json_line(path, lineno, line)
        try:
            if not isinstance(r, dict):
                raise TypeError("record")
            rec = {"query_id": r["query_id"], "query": r.get("query_text", r.get("query")),
                   "positive_scores": None, "negative_scores": None, "negative_ranks": None}
            if "positive_passages" in r:
                for key in ("positive_passages", "negative_passages"):
                    if not isinstance(r[key], list) or not all(
                            isinstance(p, dict) and isinstance(p.get("docid"), str)
                            for p in r[key]):
                        raise TypeError(key)
                rec["positives"] = [p["docid"] for p in r["positive_passages"]]
                rec["negatives"] = [p["docid"] for p in r["negative_passages"]]
                rec["positive_passages"] = r["positive_passages"]
                rec["negative_passages"] = r["negative_passages"]
            else:
                rec["positives"] = _str_list(r, "positive_document_ids")
                rec["negatives"] = _str_list(r, "negative_document_ids")
        except (KeyError, TypeError) as e:
            raise _not_ours(path, lineno, f"a Tevatron record with a missing or malformed "
                                          f"field ({e.args[0] if e.args else e})") from None
        out.append(rec)
    return out


def _read_st(path):
    if path.lower().endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"path {path}: reading Parquet needs pyarrow (pip install "
                             "pyarrow)") from None
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow.ArrowInvalid, OSError, ...
            raise _not_ours(path, 0, f"not a readable Parquet file ({type(e).__name__})") \
                from None
        numbered = [(0, r) for r in rows]
    else:
        numbered = [(lineno, _json_line(path, lineno, line))
                    for lineno, line in _iter_lines(path, "path") if line.strip()]
    out = []
    for lineno, r in numbered:
        if not isinstance(r, dict) or "anchor" not in r or "positive" not in r:
            raise _not_ours(path, lineno, "a record without the anchor/positive columns")
        negs = []
        j = 1
        while f"negative_{j}" in r:
            if r[f"negative_{j}"] is not None:
                negs.append(r[f"negative_{j}"])
            j += 1
        out.append({"query_id": None, "query": r["anchor"],
                    "positives": [r["positive"]] if r["positive"] is not None else [],
                    "negatives": negs, "positive_scores": None, "negative_scores": None,
                    "negative_ranks": None})
    return out


def _read_trec(path):
    by_q = {}
    out = []
    for lineno, line in _iter_lines(path, "path"):
        fields = line.split()
        if not fields:
            continue
        try:
            qid, _, did, rank, score, _tag = fields
            rank, score = int(rank), float(score)
        except ValueError:
            raise _not_ours(path, lineno, "expected 'qid Q0 docid rank score tag'") from None
        rec = by_q.get(qid)
        if rec is None:
            rec = by_q[qid] = {"query_id": qid, "query": None, "positives": None,
                               "positive_scores": None, "negatives": [],
                               "negative_scores": [], "negative_ranks": []}
            out.append(rec)
        rec["negatives"].append(did)
        rec["negative_scores"].append(score)
        rec["negative_ranks"].append(rank)
    return out


def _read_simxns(path):
    out = []
    for lineno, line in _iter_lines(path, "path"):
        if not line:
            continue
        try:
            qid, q, p, ng = line.split("\t")
            pid, ps = _parse_pairs(p)
            nid, ns = _parse_pairs(ng)
        except ValueError:
            raise _not_ours(path, lineno, "expected 'qid<TAB>query<TAB>pid score,...<TAB>pid "
                                          "score,...'") from None
        out.append({"query_id": qid, "query": q, "positives": pid, "positive_scores": ps,
                    "negatives": nid, "negative_scores": ns, "negative_ranks": None})
    return out


def read_negatives(path: str, fmt: str | None = None) -> list[dict]:
    """Read a negatives file back into one dict per query.

    Keys: ``query_id``, ``query`` (text or None), ``positives`` and ``negatives`` (document ids,
    or texts for a sentence-transformers file written with texts), ``positive_scores``,
    ``negative_scores``, ``negative_ranks`` (None where the format does not store them). For
    ``tevatron-legacy`` files ``positives``/``negatives`` are the passages' ``docid`` values and
    ``positive_passages``/``negative_passages`` hold the full objects. A file that is not one of
    these raises :class:`InputError` naming the line.
    """
    fmt = fmt or detect_format(path)
    if fmt == "tevatron-corpus":
        raise InputError(f"{path}: is the corpus file of a tevatron negatives file (docid, "
                         "title, text), not negatives")
    if fmt not in NEGATIVES_FORMATS:
        raise ValueError(f"fmt must be one of {list(NEGATIVES_FORMATS)}, got {fmt!r}")
    _check_file(path, "path")
    if fmt in ("tevatron", "tevatron-legacy"):
        return _read_tevatron(path)
    if fmt == "sentence-transformers":
        return _read_st(path)
    if fmt == "trec":
        return _read_trec(path)
    return _read_simxns(path)
