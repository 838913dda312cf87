"""Query and document texts: TSV (MS MARCO, DPR) and JSONL (BEIR) files, BEIR directories.

Every problem is an :class:`simans_fast._validate.InputError` whose message starts with the
file and names the line; ``.parameter`` is the Python parameter the file came through.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._validate import InputError
from ..store.ids import bad_id, check_file, iter_lines

__all__ = ["read_texts", "read_text_records", "text_coverage", "read_beir_texts", "iter_texts"]

_ID_KEYS = ("_id", "id", "docid", "doc_id", "query_id", "qid", "pid")
_TEXT_KEYS = ("text", "contents", "query", "body", "passage")
_TSV_HEADER_IDS = ("id", "_id", "docid", "qid", "pid")


def _is_jsonl(path: str) -> bool:
    return path.lower().endswith((".jsonl", ".json", ".jsonl.txt"))


def iter_texts(path, parameter: str = "path"):
    """``(line number, id, title, text)`` of every record of a texts file, checked."""
    path = os.fspath(path)

    def err(lineno, msg):
        return InputError(f"{path}: line {lineno}: {msg}", parameter=parameter, path=path,
                          line=lineno)

    if _is_jsonl(path):
        for lineno, line in iter_lines(path, parameter):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise err(lineno, f"not JSON ({e.msg}); expected one JSON object per line "
                                  "(JSON Lines)") from None
            except RecursionError:
                raise err(lineno, "JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise err(lineno, "expected a JSON object")
            key = next((k for k in _ID_KEYS if k in obj), None)
            tkey = next((k for k in _TEXT_KEYS if k in obj), None)
            if key is None or tkey is None:
                raise err(lineno, f"needs an id field ({'/'.join(_ID_KEYS)}) and a text field "
                                  f"({'/'.join(_TEXT_KEYS)})")
            i = obj[key]
            if isinstance(i, bool) or not isinstance(i, (str, int)) or i == "":
                raise err(lineno, f"{key!r} must be a non-empty string (or an integer), got "
                                  f"{json.dumps(i)[:40]}")
            text = obj[tkey]
            if not isinstance(text, str):
                raise err(lineno, f"{tkey!r} must be a string, got {json.dumps(text)[:40]}")
            title = obj.get("title")
            if title is None:
                title = ""
            elif not isinstance(title, str):
                raise err(lineno, f"'title' must be a string, got {json.dumps(title)[:40]}")
            for v in (i, title, text):
                if isinstance(v, str) and not v.isascii():
                    try:
                        v.encode("utf-8")
                    except UnicodeEncodeError:
                        raise err(lineno, "holds an unpaired surrogate escape (\\ud800-\\udfff), "
                                          "which is not text; fix the file") from None
            yield lineno, str(i), title, text
        return
    for lineno, line in iter_lines(path, parameter):
        if not line:
            continue
        fields = line.split("\t")
        if lineno == 1 and fields[0].lower() in _TSV_HEADER_IDS:
            continue
        i = fields[0]
        if len(fields) == 2:
            title, text = "", fields[1]
        elif len(fields) == 3:
            title, text = fields[2], fields[1]
        elif len(fields) == 4:
            title, text = fields[2], fields[3]
        else:
            raise err(lineno, f"expected 'id<TAB>text', 'id<TAB>text<TAB>title' or "
                              f"'id<TAB>url<TAB>title<TAB>body', got {len(fields)} field(s)")
        if i == "":
            raise err(lineno, "the id (first field) is empty")
        yield lineno, i, title, text


def read_texts(path, wanted=None, *, parameter: str = "path") -> dict:
    """Read id -> (title, text) from a TSV or JSONL file, keeping only ``wanted`` ids.

    * JSONL (``.jsonl``/``.json``, BEIR style): one object per line with an id (``_id``,
      ``id``, ``docid``, ``query_id``...; a string or an integer), a string ``text`` (or
      ``contents``/``query``) and an optional string ``title``.
    * TSV (anything else): ``id<TAB>text`` (MS MARCO), ``id<TAB>text<TAB>title`` (DPR), or
      ``id<TAB>url<TAB>title<TAB>body`` (MS MARCO documents); a first line starting with
      ``id<TAB>`` is a header.

    The file must be UTF-8; an id kept twice is an error (which text would be meant?).

    Parameters
    ----------
    path : str
    wanted : set of str, optional
        Ids to keep (``None`` keeps every id).
    parameter : str, default="path"
        The Python parameter errors name (``.parameter`` of the exception).

    Returns
    -------
    dict
        id -> (title, text); title is ``""`` when the file has none.
    """
    path = os.fspath(path)
    check_file(path, parameter)
    out = {}
    for lineno, i, title, text in iter_texts(path, parameter):
        if wanted is None or i in wanted:
            if i in out:
                raise InputError(f"{path}: line {lineno}: id {i!r} appears a second time; "
                                 "keep one text per id", parameter=parameter, path=path,
                                 line=lineno)
            out[i] = (title, text)
    return out


def read_text_records(path, *, what: str = "text", parameter: str = "path"):
    """``(ids, texts)`` of every record of a texts file, in file order, ready to encode.

    A record's text is ``"title text"`` when it has a title (as the sentence-transformers
    writer joins them). Unlike :func:`read_texts`, every record is kept and checked: each id a
    single token (no whitespace or control characters), no id twice, no empty text, at least
    one record. ``what`` ("query", "document") words the messages.
    """
    path = os.fspath(path)
    check_file(path, parameter)

    def err(msg, lineno=None):
        where = f"{path}: line {lineno}: " if lineno is not None else f"{path}: "
        return InputError(where + msg, parameter=parameter, path=path, line=lineno)

    ids, texts, seen = [], [], {}
    for lineno, i, title, text in iter_texts(path, parameter):
        if bad_id(i):
            raise err(f"{what} id {i!r} is empty or contains whitespace or control characters; "
                      "ids must be single tokens", lineno)
        if i in seen:
            raise err(f"id {i!r} appears a second time (first on line {seen[i]}); keep one "
                      "text per id", lineno)
        seen[i] = lineno
        joined = f"{title} {text}" if title else text
        if not joined.strip():
            raise err(f"{what} {i!r} has an empty text; every text must be non-empty", lineno)
        ids.append(i)
        texts.append(joined)
    if not ids:
        raise err(f"holds no {what} texts; check the file")
    return ids, texts


def text_coverage(path, index: dict, *, parameter: str = "path") -> np.ndarray:
    """Which ids of ``index`` (id -> row ``0..len-1``) have a text in ``path``.

    Reads and checks the whole file like :func:`read_texts` without keeping any text, so a run
    can refuse missing texts before it writes anything. Returns a bool array over the rows.
    """
    path = os.fspath(path)
    check_file(path, parameter)
    found = np.zeros(len(index), dtype=bool)
    for lineno, i, _title, _text in iter_texts(path, parameter):
        r = index.get(i)
        if r is not None:
            if found[r]:
                raise InputError(f"{path}: line {lineno}: id {i!r} appears a second time; "
                                 "keep one text per id", parameter=parameter, path=path,
                                 line=lineno)
            found[r] = True
    return found


def read_beir_texts(directory, *, want_queries=None, want_docs=None,
                    parameter: str = "directory"):
    """Query and document texts of a BEIR-layout directory (``queries.jsonl``, ``corpus.jsonl``).

    Returns
    -------
    (query_texts, doc_texts) : (dict, dict)
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: not a directory (expected queries.jsonl and "
                         "corpus.jsonl)", parameter=parameter, path=directory)
    qp = os.path.join(directory, "queries.jsonl")
    cp = os.path.join(directory, "corpus.jsonl")
    return (read_texts(qp, want_queries, parameter=parameter),
            read_texts(cp, want_docs, parameter=parameter))
