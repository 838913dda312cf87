"""Floor 2: the candidates directory (format ``simans-fast-candidates``, version 1).

A directory::

    header.json           format name, version, shapes, parameters, sha256 of every file
    candidate_ids.npy     (n_queries, k) int64   corpus rows of the candidates, best first, -1 pad
    candidate_scores.npy  (n_queries, k) float32 their scores (padding: -inf or NaN)
    positive_ids.npy      (n_queries, m) int64   corpus rows of each query's positives, -1 pad
    positive_scores.npy   (n_queries, m) float32 exact positive scores, NaN pad
    query_ids.txt         one query id per line (row i of the arrays)
    doc_ids.txt           one document id per line (corpus row j)

Written atomically (built in a temporary sibling directory, renamed into place) with
deterministic bytes; the header and array policy is :mod:`simans_fast.store.arrays`'. Every
problem found on load is an :class:`simans_fast._validate.InputError` whose message starts
with the file it is about.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .._validate import InputError
from .arrays import ArrayDirFormat
from .atomic import atomic_dir, fsync_dir, json_dumps, write_synced
from .ids import ids_sha256, read_ids

__all__ = [
    "CANDIDATES_FORMAT",
    "CANDIDATES_VERSION",
    "CANDIDATES_DIR",
    "CandidatesFile",
    "save_candidates",
    "load_candidates",
    "read_header",
    "candidates_header",
    "write_candidates_dir_finish",
    "ids_sha256",
    "array_fingerprint",
]

CANDIDATES_FORMAT = "simans-fast-candidates"
CANDIDATES_VERSION = 1
_FIX = "the candidates directory is damaged or was edited (re-create it with " \
       "save_candidates() or simans-fast mine)"
#: the header/version policy of the candidates directory
CANDIDATES_DIR = ArrayDirFormat(CANDIDATES_FORMAT, CANDIDATES_VERSION, (1,), "header.json",
                                fix=_FIX)

_ARRAYS = ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores")
_ARRAY_DTYPES = {
    "candidate_ids": np.int64,
    "candidate_scores": np.float32,
    "positive_ids": np.int64,
    "positive_scores": np.float32,
}


def _package_version() -> str:
    import sys

    pkg = sys.modules.get(__name__.split(".")[0])
    return getattr(pkg, "__version__", "unknown")


def array_fingerprint(arr, max_rows: int = 1024) -> str:
    """Cheap identity of a (possibly huge, memory-mapped) array: shape, dtype, sampled rows.

    Hashes the shape, dtype and up to ``max_rows`` evenly spaced rows (always the first and
    the last). Used to refuse resuming a run on different inputs; not a full checksum.
    """
    arr = np.asarray(arr)
    h = hashlib.sha256()
    h.update(repr((tuple(arr.shape), arr.dtype.str)).encode())
    n = arr.shape[0] if arr.ndim else 0
    if n:
        rows = np.unique(np.linspace(0, n - 1, num=min(n, max_rows)).astype(np.int64))
        h.update(np.ascontiguousarray(arr[rows]).tobytes())
    return h.hexdigest()


@dataclass
class CandidatesFile:
    """A loaded candidates directory (see the module docstring for the layout).

    Attributes
    ----------
    path : str
    header : dict
    candidate_ids, candidate_scores, positive_ids, positive_scores : ndarray
        Memory-mapped (read-only) unless loaded with ``mmap=False``.
    query_ids, doc_ids : list of str
    """

    path: str
    header: dict
    candidate_ids: np.ndarray
    candidate_scores: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray
    query_ids: list = field(repr=False)
    doc_ids: list = field(repr=False)

    @property
    def parameters(self) -> dict:
        return dict(self.header.get("parameters", {}))


def candidates_header(arrays: dict, query_ids, doc_ids, parameters: dict, extra: dict | None,
                      file_hashes: dict) -> dict:
    """The ``header.json`` object of a candidates directory (``arrays`` may be anything with a
    ``.shape``; ``file_hashes`` maps array name -> sha256 of its ``.npy`` file)."""
    n_q, k = arrays["candidate_ids"].shape
    header = dict(CANDIDATES_DIR.header_fields())
    header.update({
        "simans_fast_version": _package_version(),
        "n_queries": int(n_q),
        "k": int(k),
        "max_positives": int(arrays["positive_ids"].shape[1]),
        "n_docs": len(doc_ids),
        "parameters": parameters,
        "ids": {
            "query_ids": {"file": "query_ids.txt", "count": len(query_ids),
                          "sha256": ids_sha256(query_ids)},
            "doc_ids": {"file": "doc_ids.txt", "count": len(doc_ids),
                        "sha256": ids_sha256(doc_ids)},
        },
        "arrays": {
            name: {
                "file": f"{name}.npy",
                "dtype": np.dtype(_ARRAY_DTYPES[name]).str,
                "shape": [int(s) for s in arrays[name].shape],
                "sha256": file_hashes[name],
            }
            for name in _ARRAYS
        },
    })
    if extra:
        header["provenance"] = extra
    return header


def _check_arrays(arrays: dict) -> None:
    for name in _ARRAYS:
        if name not in arrays:
            raise ValueError(f"missing array {name!r}")
    if arrays["candidate_ids"].ndim != 2:
        raise ValueError("candidate_ids must be (n_queries, k)")
    n_q, k = arrays["candidate_ids"].shape
    if arrays["candidate_scores"].shape != (n_q, k):
        raise ValueError("candidate_scores must have the shape of candidate_ids")
    if arrays["positive_ids"].ndim != 2 or arrays["positive_ids"].shape[0] != n_q:
        raise ValueError("positive_ids must be (n_queries, m)")
    if arrays["positive_scores"].shape != arrays["positive_ids"].shape:
        raise ValueError("positive_scores must have the shape of positive_ids")


def save_candidates(path, candidate_ids, candidate_scores, positive_ids, positive_scores,
                    query_ids, doc_ids, *, parameters: dict | None = None,
                    provenance: dict | None = None) -> None:
    """Write a candidates directory atomically (built beside ``path``, then renamed).

    Parameters
    ----------
    path : str
        Destination directory; must not exist yet (or be an empty directory).
    candidate_ids, candidate_scores, positive_ids, positive_scores : ndarray
        As returned by :func:`simans_fast.mine_candidates` (ids are corpus rows).
    query_ids, doc_ids : sequence of str
        Id of each query row and corpus row.
    parameters : dict, optional
        Sampling parameters (n, a, b, kernel, seed, positive_choice, fallback, metric, ...),
        used as the defaults of ``simans-fast sample``.
    provenance : dict, optional
        Anything else to record in the header (must be JSON; keep it deterministic).
    """
    path = os.fspath(path)
    arrays = {
        "candidate_ids": np.ascontiguousarray(candidate_ids, dtype=np.int64),
        "candidate_scores": np.ascontiguousarray(candidate_scores, dtype=np.float32),
        "positive_ids": np.ascontiguousarray(positive_ids, dtype=np.int64),
        "positive_scores": np.ascontiguousarray(positive_scores, dtype=np.float32),
    }
    _check_arrays(arrays)
    if arrays["candidate_ids"].shape[0] != len(query_ids):
        raise ValueError("query_ids must have one id per candidates row")
    with atomic_dir(path) as tmpdir:
        hashes = {name: CANDIDATES_DIR.write_array(tmpdir, name, arr)["sha256"]
                  for name, arr in arrays.items()}
        write_candidates_dir_finish(tmpdir, arrays, query_ids, doc_ids, parameters or {},
                                    provenance, hashes)


def write_candidates_dir_finish(tmpdir, arrays, query_ids, doc_ids, parameters, provenance,
                                hashes) -> None:
    """Write the id lists and header.json of a candidates directory being built in ``tmpdir``.

    ``arrays`` may be memory maps (only shapes are read); ``hashes`` maps array name -> sha256
    of its ``.npy`` file. The header is written last.
    """
    for name, ids in (("query_ids.txt", query_ids), ("doc_ids.txt", doc_ids)):
        write_synced(os.path.join(tmpdir, name), "".join(s + "\n" for s in ids))
    header = candidates_header(arrays, query_ids, doc_ids, parameters, provenance, hashes)
    write_synced(os.path.join(tmpdir, "header.json"), json_dumps(header))
    fsync_dir(tmpdir)


_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")


def _check_header(header, hp: str, parameter: str) -> None:
    """Check the structure of a parsed ``header.json`` (types, names, shapes agree)."""
    import json

    def bad(what):
        return InputError(f"{hp}: {what}; {_FIX}", parameter=parameter, path=hp)

    def count(obj, key, where):
        v = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"{where}{key} must be a non-negative integer, got {json.dumps(v)[:40]}")
        return v

    def plain_file(spec, where):
        f = spec.get("file")
        if not isinstance(f, str) or f in ("", ".", "..") or os.path.basename(f) != f or (
                os.sep != "/" and "/" in f):
            raise bad(f"{where}file must be a file name inside the directory, got "
                      f"{json.dumps(f)[:60]}")
        sha = spec.get("sha256")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise bad(f"{where}sha256 must be 64 hex digits")
        return f

    for key in ("n_queries", "k", "max_positives", "n_docs"):
        count(header, key, "")
    if not isinstance(header.get("parameters", {}), dict):
        raise bad("parameters must be a JSON object")
    ids = header.get("ids")
    if not isinstance(ids, dict):
        raise bad("ids must be a JSON object")
    for key, total in (("query_ids", "n_queries"), ("doc_ids", "n_docs")):
        spec = ids.get(key)
        if not isinstance(spec, dict):
            raise bad(f"ids.{key} is missing")
        plain_file(spec, f"ids.{key}.")
        if count(spec, "count", f"ids.{key}.") != header[total]:
            raise bad(f"ids.{key}.count {spec['count']} differs from {total} {header[total]}")
    arrays = header.get("arrays")
    if not isinstance(arrays, dict):
        raise bad("arrays must be a JSON object")
    shapes = {"candidate_ids": "k", "candidate_scores": "k", "positive_ids": "max_positives",
              "positive_scores": "max_positives"}
    files = set()
    for name in _ARRAYS:
        spec = arrays.get(name)
        if not isinstance(spec, dict):
            raise bad(f"arrays.{name} is missing")
        files.add(plain_file(spec, f"arrays.{name}."))
        want_dtype = np.dtype(_ARRAY_DTYPES[name]).str
        if spec.get("dtype") != want_dtype:
            raise bad(f"arrays.{name}.dtype must be {want_dtype!r}, got "
                      f"{json.dumps(spec.get('dtype'))[:20]}")
        want = [header["n_queries"], header[shapes[name]]]
        if spec.get("shape") != want:
            raise bad(f"arrays.{name}.shape {json.dumps(spec.get('shape'))[:40]} differs from "
                      f"[n_queries, {shapes[name]}] = {want}")
    files |= {ids["query_ids"]["file"], ids["doc_ids"]["file"]}
    if len(files) != 6 or "header.json" in files:
        raise bad("two entries name the same file")


def read_header(path, *, parameter: str = "path") -> dict:
    """Read and check the ``header.json`` of a candidates directory.

    Raises :class:`InputError` for a missing directory or header, a header that is not JSON, of
    another format or a version this build does not read, or whose fields are missing, of the
    wrong type or disagree with each other.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: not found; expected a candidates directory, as written by "
                         "save_candidates() (simans-fast mine writes OUT/candidates)",
                         parameter=parameter, path=path)
    if not os.path.isdir(path):
        raise InputError(f"{path}: expected a candidates directory, got a file",
                         parameter=parameter, path=path)
    hp = os.path.join(path, "header.json")
    if not os.path.exists(hp):
        sub = os.path.join(path, "candidates", "header.json")
        if os.path.exists(sub):
            raise InputError(f"{path}: this is a mining output directory; its candidates "
                             f"directory is {os.path.join(path, 'candidates')}",
                             parameter=parameter, path=path)
        raise InputError(f"{path}: no header.json; not a candidates directory (or the run "
                         "that writes it did not finish: resume it)", parameter=parameter,
                         path=path)
    header = CANDIDATES_DIR.read_header(hp, parameter=parameter)
    _check_header(header, hp, parameter)
    return header


