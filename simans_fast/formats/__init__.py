"""File formats of the tools simans_fast feeds: one module per ecosystem, loaded on first use.

``get_format(name)`` returns the module registered under ``name``; nothing is imported until
then (this package imports only the standard library). Each module holds its readers and
writers side by side; see ``docs/formats.md``.

========================  ====================================================================
name                      module
========================  ====================================================================
``flagembedding``         FlagEmbedding training JSONL (``query``, ``pos``, ``neg``,
                          ``pos_scores``, ``neg_scores``, ``prompt``, ``type``)
``pylate``                PyLate distillation files (train, queries, documents JSONL)
``runfile``               TREC run ``qid Q0 docid rank score tag`` or ``qid<TAB>docid<TAB>score``
``sentence-transformers`` sentence-transformers dataset columns (triplet, n-tuple, labeled-*),
                          and one epoch's negatives as ``anchor, positive, negative_1..n``
``tevatron``              Tevatron 2.x training JSONL + corpus JSONL (one epoch's negatives)
``tevatron-legacy``       Tevatron's older ``positive_passages``/``negative_passages`` JSONL
``trec``                  qrels (:func:`~simans_fast.formats.trec.read_qrels`) and negatives run
                          files ``qid Q0 docid rank score tag``
``simxns``                the SimANS code's TSV ``qid, query, "pid score,...", "pid score,..."``
========================  ====================================================================

The negatives formats (``tevatron``, ``tevatron-legacy``, ``sentence-transformers``, ``trec``,
``simxns``) are written and read through :mod:`simans_fast.formats.negatives`, which dispatches
here: each of their modules has ``write_epoch`` and ``read_epoch``. Inputs that are not an
ecosystem's format live beside them, unregistered: :mod:`.embeddings` (``.npy`` matrices, id
lists) and :mod:`.texts` (TSV/JSONL texts, BEIR directories).

:class:`FormatError` is an :class:`simans_fast._validate.InputError` (a ``ValueError``): it
names the file and line (``.path``, ``.line``) and the Python parameter (``.parameter``).
"""

from __future__ import annotations

import threading as _threading
from importlib import import_module as _import_module

__all__ = ["FORMATS", "FormatError", "get_format", "format_names"]

#: registered name -> module path (imported lazily by :func:`get_format`)
FORMATS = {
    "flagembedding": "simans_fast.formats.flagembedding",
    "pylate": "simans_fast.formats.pylate",
    "runfile": "simans_fast.formats.runfile",
    "sentence-transformers": "simans_fast.formats.sentence_transformers",
    "tevatron": "simans_fast.formats.tevatron",
    "tevatron-legacy": "simans_fast.formats.tevatron",
    "trec": "simans_fast.formats.trec",
    "simxns": "simans_fast.formats.simxns",
}


def _format_error_class():
    """:class:`FormatError`, made on first use: it subclasses ``_validate.InputError``, and
    importing ``_validate`` imports NumPy, which ``import simans_fast.formats`` must not."""
    cls = globals().get("FormatError")
    if cls is not None:
        return cls
    with _FORMAT_ERROR_LOCK:
        cls = globals().get("FormatError")
        if cls is None:
            cls = _make_format_error()
    return cls


_FORMAT_ERROR_LOCK = _threading.Lock()


def _make_format_error():
    from .._validate import InputError

    class FormatError(InputError):
        """A file that does not follow its format; the message names the file and line.

        Attributes ``path`` and ``line`` (1-based, ``None`` when the problem is not on one line)
        say where; ``parameter`` is the Python parameter the file came through (an
        :class:`~simans_fast._validate.InputError`, so also a ``ValueError``).
        """

        def __init__(self, message: str, path=None, line=None, *, parameter: str = "path"):
            super().__init__(message, parameter=parameter, path=path, line=line)

    FormatError.__module__ = __name__
    FormatError.__qualname__ = "FormatError"
    globals()["FormatError"] = cls = FormatError
    return cls


def __getattr__(name):  # PEP 562: ``FormatError`` is made on first access
    if name == "FormatError":
        return _format_error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_names() -> tuple:
    """The registered format names."""
    return tuple(FORMATS)


