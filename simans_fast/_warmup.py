"""Compile every Numba kernel of the package into the on-disk cache ahead of time.

    simans-fast warmup [--group sampling ...] [--dtype float32 ...] [--json]
    python -m simans_fast.warmup ...            (the same; also python -m simans_fast._warmup)

Runs each public entry point on tiny inputs, for every score dtype and for the parallel and the
serial drivers, so that each kernel signature a user normally reaches is compiled once and saved
(see :mod:`simans_fast._numba` for where the cache lives and why it is safe to share, to make
read-only and to keep across source changes). A later process loads the kernels instead of
compiling them: the first call then costs milliseconds instead of seconds.

``warmup()`` returns a report per kernel: its signatures, how many were loaded from the cache
and how many compiled, and the compile seconds per signature (inclusive of the kernels it calls
that were compiled with it). The same report is what the benchmarks print.
"""

from __future__ import annotations

import importlib
import os
import time

import numpy as np

GROUPS = ("rng", "sampling", "strategies", "topk")
_KERNEL_MODULES = ("rng", "sampling", "strategies", "topk")
DTYPES = ("float32", "float64")


def kernel_dispatchers() -> dict:
    """Every Numba dispatcher defined in ``simans_fast.kernels.*``: ``{"module.name": disp}``."""
    from numba.core.registry import CPUDispatcher

    out = {}
    for mod in _KERNEL_MODULES:
        m = importlib.import_module(f"simans_fast.kernels.{mod}")
        for name, obj in vars(m).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == m.__name__:
                out[f"{mod}.{name}"] = obj
    return out


def cache_report(dispatchers=None) -> dict:
    """Per kernel that has signatures in this process: ``signatures`` (strings), ``loaded``
    (from the cache) and ``compiled`` (cache misses), and the cache directory."""
    dispatchers = kernel_dispatchers() if dispatchers is None else dispatchers
    rep = {}
    for name, d in dispatchers.items():
        if not d.signatures:
            continue
        st = d.stats
        rep[name] = {"signatures": [str(s) for s in d.signatures],
                     "loaded": int(sum(st.cache_hits.values())),
                     "compiled": int(sum(st.cache_misses.values())),
                     "cache_path": st.cache_path}
    return rep


class _CompileTimer:
    """Seconds per (kernel, signature) of every compilation, from numba's compile events."""

    def __init__(self):
        self.seconds = {}
        self._start = {}

    def __enter__(self):
        from numba.core import event

        timer = self

        class _L(event.Listener):
            def on_start(self, ev):
                timer._start[id(ev.data)] = time.perf_counter()

            def on_end(self, ev):
                t0 = timer._start.pop(id(ev.data), None)
                if t0 is None:
                    return
                disp = ev.data["dispatcher"]
                if not disp.py_func.__module__.startswith("simans_fast."):
                    return  # numba's own overloads compiled on the way
                key = (f"{disp.py_func.__module__.rsplit('.', 1)[-1]}.{disp.py_func.__name__}",
                       str(tuple(ev.data["args"])))
                timer.seconds[key] = timer.seconds.get(key, 0.0) + time.perf_counter() - t0

        self._listener = _L()
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc):
        from numba.core import event

        event.unregister("numba:compile", self._listener)


def _data(dt, n_q=24, k=12, seed=0):
    rng = np.random.default_rng(seed)
    s = -np.sort(-rng.normal(size=(n_q, k)), axis=1).astype(dt)
    s[0, -1] = np.nan
    ids = np.arange(n_q * k, dtype=np.int64).reshape(n_q, k)
    ids[1, -1] = -1
    pos = rng.normal(1.0, 0.5, n_q)
    return ids, s, pos


def _rng_group(dtypes, parallel):
    from . import rng

    rng.splitmix64(0, 4)
    rng.uniforms(0, 1, np.arange(3), 2)


