"""PyLate's knowledge-distillation files (ColBERT training with teacher scores).

Three JSONL files, one object per line::

    train      {"query_id": ID, "document_ids": [ID, ...], "scores": [float, ...]}
    queries    {"query_id": ID, "text": str}
    documents  {"document_id": ID, "text": str}

What PyLate 1.x reads (``pylate/utils/processing.py``, ``KDProcessing``): each file through
``datasets``; it looks ``query_id`` up in the queries file and every element of ``document_ids``
in the documents file (an id it cannot find becomes the empty text, with only a log warning),
keeps the first ``n_ways`` ids and scores, and its collator stacks the ``scores`` of a batch
into one tensor, so every row needs the same number of documents.

Rules here, so the files never degrade silently on PyLate's side:

* ids are strings or integers (not booleans), of one kind per field across the three files
  (``1`` and ``"1"`` are different keys to PyLate's lookup);
* ``document_ids`` is a non-empty list without repeats; ``scores`` a list of finite numbers as
  long as it; all train rows have the same length;
* every ``query_id`` / ``document_id`` of the train file has a text (checked by
  :func:`write_distillation` and :func:`check_references`); texts are non-empty strings; an id
  appears once in its file.
"""

from __future__ import annotations

import numbers

from . import (FormatError, atomic_text_writer, finite_scores, iter_jsonl, json_line,
               type_name)

__all__ = [
    "check_train_record",
    "read_train",
    "read_queries",
    "read_documents",
    "write_train",
    "write_queries",
    "write_documents",
    "write_distillation",
    "check_references",
]


_tn = type_name


def _id_kind(value, what, where):
    """'str' or 'int' for a valid id, else a FormatError."""
    if isinstance(value, str):
        if not value:
            raise FormatError(f"{where}: {what} is an empty string")
        return "str"
    from .._validate import is_int

    if is_int(value):
        return "int"
    raise FormatError(f"{where}: {what} must be a string or an integer, got {_tn(value)}")


class _Kinds:
    """Remembers the kind of id of each field and refuses a mix."""

    def __init__(self, kinds=None):
        self.kinds = dict(kinds or {})
        self.first = {}

    def check(self, field, value, what, where):
        kind = _id_kind(value, what, where)
        seen = self.kinds.get(field)
        if seen is None:
            self.kinds[field] = kind
            self.first[field] = where
        elif seen != kind:
            raise FormatError(f"{where}: {what} is a {'string' if kind == 'str' else 'integer'} "
                              f"but earlier {field} values are "
                              f"{'strings' if seen == 'str' else 'integers'}; PyLate looks ids "
                              f"up by equality, so use one kind throughout")
        return value


def check_train_record(record, where="record", *, kinds=None) -> dict:
    """Validate one train record; return a new dict with ``scores`` as floats.

    Other keys are kept. ``kinds`` (internal) is a shared id-kind tracker.
    """
    kinds = kinds if kinds is not None else _Kinds()
    if not isinstance(record, dict):
        raise FormatError(f"{where}: a record must be a dict, got {_tn(record)}")
    for key in ("query_id", "document_ids", "scores"):
        if key not in record:
            raise FormatError(f"{where}: missing key {key!r} (PyLate's distillation rows are "
                              f"{{'query_id', 'document_ids', 'scores'}})")
    out = dict(record)
    kinds.check("query_id", record["query_id"], "'query_id'", where)
    dids = record["document_ids"]
    if hasattr(dids, "tolist") and not isinstance(dids, (list, tuple)):
        dids = dids.tolist()
    if not isinstance(dids, (list, tuple)):
        raise FormatError(f"{where}: 'document_ids' must be a list, got {_tn(dids)}")
    if not dids:
        raise FormatError(f"{where}: 'document_ids' is empty")
    seen = set()
    for i, d in enumerate(dids):
        kinds.check("document_id", d, f"document_ids[{i}]", where)
        if d in seen:
            raise FormatError(f"{where}: document_ids[{i}] = {d!r} appears twice in the row")
        seen.add(d)
    fs = finite_scores(record["scores"], "scores", len(dids), "document_ids", where,
                       per="document")
    out["document_ids"] = list(dids)
    out["scores"] = fs
    return out


