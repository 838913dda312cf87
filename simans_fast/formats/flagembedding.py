"""FlagEmbedding's training JSONL: read strictly, write what its trainer reads.

One JSON object per line::

    {"query": str, "pos": [str, ...], "neg": [str, ...],
     "pos_scores": [float, ...], "neg_scores": [float, ...], "prompt": str, "type": str, ...}

What FlagEmbedding 1.4 reads (``FlagEmbedding/abc/finetune/embedder/AbsDataset.py``): the file
goes through ``datasets.load_dataset("json", data_files=...)``; a training item takes ``query``,
one random element of ``pos`` and ``train_group_size - 1`` elements of ``neg`` (so ``neg`` must
be a non-empty list: it divides by ``len(neg)``), and, with knowledge distillation, the
elements of ``pos_scores`` / ``neg_scores`` at the same indices (numbers). ``prompt`` replaces
the query instruction of that record; ``type`` (e.g. ``"symmetric_..."``) and ``batch_size``
are read from the first record of a file. ``hn_mine.py`` reads ``query``, ``pos`` and ``neg``
and passes every other key through.

Rules here:

* ``query``: a non-empty string; ``pos``: a non-empty list of non-empty strings; ``neg``
  (optional when reading, see ``require_neg``): a list of non-empty strings;
* ``pos_scores`` / ``neg_scores`` (optional): lists of finite numbers (not booleans), as long as
  ``pos`` / ``neg``; ``neg_scores`` needs ``neg``;
* ``prompt``, ``type`` (optional): strings (``null`` is refused: FlagEmbedding would format the
  string ``"None"`` into the query);
* any other key is kept and written back unchanged, in its place.

When negatives are replaced (:func:`replace_negatives`), ``neg_scores`` is replaced by the new
scores or removed: it is never left describing the old negatives.
"""

from __future__ import annotations


from . import (FormatError, atomic_text_writer, finite_scores, iter_jsonl, json_line,
               type_name)

__all__ = [
    "KNOWN_KEYS",
    "check_record",
    "iter_records",
    "read_records",
    "write_records",
    "replace_negatives",
    "read_candidate_pool",
]

#: the keys FlagEmbedding gives a meaning to; all others are passed through
KNOWN_KEYS = ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type")
_SCORE_KEYS = ("pos_scores", "neg_scores")


_type_name = type_name


def _check_texts(value, key, where, *, allow_empty_list):
    if not isinstance(value, (list, tuple)):
        raise FormatError(f"{where}: {key!r} must be a list of strings, got {_type_name(value)}")
    if not value and not allow_empty_list:
        raise FormatError(f"{where}: {key!r} is empty; it needs at least one text")
    for i, t in enumerate(value):
        if not isinstance(t, str):
            raise FormatError(f"{where}: {key}[{i}] must be a string, got {_type_name(t)}")
        if not t.strip():
            raise FormatError(f"{where}: {key}[{i}] is an empty text")
    return list(value)


def _check_scores(value, key, n, texts_key, where):
    return finite_scores(value, key, n, texts_key, where)


def check_record(record, where: str = "record", *, require_neg: bool = False) -> dict:
    """Validate one FlagEmbedding record; return it as a new dict (same key order).

    Score lists come back as lists of Python floats, text lists as lists. ``where`` prefixes
    every error message (e.g. ``"train.jsonl:12"``).

    Raises
    ------
    FormatError
        A missing ``query``/``pos``, a value of the wrong type, an empty ``pos`` (or an empty or
        missing ``neg`` with ``require_neg``), a score list of the wrong length or with a
        non-finite value.
    """
    if not isinstance(record, dict):
        raise FormatError(f"{where}: a record must be a dict, got {_type_name(record)}")
    for key in ("query", "pos"):
        if key not in record:
            raise FormatError(f"{where}: missing key {key!r} (FlagEmbedding records need "
                              f"'query' and 'pos')")
    q = record["query"]
    if not isinstance(q, str):
        raise FormatError(f"{where}: 'query' must be a string, got {_type_name(q)}")
    if not q.strip():
        raise FormatError(f"{where}: 'query' is an empty text")
    out = {}
    for key, value in record.items():
        if not isinstance(key, str):
            raise FormatError(f"{where}: keys must be strings, got {key!r}")
        if key == "pos":
            value = _check_texts(value, "pos", where, allow_empty_list=False)
        elif key == "neg":
            value = _check_texts(value, "neg", where, allow_empty_list=not require_neg)
        elif key in ("prompt", "type"):
            if not isinstance(value, str):
                raise FormatError(f"{where}: {key!r} must be a string, got {_type_name(value)}")
        out[key] = value
    if require_neg and "neg" not in out:
        raise FormatError(f"{where}: missing key 'neg'; FlagEmbedding's trainer needs at least "
                          f"one negative per record")
    if "pos_scores" in out:
        out["pos_scores"] = _check_scores(out["pos_scores"], "pos_scores", len(out["pos"]),
                                          "pos", where)
    if "neg_scores" in out:
        if "neg" not in out:
            raise FormatError(f"{where}: 'neg_scores' given without 'neg'")
        out["neg_scores"] = _check_scores(out["neg_scores"], "neg_scores", len(out["neg"]),
                                          "neg", where)
    return out


