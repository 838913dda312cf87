"""Docstring -> code retrieval data harvested with :mod:`ast` from installed Python sources.

Nobody on this project wrote these texts: the queries are the first paragraphs of the docstrings
of functions in the standard library and in installed packages (numpy, scipy, ...), the documents
are the same functions' source code with every docstring removed.

Relevance
---------
Each query's labelled positive is its own function. Functions are also grouped (union-find) when
they share the same normalised summary text or the same code (an ``ast.dump`` of the signature and
the body without docstrings): vendored copies, aliases and near-identical wrappers in several
modules. The *other* members of a query's group are relevant but unlabelled during training (the
false negatives a miner should avoid); evaluation qrels contain the whole group, so a model is
not penalised for retrieving a copy. Train and test queries are split by group, so no copy of a
test function is ever a training positive.

Everything is deterministic: files are walked in sorted order and the split is a seeded
permutation of the groups.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import sysconfig
import textwrap
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Record", "CodeSearchData", "source_roots", "harvest", "build_dataset"]

_SKIP_DIRS = {
    "__pycache__", "tests", "test", "testing", "idle_test", "site-packages", "dist-packages",
    "_vendor", "vendor", "lib2to3", "turtledemo", "ensurepip", "venv",
    "config-3.11-x86_64-linux-gnu",
}
_SIGNATURE = re.compile(r"^[\w.]+\s*\(.*\)\s*(->.*)?$")
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Record:
    """One harvested function."""

    source: str       # e.g. "stdlib", "numpy"
    path: str         # file path relative to its root
    qualname: str     # Class.method or function name
    query: str        # first paragraph of the docstring, whitespace collapsed
    code: str         # function source, docstrings removed, dedented
    code_key: str     # hash of the normalised AST (signature + body without docstrings)


@dataclass
class CodeSearchData:
    """A harvested retrieval task.

    Attributes
    ----------
    corpus : list of str
        Documents (code), index = document id.
    records : list of Record
        Metadata of each document.
    group : ndarray of int64, shape (n_docs,)
        Relevance group of each document (copies share a group).
    train_queries, test_queries : list of str
        Query texts.
    train_pos, test_pos : ndarray of int64
        The labelled positive document of each query.
    test_qrels : dict
        ``{qid: {docid: 1}}`` over the whole group of each test query (``qid = "q<i>"``,
        ``docid = "d<j>"``).
    """

    corpus: list
    records: list
    group: np.ndarray
    train_queries: list
    train_pos: np.ndarray
    test_queries: list
    test_pos: np.ndarray
    test_qrels: dict = field(default_factory=dict)

    def group_members(self, doc: int) -> np.ndarray:
        """All documents of ``doc``'s group (including ``doc``)."""
        return np.flatnonzero(self.group == self.group[doc])


def source_roots(sources=("stdlib", "numpy", "scipy")):
    """``[(name, directory)]`` of the requested sources (names not installed are skipped)."""
    roots = []
    for name in sources:
        if name == "stdlib":
            roots.append(("stdlib", sysconfig.get_paths()["stdlib"]))
            continue
        try:
            mod = __import__(name)
        except ImportError:
            continue
        path = getattr(mod, "__file__", None)
        if path:
            roots.append((name, os.path.dirname(path)))
    return roots


def _iter_files(root: str):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith("test_"):
                yield os.path.join(dirpath, f)


def _summary(doc: str) -> str | None:
    doc = inspect.cleandoc(doc)
    para = []
    for line in doc.splitlines():
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    text = _WS.sub(" ", " ".join(para)).strip()
    if not text or _SIGNATURE.match(text) or ">>>" in text or text.startswith(".."):
        return None
    words = text.split()
    if len(words) < 4:
        return None
    return " ".join(words[:64])


def _docstring_node(node):
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _strip_docstrings(tree_node):
    """Copy of a function node without any docstring (for the code key)."""
    node = ast.parse(ast.unparse(tree_node)).body[0]
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if _docstring_node(sub) is not None:
                sub.body = sub.body[1:] or [ast.Pass()]
    return node


def _is_trivial(body) -> bool:
    if not body:
        return True
    if len(body) == 1:
        st = body[0]
        if isinstance(st, ast.Pass):
            return True
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
            return True  # `...`
        if isinstance(st, ast.Raise):
            exc = st.exc
            name = getattr(getattr(exc, "func", exc), "id", None)
            if name in {"NotImplementedError", "NotImplemented"}:
                return True
    return False


