"""``simans-fast warmup`` / ``python -m simans_fast.warmup`` (issue 11).

Runs in subprocesses with a fresh, private Numba cache and only the small ``rng`` group, so it
takes seconds: the first run compiles every signature it reports and says so on stderr before
anything compiles; a second process finds them all in the cache (0 compiled).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    env.pop("SIMANS_FAST_NUMBA_CACHE", None)
    return env


def _run(args, cache):
    p = subprocess.run([sys.executable, *args], env=_env(cache), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_warmup_command_compiles_then_loads(tmp_path):
    cache = tmp_path / "cache"
    first = _run(["-m", "simans_fast", "warmup", "--group", "rng", "--json"], cache)
    err = first.stderr.splitlines()
    assert err[0].startswith("simans-fast: compiling the kernel signatures of rng for "
                             "float32, float64 (cached afterwards")
    assert any(line.startswith("simans-fast:   rng: ") for line in err), err
    rep = json.loads(first.stdout)
    assert set(rep["groups"]) == {"rng"}
    kernels = rep["kernels"]
    assert kernels and all(name.startswith("rng.") for name in kernels)
    tot = rep["totals"]
    assert tot["signatures"] == sum(len(v["signatures"]) for v in kernels.values()) > 0
    assert tot["compiled"] == tot["signatures"] and tot["loaded"] == 0
    assert all(v["cache_path"].startswith(str(cache)) for v in kernels.values())
    assert f"{tot['signatures']} signatures ({tot['compiled']} compiled, 0 loaded" in first.stderr
    assert f"{tot['signatures']} kernel signatures: {tot['compiled']} compiled" in err[-1]
    # every compiled signature has its compile seconds
    assert len(rep["compile_seconds"]) >= 1

    # a second process (the public module form): everything comes from the cache
    second = _run(["-m", "simans_fast.warmup", "--group", "rng", "--json"], cache)
    rep2 = json.loads(second.stdout)
    assert rep2["totals"] == {"signatures": tot["signatures"], "compiled": 0,
                              "loaded": tot["signatures"]}
    assert rep2["compile_seconds"] == {}
    assert f"{tot['signatures']} kernel signatures: 0 compiled" in second.stderr


def test_warmup_command_without_json_prints_nothing_on_stdout(tmp_path):
    p = _run(["-m", "simans_fast", "warmup", "--group", "rng", "--dtype", "float32"],
             tmp_path / "cache")
    assert p.stdout == ""
    assert "rng for float32 (cached afterwards" in p.stderr


def test_warmup_command_rejects_unknown_group(tmp_path):
    p = subprocess.run([sys.executable, "-m", "simans_fast", "warmup", "--group", "nope"],
                       env=_env(tmp_path / "cache"), cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert "--group" in p.stderr and "nope" in p.stderr


def test_warmup_is_registered():
    from simans_fast.cli import _main

    assert _main.COMMANDS["warmup"] == "warmup"
    args = _main.build_parser().parse_args(["warmup", "--group", "rng", "--dtype", "float64"])
    assert (args.command, args.group, args.dtype, args.json) == ("warmup", ["rng"],
                                                                ["float64"], False)


def test_warmup_library_progress_reports_each_group():
    from simans_fast import _warmup

    seen = []
    rep = _warmup.warmup(["rng"], dtypes=("float32",), timings=False,
                         progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == ["rng"]
    g, secs, n_sig, n_comp, n_load = seen[0]
    assert secs >= 0 and n_sig == n_comp + n_load >= 0
    assert set(rep["groups"]) == {"rng"}
    with pytest.raises(ValueError, match="groups"):
        _warmup.warmup(["nope"])
