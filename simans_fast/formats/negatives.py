"""Negatives files of one epoch: one writer and one reader for every negatives format.

``write_negatives`` and ``read_negatives`` dispatch through the registry of
:mod:`simans_fast.formats` to the format's module, which holds its writer and reader side by
side (``write_epoch`` / ``read_epoch``):

========================  ==============================================  =====================
format                    file                                            module
========================  ==============================================  =====================
``tevatron``              Tevatron 2.x training JSONL ``{"query_id",      ``tevatron``
                          "query_text", "positive_document_ids",
                          "negative_document_ids"}`` + corpus JSONL
                          ``{"docid", "title", "text"}`` (default name
                          ``X.corpus.jsonl`` beside ``X.jsonl``)
``tevatron-legacy``       ``{"query_id", "query", "positive_passages",    ``tevatron``
                          "negative_passages"}``
``sentence-transformers`` ``anchor, positive, negative_1..n`` (Parquet    ``sentence_transformers``
                          for ``.parquet``, else JSONL)
``trec``                  run file ``qid Q0 docid rank score tag``        ``trec``
``simxns``                TSV ``qid \\t query \\t "pid score,..." \\t       ``simxns``
                          "pid score,..."``
========================  ==============================================  =====================

Rows of the training formats (``tevatron``, ``tevatron-legacy``, ``sentence-transformers``): a
query without a positive or without any negative cannot form a training example and is dropped
(the writers return and warn the counts). A sentence-transformers row needs exactly ``n``
negatives: a row with fewer is filled by cycling its own negatives in draw order
(``on_short="repeat"``, the default, also :func:`simans_fast.torch.to_sentence_transformers`'
default), or dropped (``"drop"``: the rule of sentence-transformers' own
``mine_hard_negatives`` n-tuple output), or refused (``"raise"``). Tevatron rows keep the
negatives drawn (Tevatron samples with replacement when a group is short). ``trec`` and
``simxns`` list every query as drawn.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .._validate import InputError, ParameterError, ParameterTypeError, renamed_kwargs
from ..store.ids import check_file, iter_lines
from ..store.negatives import EpochNegatives
from . import get_format
from ._rows import json_line, not_ours
from .sentence_transformers import ST_ON_SHORT, st_fill_negatives
from .tevatron import tevatron_corpus_path

__all__ = [
    "NEGATIVES_FORMATS",
    "NEGATIVES_FORMAT_NAME",
    "TEXT_FORMATS",
    "ST_ON_SHORT",
    "EpochNegatives",
    "st_fill_negatives",
    "tevatron_corpus_path",
    "format_from_extension",
    "write_negatives",
    "read_negatives",
    "detect_format",
]

NEGATIVES_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers", "trec", "simxns")
NEGATIVES_FORMAT_NAME = "simans-fast-negatives"
#: formats a trainer reads texts from: they need texts (or ``ids_only=True``), and drop queries
#: without a positive or without any negative
TEXT_FORMATS = ("tevatron", "tevatron-legacy", "sentence-transformers")


def _check_format(format):
    if format not in NEGATIVES_FORMATS:
        raise ParameterError("format", f"format must be one of {list(NEGATIVES_FORMATS)}, got "
                                       f"{format!r}")


def format_from_extension(path: str) -> str | None:
    """Negatives format implied by a file name, or None."""
    low = os.fspath(path).lower()
    if low.endswith(".parquet"):
        return "sentence-transformers"
    if low.endswith((".trec", ".run")):
        return "trec"
    if low.endswith(".tsv"):
        return "simxns"
    if low.endswith(".jsonl"):
        return "tevatron"
    return None


def _plan_rows(neg: EpochNegatives, fmt: str, on_short: str):
    """Which rows a writer keeps, and the counts it reports."""
    n_q = len(neg.query_ids)
    n = neg.n
    has_pos = (neg.positive_rows >= 0).any(axis=1) if neg.positive_rows.shape[1] else \
        np.zeros(n_q, dtype=bool)
    n_neg = (neg.negative_rows >= 0).sum(axis=1)
    stats = {"format": fmt, "queries": n_q, "dropped_no_positive": 0, "dropped_no_negative": 0,
             "short": 0, "dropped_short": 0}
    if fmt not in TEXT_FORMATS:
        keep = np.ones(n_q, dtype=bool)
        stats["short"] = int(np.count_nonzero(n_neg < n))
    else:
        keep = has_pos & (n_neg > 0)
        stats["dropped_no_positive"] = int(np.count_nonzero(~has_pos))
        stats["dropped_no_negative"] = int(np.count_nonzero(has_pos & (n_neg == 0)))
        short = keep & (n_neg < n)
        stats["short"] = int(np.count_nonzero(short))
        if fmt == "sentence-transformers":
            if on_short == "raise" and short.any():
                i = int(np.flatnonzero(short)[0])
                raise ParameterError(
                    "on_short",
                    f"on_short='raise': {stats['short']} query row(s) have fewer than n={n} "
                    f"negatives (first: query {neg.query_ids[i]!r}, {int(n_neg[i])}); use "
                    "on_short='repeat' or 'drop'")
            if on_short == "drop":
                keep = keep & ~short
                stats["dropped_short"] = stats["short"]
                stats["short"] = 0
        if not keep.any():
            raise ParameterError(
                "neg",
                f"no query has both a positive and {'n' if on_short == 'drop' else 'a'} "
                f"negative, so a {fmt} file would be empty ({stats['dropped_no_positive']} "
                f"without a positive, {stats['dropped_no_negative']} without negatives"
                + (f", {stats['dropped_short']} short of n={n}" if stats["dropped_short"] else "")
                + ")")
    stats["rows"] = int(np.count_nonzero(keep))
    return keep, stats


def _check_text_entry(texts, key, name):
    try:
        v = texts[key]
    except (KeyError, IndexError, TypeError):
        raise ParameterError("neg", f"{name} has no text for id {key!r}") from None
    if not (isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
            and isinstance(v[1], str)):
        raise ParameterError("neg", f"{name}[{key!r}] must be a (title, text) pair of strings, "
                                    f"got {type(v).__name__}")


def _check_texts(neg: EpochNegatives, fmt: str, keep, ids_only: bool) -> bool:
    """Check the texts a writer will need (before anything is written); True if it uses texts."""
    needs_text = fmt in TEXT_FORMATS and not ids_only
    if fmt == "tevatron-legacy" and ids_only:
        raise ParameterError("ids_only", "format='tevatron-legacy' holds passages (texts); "
                                         "ids_only=True is not possible with it: use "
                                         "format='tevatron'")
    has_q = neg.query_texts is not None
    has_d = neg.doc_texts is not None
    if needs_text and not (has_q and has_d):
        why = {"tevatron": "Tevatron 2.x trains on query_text and reads documents from a corpus "
                           "file, it would train on empty queries",
               "tevatron-legacy": "its passages hold texts",
               "sentence-transformers": "the trainer encodes the columns as texts"}[fmt]
        raise ParameterError("neg", f"format={fmt!r} needs query and document texts "
                                    f"(neg.query_texts and neg.doc_texts): {why}; attach the "
                                    "texts, or pass ids_only=True to write ids in their place")
    uses_q = (needs_text or (fmt == "simxns" and has_q)) and not ids_only
    uses_d = needs_text
    kept = np.flatnonzero(keep)
    if uses_q:
        for i in kept:
            _check_text_entry(neg.query_texts, neg.query_ids[int(i)], "neg.query_texts")
    if uses_d:
        if fmt == "sentence-transformers":
            pos = neg.positive_rows[kept, :1].ravel()
        else:
            pos = neg.positive_rows[kept].ravel()
        d = np.unique(np.concatenate([pos, neg.negative_rows[kept].ravel()]))
        for r in d[d >= 0]:
            _check_text_entry(neg.doc_texts, neg.doc_ids[int(r)], "neg.doc_texts")
    return uses_q or uses_d


@renamed_kwargs(fmt="format")
def write_negatives(path, neg: EpochNegatives, format: str | None = None, *,
                    progress: bool = False, tag: str = "simans-fast", ids_only: bool = False,
                    on_short: str = "repeat", corpus_path: str | None = None) -> dict:
    """Write one epoch's negatives in ``format`` (see the module docstring), atomically.

    Everything is checked before the first byte is written (texts present for every id that
    will be written, rows left to write); a failure leaves neither the file nor a temporary.

    Parameters
    ----------
    path : str
        Output file.
    neg : EpochNegatives
    format : {"tevatron", "tevatron-legacy", "sentence-transformers", "trec", "simxns"}
        (``fmt=`` is the deprecated spelling.)
    progress : bool, default=False
        Progress bar on stderr.
    tag : str, default="simans-fast"
        Run tag of TREC run files.
    ids_only : bool, default=False
        ``tevatron`` and ``sentence-transformers`` normally need texts; ``True`` writes ids
        instead (and no Tevatron corpus).
    on_short : {"repeat", "drop", "raise"}, default="repeat"
        sentence-transformers rows with fewer than ``n`` negatives (see the module docstring).
    corpus_path : str, optional
        Where ``tevatron`` writes its corpus JSONL (default :func:`tevatron_corpus_path`).

    Returns
    -------
    dict
        ``rows`` written, ``queries``, ``dropped_no_positive``, ``dropped_no_negative``,
        ``short`` (rows written with fewer than ``n`` negatives; filled by cycling in the
        sentence-transformers format), ``dropped_short``, ``path``, and for ``tevatron`` with
        texts ``corpus_path`` and ``corpus_documents``. Dropped rows are also warned about.
    """
    fmt = format
    _check_format(fmt)
    path = os.fspath(path)
    if on_short not in ST_ON_SHORT:
        raise ParameterError("on_short", f"on_short must be one of {list(ST_ON_SHORT)}, got "
                                         f"{on_short!r}")
    if not isinstance(ids_only, (bool, np.bool_)):
        raise ParameterTypeError("ids_only", f"ids_only must be True or False, got "
                                             f"{ids_only!r}")
    if not isinstance(tag, str) or tag != tag.strip() or not tag or any(
            c.isspace() for c in tag):
        raise ParameterError("tag", f"tag must be a non-empty word without whitespace, got "
                                    f"{tag!r}")
    if fmt == "tevatron" and not ids_only:
        corpus_path = os.fspath(corpus_path) if corpus_path else tevatron_corpus_path(path)
        if os.path.abspath(corpus_path) == os.path.abspath(path):
            raise ParameterError("corpus_path", f"corpus_path {corpus_path!r} is the training "
                                                "file itself; name it differently")
    keep, stats = _plan_rows(neg, fmt, on_short)
    use_texts = _check_texts(neg, fmt, keep, bool(ids_only))
    extra = get_format(fmt).write_epoch(path, neg, keep, fmt=fmt, progress=progress,
                                        use_texts=use_texts, tag=tag, on_short=on_short,
                                        corpus_path=corpus_path)
    stats.update(extra)
    stats["path"] = path
    dropped = [f"{stats[k]} {what}" for k, what in (
        ("dropped_no_positive", "without a positive"),
        ("dropped_no_negative", "without any negative"),
        ("dropped_short", f"with fewer than n={neg.n} negatives (on_short='drop')")) if stats[k]]
    if dropped:
        warnings.warn(f"write_negatives: {path}: dropped query row(s): {', '.join(dropped)}",
                      stacklevel=2)
    return stats


def detect_format(path) -> str:
    """Tell which negatives format a file holds (by extension, then by content).

    Returns one of :data:`NEGATIVES_FORMATS`, or ``"tevatron-corpus"`` for the corpus file
    written beside a ``tevatron`` file.
    """
    path = os.fspath(path)
    check_file(path)
    if path.lower().endswith(".parquet"):
        return "sentence-transformers"
    first = ""
    lineno = 0
    for lineno, line in iter_lines(path):
        if line.strip():
            first = line
            break
    if not first:
        return format_from_extension(path) or "tevatron"
    if first.lstrip().startswith("{"):
        obj = json_line(path, lineno, first)
        if isinstance(obj, dict):
            if "anchor" in obj:
                return "sentence-transformers"
            if "positive_passages" in obj:
                return "tevatron-legacy"
            if "positive_document_ids" in obj:
                return "tevatron"
            if "docid" in obj and "text" in obj:
                return "tevatron-corpus"
        raise not_ours(path, lineno, "a JSON record of no known layout")
    if "\t" in first and len(first.split("\t")) == 4:
        return "simxns"
    if len(first.split()) == 6:
        return "trec"
    raise not_ours(path, lineno, "a line of no known layout")


@renamed_kwargs(fmt="format")
def read_negatives(path, format: str | None = None) -> list:
    """Read a negatives file back into one dict per query.

    Keys: ``query_id``, ``query`` (text or None), ``positives`` and ``negatives`` (document ids,
    or texts for a sentence-transformers file written with texts), ``positive_scores``,
    ``negative_scores``, ``negative_ranks`` (None where the format does not store them). For
    ``tevatron-legacy`` files ``positives``/``negatives`` are the passages' ``docid`` values and
    ``positive_passages``/``negative_passages`` hold the full objects. A file that is not one of
    these raises :class:`~simans_fast.formats.FormatError` (an ``InputError``) naming the line.
    ``format=None`` detects it (:func:`detect_format`); ``fmt=`` is the deprecated spelling.
    """
    path = os.fspath(path)
    fmt = format or detect_format(path)
    if fmt == "tevatron-corpus":
        raise InputError(f"{path}: is the corpus file of a tevatron negatives file (docid, "
                         "title, text), not negatives", path=path)
    _check_format(fmt)
    check_file(path)
    return get_format(fmt).read_epoch(path, fmt)