def _file_records(name: str, root: str, path: str, max_code_chars: int):
    try:
        with open(path, encoding="utf-8") as fh:
            src = fh.read()
        tree = ast.parse(src)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    lines = src.splitlines()
    out = []

    def visit(node, prefix, inside_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".", inside_function)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not inside_function:
                    rec = _function_record(child, prefix + child.name)
                    if rec is not None:
                        out.append(rec)
                visit(child, prefix + child.name + ".", True)

    def _function_record(fn, qualname):
        ds = _docstring_node(fn)
        if ds is None:
            return None
        query = _summary(ds.value.value)
        if query is None or _is_trivial(fn.body[1:]):
            return None
        # line ranges of every docstring inside the function (its own and nested ones)
        drop = set()
        for sub in ast.walk(fn):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                d = _docstring_node(sub)
                if d is not None:
                    drop.update(range(d.lineno - 1, d.end_lineno))
        body = [lines[i] for i in range(fn.lineno - 1, fn.end_lineno) if i not in drop]
        code = textwrap.dedent("\n".join(ln for ln in body if ln.strip()))
        if not code.strip():
            return None
        key = hashlib.sha1(
            ast.dump(_strip_docstrings(fn).args).encode()
            + b"|" + "".join(ast.dump(s) for s in _strip_docstrings(fn).body).encode()
        ).hexdigest()
        rel = os.path.relpath(path, root)
        return Record(name, rel, qualname, query, code[:max_code_chars], key)

    visit(tree, "", False)
    return out


def harvest(sources=("stdlib", "numpy", "scipy"), *, max_files=None, max_code_chars=2000,
            progress=False):
    """Harvest docstring/code records from the installed sources (sorted, deterministic).

    Parameters
    ----------
    sources : sequence of str
        ``"stdlib"`` and/or importable package names.
    max_files : int, optional
        Stop after this many files per source (for tiny runs).
    max_code_chars : int
        Truncate each document to this many characters.
    progress : bool
        Print a line per source.
    """
    records = []
    for name, root in source_roots(sources):
        files = list(_iter_files(root))
        if max_files is not None:
            files = files[:max_files]
        before = len(records)
        for path in files:
            records.extend(_file_records(name, root, path, max_code_chars))
        if progress:
            print(f"  harvested {len(records) - before:6d} functions from {len(files):5d} files "
                  f"of {name}",
                  flush=True)
    return records


def _groups(records) -> np.ndarray:
    parent = list(range(len(records)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = {}
    for i, r in enumerate(records):
        for key in ("q:" + r.query.lower(), "c:" + r.code_key):
            j = first.setdefault(key, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(records))], dtype=np.int64)
    _, group = np.unique(roots, return_inverse=True)
    return group.astype(np.int64)


def build_dataset(records, *, n_test: int, n_train: int | None = None, n_corpus: int | None = None,
                  max_group: int = 8, seed: int = 0) -> CodeSearchData:
    """Group, subsample and split harvested records into a retrieval task.

    Parameters
    ----------
    records : list of Record
    n_test : int
        Number of held-out queries (one per test group).
    n_train : int, optional
        Number of training queries (default: all remaining unique query texts).
    n_corpus : int, optional
        Keep at most this many documents (whole groups, those of the chosen queries first).
    max_group : int
        Drop groups with more members than this (generic docstrings such as "Return self.").
    seed : int
        Seed of the split.
    """
    group = _groups(records)
    sizes = np.bincount(group)
    keep_groups = np.flatnonzero(sizes <= max_group)
    rng = np.random.default_rng(seed)
    order = rng.permutation(keep_groups)
    test_groups = order[:n_test]
    rest = order[n_test:]
    members = [[] for _ in range(sizes.shape[0])]
    for i, g in enumerate(group):
        members[g].append(i)

    # training queries: unique query texts of the remaining groups (positive = first member)
    train_docs = []
    for g in rest:
        seen = set()
        for i in members[g]:
            q = records[i].query.lower()
            if q not in seen:
                seen.add(q)
                train_docs.append(i)
    train_docs = np.array(train_docs, dtype=np.int64)
    if n_train is not None:
        train_docs = train_docs[:n_train]
    test_docs = np.array([members[g][0] for g in test_groups], dtype=np.int64)

    # corpus: the groups of the chosen queries, then distractor groups up to n_corpus documents
    chosen = list(dict.fromkeys(np.concatenate([group[test_docs], group[train_docs]]).tolist()))
    chosen_set = set(chosen)
    doc_list = [i for g in chosen for i in members[g]]
    for g in order:
        if n_corpus is not None and len(doc_list) >= n_corpus:
            break
        if g not in chosen_set:
            doc_list.extend(members[g])
    doc_list = np.array(sorted(doc_list), dtype=np.int64)
    remap = -np.ones(len(records), dtype=np.int64)
    remap[doc_list] = np.arange(doc_list.shape[0])
    new_group = group[doc_list]
    _, new_group = np.unique(new_group, return_inverse=True)
    recs = [records[i] for i in doc_list]
    test_pos = remap[test_docs]
    train_pos = remap[train_docs]
    data = CodeSearchData(
        corpus=[r.code for r in recs], records=recs, group=new_group.astype(np.int64),
        train_queries=[recs[i].query for i in train_pos], train_pos=train_pos,
        test_queries=[recs[i].query for i in test_pos], test_pos=test_pos,
    )
    for qi, d in enumerate(test_pos):
        data.test_qrels[f"q{qi}"] = {f"d{j}": 1 for j in data.group_members(d)}
    return data
