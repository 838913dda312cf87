"""Readers and writers: embeddings, id lists, qrels, texts, candidates files, negatives files.

Everything here is pickle-free and every writer is atomic: it writes a temporary file in the
destination's directory and renames it over the destination with :func:`os.replace`, so a
reader (or a crashed run) never sees a half-written file. Writers produce deterministic bytes
(no timestamps; JSON with sorted keys), so two runs with the same inputs give identical files.

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
``tevatron``              JSONL ``{"query_id", "positive_document_ids", "negative_document_ids"}``;
                          with texts ``{"query_id", "query", "positive_passages",
                          "negative_passages"}``, passages ``{"docid", "title", "text"}``.
``sentence-transformers`` columns ``anchor, positive, negative_1..n`` (texts when given, else
                          ids); Parquet when the file name ends in ``.parquet``, else JSONL.
``trec``                  run file ``qid Q0 docid rank score tag`` with the negatives, rank =
                          the negative's 1-based rank among the query's candidates.
``simxns``                TSV ``qid \\t query \\t "pid score,..." \\t "pid score,..."`` (positives,
                          then negatives), the layout read by the SimANS code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "InputError",
    "CANDIDATES_FORMAT",
    "CANDIDATES_VERSION",
    "NEGATIVES_FORMATS",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save_npy",
    "fsync_dir",
    "read_embeddings",
    "read_ids",
    "ids_sha256",
    "array_fingerprint",
    "file_sha256",
    "read_qrels",
    "read_texts",
    "read_beir_texts",
    "CandidatesFile",
    "save_candidates",
    "load_candidates",
    "EpochNegatives",
    "write_negatives",
    "read_negatives",
    "detect_format",
    "format_from_extension",
]

CANDIDATES_FORMAT = "simans-fast-candidates"
CANDIDATES_VERSION = 1
NEGATIVES_FORMATS = ("tevatron", "sentence-transformers", "trec", "simxns")
NEGATIVES_FORMAT_NAME = "simans-fast-negatives"

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


def _commit(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
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
def _check_file(path, arg):
    if not os.path.exists(path):
        raise InputError(f"{arg} {path}: file not found; check the path")
    if os.path.isdir(path):
        raise InputError(f"{arg} {path}: is a directory, expected a file")


def read_embeddings(path: str, *, arg: str = "embeddings") -> np.ndarray:
    """Memory-map a ``.npy`` embedding matrix (float32 or float16, 2-D).

    Parameters
    ----------
    path : str
        A ``.npy`` file (``.npz`` and pickles are not accepted).
    arg : str
        Name of the command-line argument, used in error messages.

    Returns
    -------
    numpy.memmap of shape (rows, dim)

    Raises
    ------
    InputError
        Missing file, not a ``.npy`` file, wrong dtype or number of dimensions.
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
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "object" in str(e):
            raise InputError(f"{arg} {path}: holds Python objects, not numbers; {fix}") from None
        raise InputError(f"{arg} {path}: cannot read it as a .npy array ({e}); {fix}") from None
    except OSError as e:
        raise InputError(f"{arg} {path}: cannot read it ({e}); {fix}") from None
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


