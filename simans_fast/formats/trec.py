"""TREC files: qrels (``qid 0 docid rel`` or TSV ``qid docid [rel]``) and negatives run files.

Negatives run file (format ``trec``): ``qid Q0 docid rank score tag`` with each query's
negatives, rank = the negative's 1-based rank among the query's candidates. (Candidate run
files of other retrievers, read as candidates, are :mod:`simans_fast.formats.runfile`.)
"""

from __future__ import annotations

import math
import os

import numpy as np

from .._validate import InputError
from ..store.ids import check_file, iter_lines
from ._rows import not_ours, rows, score_str

__all__ = ["read_qrels", "write_epoch", "read_epoch"]

NEGATIVES_FORMATS = ("trec",)


def read_qrels(path, query_index: dict, doc_index: dict, *, skip_missing: bool = False,
               parameter: str = "path", sources=("query_index", "doc_index"),
               skip_parameter: str = "skip_missing"):
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
    skip_missing : bool, default=False
        Drop judgements whose query or document id is not in the lists instead of failing.
    parameter : str, default="path"
        The Python parameter errors name (``.parameter`` of the exception).
    sources : (str, str), default=("query_index", "doc_index")
        How an unknown id's error names the query and the document id lists (where the
        caller's lists came from: a file, a parameter).
    skip_parameter : str, default="skip_missing"
        The caller's name of ``skip_missing`` (the unknown-id error suggests it).

    Returns
    -------
    indptr : ndarray of shape (n_queries + 1,), int64
    ids : ndarray, int64
        CSR of positive corpus rows per query row, in file order, repeats dropped.
    info : dict
        ``n_judgements`` (rel > 0 lines used), ``n_skipped`` (missing ids dropped),
        ``n_queries_with_positives``.
    """
    path = os.fspath(path)
    check_file(path, parameter)

    def err(msg, line=None):
        return InputError(f"{path}: {msg}", parameter=parameter, path=path, line=line)

    n_q = len(query_index)
    pairs_q = []
    pairs_d = []
    seen = set()
    missing_q = missing_d = 0
    first_missing = None
    n_rel = 0
    first = True
    for lineno, line in iter_lines(path, parameter):
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
            raise err(f"line {lineno}: expected 'qid 0 docid rel' (TREC) or "
                      f"'qid<TAB>docid[<TAB>rel]' (TSV), got {len(fields)} fields", lineno)
        try:
            relv = float(rel)
        except ValueError:
            if first:
                first = False
                continue  # header line
            raise err(f"line {lineno}: relevance {rel!r} is not a number", lineno) from None
        first = False
        if not math.isfinite(relv):
            raise err(f"line {lineno}: relevance {rel!r} is not a finite number", lineno)
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
        if (qrow, drow) in seen:  # a repeated judgement: the first one counts
            continue
        seen.add((qrow, drow))
        pairs_q.append(qrow)
        pairs_d.append(drow)
    if first_missing is not None and not skip_missing:
        lineno, mq, md = first_missing
        parts = []
        if missing_q:
            parts.append(f"{missing_q} judgement(s) name query ids not in {sources[0]}")
        if missing_d:
            parts.append(f"{missing_d} name document ids not in {sources[1]}")
        what = f"query id {mq!r}" if mq is not None else f"document id {md!r}"
        raise err(f"{' and '.join(parts)} (first: {what}, line {lineno}); use the id lists the "
                  f"embeddings were made from, or pass {skip_parameter}=True to drop them",
                  lineno)
    if not pairs_q:
        raise err("no judgement with rel > 0 matches the id lists; check the file and the id "
                  "lists")
    q = np.asarray(pairs_q, dtype=np.int64)
    d = np.asarray(pairs_d, dtype=np.int64)
    if int(q.min()) < 0 or int(q.max()) >= n_q or int(d.min()) < 0 or \
            int(d.max()) >= len(doc_index):
        raise ValueError("query_index and doc_index must map ids to rows 0..len-1")
    order = np.argsort(q, kind="stable")
    d = d[order]
    counts = np.bincount(q, minlength=n_q).astype(np.int64)
    indptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    info = {
        "n_judgements": n_rel,
        "n_skipped": missing_q + missing_d if skip_missing else 0,
        "n_queries_with_positives": int(np.count_nonzero(counts)),
    }
    return indptr, d, info


# ------------------------------------------------------------------------- negatives run file
def write_epoch(path, neg, keep, *, progress=False, tag="simans-fast", **_unused) -> dict:
    """Write the kept rows of an epoch as a TREC run file (see the module docstring)."""
    from ..store.atomic import AtomicFile

    doc_ids = neg.doc_ids
    with AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, _, _, negs, neg_s, neg_r in rows(neg, keep, progress):
            qid = neg.query_ids[i]
            order = sorted(range(len(negs)), key=lambda j: neg_r[j])
            for j in order:
                f.write(f"{qid} Q0 {doc_ids[negs[j]]} {neg_r[j]} {score_str(neg_s[j])} {tag}\n")
    return {}


def read_epoch(path, fmt: str = "trec") -> list:
    """Read a negatives run file back (one dict per query, see
    :func:`simans_fast.formats.negatives.read_negatives`)."""
    by_q = {}
    out = []
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        try:
            qid, _, did, rank, score, _tag = fields
            rank, score = int(rank), float(score)
        except ValueError:
            raise not_ours(path, lineno, "expected 'qid Q0 docid rank score tag'") from None
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
