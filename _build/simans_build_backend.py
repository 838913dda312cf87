"""PEP 517 build backend of simans_fast: setuptools' own, plus the package's Numba kernels
compiled into the source tree's cache when an editable install is built.

``pip install -e .`` builds the editable wheel here, then the kernels are compiled once by
``python -m simans_fast._warmup`` (every group, float32 and float64, parallel and serial
drivers) into ``simans_fast/__pycache__`` and ``simans_fast/kernels/__pycache__``, the cache the
editable install reads (:mod:`simans_fast._numba`). The first call in a new process then loads
the kernels instead of compiling them. Numba uses an entry only for the same source contents
(sha256), numba version, Python version, CPU and signature: an install whose numba differs from
the one the build environment got, or a tree copied to another CPU, compiles on first use as
without this step (never an error). With two or more cores the groups are compiled by two
processes at once (:data:`PARTS`; Numba compiles on one core, and the cache takes concurrent
writers, see :mod:`simans_fast._numba`): a whole ``pip install -e .`` took 2 min 44 s on 2
cores, against 3 min 41 s with one process.

* ``SIMANS_FAST_BUILD_WARMUP=0`` skips it (and the build environment then needs no numba);
* a failure of the compilation is reported and does not fail the install;
* non-editable wheels (``pip install .``, ``python -m build``) are built by setuptools
  unchanged: their cache would be compiled for the machine that built them; after such an
  install run ``simans-fast warmup`` once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook unchanged)

#: what the kernels' compilation imports (the package's own core dependencies)
WARMUP_REQUIRES = ["numpy>=1.24", "numba>=0.58", "scipy>=1.10"]
#: the longest the compilation may take before it is given up (the install goes on)
WARMUP_TIMEOUT_S = 1800
ENV = "SIMANS_FAST_BUILD_WARMUP"
#: the warm-up groups of each compiling process when there are two or more cores, in two
#: parts of about the same compile time ("sampling" alone takes as long as the rest)
PARTS = (("sampling",), ("topk", "strategies", "rng"))

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warmup_enabled(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get(ENV, "1").strip().lower()
    return value not in {"0", "false", "no", "off"}


def get_requires_for_build_editable(config_settings=None):
    reqs = list(_setuptools.get_requires_for_build_editable(config_settings))
    return reqs + WARMUP_REQUIRES if warmup_enabled() else reqs


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    if warmup_enabled():
        compile_kernels()
    return name


def warmup_command(root=_ROOT, python=None):
    """The command and environment of the compilation: the build environment's packages (this
    process' ``sys.path``) with the source tree first; no user cache directory, so the cache
    lands in the tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in sys.path if p])
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("SIMANS_FAST_NUMBA_CACHE", None)
    env.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))
    return [python or sys.executable, "-m", "simans_fast._warmup"], env


def warmup_commands(root=_ROOT, python=None, cores=None):
    """The compiling processes: one command for all groups on one core, else one per part of
    :data:`PARTS` (each ``--group`` of its part); each with :func:`warmup_command`'s
    environment."""
    cmd, env = warmup_command(root, python)
    if cores is None:
        cores = os.cpu_count() or 1
    if cores < 2:
        return [(cmd, env)]
    return [(cmd + [a for g in part for a in ("--group", g)], env) for part in PARTS]


def compile_kernels(root=_ROOT, python=None, run=subprocess.run, log=None, cores=None) -> bool:
    """Compile the kernels into ``root``'s cache; True when it worked. Never raises.

    The commands of :func:`warmup_commands` run at the same time (each through ``run``, in a
    thread of its own); it worked when every one of them did."""
    from concurrent.futures import ThreadPoolExecutor

    log = log or (lambda m: print(f"simans_fast build: {m}", file=sys.stderr, flush=True))
    cmds = warmup_commands(root, python, cores)
    log(f"compiling the Numba kernels into {os.path.join(root, 'simans_fast')}/__pycache__ "
        f"({len(cmds)} process(es); a few minutes on 2 cores; {ENV}=0 skips this)...")
    t0 = time.perf_counter()

    def one(cmd_env):
        cmd, env = cmd_env
        try:
            r = run(cmd, cwd=root, env=env, timeout=WARMUP_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            return f"({e})"
        return None if r.returncode == 0 else f"(exit status {r.returncode})"

    with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
        errors = [e for e in pool.map(one, cmds) if e is not None]
    if errors:
        log(f"the kernels were not compiled {'; '.join(errors)}; they compile on first use, "
            "or run 'simans-fast warmup'")
        return False
    log(f"kernels compiled in {time.perf_counter() - t0:.0f} s")
    return True
