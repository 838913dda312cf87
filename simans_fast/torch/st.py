"""sentence-transformers integration: one epoch of SimANS negatives as a ``datasets.Dataset``."""

from __future__ import annotations

import warnings

import numpy as np

from ..formats.sentence_transformers import ST_ON_SHORT, st_fill_negatives
from .._validate import check_epoch as _check_epoch
from .data import check_positive_ids as _check_positive_ids, check_sampler as _check_sampler, \
    positive_ids_for as _positive_ids_for
from .sampling import resolve_parallel as _parallel

__all__ = ["to_sentence_transformers"]

_FORMATS = ("n-tuple", "triplet")
_ON_SHORT = ST_ON_SHORT


def _text(texts, i, name):
    try:
        return texts[int(i)]
    except (IndexError, KeyError):
        raise ValueError(f"{name} has no entry for id {int(i)}") from None


def to_sentence_transformers(sampler, query_texts, doc_texts, *, positive_ids, epoch: int = 0,
                             format: str = "n-tuple", rows=None, on_short: str = "repeat"):
    """The negatives of one epoch in the column layout of sentence-transformers' losses.

    ``format="n-tuple"`` gives columns ``anchor, positive, negative_1, ..., negative_n``, the
    input of ``MultipleNegativesRankingLoss`` (and ``CachedMultipleNegativesRankingLoss``) with
    hard negatives; ``format="triplet"`` gives ``anchor, positive, negative`` with one row per
    negative (``n`` rows per query, e.g. for ``TripletLoss``). The columns hold texts; no other
    column is added, since the trainer passes every column to the loss.

    Parameters
    ----------
    sampler : simans_fast.SimANSSampler
    query_texts : sequence of str
        Text of each query row (``query_texts[i]``).
    doc_texts : sequence or mapping of str
        Text of each document id (``doc_texts[id]``).
    positive_ids : int array (n_queries,) or (n_queries, m), -1 padded
        Document ids of the positives, columns aligned with the sampler's positive_scores; with
        several positives the one the sampler chose for this epoch is used.
    epoch : int, default 0
        Call again with the next epoch (or after a refresh) for fresh negatives.
    format : {"n-tuple", "triplet"}
    rows : int array, optional
        Query rows to include (default: all), e.g. this rank's shard.
    on_short : {"repeat", "drop", "raise"}, default "repeat"
        ``n-tuple`` rows with fewer than ``n`` negatives (fewer valid candidates than ``n``):
        fill them by cycling the row's own negatives in draw order (``[d1, d2, d1]`` for
        ``n = 3``; what the paper's code does), drop the row (the rule of sentence-transformers'
        ``mine_hard_negatives``), or raise. Rows with no negative or no positive at all are
        dropped with a warning unless ``"raise"``. This is the package's one policy: the
        sentence-transformers files of ``simans_fast.io.write_negatives`` / ``simans-fast
        --format sentence-transformers`` apply the same rule
        (:func:`simans_fast.io.st_fill_negatives`), so a file and this dataset hold the same
        rows.

    Returns
    -------
    datasets.Dataset
    """
    import datasets

    _check_sampler(sampler)
    epoch = _check_epoch(epoch)
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {list(_FORMATS)}, got {format!r}")
    if on_short not in _ON_SHORT:
        raise ValueError(f"on_short must be one of {list(_ON_SHORT)}, got {on_short!r}")
    n_q = int(sampler.n_queries)
    if positive_ids is None:
        raise ValueError("positive_ids is required: the sampler knows positive scores, not "
                         "which documents the positives are")
    pos_ids = _check_positive_ids(positive_ids, n_q)
    if len(query_texts) != n_q:
        raise ValueError(f"query_texts has {len(query_texts)} entries, the sampler {n_q} queries")
    from .. import core as _core

    rows = _core.check_rows(rows, n_q)
    neg = sampler.sample(rows=rows, epoch=epoch, parallel=_parallel(None, rows.size))
    pid = _positive_ids_for(pos_ids, sampler.positive_index(rows=rows, epoch=epoch), rows)
    n = neg.shape[1]
    counts = (neg >= 0).sum(axis=1)
    no_pos = pid < 0
    no_neg = counts == 0
    short = (counts < n) & ~no_neg
    if on_short == "raise":
        bad = no_pos | no_neg | short
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{int(bad.sum())} query row(s) lack a positive or have fewer than "
                             f"n={n} negatives (first: row {int(rows[i])}, {int(counts[i])} "
                             f"negatives); use on_short='repeat' or 'drop'")
    drop = no_pos | no_neg
    if on_short == "drop" and format == "n-tuple":
        drop = drop | short
    if (no_pos | no_neg).any():
        warnings.warn(f"to_sentence_transformers: dropped {int(no_pos.sum())} row(s) without a "
                      f"positive and {int((no_neg & ~no_pos).sum())} without any negative",
                      stacklevel=2)
    keep = np.flatnonzero(~drop)
    anchors = [query_texts[int(rows[i])] for i in keep]
    positives = [_text(doc_texts, pid[i], "doc_texts") for i in keep]
    if format == "triplet":
        a_col, p_col, n_col = [], [], []
        for j, i in enumerate(keep):
            for d in neg[i, : counts[i]]:
                a_col.append(anchors[j])
                p_col.append(positives[j])
                n_col.append(_text(doc_texts, d, "doc_texts"))
        return datasets.Dataset.from_dict({"anchor": a_col, "positive": p_col, "negative": n_col})
    cols = {"anchor": anchors, "positive": positives}
    for t in range(n):
        cols[f"negative_{t + 1}"] = []
    for i in keep:
        filled = st_fill_negatives(list(neg[i, : counts[i]]), n, "repeat")
        for t in range(n):
            cols[f"negative_{t + 1}"].append(_text(doc_texts, filled[t], "doc_texts"))
    return datasets.Dataset.from_dict(cols)
