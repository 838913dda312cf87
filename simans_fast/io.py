"""Deprecated: the old home of simans_fast's readers and writers. Import from the new modules.

Everything that was here has moved (``docs/formats.md`` and ``/work``'s moved-names table list
where):

* atomic writes -> :mod:`simans_fast.store.atomic`
* the candidates directory -> :mod:`simans_fast.store.candidates`
* ``EpochNegatives`` -> :mod:`simans_fast.store.negatives` (re-exported by
  :mod:`simans_fast.pipeline`)
* embeddings and id lists -> :mod:`simans_fast.formats.embeddings`; qrels ->
  :mod:`simans_fast.formats.trec`; texts -> :mod:`simans_fast.formats.texts`
* negatives files -> :mod:`simans_fast.formats.negatives` (one module per format beside it)

This module re-exports every old name for one release and warns ``DeprecationWarning`` once,
when it is first imported. The readers here still take the old ``arg=`` keyword (the name the
messages put before the file); the new readers do not: their messages start with the file and
their errors carry the Python parameter in ``.parameter``. Nothing inside simans_fast imports
this module.
"""

from __future__ import annotations

import functools as _functools
import warnings as _warnings

from ._validate import InputError
from .formats import embeddings as _emb
from .formats import negatives as _neg
from .formats import simxns as _simxns
from .formats import tevatron as _tev
from .formats import texts as _texts
from .formats import trec as _trec
from .formats import sentence_transformers as _st
from .formats._rows import clean_tsv as _clean_tsv
from .formats._rows import json_line as _json_line
from .formats._rows import not_ours as _not_ours
from .formats._rows import rows as _rows
from .formats._rows import score_str as _score_str
from .formats.negatives import (NEGATIVES_FORMAT_NAME, NEGATIVES_FORMATS, ST_ON_SHORT,
                                TEXT_FORMATS, detect_format, format_from_extension,
                                st_fill_negatives, tevatron_corpus_path)
from .formats.negatives import _check_text_entry, _check_texts, _plan_rows  # noqa: F401
from .formats.sentence_transformers import _st_columns, _st_text  # noqa: F401
from .formats.simxns import _parse_pairs  # noqa: F401
from .formats.tevatron import _passage, _str_list  # noqa: F401
from .formats.tevatron import _write_tevatron, _write_tevatron_legacy  # noqa: F401
from .formats.texts import _ID_KEYS, _TEXT_KEYS, _TSV_HEADER_IDS, _is_jsonl  # noqa: F401
from .store import atomic as _atomic
from .store import candidates as _cand
from .store.atomic import (_FILE_MODE, _commit, _umask,  # noqa: F401
                           atomic_save_npy, atomic_write_bytes, atomic_write_text,
                           file_sha256, fsync_dir, remove_stale_temp_files)
from .store.atomic import AtomicFile as _AtomicFile  # noqa: F401
from .store.atomic import json_dumps as _json_dumps  # noqa: F401
from .store.atomic import tmp_path as _tmp_path  # noqa: F401
from .store.candidates import (_ARRAY_DTYPES, _ARRAYS, _SHA256_RE,  # noqa: F401
                               CANDIDATES_FORMAT, CANDIDATES_VERSION, CandidatesFile,
                               array_fingerprint, ids_sha256, save_candidates,
                               write_candidates_dir_finish)
from .store.candidates import candidates_header as _candidates_header  # noqa: F401
from .store.ids import bad_id as _bad_id  # noqa: F401
from .store.negatives import EpochNegatives

_warnings.warn("simans_fast.io is deprecated: import from simans_fast.store (atomic writes, "
               "the candidates directory, EpochNegatives) and simans_fast.formats (readers, "
               "negatives files) instead", DeprecationWarning, stacklevel=2)

__all__ = [
    "InputError",
    "CANDIDATES_FORMAT",
    "CANDIDATES_VERSION",
    "NEGATIVES_FORMATS",
    "TEXT_FORMATS",
    "ST_ON_SHORT",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save_npy",
    "fsync_dir",
    "remove_stale_temp_files",
    "read_embeddings",
    "read_ids",
    "ids_sha256",
    "array_fingerprint",
    "file_sha256",
    "read_qrels",
    "read_texts",
    "text_coverage",
    "read_beir_texts",
    "CandidatesFile",
    "save_candidates",
    "load_candidates",
    "read_header",
    "EpochNegatives",
    "st_fill_negatives",
    "tevatron_corpus_path",
    "write_negatives",
    "read_negatives",
    "detect_format",
    "format_from_extension",
]