def read_ids(path: str, *, arg: str = "ids") -> list[str]:
    """Read an id list: one id per line, no whitespace inside ids, no repeats.

    A final newline is optional; ``\\r\\n`` line ends are accepted.

    Raises
    ------
    InputError
        Missing file, empty lines, ids with whitespace, repeated ids.
    """
    _check_file(path, arg)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    ids = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not ids:
        raise InputError(f"{arg} {path}: the id list is empty; write one id per line")
    for i, s in enumerate(ids):
        if s == "" or s != s.strip() or any(c.isspace() for c in s):
            raise InputError(
                f"{arg} {path}: line {i + 1}: id {s!r} is empty or contains whitespace; "
                "write one id per line without spaces"
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
    arg: str = "--qrels",
    query_arg: str = "--query-ids",
    doc_arg: str = "--doc-ids",
    skip_missing: bool = False,
):
    """Read qrels as TREC (``qid 0 docid rel``) or TSV (``qid docid [rel]``) lines.

    The layout is told per line by its number of whitespace-separated fields: 4 = TREC, 3 = TSV
    with relevance, 2 = TSV (relevant). Only lines with ``rel > 0`` count. A first line whose
    relevance is not a number (a header such as ``query-id corpus-id score``) is skipped.
    Blank lines and lines starting with ``#`` are ignored.

    Parameters
    ----------
    path : str
        The qrels file.
    query_index, doc_index : dict
        Maps id string -> row (of the query embeddings / corpus).
    arg, query_arg, doc_arg : str
        Argument names for error messages.
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
    with open(path, encoding="utf-8") as f:
        first = True
        for lineno, line in enumerate(f, 1):
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
            "lists the embeddings were made from, or pass --skip-missing-qrels to drop them"
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


def read_texts(path: str, wanted=None, *, arg: str = "--doc-texts") -> dict:
    """Read id -> (title, text) from a TSV or JSONL file, keeping only ``wanted`` ids.

    * JSONL (``.jsonl``/``.json``, BEIR style): one object per line with an id (``_id``,
      ``id``, ``docid``, ``query_id``...), a ``text`` (or ``contents``/``query``) and an optional
      ``title``.
    * TSV (anything else): ``id<TAB>text`` (MS MARCO), ``id<TAB>text<TAB>title`` (DPR), or
      ``id<TAB>url<TAB>title<TAB>body`` (MS MARCO documents); a first line starting with
      ``id<TAB>`` is a header.

    Parameters
    ----------
    path : str
    wanted : set of str, optional
        Ids to keep (``None`` keeps every id).
    arg : str
        Argument name for error messages.

    Returns
    -------
    dict
        id -> (title, text); title is ``""`` when the file has none.
    """
    _check_file(path, arg)
    out = {}
    low = path.lower()
    if low.endswith(".jsonl") or low.endswith(".json") or low.endswith(".jsonl.txt"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{arg} {path}: line {lineno}: not JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{arg} {path}: line {lineno}: expected a JSON object")
                key = next((k for k in _ID_KEYS if k in obj), None)
                tkey = next((k for k in _TEXT_KEYS if k in obj), None)
                if key is None or tkey is None:
                    raise InputError(
                        f"{arg} {path}: line {lineno}: needs an id field ({'/'.join(_ID_KEYS)}) "
                        f"and a text field ({'/'.join(_TEXT_KEYS)})"
                    )
                i = str(obj[key])
                if wanted is None or i in wanted:
                    out[i] = (str(obj.get("title") or ""), str(obj[tkey]))
        return out
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            fields = line.split("\t")
            if lineno == 1 and fields[0].lower() in ("id", "_id", "docid", "qid", "pid"):
                continue
            i = fields[0]
            if wanted is not None and i not in wanted:
                continue
            if len(fields) == 2:
                out[i] = ("", fields[1])
            elif len(fields) == 3:
                out[i] = (fields[2], fields[1])
            elif len(fields) == 4:
                out[i] = (fields[2], fields[3])
            else:
                raise InputError(
                    f"{arg} {path}: line {lineno}: expected 'id<TAB>text', "
                    f"'id<TAB>text<TAB>title' or 'id<TAB>url<TAB>title<TAB>body', "
                    f"got {len(fields)} fields"
                )
    return out


def read_beir_texts(directory: str, *, want_queries=None, want_docs=None, arg: str = "--texts"):
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


def read_header(path: str, *, arg: str = "--candidates") -> dict:
    """Read and check the ``header.json`` of a candidates directory."""
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
        with open(hp, encoding="utf-8") as f:
            header = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{arg} {hp}: unreadable header ({e})") from None
    if header.get("format") != CANDIDATES_FORMAT:
        raise InputError(f"{arg} {hp}: format {header.get('format')!r} is not "
                         f"{CANDIDATES_FORMAT!r}")
    if not isinstance(header.get("version"), int) or header["version"] > CANDIDATES_VERSION:
        raise InputError(f"{arg} {hp}: version {header.get('version')!r} is newer than this "
                         f"simans_fast reads ({CANDIDATES_VERSION}); upgrade simans_fast")
    return header


def load_candidates(path: str, *, mmap: bool = True, verify: bool = False,
                    arg: str = "--candidates") -> CandidatesFile:
    """Load a candidates directory written by ``simans-fast mine`` or :func:`save_candidates`.

    Parameters
    ----------
    path : str
        The candidates directory.
    mmap : bool, default=True
        Memory-map the arrays read-only.
    verify : bool, default=False
        Recompute the sha256 of every file and compare with the header.

    Returns
    -------
    CandidatesFile
    """
    header = read_header(path, arg=arg)
    arrays = {}
    for name in _ARRAYS:
        spec = header["arrays"][name]
        fp = os.path.join(path, spec["file"])
        if not os.path.exists(fp):
            raise InputError(f"{arg} {path}: {spec['file']} is missing; the directory is damaged")
        if verify and file_sha256(fp) != spec["sha256"]:
            raise InputError(f"{arg} {fp}: sha256 differs from header.json; the file changed")
        arr = np.load(fp, mmap_mode="r" if mmap else None, allow_pickle=False)
        if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
            raise InputError(f"{arg} {fp}: shape/dtype {arr.shape}/{arr.dtype} differ from "
                             "header.json; the directory is damaged")
        arrays[name] = arr
    ids = {}
    for key in ("query_ids", "doc_ids"):
        spec = header["ids"][key]
        fp = os.path.join(path, spec["file"])
        lst = read_ids(fp, arg=arg)
        if len(lst) != spec["count"] or (verify and ids_sha256(lst) != spec["sha256"]):
            raise InputError(f"{arg} {fp}: id list differs from header.json; the directory "
                             "is damaged")
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


def _score_str(x) -> str:
    return str(np.float32(x))


def _clean_tsv(s: str) -> str:
    return s.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _rows(neg: EpochNegatives, progress=False, desc="writing"):
    from ._progress import progress_bar

    n_q = len(neg.query_ids)
    with progress_bar(n_q, desc=desc, enable=progress, unit="q") as bar:
        for i in range(n_q):
            pos = [int(r) for r in neg.positive_rows[i] if r >= 0]
            pos_s = [neg.positive_scores[i, j] for j in range(len(pos))]
            sel = neg.negative_rows[i] >= 0
            negs = [int(r) for r in neg.negative_rows[i][sel]]
            neg_s = list(neg.negative_scores[i][sel])
            neg_r = [int(r) for r in neg.negative_ranks[i][sel]]
            yield i, pos, pos_s, negs, neg_s, neg_r
            if (i & 1023) == 1023 or i == n_q - 1:
                bar.update((i & 1023) + 1)


def _write_tevatron(path, neg: EpochNegatives, progress):
    doc_ids = neg.doc_ids
    texts = neg.query_texts is not None and neg.doc_texts is not None
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, _, negs, _, _ in _rows(neg, progress):
            qid = neg.query_ids[i]
            if texts:
                rec = {
                    "query_id": qid,
                    "query": neg.query_texts[qid][1],
                    "positive_passages": [
                        {"docid": doc_ids[r], "title": neg.doc_texts[doc_ids[r]][0],
                         "text": neg.doc_texts[doc_ids[r]][1]} for r in pos
                    ],
                    "negative_passages": [
                        {"docid": doc_ids[r], "title": neg.doc_texts[doc_ids[r]][0],
                         "text": neg.doc_texts[doc_ids[r]][1]} for r in negs
                    ],
                }
            else:
                rec = {
                    "query_id": qid,
                    "positive_document_ids": [doc_ids[r] for r in pos],
                    "negative_document_ids": [doc_ids[r] for r in negs],
                }
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")


def _st_text(texts, key):
    title, text = texts[key]
    return f"{title} {text}" if title else text


def _st_columns(neg: EpochNegatives, progress):
    texts = neg.query_texts is not None and neg.doc_texts is not None
    n = neg.n
    cols = {"anchor": [], "positive": []}
    for j in range(n):
        cols[f"negative_{j + 1}"] = []
    doc_ids = neg.doc_ids
    for i, pos, _, negs, _, _ in _rows(neg, progress):
        qid = neg.query_ids[i]
        if texts:
            cols["anchor"].append(_st_text(neg.query_texts, qid))
            cols["positive"].append(_st_text(neg.doc_texts, doc_ids[pos[0]]) if pos else None)
        else:
            cols["anchor"].append(qid)
            cols["positive"].append(doc_ids[pos[0]] if pos else None)
        for j in range(n):
            if j < len(negs):
                d = doc_ids[negs[j]]
                cols[f"negative_{j + 1}"].append(_st_text(neg.doc_texts, d) if texts else d)
            else:
                cols[f"negative_{j + 1}"].append(None)
    return cols


def _write_st(path, neg: EpochNegatives, progress):
    cols = _st_columns(neg, progress)
    names = list(cols)
    if path.lower().endswith(".parquet"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"--out {path}: writing Parquet needs pyarrow (pip install pyarrow), "
                             "or use a .jsonl file name") from None
        table = pa.table({c: pa.array(cols[c], type=pa.string()) for c in names})
        with _AtomicFile(path, "wb") as f:
            pq.write_table(table, f)
        return
    n_q = len(cols["anchor"])
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(n_q):
            f.write(json.dumps({c: cols[c][i] for c in names}, ensure_ascii=False))
            f.write("\n")


def _write_trec(path, neg: EpochNegatives, progress, tag="simans-fast"):
    doc_ids = neg.doc_ids
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, _, _, negs, neg_s, neg_r in _rows(neg, progress):
            qid = neg.query_ids[i]
            order = sorted(range(len(negs)), key=lambda j: neg_r[j])
            for j in order:
                f.write(f"{qid} Q0 {doc_ids[negs[j]]} {neg_r[j]} {_score_str(neg_s[j])} {tag}\n")


def _write_simxns(path, neg: EpochNegatives, progress):
    doc_ids = neg.doc_ids
    with _AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, pos_s, negs, neg_s, _ in _rows(neg, progress):
            qid = neg.query_ids[i]
            q = _clean_tsv(neg.query_texts[qid][1]) if neg.query_texts is not None else ""
            p = ",".join(f"{doc_ids[r]} {_score_str(s)}" for r, s in zip(pos, pos_s))
            ng = ",".join(f"{doc_ids[r]} {_score_str(s)}" for r, s in zip(negs, neg_s))
            f.write(f"{qid}\t{q}\t{p}\t{ng}\n")


def write_negatives(path: str, neg: EpochNegatives, fmt: str, *, progress: bool = False,
                    tag: str = "simans-fast") -> None:
    """Write one epoch's negatives in ``fmt`` (see the module docstring), atomically.

    Parameters
    ----------
    path : str
        Output file.
    neg : EpochNegatives
    fmt : {"tevatron", "sentence-transformers", "trec", "simxns"}
    progress : bool, default=False
        Progress bar on stderr.
    tag : str, default="simans-fast"
        Run tag of TREC run files.
    """
    if fmt not in NEGATIVES_FORMATS:
        raise ValueError(f"fmt must be one of {NEGATIVES_FORMATS}, got {fmt!r}")
    if fmt == "tevatron":
        _write_tevatron(path, neg, progress)
    elif fmt == "sentence-transformers":
        _write_st(path, neg, progress)
    elif fmt == "trec":
        _write_trec(path, neg, progress, tag=tag)
    else:
        _write_simxns(path, neg, progress)


def detect_format(path: str) -> str:
    """Tell which negatives format a file holds (by extension, then by content)."""
    if path.lower().endswith(".parquet"):
        return "sentence-transformers"
    with open(path, encoding="utf-8") as f:
        first = ""
        for line in f:
            if line.strip():
                first = line.rstrip("\n")
                break
    if not first:
        return format_from_extension(path) or "tevatron"
    if first.lstrip().startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            obj = {}
        if isinstance(obj, dict) and "anchor" in obj:
            return "sentence-transformers"
        return "tevatron"
    if "\t" in first and len(first.split("\t")) == 4:
        return "simxns"
    if len(first.split()) == 6:
        return "trec"
    raise InputError(f"{path}: not a negatives file this tool writes (tevatron JSONL, "
                     "sentence-transformers parquet/JSONL, TREC run, SimXNS TSV)")


def _parse_pairs(s):
    if not s:
        return [], []
    ids, scores = [], []
    for part in s.split(","):
        i, sc = part.split(" ")
        ids.append(i)
        scores.append(float(sc))
    return ids, scores


def read_negatives(path: str, fmt: str | None = None) -> list[dict]:
    """Read a negatives file back into one dict per query.

    Keys: ``query_id``, ``query`` (text or None), ``positives`` and ``negatives`` (document ids,
    or texts for a sentence-transformers file written with texts), ``positive_scores``,
    ``negative_scores``, ``negative_ranks`` (None where the format does not store them). For
    Tevatron files with texts ``positives``/``negatives`` are the passages' ``docid`` values and
    ``positive_passages``/``negative_passages`` hold the full objects.
    """
    fmt = fmt or detect_format(path)
    out = []
    if fmt == "tevatron":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                rec = {"query_id": r["query_id"], "query": r.get("query"),
                       "positive_scores": None, "negative_scores": None, "negative_ranks": None}
                if "positive_passages" in r:
                    rec["positives"] = [p["docid"] for p in r["positive_passages"]]
                    rec["negatives"] = [p["docid"] for p in r["negative_passages"]]
                    rec["positive_passages"] = r["positive_passages"]
                    rec["negative_passages"] = r["negative_passages"]
                else:
                    rec["positives"] = list(r["positive_document_ids"])
                    rec["negatives"] = list(r["negative_document_ids"])
                out.append(rec)
        return out
    if fmt == "sentence-transformers":
        if path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        for r in rows:
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
    if fmt == "trec":
        by_q = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                qid, _, did, rank, score, _tag = fields
                rec = by_q.get(qid)
                if rec is None:
                    rec = by_q[qid] = {"query_id": qid, "query": None, "positives": None,
                                       "positive_scores": None, "negatives": [],
                                       "negative_scores": [], "negative_ranks": []}
                    out.append(rec)
                rec["negatives"].append(did)
                rec["negative_scores"].append(float(score))
                rec["negative_ranks"].append(int(rank))
        return out
    if fmt == "simxns":
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                qid, q, p, ng = line.split("\t")
                pid, ps = _parse_pairs(p)
                nid, ns = _parse_pairs(ng)
                out.append({"query_id": qid, "query": q, "positives": pid, "positive_scores": ps,
                            "negatives": nid, "negative_scores": ns, "negative_ranks": None})
        return out
    raise ValueError(f"fmt must be one of {NEGATIVES_FORMATS}, got {fmt!r}")
