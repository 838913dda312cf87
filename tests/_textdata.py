"""A small real text set for the text-and-model tests, built from the installed standard library.

Each pair is (docstring summary, code): the first sentence of a function's docstring and the
function's ``def`` line followed by its first statements (docstring removed), harvested with
:mod:`ast` from a fixed list of pure-Python standard-library modules. The result depends only on
the stdlib sources of the running interpreter: the same Python gives the same pairs, in the same
order, every time (nothing is random, nothing is downloaded).
"""

from __future__ import annotations

import ast
import importlib
import re

#: modules harvested, in this order (pure Python in every CPython build)
MODULES = ("textwrap", "shlex", "fractions", "statistics", "heapq", "bisect", "difflib",
           "calendar", "fnmatch", "ipaddress", "string", "colorsys", "base64", "quopri",
           "gettext", "tokenize")

_WS = re.compile(r"\s+")


def _summary(doc: str) -> str:
    """First paragraph of a docstring, on one line."""
    para = doc.strip().split("\n\n", 1)[0]
    return _WS.sub(" ", para).strip()


def _code(src: str, node: ast.AST, n_statements: int, max_chars: int) -> str:
    """``def`` line plus the first ``n_statements`` statements of the body, docstring dropped,
    cut at a space to at most ``max_chars`` characters."""
    lines = src.splitlines()
    head = lines[node.lineno - 1].strip()
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                            ast.Constant):
        body = body[1:]
    parts = [head]
    for stmt in body[:n_statements]:
        seg = ast.get_source_segment(src, stmt) or ""
        parts.append(_WS.sub(" ", seg).strip())
    text = " ".join(p for p in parts if p)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def _functions(tree):
    """Module-level functions and class methods, in source order."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield sub


def harvest(modules=MODULES, *, per_module: int = 8, min_summary_chars: int = 24,
            n_statements: int = 3, max_chars: int = 300):
    """``(summaries, codes, heads)``: parallel lists of str; summaries and codes are distinct.

    ``heads[i]`` is the ``def`` line of ``codes[i]`` alone (a second, different text for the same
    summary, used as an extra positive of a repeated anchor).

    At most ``per_module`` pairs per module, in source order; summaries shorter than
    ``min_summary_chars`` (e.g. "Return x.") and functions without a body statement are skipped.
    """
    summaries, codes, heads = [], [], []
    seen_s, seen_c = set(), set()
    for name in modules:
        mod = importlib.import_module(name)
        path = getattr(mod, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        with open(path, encoding="utf-8") as f:
            src = f.read()
        tree = ast.parse(src)
        taken = 0
        for node in _functions(tree):
            if taken >= per_module:
                break
            doc = ast.get_docstring(node)
            if not doc:
                continue
            summ = _summary(doc)
            code = _code(src, node, n_statements, max_chars)
            if (len(summ) < min_summary_chars or code.count(" ") < 3 or summ in seen_s
                    or code in seen_c):
                continue
            seen_s.add(summ)
            seen_c.add(code)
            summaries.append(summ)
            codes.append(code)
            heads.append(src.splitlines()[node.lineno - 1].strip())
            taken += 1
    return summaries, codes, heads

