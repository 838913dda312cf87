"""The import contract of the package: floors, imports only downward, no cycle.

Every module's AST is read (top-level imports and the lazy ones inside functions alike), each
import of a ``simans_fast`` module is mapped to its floor, and the test fails on an import that
points to a higher floor, on a cycle among modules of one floor, on a private name imported from
another module, and on a module the table does not place. The table is the one in
``docs/layers.md``; change both together.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "simans_fast"

#: floor -> module patterns (dotted, relative to simans_fast; "x.*" = every module of package x)
FLOORS = {
    0: ["_validate", "_config", "_numba", "_progress"],
    1: ["kernels", "kernels.*"],
    2: ["rng", "store", "store.*"],
    3: ["core"],
    4: ["_blocks", "candidates_bf16", "candidates_torch", "candidates", "sampler", "strategies",
        "diagnostics", "encode", "_warmup"],
    5: ["pipeline"],
    6: ["formats", "formats.*"],
    7: ["hard_negatives", "hn_mine", "from_texts", "demo"],
    8: ["cli", "cli.*", "torch", "torch.*", "__main__", "warmup"],
}
#: modules outside the floors: the public face imports everything; the deprecated shim
#: re-exports moved names (nothing inside the package may import it)
EXEMPT = {"__init__", "io"}
#: private names a module may import from another module (none)
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _floor(mod: str):
    for floor, patterns in FLOORS.items():
        for p in patterns:
            if p.endswith(".*"):
                if mod.startswith(p[:-1]):
                    return floor
            elif mod == p:
                return floor
    return None


def _modules():
    out = {}
    for root, _dirs, files in os.walk(PKG):
        if "__pycache__" in root:
            continue
        for f in files:
            if f.endswith(".py"):
                p = Path(root) / f
                out[_module_name(p)] = p
    return out


def _is_package(mod: str, mods: dict) -> bool:
    return mods[mod].name == "__init__.py"


def _resolve(mod: str, node: ast.ImportFrom, mods: dict) -> str:
    """Absolute dotted name (relative to simans_fast) of the module a from-import reads."""
    if node.level == 0:
        name = node.module or ""
        if name == "simans_fast":
            return ""
        return name[len("simans_fast."):] if name.startswith("simans_fast.") else None
    base = mod.split(".") if mod not in ("", "__init__") else []
    if base and not _is_package(mod, mods):
        base = base[:-1]  # a plain module's relative imports start at its package
    up = node.level - 1
    if up:
        base = base[:-up] if up <= len(base) else []
    if node.module:
        base = base + node.module.split(".")
    return ".".join(base)


def _edges():
    """(importer, imported module, imported name or None, lineno) for every package import."""
    mods = _modules()
    edges = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "simans_fast" or a.name.startswith("simans_fast."):
                        target = a.name[len("simans_fast."):] if "." in a.name else ""
                        edges.append((mod, target, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, node, mods)
                if target is None:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}" if target else a.name
                    if sub in mods:  # "from . import core": the module itself
                        edges.append((mod, sub, None, node.lineno))
                    else:
                        edges.append((mod, target, a.name, node.lineno))
    return mods, edges


def _target_module(target: str, mods: dict) -> str:
    if target == "":
        return "__init__"
    return target


def test_every_module_has_a_floor():
    mods = _modules()
    missing = sorted(m for m in mods if m not in EXEMPT and _floor(m) is None)
    assert not missing, f"modules without a floor in tests/test_layers.py FLOORS: {missing}"


def test_imports_point_downward():
    mods, edges = _edges()
    bad = []
    for mod, target, name, line in edges:
        if mod in EXEMPT:
            continue
        tmod = _target_module(target, mods)
        if tmod == "io":
            bad.append(f"{mod}:{line} imports the deprecated shim simans_fast.io")
            continue
        if tmod == "__init__":
            if name not in (None, "__version__"):
                bad.append(f"{mod}:{line} imports {name!r} from the package top level")
            continue
        f_src, f_dst = _floor(mod), _floor(tmod)
        if f_src is None:
            continue  # reported by test_every_module_has_a_floor
        if f_dst is None:
            bad.append(f"{mod}:{line} imports unplaced module {tmod}")
        elif f_dst > f_src:
            bad.append(f"{mod} (floor {f_src}):{line} imports {tmod} (floor {f_dst})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_cycles():
    mods, edges = _edges()
    graph = {m: set() for m in mods}
    for mod, target, _name, _line in edges:
        tmod = _target_module(target, mods)
        if tmod in graph and tmod != mod and mod not in EXEMPT and tmod not in EXEMPT:
            # a package's __init__ importing its own submodules is not a cycle with them
            if mod and tmod.startswith(mod + ".") and _is_package(mod, mods):
                continue
            graph[mod].add(tmod)
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    mods, edges = _edges()
    bad = []
    for mod, target, name, line in edges:
        if mod in EXEMPT or name is None or not name.startswith("_") or name.startswith("__"):
            continue
        tmod = _target_module(target, mods)
        if tmod == mod or (mod, tmod, name) in ALLOWED_PRIVATE:
            continue
        bad.append(f"{mod}:{line} imports private {name} from {tmod}")
    assert not bad, "private cross-module imports:\n" + "\n".join(bad)


def _module_aliases(mod, tree, mods):
    """Local names bound to simans_fast modules in ``mod`` ("from . import core as _core")."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node, mods)
            if target is None:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                if sub in mods:
                    out[a.asname or a.name] = sub
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("simans_fast.") and a.asname:
                    out[a.asname] = a.name[len("simans_fast."):]
    return out


