"""Run files: the candidates of a BM25 or dense retriever, as candidate arrays and back.

Two layouts, detected from the first line (``format="auto"``):

* ``"trec"``: ``qid Q0 docid rank score tag``, six fields separated by white space (what
  trec_eval, Pyserini and Anserini write);
* ``"tsv"``: ``qid<TAB>docid<TAB>score``, three tab-separated fields (Tevatron's and Pyserini's
  ``--save_text`` search output; the third field is a score, higher is better).

:func:`read_run` streams the file line by line (no pandas; memory: about 40 bytes per line
plus the output arrays) into ``ids`` (int64 rows of a given document-id list) and ``scores``
(float32), each row sorted by score descending, ties by the file's rank (TREC) and then by
line order, padded with ``-1`` / ``-inf`` to the deepest query (or to ``k``).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from . import FormatError, atomic_text_writer, text_lines

__all__ = ["Run", "RUN_FORMATS", "detect_run_format", "read_run", "write_run"]

RUN_FORMATS = ("trec", "tsv")


@dataclass(frozen=True, eq=False)
class Run:
    """Candidates read from a run file.

    Attributes
    ----------
    ids : ndarray (n_queries, width), int64
        Rows of the given ``doc_ids`` list, best first; ``-1`` pads.
    scores : ndarray (n_queries, width), float32
        Their scores (non-increasing along a row); ``-inf`` pads.
    query_ids : list of str
        Query id of each row (the given ``query_ids``, or the order of first appearance).
    counts : ndarray (n_queries,), int64
        Entries of each query in the file (rows keep at most ``width`` of them).
    format : str or None
        ``"trec"`` or ``"tsv"`` (None for an empty file read with ``format="auto"``).
    skipped : int
        Lines skipped because of an unknown query or document id (``skip_unknown=True``).
    """

    ids: np.ndarray
    scores: np.ndarray
    query_ids: list
    counts: np.ndarray
    format: str | None
    skipped: int = 0

    def __iter__(self):  # ids, scores = read_run(...)
        yield self.ids
        yield self.scores


def _split(text, fmt):
    if fmt == "tsv":
        return text.split("\t")
    return text.split()


def _detect_line(text, path, no):
    where = f"{path}:{no}"
    if "\t" in text and len(text.split("\t")) == 3:
        return "tsv"
    n = len(text.split())
    if n == 6:
        return "trec"
    hint = ""
    if n == 3:
        hint = " (three fields must be separated by tabs: qid<TAB>docid<TAB>score)"
    raise FormatError(f"{where}: not a run line: expected 'qid Q0 docid rank score tag' (6 "
                      f"fields) or 'qid<TAB>docid<TAB>score', got {n} field(s){hint}",
                      str(path), no)


def _lines(path, parameter):
    """Yield (line_no, text) with line ends removed; UTF-8 and blank lines checked."""
    for _, no, text in text_lines(path, parameter=parameter, blank="blank line in a run file"):
        yield no, text


def detect_run_format(path, *, parameter: str = "path"):
    """``"trec"`` or ``"tsv"`` from the first line (None for an empty file)."""
    for no, text in _lines(path, parameter):
        return _detect_line(text, path, no)
    return None


def _check_k(k):
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    return int(k)


def _index(ids, name):
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of id strings, got a single "
                         f"{type(ids).__name__}")
    out = {}
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(x).__name__}")
        if x in out:
            raise ValueError(f"{name}[{i}] = {x!r} repeats {name}[{out[x]}]; ids must be unique")
        out[x] = i
    return out


def _unknown(message, path, line, kind, id_):
    """The error for a run line naming an id the caller did not list: a :class:`FormatError`
    whose ``unknown`` attribute is ``(kind, id)`` (``kind`` "query" or "document"), so a caller
    can say where its id lists came from without parsing the message."""
    err = FormatError(message, str(path), line)
    err.unknown = (kind, id_)
    return err


def read_run(path, doc_ids, *, query_ids=None, k=None, format: str = "auto",
             skip_unknown: bool = False, parameter: str = "path") -> Run:
    """Read a TREC run or a ``qid<TAB>docid<TAB>score`` file into candidate arrays.

    Parameters
    ----------
    path : str
        The run file.
    doc_ids : sequence of str
        The corpus's document ids; ``ids`` holds positions in this list.
    query_ids : sequence of str, optional
        Row order of the output (queries absent from the run get an all-padding row). Default:
        the queries in order of first appearance.
    k : int, optional
        Width of the output: each row keeps its ``k`` best entries. Default: the deepest query.
    format : {"auto", "trec", "tsv"}
        ``"auto"`` decides from the first line. In ``"auto"`` mode a three-field file whose
        third field counts 1, 2, 3, ... within every query is refused: it is MS MARCO's
        ``qid<TAB>pid<TAB>rank``, not scores (pass ``format="tsv"`` to read it as scores).
    skip_unknown : bool, default False
        A query id not in ``query_ids`` or a document id not in ``doc_ids`` raises an error
        naming the file and line; with True such lines are skipped (counted in ``skipped``).
    parameter : str
        Name used for ``path`` in error messages.

    Raises
    ------
    FormatError
        A malformed line, a non-finite score, a non-integer rank, an unknown id (unless
        skipped), a repeated ``(qid, docid)`` pair: the message names the file and line(s).
    ValueError
        Bad ``doc_ids``, ``query_ids``, ``k`` or ``format``.
    """
    if format not in ("auto",) + RUN_FORMATS:
        raise ValueError(f"format must be 'auto', 'trec' or 'tsv', got {format!r}")
    k = _check_k(k)
    if not isinstance(doc_ids, (str, bytes)):
        doc_ids = list(doc_ids)
    dindex = _index(doc_ids, "doc_ids")
    fixed_queries = query_ids is not None
    qindex = _index(query_ids, "query_ids") if fixed_queries else {}
    qlist = list(query_ids) if fixed_queries else []

    q_arr, d_arr, r_arr, l_arr = array("q"), array("q"), array("q"), array("q")
    s_arr = array("d")
    fmt = None if format == "auto" else format
    skipped = 0
    rank_like = format == "auto"   # third tsv field an integer counting 1, 2, 3 per query
    seen_per_q = {}
    for no, text in _lines(path, parameter):
        where = f"{path}:{no}"
        if fmt is None:
            fmt = _detect_line(text, path, no)
        parts = _split(text, fmt)
        if fmt == "tsv":
            if len(parts) != 3:
                raise FormatError(f"{where}: expected 3 tab-separated fields "
                                  f"(qid<TAB>docid<TAB>score) like the first line, got "
                                  f"{len(parts)}", str(path), no)
            qid, did, s_txt = parts
            rank = 0
        else:
            if len(parts) != 6:
                raise FormatError(f"{where}: expected 6 fields (qid Q0 docid rank score tag) "
                                  f"like the first line, got {len(parts)}", str(path), no)
            qid, _, did, r_txt, s_txt, _ = parts
            try:
                rank = int(r_txt)
            except ValueError:
                raise FormatError(f"{where}: rank {r_txt!r} is not an integer", str(path),
                                  no) from None
        if not qid or not did:
            raise FormatError(f"{where}: empty query or document id", str(path), no)
        try:
            score = float(s_txt)
        except ValueError:
            raise FormatError(f"{where}: score {s_txt!r} is not a number", str(path),
                              no) from None
        if not math.isfinite(score):
            raise FormatError(f"{where}: score {s_txt!r} is not finite", str(path), no)
        qi = qindex.get(qid)
        if qi is None:
            if fixed_queries:
                if skip_unknown:
                    skipped += 1
                    continue
                raise _unknown(f"{where}: query id {qid!r} is not in query_ids (pass "
                               f"skip_unknown=True to skip such lines)", path, no, "query", qid)
            qi = qindex[qid] = len(qlist)
            qlist.append(qid)
        di = dindex.get(did)
        if di is None:
            if skip_unknown:
                skipped += 1
                continue
            raise _unknown(f"{where}: document id {did!r} is not in doc_ids (pass "
                           f"skip_unknown=True to skip such lines)", path, no, "document", did)
        if rank_like and fmt == "tsv":
            c = seen_per_q.get(qi, 0) + 1
            seen_per_q[qi] = c
            if not (score == c and s_txt.strip().lstrip("+").isdigit()):
                rank_like = False
        q_arr.append(qi)
        d_arr.append(di)
        r_arr.append(rank)
        l_arr.append(no)
        s_arr.append(score)

    n_lines = len(q_arr)
    if fmt == "tsv" and rank_like and n_lines:
        raise FormatError(f"{path}: the third field counts 1, 2, 3, ... within every query: this "
                          f"looks like MS MARCO's qid<TAB>pid<TAB>rank, not scores (higher = "
                          f"better); convert ranks to scores, or pass format='tsv' if they "
                          f"really are scores", str(path))
    n_q = len(qlist)
    q = np.frombuffer(q_arr, dtype=np.int64) if n_lines else np.zeros(0, np.int64)
    d = np.frombuffer(d_arr, dtype=np.int64) if n_lines else np.zeros(0, np.int64)
    r = np.frombuffer(r_arr, dtype=np.int64) if n_lines else np.zeros(0, np.int64)
    ln = np.frombuffer(l_arr, dtype=np.int64) if n_lines else np.zeros(0, np.int64)
    s = np.frombuffer(s_arr, dtype=np.float64) if n_lines else np.zeros(0, np.float64)

    if n_lines > 1:  # a (qid, docid) pair twice
        o = np.lexsort((ln, d, q))
        same = (q[o][1:] == q[o][:-1]) & (d[o][1:] == d[o][:-1])
        if same.any():
            pos = np.flatnonzero(same)
            later = ln[o][pos + 1]
            j = pos[int(np.argmin(later))]
            first, second = int(ln[o][j]), int(ln[o][j + 1])
            raise FormatError(f"{path}:{second}: query {qlist[q[o][j]]!r} and document "
                              f"{doc_ids[int(d[o][j])]!r} repeat line {first}; a run lists "
                              f"each (query, document) pair once", str(path), second)

    counts = np.bincount(q, minlength=n_q).astype(np.int64) if n_q else np.zeros(0, np.int64)
    width = k if k is not None else (int(counts.max()) if n_q and n_lines else 0)
    ids = np.full((n_q, width), -1, dtype=np.int64)
    scores = np.full((n_q, width), -np.inf, dtype=np.float32)
    if n_lines and width:
        # rows by score descending, ties by rank, then by line order
        o = np.lexsort((ln, r, -s, q))
        qs = q[o]
        starts = np.zeros(n_q + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        col = np.arange(n_lines, dtype=np.int64) - starts[qs]
        keep = col < width
        ids[qs[keep], col[keep]] = d[o][keep]
        scores[qs[keep], col[keep]] = s[o][keep].astype(np.float32)
    return Run(ids, scores, qlist, counts, fmt, skipped)


def _check_text_id(x, what, fmt):
    if not isinstance(x, str) or not x:
        raise ValueError(f"{what} must be a non-empty string, got {x!r}")
    if fmt == "trec":
        if any(c.isspace() for c in x):
            raise ValueError(f"{what} = {x!r} holds white space, which a TREC run cannot "
                             f"represent (write format='tsv')")
    elif any(c in x for c in "\t\r\n"):
        raise ValueError(f"{what} = {x!r} holds a tab or line break, which a TSV run cannot "
                         f"represent")


def write_run(path, query_ids, doc_ids, ids, scores, *, format: str = "trec",
              tag: str = "simans-fast") -> int:
    """Write candidate arrays as a run file, atomically; return the number of lines.

    Each row's valid entries (id ``>= 0``) are written best first (sorted by score descending,
    ties in column order), with TREC ranks 1, 2, 3, ...; ``-1`` entries are padding and are
    left out. Scores are written as the shortest text that reads back to the same float32.

    Parameters
    ----------
    path : str
    query_ids : sequence of str, one per row
    doc_ids : sequence of str; ``ids`` holds positions in it
    ids : int array (n_q, k), ``-1`` padding
    scores : float array (n_q, k), finite where ``ids >= 0``
    format : {"trec", "tsv"}
    tag : str
        The TREC run tag (no white space).

    Raises
    ------
    ValueError
        Shapes disagree, an id out of range or repeated in a row, a non-finite score of a valid
        entry, an id or tag the format cannot represent. Nothing is written then.
    """
    if format not in RUN_FORMATS:
        raise ValueError(f"format must be 'trec' or 'tsv', got {format!r}")
    ids = np.asarray(ids)
    sc = np.asarray(scores)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 2-D integer array, got shape {ids.shape} dtype "
                         f"{ids.dtype}")
    if sc.shape != ids.shape or sc.dtype.kind != "f":
        raise ValueError(f"scores must be a float array of the shape of ids {ids.shape}, got "
                         f"{sc.shape} {sc.dtype}")
    query_ids = list(query_ids)
    doc_ids = list(doc_ids)
    if len(query_ids) != ids.shape[0]:
        raise ValueError(f"query_ids has {len(query_ids)} ids but ids has {ids.shape[0]} rows")
    if format == "trec":
        _check_text_id(tag, "tag", "trec")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= len(doc_ids):
            raise ValueError(f"ids must be -1 or positions 0..{len(doc_ids) - 1} in doc_ids, "
                             f"got {lo if lo < -1 else hi}")
    checked_docs = set()
    n = 0
    with atomic_text_writer(path) as f:
        for row in range(ids.shape[0]):
            qid = query_ids[row]
            _check_text_id(qid, f"query_ids[{row}]", format)
            rid = ids[row]
            valid = np.flatnonzero(rid >= 0)
            if valid.size == 0:
                continue
            rs = sc[row, valid].astype(np.float32)
            if not np.isfinite(rs).all():
                c = int(valid[np.flatnonzero(~np.isfinite(rs))[0]])
                raise ValueError(f"scores[{row}, {c}] is {sc[row, c]}; a valid entry needs a "
                                 f"finite score")
            if np.unique(rid[valid]).size != valid.size:
                raise ValueError(f"ids row {row} (query {qid!r}) repeats a document")
            order = valid[np.argsort(-rs.astype(np.float64), kind="stable")]
            for rank, c in enumerate(order.tolist(), 1):
                j = int(rid[c])
                did = doc_ids[j]
                if j not in checked_docs:
                    _check_text_id(did, f"doc_ids[{j}]", format)
                    checked_docs.add(j)
                s = str(np.float32(sc[row, c]))
                if format == "trec":
                    f.write(f"{qid} Q0 {did} {rank} {s} {tag}\n")
                else:
                    f.write(f"{qid}\t{did}\t{s}\n")
                n += 1
    return n
