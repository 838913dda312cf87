"""Shared pieces of the negatives writers and readers (one epoch of negatives per file)."""

from __future__ import annotations

import json

import numpy as np

from . import FormatError

#: what the negatives readers say a file that is none of theirs is not
_KNOWN = ("tevatron JSONL, sentence-transformers Parquet/JSONL, TREC run, SimXNS TSV")


def score_str(x) -> str:
    """A float32 score as the shortest text that reads back to the same float32."""
    return str(np.float32(x))


def clean_tsv(s: str) -> str:
    """``s`` with tabs and line breaks replaced by spaces (one TSV field)."""
    return s.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def rows(neg, keep, progress=False, desc="writing"):
    """``(row, positive rows, positive scores, negative rows, negative scores, negative ranks)``
    of every kept query row of an :class:`~simans_fast.store.negatives.EpochNegatives`."""
    from .._progress import progress_bar

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


def not_ours(path, lineno, what) -> FormatError:
    """The error for a file that is not a negatives file of a known layout."""
    loc = f" line {lineno}:" if lineno else ""
    return FormatError(f"{path}:{loc} {what}; not a negatives file this tool writes ({_KNOWN})",
                       path, lineno or None)


def json_line(path, lineno, line):
    """Parse one JSONL line of a negatives file (a :class:`FormatError` if it is not JSON)."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise not_ours(path, lineno, "not a JSON object") from None