def _sampling_group(dtypes, parallel):
    from . import core
    from .kernels.sampling import row_range
    from .sampler import SimANSSampler

    row_range(np.arange(3, dtype=np.int64))  # the batch bounds check of the torch datasets

    for dt in dtypes:
        ids, s, pos = _data(dt)
        pos_nan = pos.copy()
        pos_nan[2] = np.nan
        pos2 = np.stack([pos, pos + 0.1], axis=1)
        pos2[3, 1] = np.nan
        for par in parallel:
            lw = core.ambiguity_log_weights(s, pos, parallel=par)
            t = core.build_alias(lw, parallel=par)
            core.check_alias_arrays(t.packed, t.n_valid, t.logw, t.peak, parallel=par)
            t.weights()
            for rep in (False, True):
                core.sample(t, 3, replace=rep, parallel=par)
                for fb in ("lowest", "uniform"):
                    core.simans_negatives(ids, s, pos_nan, 3, fallback=fb, replace=rep,
                                          parallel=par)
            core.simans_negatives(ids, s, pos2, 3, parallel=par)
            core.check_candidates(ids, s, parallel=par)
            for p in (pos_nan, pos2):
                smp = SimANSSampler(ids, s, p, n=3, parallel=par)
                smp.sample(epoch=1)
                smp.sample(rows=np.arange(5), epoch=2, replace=True)
                smp.sample_columns(epoch=1)
                smp.positive_index(epoch=1)
                smp.sample(rows=np.arange(5), epoch=1, parallel=not par)
            # a saved sampler is memory-mapped read-only on load: its own kernel signatures
            import tempfile

            with tempfile.TemporaryDirectory(prefix="simans_warmup_") as tmp:
                path = os.path.join(tmp, "sampler")
                SimANSSampler(ids, s, pos_nan, n=3, parallel=par).save(path)
                loaded = SimANSSampler.load(path, parallel=par)
                loaded.sample(epoch=1)
                loaded.sample_columns(rows=np.arange(5), epoch=1)


def _strategies_group(dtypes, parallel):
    from . import strategies

    for dt in dtypes:
        ids, s, pos = _data(dt)
        pid = ids[:, :1].copy()
        for par in parallel:
            for strat in ("simans", "top", "uniform"):
                strategies.select_negatives(ids, s, pos, 3, strategy=strat, parallel=par)
                strategies.select_negatives(ids, s, pos, 3, strategy=strat, window=(1, 8),
                                            margin=0.1, max_score=2.0, positive_ids=pid,
                                            parallel=par)


def _topk_group(dtypes, parallel):
    from . import candidates

    rng = np.random.default_rng(0)
    for dt in ("float32", "float16"):
        q = rng.normal(size=(20, 8)).astype(dt)
        d = rng.normal(size=(300, 8)).astype(dt)
        for metric in ("ip", "cosine", "l2"):
            candidates.topk(q, d, 5, metric=metric, backend="numba")
            candidates.topk(q, d, 5, metric=metric, backend="numba",
                            exclude=[[0, 1]] + [[]] * 19)
        ids, _ = candidates.topk(q, d, 5, backend="numba")
        candidates.rescore(q, d, ids)
        if _has_torch():  # the certified bfloat16 first pass (its kernels need no torch, its
            for metric in ("ip", "cosine"):  # products do)
                candidates.topk(q, d, 5, metric=metric, prefilter="bfloat16",
                                exclude=[[0, 1]] + [[]] * 19)


def _has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


_GROUP_FUNCS = {"rng": _rng_group, "sampling": _sampling_group,
                "strategies": _strategies_group, "topk": _topk_group}


def _totals(report: dict) -> tuple:
    """(signatures, compiled, loaded) summed over a :func:`cache_report`."""
    return (sum(len(v["signatures"]) for v in report.values()),
            sum(v["compiled"] for v in report.values()),
            sum(v["loaded"] for v in report.values()))


