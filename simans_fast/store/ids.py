"""Floor 2: strict UTF-8 line reading and id lists (shared by the store and the readers).

Every failure is an :class:`simans_fast._validate.InputError` whose message starts with the
file name (``"<file>: ..."``) and names the line; ``.parameter`` is the Python parameter the
file came through (``"path"`` unless the caller says otherwise).
"""

from __future__ import annotations

import hashlib
import os

from .._validate import InputError

__all__ = ["check_file", "iter_lines", "bad_id", "read_ids", "ids_sha256"]


def check_file(path, parameter: str = "path") -> None:
    """``path`` exists and is not a directory."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found; check the path", parameter=parameter,
                         path=path)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a file", parameter=parameter,
                         path=path)


def iter_lines(path, parameter: str = "path"):
    """``(line number, text)`` of a UTF-8 text file, line ends (``\\n``, ``\\r\\n``) removed.

    A UTF-8 byte-order mark at the start is dropped. Bytes that are not UTF-8 raise
    :class:`InputError` naming the line.
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})", parameter=parameter,
                         path=path) from None
    with f:
        lineno = 0
        it = iter(f)
        while True:
            try:
                raw = next(it)
            except StopIteration:
                return
            except OSError as e:
                raise InputError(f"{path}: cannot read it ({e.strerror})", parameter=parameter,
                                 path=path) from None
            lineno += 1
            try:
                s = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}: line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                    f"byte {e.start + 1} of the line); save the file as UTF-8",
                    parameter=parameter, path=path, line=lineno) from None
            if lineno == 1 and s.startswith("\ufeff"):
                s = s[1:]
            if s[-1:] == "\n":
                s = s[:-2] if s[-2:-1] == "\r" else s[:-1]
            elif s[-1:] == "\r":
                s = s[:-1]
            yield lineno, s


def bad_id(s: str) -> bool:
    """An id that is empty or holds whitespace or control characters."""
    return s == "" or not s.isprintable() or any(c.isspace() for c in s)


def read_ids(path, *, parameter: str = "path") -> list:
    """Read an id list: one id per line, no whitespace or control characters in ids, no repeats.

    A final newline is optional; ``\\r\\n`` line ends and a UTF-8 byte-order mark are accepted.

    Raises
    ------
    InputError
        Missing file, not UTF-8, empty lines, ids with whitespace, repeated ids.
    """
    check_file(path, parameter)
    ids = [s for _, s in iter_lines(path, parameter)]
    if not ids:
        raise InputError(f"{path}: the id list is empty; write one id per line",
                         parameter=parameter, path=path)
    for i, s in enumerate(ids):
        if bad_id(s):
            raise InputError(
                f"{path}: line {i + 1}: id {s!r} is empty or contains whitespace or control "
                "characters; write one id per line without spaces", parameter=parameter,
                path=path, line=i + 1)
    if len(set(ids)) != len(ids):
        seen = set()
        for i, s in enumerate(ids):
            if s in seen:
                raise InputError(
                    f"{path}: line {i + 1}: id {s!r} appears twice; ids must be unique",
                    parameter=parameter, path=path, line=i + 1)
            seen.add(s)
    return ids


def ids_sha256(ids) -> str:
    """sha256 of an id list in its canonical form (ids joined by ``\\n``, final ``\\n``)."""
    h = hashlib.sha256()
    for s in ids:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