def iter_records(path, *, require_neg: bool = False, parameter: str = "path"):
    """Yield validated records of a FlagEmbedding JSONL file, one line at a time.

    Errors (:class:`~simans_fast.formats.FormatError`) name the file and the line: invalid
    JSON, a missing ``query``/``pos``, wrong types, an empty ``pos`` (see :func:`check_record`).
    """
    for no, obj in iter_jsonl(path, parameter=parameter):
        try:
            rec = check_record(obj, f"{path}:{no}", require_neg=require_neg)
        except FormatError as e:
            e.path, e.line = str(path), no
            raise
        yield rec


def read_records(path, *, require_neg: bool = False, parameter: str = "path") -> list:
    """All records of a FlagEmbedding JSONL file (see :func:`iter_records`)."""
    return list(iter_records(path, require_neg=require_neg, parameter=parameter))


def write_records(path, records, *, require_neg: bool = True) -> int:
    """Write records as FlagEmbedding JSONL, atomically; return the number written.

    Every record is validated first with :func:`check_record` (so the file is one the strict
    reader accepts), scores are written as floats, other keys unchanged in their order.
    ``require_neg`` (default True): every record must have a non-empty ``neg``, as
    FlagEmbedding's trainer needs. ``pos_scores`` and ``neg_scores`` must each be in every
    record or in none (the file is read as one table; a record without them would break
    knowledge distillation). On any error nothing is written and a previous file is kept.
    """
    n = 0
    present = None
    with atomic_text_writer(path) as f:
        for i, rec in enumerate(records):
            where = f"records[{i}]"
            rec = check_record(rec, where, require_neg=require_neg)
            keys = tuple(k in rec for k in _SCORE_KEYS)
            if present is None:
                present = keys
            elif keys != present:
                j = next(j for j in range(len(keys)) if keys[j] != present[j])
                here, first = ("present", "missing") if keys[j] else ("missing", "present")
                raise FormatError(f"{where}: {_SCORE_KEYS[j]!r} is {here} here but {first} in "
                                  f"records[0]; give score lists in every record or in none")
            try:
                f.write(json_line(rec))
            except (TypeError, ValueError) as e:
                raise FormatError(f"{where}: cannot be written as JSON: {e}") from None
            n += 1
    return n


def replace_negatives(record: dict, neg, neg_scores=None, *, pos_scores=None) -> dict:
    """A copy of ``record`` with ``neg`` replaced, every other key kept unchanged and in place.

    ``neg_scores``: the new negatives' scores, or None to *remove* the record's ``neg_scores``
    (they described other texts). ``pos_scores``: new positive scores (None keeps the record's
    own, which still describe its positives). A ``neg`` the record did not have goes right after
    ``pos``; other new keys go last.
    """
    new = {"neg": list(neg)}
    if neg_scores is not None:
        new["neg_scores"] = [float(s) for s in neg_scores]
    if pos_scores is not None:
        new["pos_scores"] = [float(s) for s in pos_scores]
    out = {}
    for key, value in record.items():
        if key in ("neg", "neg_scores", "pos_scores"):
            if key in new:
                out[key] = new.pop(key)
            elif key == "pos_scores":
                out[key] = value
            continue  # an old neg_scores without replacement is dropped
        out[key] = value
        if key == "pos" and "neg" not in record:
            out["neg"] = new.pop("neg")
    out.update(new)
    return out


def read_candidate_pool(path, *, parameter: str = "candidate_pool") -> list:
    """Texts of a FlagEmbedding candidate pool: JSONL ``{"text": str}`` per line.

    Other keys are ignored (the pool's only use is its texts). Duplicate texts are kept here;
    callers de-duplicate. Errors name the file and line.
    """
    texts = []
    for no, obj in iter_jsonl(path, parameter=parameter):
        if "text" not in obj:
            raise FormatError(f"{path}:{no}: missing key 'text' (a candidate pool line is "
                              f'{{"text": "..."}})', str(path), no)
        t = obj["text"]
        if not isinstance(t, str):
            raise FormatError(f"{path}:{no}: 'text' must be a string, got {_type_name(t)}",
                              str(path), no)
        if not t.strip():
            raise FormatError(f"{path}:{no}: 'text' is an empty text", str(path), no)
        texts.append(t)
    return texts
