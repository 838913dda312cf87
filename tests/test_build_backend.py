"""The build backend (_build/simans_build_backend.py): an editable install compiles the kernels
into the source tree's Numba cache, which a new process then loads instead of compiling."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import simans_fast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(simans_fast.__file__)))


def _backend():
    spec = importlib.util.spec_from_file_location(
        "simans_build_backend", os.path.join(REPO, "_build", "simans_build_backend.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pyproject_names_the_backend():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        bs = tomllib.load(f)["build-system"]
    assert bs["build-backend"] == "simans_build_backend"
    assert bs["backend-path"] == ["_build"]
    with open(os.path.join(REPO, "MANIFEST.in")) as f:
        assert "_build/simans_build_backend.py" in f.read()  # sdists can build too


def test_switch_and_requirements(monkeypatch):
    b = _backend()
    for v, want in (("1", True), ("0", False), ("off", False), ("no", False), ("yes", True)):
        assert b.warmup_enabled({b.ENV: v}) is want
    assert b.warmup_enabled({}) is True
    monkeypatch.setattr(b._setuptools, "get_requires_for_build_editable", lambda cs=None: ["x"])
    monkeypatch.setenv(b.ENV, "1")
    assert b.get_requires_for_build_editable() == ["x"] + b.WARMUP_REQUIRES
    assert any(r.startswith("numba") for r in b.WARMUP_REQUIRES)
    monkeypatch.setenv(b.ENV, "0")
    assert b.get_requires_for_build_editable() == ["x"]
    # build_editable: setuptools' wheel, then the compilation (not when switched off)
    calls = []
    monkeypatch.setattr(b._setuptools, "build_editable", lambda *a, **k: "w.whl")
    monkeypatch.setattr(b, "compile_kernels", lambda: calls.append(1) or True)
    assert b.build_editable("d") == "w.whl" and calls == []
    monkeypatch.setenv(b.ENV, "1")
    assert b.build_editable("d") == "w.whl" and calls == [1]


def test_a_failed_compilation_does_not_fail_the_install(tmp_path):
    b = _backend()
    logs = []

    class R:
        returncode = 3

    def fails(*a, **k):
        return R()

    def raises(*a, **k):
        raise subprocess.TimeoutExpired("x", 1)

    assert b.compile_kernels(str(tmp_path), run=fails, log=logs.append) is False
    assert "exit status 3" in logs[-1] and "simans-fast warmup" in logs[-1]
    assert b.compile_kernels(str(tmp_path), run=raises, log=logs.append) is False
    assert "not compiled" in logs[-1]
    cmd, env = b.warmup_command(str(tmp_path), "py")
    assert cmd == ["py", "-m", "simans_fast._warmup"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert "NUMBA_CACHE_DIR" not in env and "SIMANS_FAST_NUMBA_CACHE" not in env


def test_two_cores_compile_the_groups_in_two_processes_at_once(tmp_path):
    """With two or more cores, the compiling processes split the warm-up groups between them
    (every group exactly once) and run at the same time; one failing fails the whole."""
    import threading

    from simans_fast import _warmup

    b = _backend()
    (one,) = b.warmup_commands(str(tmp_path), "py", cores=1)
    assert one[0] == ["py", "-m", "simans_fast._warmup"]
    cmds = b.warmup_commands(str(tmp_path), "py", cores=2)
    assert len(cmds) == 2
    groups = [[c[i + 1] for i, a in enumerate(c) if a == "--group"] for c, _ in cmds]
    assert sorted(g for part in groups for g in part) == sorted(_warmup.GROUPS)
    assert all(c[:3] == ["py", "-m", "simans_fast._warmup"] for c, _ in cmds)
    assert all(env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path) for _, env in cmds)
    # both run at once: each waits until the other has started
    barrier = threading.Barrier(2, timeout=30)
    seen = []

    class Ok:
        returncode = 0

    def together(cmd, **kw):
        seen.append(cmd)
        barrier.wait()
        return Ok()

    logs = []
    assert b.compile_kernels(str(tmp_path), "py", run=together, log=logs.append, cores=2)
    assert sorted(map(tuple, seen)) == sorted(tuple(c) for c, _ in cmds)
    assert "2 process(es)" in logs[0] and "kernels compiled" in logs[-1]

    class Bad:
        returncode = 5

    def second_fails(cmd, **kw):
        return Bad() if "sampling" not in cmd else Ok()

    assert not b.compile_kernels(str(tmp_path), "py", run=second_fails, log=logs.append,
                                 cores=2)
    assert "exit status 5" in logs[-1]


def test_the_compiled_cache_lands_in_the_tree_and_a_new_process_loads_it(tmp_path, monkeypatch):
    """The real compilation (one group, so the test stays short) in a copy of the source
    tree: index and data files appear in the copy's __pycache__, and a new process that
    imports the copy loads every kernel of that group from them, compiling nothing."""
    b = _backend()
    root = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "simans_fast"), root / "simans_fast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    logs = []

    def one_group(cmd, **kw):
        return subprocess.run(cmd + ["--group", "rng", "--dtype", "float32"], **kw,
                              capture_output=True, text=True)

    assert b.compile_kernels(str(root), python=sys.executable, run=one_group, log=logs.append,
                             cores=1)
    assert "kernels compiled" in logs[-1]
    cache = root / "simans_fast" / "kernels" / "__pycache__"
    names = os.listdir(cache)
    assert any(n.startswith("rng.") and n.endswith(".nbi") for n in names)
    assert any(n.endswith(".nbc") for n in names)
    code = ("import json, simans_fast._warmup as w; "
            "r = w.warmup(['rng'], dtypes=('float32',), timings=False); "
            "print(json.dumps({k: [v['loaded'], v['compiled'], v['cache_path']] "
            "for k, v in r['kernels'].items()}))")
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("NUMBA_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep and all(loaded > 0 and compiled == 0 for loaded, compiled, _ in rep.values()), rep
    assert all(p.startswith(str(root)) for _, _, p in rep.values())