def warmup(groups=None, *, dtypes=DTYPES, parallel=(True, False), timings: bool = True,
           progress=None) -> dict:
    """Compile (or load) every kernel the given ``groups`` (default: all of :data:`GROUPS`) use,
    for the score ``dtypes`` and drivers in ``parallel``; return the report.

    Returns ``{"seconds": total, "groups": {group: seconds}, "kernels": cache_report(),
    "compile_seconds": {(kernel, signature): seconds}}`` (``compile_seconds`` empty when
    ``timings`` is False or everything came from the cache).

    ``progress(group, seconds, signatures, compiled, loaded)``, when given, is called after
    each group with the signatures that group added in this process and how many of them were
    compiled or loaded from the cache.
    """
    groups = GROUPS if groups is None else tuple(groups)
    bad = [g for g in groups if g not in _GROUP_FUNCS]
    if bad:
        raise ValueError(f"groups must be among {list(GROUPS)}, got {bad}")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"dtypes must be among {list(DTYPES)}, got {bad}")
    par = tuple(bool(p) for p in parallel)
    t0 = time.perf_counter()
    per_group = {}
    timer = _CompileTimer()
    if timings:
        timer.__enter__()
    try:
        before = _totals(cache_report()) if progress is not None else None
        for g in groups:
            t = time.perf_counter()
            _GROUP_FUNCS[g](tuple(dtypes), par)
            per_group[g] = time.perf_counter() - t
            if progress is not None:
                now = _totals(cache_report())
                progress(g, per_group[g], *(a - b for a, b in zip(now, before)))
                before = now
    finally:
        if timings:
            timer.__exit__(None, None, None)
    return {"seconds": time.perf_counter() - t0, "groups": per_group,
            "kernels": cache_report(), "compile_seconds": dict(timer.seconds)}


def main(argv=None) -> int:
    """``python -m simans_fast._warmup`` (``simans-fast warmup`` and ``python -m
    simans_fast.warmup`` are the same with the CLI's error handling)."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m simans_fast._warmup",
                                 description="Compile every Numba kernel into the cache.")
    ap.add_argument("--group", action="append", choices=GROUPS, help="default: all")
    ap.add_argument("--dtype", action="append", choices=DTYPES, help="default: all")
    ap.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = ap.parse_args(argv)
    rep = run_report(args.group, tuple(args.dtype or DTYPES),
                     lambda m: print(f"simans-fast: {m}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(json_report(rep), indent=1))
    return 0


def run_report(groups, dtypes, note, parallel=(True, False)) -> dict:
    """:func:`warmup` with progress lines through ``note(line)``: one before anything
    compiles, one per group, one with the totals. Returns the report."""
    groups = GROUPS if groups is None else tuple(groups)
    note(f"compiling the kernel signatures of {', '.join(groups)} for "
         f"{', '.join(dtypes)} (cached afterwards; a minute or two on a small machine when the "
         f"cache is empty, seconds when it is filled)...")

    def progress(group, seconds, n_sig, n_comp, n_load):
        note(f"  {group}: {n_sig} signatures ({n_comp} compiled, {n_load} loaded from the "
             f"cache) in {seconds:.1f} s")

    rep = warmup(groups, dtypes=dtypes, parallel=parallel, progress=progress)
    n_sig, n_comp, n_load = _totals(rep["kernels"])
    paths = sorted({v["cache_path"] for v in rep["kernels"].values()})
    note(f"{len(rep['kernels'])} kernels, {n_sig} kernel signatures: {n_comp} compiled, "
         f"{n_load} loaded from the cache, in {rep['seconds']:.1f} s; cache: "
         f"{', '.join(paths)}")
    rep["totals"] = {"signatures": n_sig, "compiled": n_comp, "loaded": n_load}
    return rep


def json_report(rep: dict) -> dict:
    """The report of :func:`warmup` / :func:`run_report` as JSON-ready data."""
    return dict(rep, compile_seconds={f"{k} {s}": v
                                      for (k, s), v in rep["compile_seconds"].items()})


if __name__ == "__main__":
    raise SystemExit(main())