def test_no_private_attributes_of_other_modules():
    """``_core._k`` or ``sio._AtomicFile`` reach into another module as much as an import of
    a private name does."""
    mods = _modules()
    bad = []
    for mod, path in mods.items():
        if mod in EXEMPT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _module_aliases(mod, tree, mods)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__") and aliases[node.value.id] != mod):
                bad.append(f"{mod}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private attributes of other modules:\n" + "\n".join(bad)


def test_private_modules_stay_in_their_package():
    """``formats._rows`` or ``torch._rng`` serve their own package only."""
    mods, edges = _edges()
    bad = []
    for mod, target, _name, line in edges:
        tmod = _target_module(target, mods)
        parts = tmod.split(".")
        if mod in EXEMPT or len(parts) < 2 or not parts[-1].startswith("_"):
            continue
        if parts[-1].startswith("__"):
            continue
        package = ".".join(parts[:-1])
        if not (mod == package or mod.startswith(package + ".")):
            bad.append(f"{mod}:{line} imports {tmod}, private to {package}/")
    assert not bad, "private modules used outside their package:\n" + "\n".join(bad)


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself fails on an upward import (so a green run means something)."""
    mods = _modules()
    mod, tmod = "core", "pipeline"
    assert _floor(mod) < _floor(tmod)
    tree = ast.parse("def f():\n    from .pipeline import mine\n")
    node = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)][0]
    assert _resolve(mod, node, mods) == "pipeline"
    node2 = ast.parse("from ..candidates import topk").body[0]
    assert _resolve("torch.data", node2, mods) == "candidates"
    node3 = ast.parse("from .. import core").body[0]
    assert _resolve("torch.data", node3, mods) == ""
    node4 = ast.parse("from .topk import x").body[0]
    assert _resolve("kernels", node4, mods) == "kernels.topk"


@pytest.mark.parametrize("mod", ["kernels.sampling", "kernels.topk", "kernels.strategies",
                                 "kernels.rng"])
def test_kernels_are_numba_only(mod):
    """kernels/: arrays in, arrays out; they import only numba, numpy, math and the leaves
    (ctypes, llvmlite and scipy for the BLAS function pointer the top-k kernel calls)."""
    path = _modules()[mod]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {"numba", "numpy", "math", "ctypes", "llvmlite", "scipy", "__future__"}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] not in allowed]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if (node.module or "").split(".")[0] not in allowed:
                bad.append(node.module)
    assert not bad, f"{mod} imports {bad}"


if __name__ == "__main__":  # python tests/test_layers.py: print the graph (floor: module -> imports)
    _mods, _all = _edges()
    _graph: dict = {}
    for _m, _t, _n, _l in _all:
        _graph.setdefault(_m, set()).add(_target_module(_t, _mods))
    for _m in sorted(_mods, key=lambda m: (_floor(m) if _floor(m) is not None else 99, m)):
        _deps = sorted(d for d in _graph.get(_m, ()) if d != _m)
        print(f"{_floor(_m)!s:>4} {_m:28s} -> {', '.join(_deps) if _deps else '-'}")
    print(f"{sum(len(v - {k}) for k, v in _graph.items())} edges")
