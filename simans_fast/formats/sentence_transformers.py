"""sentence-transformers dataset columns: triplet, n-tuple, labeled-pair, labeled-list (+ scores).

The column layouts and row orders of sentence-transformers 6.x's ``util.mine_hard_negatives``
(re-implemented from its documented behaviour, not copied), built from mined negatives:

``triplet``
    ``anchor, positive, negative`` (+ ``scores = [pos, neg]``): one row per (query, positive,
    negative), queries in order, then each positive of the query, then its negatives best first;
    missing negatives are skipped.
``n-tuple``
    ``anchor, positive, negative_1 .. negative_n`` (+ ``scores = [pos, neg_1, .., neg_n]``): one
    row per (query, positive); rows with fewer than ``n`` negatives are dropped.
``labeled-pair``
    ``anchor, <positive column> (the document), label`` 1/0, or ``score`` instead of ``label``
    with ``output_scores``: per query its positives (label 1), then its negatives (label 0).
``labeled-list``
    ``anchor, <positive column> = [pos] + negatives, labels = [1, 0, ..]`` (or ``scores``): one
    row per (query, positive) with at least one negative.

The anchor and positive columns keep the names given (the input dataset's). Scores are the
float32 values widened to Python floats (datasets stores them as float64), as
sentence-transformers does.

Inputs are per *unique* query: ``queries[q]``; its positives ``positive_ids[indptr[q]:indptr[q+1]]``
(corpus rows, distinct) with their scores ``positive_scores`` aligned; ``negative_ids[q]`` (``-1``
where missing) and ``negative_scores[q]`` best first. ``datasets`` is imported only by
:func:`to_dataset`.

Negatives file of one epoch (format ``sentence-transformers``, :func:`write_epoch` /
:func:`read_epoch`): columns ``anchor, positive, negative_1..n`` (texts; ids with
``ids_only=True``); Parquet when the file name ends in ``.parquet``, else JSONL. A row needs
exactly ``n`` negatives: :func:`st_fill_negatives` is the one rule for a shorter row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OUTPUT_FORMATS", "STColumns", "build_columns", "to_dataset", "build_dataset",
           "ST_ON_SHORT", "st_fill_negatives", "write_epoch", "read_epoch"]

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
NEGATIVES_FORMATS = ("sentence-transformers",)
#: what a sentence-transformers row with fewer than n negatives becomes (see
#: :func:`st_fill_negatives`)
ST_ON_SHORT = ("repeat", "drop", "raise")


@dataclass(frozen=True)
class STColumns:
    """Columns of one output plus the figures its statistics table reports.

    Attributes
    ----------
    columns : dict
        Column name -> list (ready for ``datasets.Dataset.from_dict``), in output order.
    negative_scores : ndarray, float32
        Scores of the negatives the output holds, one per (query, positive, negative) slot
        used (``n-tuple``: only the rows kept).
    difference_scores : ndarray, float32
        Positive minus negative score for each of those slots.
    max_samples : int
        Rows the output would have if every query had ``n`` negatives (sentence-transformers'
        "maximum possible samples", used for its "Could not find enough negatives" line).
    """

    columns: dict
    negative_scores: np.ndarray
    difference_scores: np.ndarray
    max_samples: int

    @property
    def n_rows(self) -> int:
        """Number of output rows."""
        first = next(iter(self.columns.values()), [])
        return len(first)


def _check_inputs(queries, corpus, positive_indptr, positive_ids, positive_scores, negative_ids,
                  negative_scores):
    n_q = len(queries)
    indptr = np.asarray(positive_indptr, dtype=np.int64)
    pids = np.asarray(positive_ids, dtype=np.int64)
    pscores = np.asarray(positive_scores, dtype=np.float32)
    nids = np.asarray(negative_ids, dtype=np.int64)
    nscores = np.asarray(negative_scores, dtype=np.float32)
    if indptr.shape != (n_q + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"positive_indptr must be non-decreasing of length n_queries + 1 = "
                         f"{n_q + 1} starting at 0, got shape {indptr.shape}")
    if pids.shape != (int(indptr[-1]),) or pscores.shape != pids.shape:
        raise ValueError(f"positive_ids and positive_scores must both have length "
                         f"positive_indptr[-1] = {int(indptr[-1])}, got {pids.shape} and "
                         f"{pscores.shape}")
    if nids.ndim != 2 or nids.shape[0] != n_q or nscores.shape != nids.shape:
        raise ValueError(f"negative_ids and negative_scores must both have shape (n_queries={n_q}"
                         f", n), got {nids.shape} and {nscores.shape}")
    n_d = len(corpus)
    for arr, nm in ((pids, "positive_ids"), (nids, "negative_ids")):
        if arr.size and (arr.max() >= n_d or arr.min() < (0 if nm == "positive_ids" else -1)):
            raise ValueError(f"{nm} holds ids outside the corpus (0..{n_d - 1}"
                             f"{', or -1' if nm == 'negative_ids' else ''})")
    return indptr, pids, pscores, nids, nscores


def build_columns(output_format, *, anchor_column, positive_column, queries, corpus,
                  positive_indptr, positive_ids, positive_scores, negative_ids, negative_scores,
                  output_scores=False, n_input_rows=None) -> STColumns:
    """Columns of ``output_format`` (see the module docstring for the layouts).

    Parameters
    ----------
    output_format : {"triplet", "n-tuple", "labeled-pair", "labeled-list"}
    anchor_column, positive_column : str
        Names of the anchor and positive (document) columns.
    queries : sequence of str
        Unique query texts.
    corpus : sequence of str
        Document texts; ids index it.
    positive_indptr : int array (n_q + 1,)
        CSR offsets of each query's positives in ``positive_ids``.
    positive_ids : int array
        Corpus rows of the positives (distinct per query).
    positive_scores : float array
        Score of each (query, positive) pair, aligned with ``positive_ids``.
    negative_ids : int array (n_q, n)
        Corpus rows of the negatives, best first; ``-1`` where missing.
    negative_scores : float array (n_q, n)
        Their scores (ignored where ``negative_ids`` is ``-1``).
    output_scores : bool, default False
        Add (``triplet``, ``n-tuple``) or substitute (``labeled-*``) the scores.
    n_input_rows : int, optional
        Rows of the input dataset; ``labeled-pair``'s ``max_samples`` is
        ``n_q * n + n_input_rows`` (default: the number of (query, positive) pairs).
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {list(OUTPUT_FORMATS)}, "
                         f"got {output_format!r}")
    if not isinstance(anchor_column, str) or not isinstance(positive_column, str):
        raise ValueError("anchor_column and positive_column must be column names (str)")
    if anchor_column == positive_column:
        raise ValueError(f"anchor_column and positive_column must differ, both are "
                         f"{anchor_column!r}")
    indptr, pids, pscores, nids, nscores = _check_inputs(
        queries, corpus, positive_indptr, positive_ids, positive_scores, negative_ids,
        negative_scores)
    n_q, n = nids.shape
    n_pos = np.diff(indptr)
    q_of_pair = np.repeat(np.arange(n_q, dtype=np.int64), n_pos)       # (n_pairs,)
    n_pairs = q_of_pair.shape[0]
    valid = nids >= 0                                                  # (n_q, n)
    pair_valid = valid[q_of_pair]                                      # (n_pairs, n)
    pair_nids = nids[q_of_pair]
    pair_nscores = nscores[q_of_pair]
    reserved = {anchor_column, positive_column}
    extra = (["negative"] if output_format == "triplet" else
             [f"negative_{i}" for i in range(1, n + 1)] if output_format == "n-tuple" else
             ["score" if output_scores else "label"] if output_format == "labeled-pair" else
             ["scores" if output_scores else "labels"])
    if output_format in ("triplet", "n-tuple") and output_scores:
        extra.append("scores")
    clash = reserved.intersection(extra)
    if clash:
        raise ValueError(f"the anchor/positive column name {sorted(clash)[0]!r} clashes with an "
                         f"output column of {output_format!r}; rename the input column")

    cols: dict = {}
    if output_format == "triplet":
        counts = pair_valid.sum(axis=1)
        r_pair = np.repeat(np.arange(n_pairs, dtype=np.int64), counts)
        neg = pair_nids[pair_valid]
        negs = pair_nscores[pair_valid]
        cols[anchor_column] = [queries[i] for i in q_of_pair[r_pair].tolist()]
        cols[positive_column] = [corpus[i] for i in pids[r_pair].tolist()]
        cols["negative"] = [corpus[i] for i in neg.tolist()]
        if output_scores:
            cols["scores"] = np.stack([pscores[r_pair], negs], axis=1).tolist()
        diff = pscores[r_pair] - negs
        max_samples = n_pairs * n
    elif output_format == "n-tuple":
        keep = pair_valid.all(axis=1)
        rows = np.flatnonzero(keep)
        cols[anchor_column] = [queries[i] for i in q_of_pair[rows].tolist()]
        cols[positive_column] = [corpus[i] for i in pids[rows].tolist()]
        kept_ids = pair_nids[rows]
        for j in range(n):
            cols[f"negative_{j + 1}"] = [corpus[i] for i in kept_ids[:, j].tolist()]
        kept_scores = pair_nscores[rows]
        if output_scores:
            cols["scores"] = np.concatenate([pscores[rows, None], kept_scores], axis=1).tolist()
        negs = kept_scores.reshape(-1)
        diff = (pscores[rows, None] - kept_scores).reshape(-1)
        max_samples = n_pairs
    elif output_format == "labeled-pair":
        # per query: its positives, then its negatives
        qv = valid.sum(axis=1)
        neg_q = np.repeat(np.arange(n_q, dtype=np.int64), qv)
        q_all = np.concatenate([q_of_pair, neg_q])
        order = np.argsort(q_all, kind="stable")        # positives come first within a query
        docs = np.concatenate([pids, nids[valid]])[order]
        is_pos = np.concatenate([np.ones(n_pairs, bool), np.zeros(neg_q.shape[0], bool)])[order]
        cols[anchor_column] = [queries[i] for i in q_all[order].tolist()]
        cols[positive_column] = [corpus[i] for i in docs.tolist()]
        if output_scores:
            cols["score"] = np.concatenate([pscores, nscores[valid]])[order].tolist()
        else:
            cols["label"] = is_pos.astype(np.int64).tolist()
        negs = pair_nscores[pair_valid]
        diff = np.repeat(pscores, pair_valid.sum(axis=1)) - negs
        max_samples = n_q * n + (n_pairs if n_input_rows is None else int(n_input_rows))
    else:  # labeled-list
        counts = pair_valid.sum(axis=1)
        rows = np.flatnonzero(counts > 0)
        cols[anchor_column] = [queries[i] for i in q_of_pair[rows].tolist()]
        docs, vals = [], []
        for r in rows.tolist():
            m = pair_valid[r]
            docs.append([corpus[int(pids[r])]] + [corpus[i] for i in pair_nids[r][m].tolist()])
            if output_scores:
                vals.append([float(pscores[r])] + pair_nscores[r][m].tolist())
            else:
                vals.append([1] + [0] * int(counts[r]))
        cols[positive_column] = docs
        cols["scores" if output_scores else "labels"] = vals
        negs = pair_nscores[pair_valid]
        diff = np.repeat(pscores, counts) - negs
        max_samples = n_pairs
    return STColumns(cols, np.asarray(negs, np.float32), np.asarray(diff, np.float32),
                     int(max_samples))


