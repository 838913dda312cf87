"""SimXNS TSV of one epoch's negatives: ``qid \\t query \\t "pid score,..." \\t "pid score,..."``
(positives, then negatives), the layout read by the SimANS code."""

from __future__ import annotations

from ..store.atomic import AtomicFile
from ..store.ids import iter_lines
from ._rows import clean_tsv, not_ours, rows, score_str

__all__ = ["write_epoch", "read_epoch"]

NEGATIVES_FORMATS = ("simxns",)


def write_epoch(path, neg, keep, *, progress=False, use_texts=False, **_unused) -> dict:
    """Write the kept rows of an epoch as SimXNS TSV (query text when ``use_texts``)."""
    doc_ids = neg.doc_ids
    with AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i, pos, pos_s, negs, neg_s, _ in rows(neg, keep, progress):
            qid = neg.query_ids[i]
            q = clean_tsv(neg.query_texts[qid][1]) if use_texts else ""
            p = ",".join(f"{doc_ids[r]} {score_str(s)}" for r, s in zip(pos, pos_s))
            ng = ",".join(f"{doc_ids[r]} {score_str(s)}" for r, s in zip(negs, neg_s))
            f.write(f"{qid}\t{q}\t{p}\t{ng}\n")
    return {}


def _parse_pairs(s):
    if not s:
        return [], []
    ids, scores = [], []
    for part in s.split(","):
        i, sc = part.split(" ")
        ids.append(i)
        scores.append(float(sc))
    return ids, scores


def read_epoch(path, fmt: str = "simxns") -> list:
    """Read a SimXNS TSV back, one dict per query."""
    out = []
    for lineno, line in iter_lines(path):
        if not line:
            continue
        try:
            qid, q, p, ng = line.split("\t")
            pid, ps = _parse_pairs(p)
            nid, ns = _parse_pairs(ng)
        except ValueError:
            raise not_ours(path, lineno, "expected 'qid<TAB>query<TAB>pid score,...<TAB>pid "
                                         "score,...'") from None
        out.append({"query_id": qid, "query": q, "positives": pid, "positive_scores": ps,
                    "negatives": nid, "negative_scores": ns, "negative_ranks": None})
    return out
