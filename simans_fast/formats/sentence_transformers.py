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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OUTPUT_FORMATS", "STColumns", "build_columns", "to_dataset", "build_dataset"]

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


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