def get_format(name: str):
    """The module registered under ``name`` (imported on first use).

    Raises
    ------
    ValueError
        ``name`` is not a registered format.
    """
    if not isinstance(name, str) or name not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {name!r}")
    return _import_module(FORMATS[name])


# ------------------------------------------------------------------------- shared helpers
# (standard library only, so that importing this package stays cheap)
def _where(path, line=None) -> str:
    return f"{path}:{line}" if line is not None else f"{path}"


def _open_input(path, parameter: str):
    """Open ``path`` for binary reading; a missing file or a directory is a FormatError."""
    import os

    p = os.fspath(path)
    if os.path.isdir(p):
        raise _format_error_class()(f"{parameter} {p}: is a directory, expected a file", p, parameter=parameter)
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise _format_error_class()(f"{parameter} {p}: file not found; check the path", p,
                          parameter=parameter) from None


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON (write numbers, or null)")


def _object_no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def iter_jsonl(path, *, parameter: str = "path"):
    """Yield ``(line_number, object)`` for each line of a JSONL file, strictly.

    Every line must hold one JSON object (UTF-8; a byte-order mark before the first line is
    allowed). Blank lines, invalid JSON, ``NaN``/``Infinity`` tokens, a key repeated in one
    object, or a non-object value raise :class:`FormatError` naming the file and line.
    """
    import json

    decoder = json.JSONDecoder(object_pairs_hook=_object_no_duplicates,
                               parse_constant=_reject_constant)
    for p, no, text in text_lines(path, parameter=parameter,
                                  blank="blank line; every line must hold one JSON object"):
        try:
            obj = decoder.decode(text)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise _format_error_class()(f"{p}:{no}: not valid JSON: {e}", p, no) from None
        if not isinstance(obj, dict):
            raise _format_error_class()(f"{p}:{no}: expected a JSON object ({{...}}), got "
                              f"{type(obj).__name__}", p, no)
        yield no, obj


def text_lines(path, *, parameter: str = "path", blank: str = "blank line"):
    """Yield ``(file name, line number, text)`` with line ends removed, strictly: UTF-8 (a
    byte-order mark before the first line is allowed) and no blank line (``blank`` is the
    message), each failure a :class:`FormatError` naming the file and line."""
    with _open_input(path, parameter) as f:
        p = f.name
        for no, raw in enumerate(f, 1):
            if no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _format_error_class()(f"{p}:{no}: not UTF-8 text ({e.reason} at byte {e.start})",
                                  p, no) from None
            text = text.rstrip("\r\n")
            if not text.strip():
                raise _format_error_class()(f"{p}:{no}: {blank}", p, no)
            yield p, no, text


def type_name(x) -> str:
    """A value's type as a JSON reader would say it (``null`` for None)."""
    return "null" if x is None else type(x).__name__


def finite_scores(value, key, n, count_key, where, *, per="text"):
    """``value`` as a list of ``n`` finite floats (one per entry of ``count_key``), or a
    :class:`FormatError` at ``where`` naming ``key`` and the index."""
    import math
    import numbers

    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays from a caller (writer side)
    if not isinstance(value, (list, tuple)):
        raise _format_error_class()(f"{where}: {key!r} must be a list of numbers, got {type_name(value)}")
    if len(value) != n:
        raise _format_error_class()(f"{where}: {key!r} has {len(value)} value(s) but {count_key!r} has "
                          f"{n}; one score per {per}")
    out = []
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise _format_error_class()(f"{where}: {key}[{i}] must be a number, got {type_name(s)}")
        s = float(s)
        if not math.isfinite(s):
            raise _format_error_class()(f"{where}: {key}[{i}] is {s}; scores must be finite")
        out.append(s)
    return out


def json_line(obj) -> str:
    """One compact JSONL line (UTF-8 text kept as is, key order kept, NaN refused)."""
    import json

    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_text_writer(path):
    """Context manager yielding a text file on a temporary name, renamed onto ``path`` (after
    fsync) only when the block finishes without an exception: nothing is half-written."""
    from ..store.atomic import AtomicFile  # the package's one atomic writer

    return AtomicFile(path, "w", encoding="utf-8", newline="\n")
