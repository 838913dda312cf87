"""Determinism across thread counts and processes; numba cache safety (concurrent, read-only)."""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import simans_fast as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRAW = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import numba
    import simans_fast as sf
    rng = np.random.default_rng(123)
    n_q, k = 5000, 64
    s = -np.sort(-rng.normal(size=(n_q, k)), axis=1).astype(np.float32)
    ids = rng.integers(0, 10**9, size=(n_q, k))
    pos = rng.normal(1.0, 0.5, n_q)
    h = hashlib.sha256()
    for a in (0.5, 30.0, 1000.0):
        h.update(sf.simans_negatives(ids, s, pos, 15, a=a, seed=7, epoch=3).tobytes())
        smp = sf.SimANSSampler(ids, s, pos, n=15, a=a, seed=7)
        h.update(smp.sample(epoch=2).tobytes())
        h.update(smp.tables.packed.tobytes())
    print(numba.get_num_threads(), h.hexdigest())
""")


def _run(code, env_extra=None, cwd=None, prefix=()):
    env = dict(os.environ)
    env.pop("NUMBA_NUM_THREADS", None)
    env.update(env_extra or {})
    out = subprocess.run(list(prefix) + [sys.executable, "-c", code], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_bit_identical_for_one_and_two_threads_and_across_processes():
    one = _run(DRAW, {"NUMBA_NUM_THREADS": "1"})
    two = _run(DRAW, {"NUMBA_NUM_THREADS": "2"})
    assert one.split()[0] == "1" and two.split()[0] == "2"
    assert one.split()[1] == two.split()[1]
    # and the same digest in this very process
    ns = {}
    exec(compile(DRAW.replace("print(numba.get_num_threads(), h.hexdigest())",
                              "digest = h.hexdigest()"), "draw", "exec"), ns)
    assert ns["digest"] == one.split()[1]


SERIAL = textwrap.dedent("""
    import warnings
    import numpy as np
    import numba
    import simans_fast as sf
    from simans_fast import core
    warnings.simplefilter("error")
    rng = np.random.default_rng(5)
    n_q, k = 300, 40
    s = -np.sort(-rng.normal(size=(n_q, k)), axis=1).astype(np.float32)
    ids = rng.integers(0, 10**6, size=(n_q, k))
    ids[rng.random((n_q, k)) < 0.1] = -1
    pos = rng.normal(1.0, 0.5, (n_q, 2))
    pos[rng.random((n_q, 2)) < 0.2] = np.nan
    rows = rng.integers(0, n_q, 50)
    for a in (0.5, 1000.0):
        for fb in ("lowest", "uniform"):
            sf.simans_negatives(ids, s, pos, 7, a=a, fallback=fb, parallel=False)
            sf.simans_negatives(ids, s, pos, 7, a=a, fallback=fb, replace=True, parallel=False)
            smp = sf.SimANSSampler(ids, s, pos, n=7, a=a, fallback=fb, parallel=False)
            smp.sample(epoch=1)
            smp.sample(rows=rows, epoch=2)
            smp.sample_columns(epoch=1, replace=True)
            smp.positive_index(rows=rows, epoch=1)
            lw = sf.ambiguity_log_weights(s, pos[:, 0], a=a, candidate_ids=ids, fallback="uniform",
                                          parallel=False)
            t = sf.build_alias(lw, parallel=False)
            core.sample(t, 5, seed=1, epoch=2, parallel=False)
            core.check_alias_arrays(t.packed, t.n_valid, t.logw, t.peak, parallel=False)
    for strategy in ("top", "uniform", "simans"):
        sf.select_negatives(ids, s, pos[:, 0], 5, strategy=strategy, parallel=False)
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none"
    print(layer)
""")


def test_serial_kernels_start_no_threads():
    """``parallel=False`` runs only serial kernels: none may hold a parallel region or start
    the threading layer (a DataLoader worker forked after that inherits a broken one; the omp
    layer is not fork-safe). Fresh process, two threads allowed, every sampling path."""
    assert _run(SERIAL, {"NUMBA_NUM_THREADS": "2"}) == "none"


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 40)).astype(np.float32)
    ids = rng.integers(0, 1000, size=(200, 40))
    pos = np.stack([rng.normal(size=200), rng.normal(size=200)], 1)
    pos[3, 1] = np.nan
    pos[4, :] = np.nan
    smp = sf.SimANSSampler(ids, s, pos, n=7, a=3.0, b=0.1, kernel="laplace", seed=9,
                           row_keys=np.arange(200) + 10_000)
    smp.save(tmp_path / "smp")
    assert sorted(os.listdir(tmp_path)) == ["smp"]  # no temporary left behind
    back = sf.SimANSSampler.load(tmp_path / "smp")
    for e in range(3):
        np.testing.assert_array_equal(back.sample(epoch=e), smp.sample(epoch=e))
        np.testing.assert_array_equal(back.positive_index(epoch=e), smp.positive_index(epoch=e))
    assert repr(back) == repr(smp)
    # overwrite in place keeps a valid sampler
    smp.save(tmp_path / "smp")
    np.testing.assert_array_equal(sf.SimANSSampler.load(tmp_path / "smp").sample(epoch=1),
                                  smp.sample(epoch=1))
    # no pickle anywhere: every array loads with allow_pickle=False
    for f in os.listdir(tmp_path / "smp"):
        if f.endswith(".npy"):
            np.load(tmp_path / "smp" / f, allow_pickle=False)
    with pytest.raises(ValueError, match="not a saved SimANSSampler"):
        sf.SimANSSampler.load(tmp_path)


def test_several_positives():
    rng = np.random.default_rng(1)
    n_q, k = 3000, 30
    s = -np.sort(-rng.normal(size=(n_q, k)), axis=1).astype(np.float32)
    ids = np.tile(np.arange(k), (n_q, 1))
    pos = np.full((n_q, 3), np.nan)
    pos[:, 0] = 2.0  # positive 0 sits above every candidate
    pos[:, 1] = -2.0  # positive 1 below
    pos[: n_q // 2, 2] = 0.0
    smp = sf.SimANSSampler(ids, s, pos, n=5, a=5.0, seed=2)
    pi = smp.positive_index(epoch=0)
    assert set(np.unique(pi)) == {0, 1, 2}
    assert np.all(pi[n_q // 2:] != 2)  # a NaN positive is never chosen
    # uniform choice among the finite positives: about 1/3 each in the first half
    frac = np.bincount(pi[: n_q // 2], minlength=3) / (n_q // 2)
    assert np.all(np.abs(frac - 1 / 3) < 0.05)
    assert not np.array_equal(pi, smp.positive_index(epoch=1))
    neg = smp.sample(epoch=0)
    # negatives follow the chosen positive: high positive -> top ranks, low -> bottom ranks
    assert neg[pi == 0].mean() < 10 and neg[pi == 1].mean() > 20
    hi = sf.SimANSSampler(ids, s, pos, n=5, a=5.0, seed=2, positive_choice="highest")
    assert np.all(hi.positive_index(epoch=4) == 0)
    lo = sf.SimANSSampler(ids, s, pos, n=5, a=5.0, seed=2, positive_choice="lowest")
    assert np.all(lo.positive_index(epoch=4) == 1)


CACHE_PROBE = textwrap.dedent("""
    import numpy as np
    import simans_fast as sf
    from simans_fast import _numba
    s = np.arange(40, dtype=np.float32).reshape(4, 10)
    out = sf.simans_negatives(np.arange(40).reshape(4, 10), s, np.full(4, 5.0), 3, seed=1)
    print(_numba.CACHE, out.sum())
