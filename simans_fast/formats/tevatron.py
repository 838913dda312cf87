"""Tevatron training files of one epoch's negatives.

``tevatron``         Tevatron 2.x training JSONL ``{"query_id", "query_text",
                     "positive_document_ids", "negative_document_ids"}`` plus its corpus JSONL
                     ``{"docid", "title", "text"}`` (every document the training file names;
                     default name :func:`tevatron_corpus_path`). ``ids_only=True`` writes the
                     records without ``query_text`` and no corpus.
``tevatron-legacy``  Tevatron's older layout ``{"query_id", "query", "positive_passages",
                     "negative_passages"}``, passages ``{"docid", "title", "text"}``.
"""

from __future__ import annotations

import json

import numpy as np

from ..store.atomic import AtomicFile
from ..store.ids import iter_lines
from ._rows import json_line, not_ours, rows

__all__ = ["tevatron_corpus_path", "write_epoch", "read_epoch", "count_corpus_records"]

NEGATIVES_FORMATS = ("tevatron", "tevatron-legacy")


def tevatron_corpus_path(path: str) -> str:
    """Default name of the corpus JSONL written beside a ``tevatron`` training file."""
    base = path[:-6] if path.lower().endswith(".jsonl") else path
    return base + ".corpus.jsonl"


def _passage(neg, doc_id):
    title, text = neg.doc_texts[doc_id]
    return {"docid": doc_id, "title": title, "text": text}


def _write_tevatron(path, neg, keep, progress, use_texts, corpus_path):
    doc_ids = neg.doc_ids
    stats = {}
    if use_texts:
        kept = np.flatnonzero(keep)
        d = np.unique(np.concatenate([neg.positive_rows[kept].ravel(),
                                      neg.negative_rows[kept].ravel()]))
        d = d[d >= 0]
        with AtomicFile(corpus_path, "w", encoding="utf-8", newline="\n") as f:
            for r in d:
                f.write(json.dumps(_passage(neg, doc_ids[int(r)]), ensure_ascii=False))
                f.write("\n")
        stats = {"corpus_path": corpus_path, "corpus_documents": int(d.size)}
    with AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, _, negs, _, _ in rows(neg, keep, progress):
            qid = neg.query_ids[i]
            rec = {"query_id": qid}
            if use_texts:
                rec["query_text"] = neg.query_texts[qid][1]
            rec["positive_document_ids"] = [doc_ids[r] for r in pos]
            rec["negative_document_ids"] = [doc_ids[r] for r in negs]
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")
    return stats


def _write_tevatron_legacy(path, neg, keep, progress):
    doc_ids = neg.doc_ids
    with AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, _, negs, _, _ in rows(neg, keep, progress):
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


def write_epoch(path, neg, keep, *, fmt="tevatron", progress=False, use_texts=True,
                corpus_path=None, **_unused) -> dict:
    """Write the kept rows of an epoch in ``fmt`` (``tevatron`` or ``tevatron-legacy``)."""
    if fmt == "tevatron-legacy":
        return _write_tevatron_legacy(path, neg, keep, progress)
    return _write_tevatron(path, neg, keep, progress, use_texts,
                           corpus_path or tevatron_corpus_path(path))


def _str_list(r, key):
    v = r[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError(key)
    return list(v)


def read_epoch(path, fmt: str = "tevatron") -> list:
    """Read a Tevatron training file (either layout) back, one dict per query."""
    out = []
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        r = json_line(path, lineno, line)
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
            raise not_ours(path, lineno, f"a Tevatron record with a missing or malformed "
                                         f"field ({e.args[0] if e.args else e})") from None
        out.append(rec)
    return out


def count_corpus_records(path) -> int:
    """Documents of a Tevatron corpus JSONL file (docid, title, text)."""
    n = 0
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        obj = json_line(path, lineno, line)
        if not isinstance(obj, dict) or not isinstance(obj.get("docid"), str):
            raise not_ours(path, lineno, "a corpus record without a docid")
        n += 1
    return n