def read_train(path, *, parameter: str = "path") -> list:
    """Train records (validated; all rows the same length). Errors name the file and line."""
    kinds = _Kinds()
    rows = []
    width = None
    for no, obj in iter_jsonl(path, parameter=parameter):
        where = f"{path}:{no}"
        try:
            rec = check_train_record(obj, where, kinds=kinds)
        except FormatError as e:
            e.path, e.line = str(path), no
            raise
        n = len(rec["document_ids"])
        if width is None:
            width = n
        elif n != width:
            raise FormatError(f"{where}: {n} documents but the first row has {width}; PyLate "
                              f"stacks a batch's scores, so every row needs the same length",
                              str(path), no)
        rows.append(rec)
    return rows


def _read_texts(path, id_key, parameter):
    kinds = _Kinds()
    out = {}
    for no, obj in iter_jsonl(path, parameter=parameter):
        where = f"{path}:{no}"
        for key in (id_key, "text"):
            if key not in obj:
                raise FormatError(f"{where}: missing key {key!r} (lines are "
                                  f"{{'{id_key}', 'text'}})", str(path), no)
        try:
            i = kinds.check(id_key, obj[id_key], repr(id_key), where)
        except FormatError as e:
            e.path, e.line = str(path), no
            raise
        t = obj["text"]
        if not isinstance(t, str):
            raise FormatError(f"{where}: 'text' must be a string, got {_tn(t)}", str(path), no)
        if not t.strip():
            raise FormatError(f"{where}: 'text' is an empty text", str(path), no)
        if i in out:
            raise FormatError(f"{where}: {id_key} {i!r} appears a second time", str(path), no)
        out[i] = t
    return out


def read_queries(path, *, parameter: str = "path") -> dict:
    """``{query_id: text}`` of a PyLate queries file."""
    return _read_texts(path, "query_id", parameter)


def read_documents(path, *, parameter: str = "path") -> dict:
    """``{document_id: text}`` of a PyLate documents file."""
    return _read_texts(path, "document_id", parameter)


def check_references(train, queries: dict, documents: dict, *, where="train") -> None:
    """Every train ``query_id`` / ``document_ids`` element has a text (else FormatError)."""
    for r, rec in enumerate(train):
        if rec["query_id"] not in queries:
            raise FormatError(f"{where}[{r}]: query_id {rec['query_id']!r} has no text in the "
                              f"queries (PyLate would fail to look it up)")
        for d in rec["document_ids"]:
            if d not in documents:
                raise FormatError(f"{where}[{r}]: document id {d!r} has no text in the documents "
                                  f"(PyLate would train on an empty text)")


def write_train(path, records) -> int:
    """Write train records atomically (validated, equal lengths); return the count."""
    kinds = _Kinds()
    width = None
    n = 0
    with atomic_text_writer(path) as f:
        for i, rec in enumerate(records):
            where = f"records[{i}]"
            rec = check_train_record(rec, where, kinds=kinds)
            w = len(rec["document_ids"])
            if width is None:
                width = w
            elif w != width:
                raise FormatError(f"{where}: {w} documents but records[0] has {width}; PyLate "
                                  f"needs every row the same length")
            f.write(json_line(rec))
            n += 1
    return n


def _write_texts(path, items, id_key):
    kinds = _Kinds()
    pairs = items.items() if isinstance(items, dict) else items
    seen = set()
    n = 0
    with atomic_text_writer(path) as f:
        for j, pair in enumerate(pairs):
            try:
                i, t = pair
            except (TypeError, ValueError):
                raise FormatError(f"items[{j}]: expected an ({id_key}, text) pair, got "
                                  f"{pair!r}") from None
            where = f"items[{j}]"
            kinds.check(id_key, i, id_key, where)
            if not isinstance(t, str) or not t.strip():
                raise FormatError(f"{where}: the text of {id_key} {i!r} must be a non-empty "
                                  f"string, got {t!r}")
            if i in seen:
                raise FormatError(f"{where}: {id_key} {i!r} given twice")
            seen.add(i)
            f.write(json_line({id_key: i, "text": t}))
            n += 1
    return n


