"""Floor 2: :class:`EpochNegatives`, one epoch's negatives as plain arrays (a data holder).

It lives here, below the pipeline that fills it and the format writers that write it
(:func:`simans_fast.formats.negatives.write_negatives`), so both can import it;
``simans_fast.pipeline`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EpochNegatives"]


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