# ------------------------------------------------------------------ the old ``arg=`` keyword
def _with_arg(e: InputError, arg, replace=()) -> InputError:
    """``e`` with its message as the old readers wrote it (``"<arg> <file>: ..."``)."""
    msg = str(e)
    for new, old in replace:
        if old is not None and old != new:
            msg = msg.replace(new, old)
    if arg:
        msg = f"{arg} {msg}"
    return InputError(msg, parameter=e.parameter, path=e.path, line=e.line)


def _old_arg(default="path"):
    """Wrap a new reader so it takes the old ``arg=`` keyword and words its messages so."""

    def deco(fn):
        @_functools.wraps(fn)
        def wrapper(*args, arg=default, **kwargs):
            try:
                return fn(*args, **kwargs)
            except InputError as e:
                raise _with_arg(e, arg) from None
        return wrapper

    return deco


read_embeddings = _old_arg()(_emb.read_embeddings)
read_ids = _old_arg()(_emb.read_ids)
read_texts = _old_arg()(_texts.read_texts)
text_coverage = _old_arg()(_texts.text_coverage)
read_header = _old_arg()(_cand.read_header)
load_candidates = _old_arg()(_cand.load_candidates)


def read_beir_texts(directory, *, want_queries=None, want_docs=None, arg: str = "directory"):
    """Deprecated spelling of :func:`simans_fast.formats.texts.read_beir_texts`."""
    try:
        return _texts.read_beir_texts(directory, want_queries=want_queries, want_docs=want_docs)
    except InputError as e:
        raise _with_arg(e, arg) from None


def read_qrels(path, query_index, doc_index, *, arg: str = "path",
               query_arg: str = "query_index", doc_arg: str = "doc_index",
               skip_missing: bool = False, skip_arg: str = "skip_missing=True"):
    """Deprecated spelling of :func:`simans_fast.formats.trec.read_qrels` (``*_arg`` name the
    file, the id lists and the skip option in messages)."""
    try:
        return _trec.read_qrels(path, query_index, doc_index, skip_missing=skip_missing)
    except InputError as e:
        raise _with_arg(e, arg, (("not in query_index", f"not in {query_arg}"),
                                 ("not in doc_index", f"not in {doc_arg}"),
                                 ("pass skip_missing=True", f"pass {skip_arg}"))) from None


def _check_file(path, arg):
    try:
        from .store.ids import check_file

        check_file(path)
    except InputError as e:
        raise _with_arg(e, arg) from None


def _iter_lines(path, arg):
    from .store.ids import iter_lines

    try:
        yield from iter_lines(path)
    except InputError as e:
        raise _with_arg(e, arg) from None


def _iter_texts(path, arg):
    try:
        yield from _texts.iter_texts(path)
    except InputError as e:
        raise _with_arg(e, arg) from None


def _load_npy(fp, arg, mmap, fix):
    from .store.arrays import load_npy

    try:
        return load_npy(fp, mmap=mmap, fix=fix)
    except InputError as e:
        raise _with_arg(e, arg) from None


def _check_header(header, hp, arg):
    try:
        return _cand._check_header(header, hp, "path")
    except InputError as e:
        raise _with_arg(e, arg) from None


def _check_arrays(arrays, n_docs=None):
    return _cand._check_arrays(arrays)


# ------------------------------------------------------------------ negatives files
def write_negatives(path, neg, fmt=None, **kwargs):
    """Deprecated spelling of :func:`simans_fast.formats.negatives.write_negatives`."""
    if "format" in kwargs and fmt is None:
        fmt = kwargs.pop("format")
    return _neg.write_negatives(path, neg, fmt, **kwargs)


def read_negatives(path, fmt=None):
    """Deprecated spelling of :func:`simans_fast.formats.negatives.read_negatives`."""
    return _neg.read_negatives(path, fmt)


def _write_st(path, neg, keep, progress, use_texts, on_short):
    return _st.write_epoch(path, neg, keep, progress=progress, use_texts=use_texts,
                           on_short=on_short)


def _write_trec(path, neg, keep, progress, tag="simans-fast"):
    return _trec.write_epoch(path, neg, keep, progress=progress, tag=tag)


def _write_simxns(path, neg, keep, progress, use_texts):
    return _simxns.write_epoch(path, neg, keep, progress=progress, use_texts=use_texts)


def _read_tevatron(path):
    return _tev.read_epoch(path)


def _read_st(path):
    return _st.read_epoch(path)


def _read_trec(path):
    return _trec.read_epoch(path)


def _read_simxns(path):
    return _simxns.read_epoch(path)


del _atomic