def to_dataset(columns):
    """``datasets.Dataset.from_dict`` of the columns (an :class:`STColumns` or a dict)."""
    try:
        from datasets import Dataset
    except ImportError as exc:  # pragma: no cover - datasets is installed with the extra
        raise ImportError("the sentence-transformers format needs the `datasets` package: "
                          "pip install datasets") from exc
    if isinstance(columns, STColumns):
        columns = columns.columns
    return Dataset.from_dict(columns)


def build_dataset(output_format, **kwargs):
    """:func:`build_columns` then :func:`to_dataset`: a ``datasets.Dataset``."""
    return to_dataset(build_columns(output_format, **kwargs))


# ------------------------------------------------------------------ negatives file of one epoch
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


def _st_text(texts, key):
    title, text = texts[key]
    return f"{title} {text}" if title else text


def _st_columns(neg, keep, progress, use_texts, on_short):
    from ._rows import rows

    n = neg.n
    cols = {"anchor": [], "positive": []}
    for j in range(n):
        cols[f"negative_{j + 1}"] = []
    doc_ids = neg.doc_ids
    for i, pos, _, negs, _, _ in rows(neg, keep, progress):
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


def write_epoch(path, neg, keep, *, progress=False, use_texts=True, on_short="repeat",
                **_unused) -> dict:
    """Write the kept rows of an epoch as sentence-transformers columns (Parquet or JSONL)."""
    import json

    from .._validate import InputError
    from ..store.atomic import AtomicFile

    parquet = path.lower().endswith(".parquet")
    if parquet:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow), "
                             "or use a .jsonl file name", path=path) from None
    cols = _st_columns(neg, keep, progress, use_texts, on_short)
    names = list(cols)
    if parquet:
        table = pa.table({c: pa.array(cols[c], type=pa.string()) for c in names})
        with AtomicFile(path, "wb") as f:
            pq.write_table(table, f)
        return {}
    n_q = len(cols["anchor"])
    with AtomicFile(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(n_q):
            f.write(json.dumps({c: cols[c][i] for c in names}, ensure_ascii=False))
            f.write("\n")
    return {}


def read_epoch(path, fmt: str = "sentence-transformers") -> list:
    """Read a sentence-transformers negatives file (Parquet or JSONL) back, one dict per row."""
    from .._validate import InputError
    from ..store.ids import iter_lines
    from ._rows import json_line, not_ours

    if path.lower().endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)",
                             path=path) from None
        try:
            table_rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow.ArrowInvalid, OSError, ...
            raise not_ours(path, 0, f"not a readable Parquet file ({type(e).__name__})") \
                from None
        numbered = [(0, r) for r in table_rows]
    else:
        numbered = [(lineno, json_line(path, lineno, line))
                    for lineno, line in iter_lines(path) if line.strip()]
    out = []
    for lineno, r in numbered:
        if not isinstance(r, dict) or "anchor" not in r or "positive" not in r:
            raise not_ours(path, lineno, "a record without the anchor/positive columns")
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