def load_candidates(path, *, mmap: bool = True, verify: bool = False,
                    parameter: str = "path") -> CandidatesFile:
    """Load a candidates directory written by :func:`save_candidates` (or ``simans-fast mine``).

    Every array's dtype and shape is checked against ``header.json`` and its ids against the
    corpus size (``-1 <= id < n_docs``) before anything uses it; a damaged, cut, pickled or
    edited directory raises :class:`InputError` naming the file.

    Parameters
    ----------
    path : str
        The candidates directory.
    mmap : bool, default=True
        Memory-map the arrays read-only.
    verify : bool, default=False
        Also recompute the sha256 of every file and compare with the header.
    parameter : str, default="path"
        The Python parameter the errors name (``.parameter`` of the exception).

    Returns
    -------
    CandidatesFile
    """
    path = os.fspath(path)
    header = read_header(path, parameter=parameter)
    fmt = CANDIDATES_DIR
    files = {name: os.path.join(path, header["arrays"][name]["file"]) for name in _ARRAYS}
    for name, fp in files.items():
        if not os.path.isfile(fp):
            raise InputError(f"{path}: {header['arrays'][name]['file']} is missing; {_FIX}",
                             parameter=parameter, path=fp)
    if verify:
        fmt.verify(files, header["arrays"], parameter=parameter)
    arrays = {}
    for name in _ARRAYS:
        spec = header["arrays"][name]
        fp = files[name]
        arr = fmt.load_array(fp, mmap=mmap, parameter=parameter)
        if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
            raise InputError(f"{fp}: shape/dtype {tuple(arr.shape)}/{arr.dtype.str} differ "
                             f"from header.json ({tuple(spec['shape'])}/{spec['dtype']}); "
                             f"{_FIX}", parameter=parameter, path=fp)
        arrays[name] = arr
    n_docs = header["n_docs"]
    for name in ("candidate_ids", "positive_ids"):
        a = arrays[name]
        if a.size and (int(a.min()) < -1 or int(a.max()) >= n_docs):
            raise InputError(f"{files[name]}: ids outside [-1, n_docs={n_docs}) (min "
                             f"{int(a.min())}, max {int(a.max())}); {_FIX}",
                             parameter=parameter, path=files[name])
    ids = {}
    for key in ("query_ids", "doc_ids"):
        spec = header["ids"][key]
        fp = os.path.join(path, spec["file"])
        if not os.path.isfile(fp):
            raise InputError(f"{path}: {spec['file']} is missing; {_FIX}", parameter=parameter,
                             path=fp)
        lst = read_ids(fp, parameter=parameter)
        if len(lst) != spec["count"] or (verify and ids_sha256(lst) != spec["sha256"]):
            raise InputError(f"{fp}: id list differs from header.json; {_FIX}",
                             parameter=parameter, path=fp)
        ids[key] = lst
    return CandidatesFile(path, header, arrays["candidate_ids"], arrays["candidate_scores"],
                          arrays["positive_ids"], arrays["positive_scores"], ids["query_ids"],
                          ids["doc_ids"])