""")


def _copy_package(dst):
    shutil.copytree(os.path.join(ROOT, "simans_fast"), os.path.join(dst, "simans_fast"),
                    ignore=shutil.ignore_patterns("__pycache__"))


def test_concurrent_cold_start_shares_one_cache(tmp_path):
    """Three processes compile into one empty cache at once; all succeed, agree, and a fourth
    process then runs from the cache."""
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_NUM_THREADS", None)
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_PROBE], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    lines = {o.strip().splitlines()[-1] for o, _ in outs}
    assert len(lines) == 1 and lines.pop().startswith("True")
    assert any(f.endswith(".nbi") for _, _, fs in os.walk(cache) for f in fs)
    again = subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == outs[0][0].strip().splitlines()[-1]


def _can_mount_readonly(tmp_path):
    if shutil.which("unshare") is None:
        return False
    d = tmp_path / "probe"
    d.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --bind {d} {d} && mount -o remount,ro,bind {d} {d} && "
                        f"! touch {d}/x"], capture_output=True)
    return r.returncode == 0


def test_read_only_install_without_writable_cache(tmp_path):
    """The package on a read-only file system with a read-only home: it must work (caching
    is switched off, kernels compile in memory)."""
    site = tmp_path / "site"
    home = tmp_path / "home"
    site.mkdir()
    home.mkdir()
    _copy_package(site)
    env = {"PYTHONPATH": str(site), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env_all = dict(os.environ, **env)
    env_all.pop("NUMBA_CACHE_DIR", None)
    if _can_mount_readonly(tmp_path):
        script = (f"mount --bind {site} {site} && mount -o remount,ro,bind {site} {site} && "
                  f"mount --bind {home} {home} && mount -o remount,ro,bind {home} {home} && "
                  f'exec "{sys.executable}" -c "$PROBE"')
        out = subprocess.run(["unshare", "-m", "sh", "-c", script],
                             env=dict(env_all, PROBE=CACHE_PROBE), capture_output=True,
                             text=True, timeout=600, cwd=str(tmp_path))
    else:  # no mount namespaces here: make the cache locations unusable by file permissions
        for p in (site, home):
            for root, dirs, files in os.walk(p):
                os.chmod(root, 0o555)
        out = subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env_all,
                             capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    cache_on, total = out.stdout.strip().splitlines()[-1].split()
    assert cache_on == "False"
    # the same answer as the normal install
    ref = sf.simans_negatives(np.arange(40).reshape(4, 10),
                              np.arange(40, dtype=np.float32).reshape(4, 10), np.full(4, 5.0), 3,
                              seed=1)
    assert int(total) == int(ref.sum())
    assert not any("__pycache__" in r for r, _, _ in os.walk(site))


def test_read_only_package_falls_back_to_user_cache(tmp_path):
    """A read-only package with a writable home: the kernels are cached in the user cache dir
    and the second process loads them from there."""
    if not _can_mount_readonly(tmp_path):
        pytest.skip("needs mount namespaces (unshare -m) to make the package read-only")
    site = tmp_path / "site"
    home = tmp_path / "home"
    site.mkdir()
    home.mkdir()
    _copy_package(site)
    env_all = dict(os.environ, PYTHONPATH=str(site), HOME=str(home),
                   XDG_CACHE_HOME=str(home / ".cache"), PROBE=CACHE_PROBE)
    env_all.pop("NUMBA_CACHE_DIR", None)
    script = (f"mount --bind {site} {site} && mount -o remount,ro,bind {site} {site} && "
              f'exec "{sys.executable}" -c "$PROBE"')
    for _ in range(2):
        out = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env_all,
                             capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1].startswith("True")
    cached = [f for _, _, fs in os.walk(home) for f in fs if f.endswith(".nbi")]
    assert cached, "no numba index files in the user cache"