def write_queries(path, items) -> int:
    """Write ``{query_id: text}`` (a dict or pairs) as a PyLate queries file, atomically."""
    return _write_texts(path, items, "query_id")


def write_documents(path, items) -> int:
    """Write ``{document_id: text}`` (a dict or pairs) as a PyLate documents file, atomically."""
    return _write_texts(path, items, "document_id")


def write_distillation(train_path, queries_path, documents_path, *, query_ids, doc_ids,
                       candidate_ids, candidate_scores, query_texts, doc_texts,
                       drop_short: bool = False) -> dict:
    """Write the three PyLate distillation files from candidate arrays.

    Parameters
    ----------
    train_path, queries_path, documents_path : str
        Output files (each written atomically; nothing is written if any check fails).
    query_ids : sequence of str or int, length n_q
        Id of row ``r`` of the arrays.
    doc_ids : sequence of str or int
        Document id of corpus row ``j`` (the values of ``candidate_ids``).
    candidate_ids : int array (n_q, k)
        Corpus rows per query, ``-1`` padding (typically the positive first, then negatives).
    candidate_scores : float array (n_q, k)
        Teacher scores of those documents.
    query_texts, doc_texts : mapping id -> text
        Texts; every written id needs one.
    drop_short : bool, default False
        Rows with padding (fewer than ``k`` documents) raise an error; with True they are left
        out (PyLate needs equal lengths) and counted in the result.

    Returns
    -------
    dict
        ``{"queries": n_written, "documents": n_written, "dropped": n_short_rows}``.
    """
    import numpy as np

    ids = np.asarray(candidate_ids)
    sc = np.asarray(candidate_scores)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"candidate_ids must be a 2-D integer array, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    if sc.shape != ids.shape:
        raise ValueError(f"candidate_scores must have the shape of candidate_ids {ids.shape}, "
                         f"got {sc.shape}")
    query_ids = list(query_ids)
    doc_ids = list(doc_ids)
    if len(query_ids) != ids.shape[0]:
        raise ValueError(f"query_ids has {len(query_ids)} ids but candidate_ids has "
                         f"{ids.shape[0]} rows")
    if ids.size and (ids.min() < -1 or ids.max() >= len(doc_ids)):
        raise ValueError(f"candidate_ids must be -1 or corpus rows 0..{len(doc_ids) - 1}")
    valid = ids >= 0
    short = ~valid.all(axis=1)
    if short.any() and not drop_short:
        r = int(np.flatnonzero(short)[0])
        raise ValueError(f"candidate_ids row {r} (query {query_ids[r]!r}) has "
                         f"{int(valid[r].sum())} documents instead of {ids.shape[1]}; PyLate "
                         f"needs equal lengths: pass drop_short=True to leave such rows out")
    if ids.shape[1] == 0:
        raise ValueError("candidate_ids has no columns; PyLate needs documents per query")
    rows = []
    used_docs = {}
    used_q = {}
    for r in np.flatnonzero(~short):
        qid = query_ids[r]
        if qid not in query_texts:
            raise ValueError(f"query_texts has no text for query id {qid!r} (row {r})")
        used_q[qid] = query_texts[qid]
        dids = [doc_ids[j] for j in ids[r].tolist()]
        for d in dids:
            if d not in used_docs:
                if d not in doc_texts:
                    raise ValueError(f"doc_texts has no text for document id {d!r} (row {r})")
                used_docs[d] = doc_texts[d]
        rows.append({"query_id": qid, "document_ids": dids,
                     "scores": [float(x) for x in sc[r].tolist()]})
    # validate everything before the first file is renamed into place
    kinds = _Kinds()
    rows = [check_train_record(rec, f"row {i}", kinds=kinds) for i, rec in enumerate(rows)]
    for name, texts in (("query_texts", used_q), ("doc_texts", used_docs)):
        for i, t in texts.items():
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"{name}[{i!r}] must be a non-empty string, got {t!r}")
    write_queries(queries_path, used_q)
    write_documents(documents_path, used_docs)
    write_train(train_path, rows)
    return {"queries": len(used_q), "documents": len(used_docs), "dropped": int(short.sum())}
