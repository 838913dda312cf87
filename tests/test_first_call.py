"""The on-disk kernel cache behind a fast first call (issue 11; simans_fast._numba, _warmup).

No timing is asserted: what is checked is that a process started after ``warmup`` loads its
kernels from the cache instead of compiling them (numba's per-dispatcher cache hits and misses),
and that the cache stays correct when it is read-only, stale, or filled by processes starting
together. The subprocesses warm the small ``rng`` group (real package kernels, compiled in a few
seconds); every kernel of the package goes through the same cache class, which the first test
checks without compiling anything.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from simans_fast import _numba, _warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = textwrap.dedent("""
    import hashlib, json, os, sys
    import numpy as np
    if os.environ.get("PROBE_AS_NOBODY"):  # root ignores permission bits: drop them first
        import contextlib, fcntl, importlib, inspect, pickle, tempfile, uuid
        import numba, numba.core.caching
        numba.njit(lambda x: np.arange(x).sum())(3)  # load numba's lazily imported machinery
        os.setgid(65534)
        os.setuid(65534)
    from simans_fast import _warmup, rng
    rep = _warmup.warmup(["rng"], timings=False)
    out = np.concatenate([rng.splitmix64(7, 5).view(np.int64),
                          rng.uniforms(1, 2, np.arange(4), 3).ravel().view(np.int64)])
    print(json.dumps({"kernels": rep["kernels"],
                      "digest": hashlib.sha256(out.tobytes()).hexdigest()}))
""")


def _run(env, cwd=ROOT, nobody=False, check=True):
    if nobody:
        env = dict(env, PROBE_AS_NOBODY="1")
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else p


def _env(cache, pythonpath=ROOT):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=pythonpath)
    env.pop("SIMANS_FAST_NUMBA_CACHE", None)
    return env


def _totals(rep):
    ks = rep["kernels"]
    assert ks, "the probe compiled no kernel"
    return (sum(len(v["signatures"]) for v in ks.values()),
            sum(v["compiled"] for v in ks.values()), sum(v["loaded"] for v in ks.values()))


@pytest.fixture
def cache_dir():
    """A fresh cache directory that other users can enter (for the read-only test as root)."""
    d = tempfile.mkdtemp(prefix="simans_cache_")
    os.chmod(d, 0o755)
    yield d
    for root, dirs, files in os.walk(d):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o755)
    shutil.rmtree(d, ignore_errors=True)


def test_every_kernel_uses_the_package_cache():
    disp = _warmup.kernel_dispatchers()
    assert len(disp) > 30
    assert _numba.CACHE  # caching is on unless SIMANS_FAST_NUMBA_CACHE=0
    missing = [n for n, d in disp.items() if not isinstance(d._cache, _numba.PackageCache)]
    assert missing == []


def test_fresh_process_after_warmup_loads_every_kernel_from_cache(cache_dir):
    cold = _run(_env(cache_dir))
    n_sig, compiled, loaded = _totals(cold)
    assert compiled == n_sig and loaded == 0  # empty cache: everything compiled (and saved)
    warm = _run(_env(cache_dir))
    n_sig2, compiled2, loaded2 = _totals(warm)
    assert (n_sig2, compiled2, loaded2) == (n_sig, 0, n_sig)  # nothing recompiled
    assert warm["digest"] == cold["digest"]
    for v in warm["kernels"].values():
        assert v["cache_path"].startswith(cache_dir)


def test_read_only_cache_is_used_and_left_unchanged(cache_dir):
    ref = _run(_env(cache_dir))
    before = sorted(os.listdir(os.path.join(cache_dir, os.listdir(cache_dir)[0])))
    for root, dirs, files in os.walk(cache_dir):
        for x in dirs + files:
            p = os.path.join(root, x)
            os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)
    os.chmod(cache_dir, 0o555)
    # root ignores permission bits: run the reader as an unprivileged user then
    nobody = os.geteuid() == 0
    got = _run(_env(cache_dir), cwd="/", nobody=nobody)
    n_sig, compiled, loaded = _totals(got)
    assert (compiled, loaded) == (0, n_sig)
    assert got["digest"] == ref["digest"]
    for v in got["kernels"].values():
        assert v["cache_path"].startswith(cache_dir)
    # a read-only cache that lacks a kernel: it is compiled in memory, nothing is written
    os.chmod(cache_dir, 0o755)
    sub = os.path.join(cache_dir, os.listdir(cache_dir)[0])
    os.chmod(sub, 0o755)
    for name in os.listdir(sub):
        if name.startswith("rng.uniforms"):
            os.chmod(os.path.join(sub, name), 0o644)
            os.unlink(os.path.join(sub, name))
    os.chmod(sub, 0o555)
    os.chmod(cache_dir, 0o555)
    partial = _run(_env(cache_dir), cwd="/", nobody=nobody)
    assert partial["digest"] == ref["digest"]
    ks = partial["kernels"]
    assert ks["rng.uniforms"]["compiled"] == 1 and ks["rng.splitmix64_sequence"]["loaded"] == 1
    after = sorted(os.listdir(sub))
    assert after == [x for x in before if not x.startswith("rng.uniforms")]


def test_processes_starting_together_on_an_empty_cache(cache_dir):
    env = _env(cache_dir)
    procs = [subprocess.Popen([sys.executable, "-c", PROBE], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = []
    for p in procs:
        o, e = p.communicate(timeout=600)
        assert p.returncode == 0, e[-3000:]
        outs.append(json.loads(o.strip().splitlines()[-1]))
    assert len({o["digest"] for o in outs}) == 1
    after = _run(env)
    n_sig, compiled, loaded = _totals(after)
    assert (compiled, loaded) == (0, n_sig)
    assert after["digest"] == outs[0]["digest"]
    sub = os.path.join(cache_dir, os.listdir(cache_dir)[0])
    assert not [x for x in os.listdir(sub) if ".tmp." in x]  # no temporary file left behind


def test_stale_cache_after_a_source_change_is_not_used(cache_dir, tmp_path):
    """A copy of the package is warmed, then a kernel's source is changed: the next process
    must compile it again and run the new code, not the cached old one."""
    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.join(ROOT, "simans_fast"), pkg / "simans_fast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(cache_dir, pythonpath=str(pkg))
    old = _run(env, cwd=str(pkg))
    path = pkg / "simans_fast" / "kernels" / "rng.py"
    src = path.read_text()
    marker = "        out[j] = draw_u64(seed, np.uint64(j))\n"
    assert src.count(marker) == 1
    path.write_text(src.replace(marker, "        out[j] = draw_u64(seed, np.uint64(j)) ^ "
                                        "np.uint64(1)\n"))
    new = _run(env, cwd=str(pkg))
    ks = new["kernels"]
    assert ks["rng.splitmix64_sequence"]["compiled"] == 1
    assert new["digest"] != old["digest"]  # the changed kernel ran
    assert os.path.commonpath([ks["rng.splitmix64_sequence"]["cache_path"], cache_dir]) == \
        cache_dir
