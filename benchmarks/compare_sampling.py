"""SimANS sampling: simans_fast against the alternatives, measured in one run.

    python benchmarks/compare_sampling.py [--n-queries 1000000] [--k 200] [--n 15]

For n_q x k candidate scores and n negatives without replacement, for a in {0.5, 10, 1000}:

* the paper code's loop (math.exp per candidate, random.choices, set union; re-implemented),
  timed on a subset and extrapolated;
* numpy per-row ``Generator.choice(replace=False, p=...)``, subset, extrapolated;
* ``torch.multinomial(replacement=False)`` on the whole weight matrix (if torch is installed);
* numpy exponential keys (log w - log E, top n by argpartition), in chunks;
* simans_fast single shot (``simans_negatives``: weights + per-row CDF + draws, fused);
* simans_fast alias-table build (``SimANSSampler``) and one epoch drawn from the cached tables,
  as users call it (``sampler.sample(epoch=1)``: document ids), and as columns;
* the floor: one pass over the score matrix (numpy sum, 1 thread; numba sum, all threads).

Also: the first-use path (top-k, single shot, sampler, draw, a strategy) cold (empty numba cache)
and warm (from the cache) in fresh subprocesses; with ``--compile-times`` the compile time per
kernel and signature (``simans_fast._warmup`` in a fresh process on an empty cache); and peak
memory of the single-shot path against its inputs + outputs.
Times are medians of ``--repeat`` runs after a warm-up; compare the ratios, which are measured
in the same run (absolute times drift 10-30 % between runs on a shared machine).

Scores: per query, 200 draws of N(0, 1) sorted descending; the positive scores N(1.5, 0.5).
With a = 1000 almost all the mass sits on one or two candidates (the peaked case).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import simans_fast as sf  # noqa: E402


def make_data(n_q, k, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.empty((n_q, k), np.float32)
    step = 100_000
    for i in range(0, n_q, step):
        m = min(step, n_q - i)
        scores[i:i + m] = -np.sort(-rng.standard_normal((m, k), dtype=np.float32), axis=1)
    pos = rng.normal(1.5, 0.5, n_q)
    ids = np.empty((n_q, k), np.int64)
    ids[:] = np.arange(k)
    return ids, scores, pos


def timeit(fn, repeat):
    fn()  # warm-up (compilation, page faults)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


# ------------------------------------------------------------------------------------------
# the alternatives
# ------------------------------------------------------------------------------------------
def paper_loop(scores, pos, n, a, b=0.0, seed=0):
    """The SimANS code's sampler: weights by math.exp, random.choices, set union, truncate."""
    random.seed(seed)
    failures = 0
    out = []
    for i in range(scores.shape[0]):
        row = scores[i].tolist()
        p = float(pos[i])
        weights = [math.exp(-a * (s - p + b) ** 2) for s in row]
        pool = list(range(len(row)))
        chosen = set()
        try:
            while len(chosen) < n and pool:
                picks = random.choices(pool, weights=[weights[j] for j in pool],
                                       k=n - len(chosen))
                chosen |= set(picks)
                pool = [j for j in pool if j not in chosen]
        except ValueError:  # all weights underflowed to 0
            failures += 1
        out.append(list(chosen)[:n])
    return out, failures


def numpy_choice(scores, pos, n, a, seed=0):
    g = np.random.default_rng(seed)
    lw = -a * (scores.astype(np.float64) - pos[:, None]) ** 2
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    w /= w.sum(axis=1, keepdims=True)
    out = np.full((scores.shape[0], n), -1, np.int64)
    k = scores.shape[1]
    failures = 0
    for i in range(scores.shape[0]):
        try:
            out[i] = g.choice(k, n, replace=False, p=w[i])
        except ValueError:  # "Fewer non-zero entries in p than size": weights underflowed
            failures += 1
    return out, failures


def numpy_expkeys(scores, pos, n, a, seed=0, chunk=65_536):
    g = np.random.default_rng(seed)
    out = np.empty((scores.shape[0], n), np.int64)
    for i in range(0, scores.shape[0], chunk):
        s = scores[i:i + chunk]
        lw = -a * (s - pos[i:i + chunk, None].astype(np.float32)) ** 2
        with np.errstate(divide="ignore"):
            keys = lw - np.log(g.standard_exponential(s.shape, dtype=np.float32))
        top = np.argpartition(-keys, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1)
        out[i:i + chunk] = np.take_along_axis(top, order, 1)
    return out


def torch_multinomial(scores_t, pos_t, n, a, torch):
    lw = -a * (scores_t - pos_t[:, None]) ** 2
    w = torch.exp(lw - lw.max(dim=1, keepdim=True).values)
    return torch.multinomial(w, n, replacement=False)


# ------------------------------------------------------------------------------------------
# compile time and memory, in fresh subprocesses
# ------------------------------------------------------------------------------------------
FIRST_CALL = textwrap.dedent("""
    import time, json
    t0 = time.perf_counter()
    import numpy as np
    import simans_fast as sf
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 32)).astype(np.float32)
    d = rng.normal(size=(500, 32)).astype(np.float32)
    pos = rng.normal(size=50)
    t1 = time.perf_counter()
    res = {"import": t1 - t0}
    def step(name, f):
        t = time.perf_counter()
        out = f()
        res[name] = time.perf_counter() - t
        return out
    ids, s = step("sf.topk (50 x 500 x 32)", lambda: sf.topk(q, d, 40))
    step("sf.simans_negatives", lambda: sf.simans_negatives(ids, s, pos, 5))
    smp = step("sf.SimANSSampler(...)", lambda: sf.SimANSSampler(ids, s, pos, n=5))
    step("sampler.sample(epoch=1)", lambda: smp.sample(epoch=1))
    step('sf.select_negatives(strategy="top")',
         lambda: sf.select_negatives(ids, s, pos, 5, strategy="top"))
    res["first_calls"] = time.perf_counter() - t1
    print(json.dumps(res))
""")

COMPILE_TIMES = textwrap.dedent("""
    import json
    from simans_fast import _warmup
    rep = _warmup.warmup({groups!r}, dtypes={dtypes!r})
    rep["compile_seconds"] = [[k, sig, v] for (k, sig), v in rep["compile_seconds"].items()]
    print(json.dumps(rep))
""")

MEMORY = textwrap.dedent("""
    import gc, json, sys
    import numpy as np
    import simans_fast as sf
    sys.path.insert(0, {here!r})
    from compare_sampling import make_data

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

    ids, s, pos = make_data({n_q}, {k})
    sf.simans_negatives(ids[:1000], s[:1000], pos[:1000], {n})  # compile
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    before = status("VmRSS")
    out = sf.simans_negatives(ids, s, pos, {n})
    peak = status("VmHWM")
    io = ids.nbytes + s.nbytes + pos.nbytes + out.nbytes
    print(json.dumps({{"inputs_outputs": io, "peak_rss": peak, "rss_before_call": before}}))
""")


def first_call_latency():
    """The first-use path of issue 11 in fresh processes: cold (empty numba cache), then warm."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = []
        for _ in range(2):  # cold, then warm from the cache
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return res


def compile_times(groups, dtypes):
    """Compile seconds per kernel and signature (``simans_fast._warmup`` in a fresh process with
    an empty cache), then the same warm-up in a second process, loading from that cache."""
    code = COMPILE_TIMES.format(groups=list(groups), dtypes=list(dtypes))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return res


def print_compile_times(cold, warm):
    rows = sorted(cold["compile_seconds"], key=lambda r: -r[2])
    print("\ncompile time per kernel and signature (fresh process, empty cache; a kernel's time "
          "includes the kernels compiled inside it):")
    for name, sig, sec in rows:
        short = sig if len(sig) < 110 else sig[:107] + "..."
        print(f"  {sec:7.2f} s  {name}  {short}")
    for label, rep in (("cold", cold), ("warm", warm)):
        ks = rep["kernels"]
        n_sig = sum(len(v["signatures"]) for v in ks.values())
        comp = sum(v["compiled"] for v in ks.values())
        load = sum(v["loaded"] for v in ks.values())
        groups = ", ".join(f"{g} {t:.2f} s" for g, t in rep["groups"].items())
        print(f"warm-up {label}: {rep['seconds']:.2f} s ({groups}); {len(ks)} kernels, {n_sig} "
              f"signatures: {comp} compiled, {load} loaded from the cache")


def memory_check(n_q, k, n):
    code = MEMORY.format(here=HERE, n_q=n_q, k=k, n=n)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baselines(rows, scores, pos, n, a, sub, scale, torch):
    """The alternatives, appended to ``rows``."""
    t = time.perf_counter()
    _, fails = paper_loop(scores[:sub], pos[:sub], n, a)
    t_paper = (time.perf_counter() - t) * scale
    rows.append(("paper code loop (extrapolated)", t_paper,
                 f"{fails / sub:.1%} rows failed" if fails else ""))
    t = time.perf_counter()
    _, fails = numpy_choice(scores[:sub], pos[:sub], n, a)
    rows.append(("numpy Generator.choice per row (extrapolated)",
                 (time.perf_counter() - t) * scale,
                 f"{fails / sub:.1%} rows failed" if fails else ""))
    if torch is not None:
        st_, pt_ = torch.from_numpy(scores), torch.from_numpy(pos.astype(np.float32))
        rows.append(("torch.multinomial(replacement=False)",
                     timeit(lambda: torch_multinomial(st_, pt_, n, a, torch), 1), ""))
    rows.append(("numpy exponential keys + argpartition",
                 timeit(lambda: numpy_expkeys(scores, pos, n, a), 1), ""))


# ------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-queries", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--a", type=float, nargs="+", default=[0.5, 10.0, 1000.0])
    ap.add_argument("--subset", type=int, default=20_000,
                    help="queries timed for the slow per-row baselines (extrapolated)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--no-first-call", action="store_true",
                    help="skip the cold/warm first-use measurement (fresh processes, ~1-2 min)")
    ap.add_argument("--compile-times", action="store_true",
                    help="print the compile time per kernel and signature (fresh process, "
                         "empty cache, via simans_fast._warmup)")
    ap.add_argument("--compile-groups", nargs="+", default=["sampling", "strategies", "topk"],
                    help="warm-up groups timed by --compile-times")
    ap.add_argument("--compile-dtypes", nargs="+", default=["float32"],
                    help="score dtypes warmed by --compile-times")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory check")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the slow alternatives (paper loop, numpy, torch)")
    args = ap.parse_args(argv)
    n_q, k, n = args.n_queries, args.k, args.n
    sub = min(args.subset, n_q)

    import numba

    print(f"n_queries={n_q:,} k={k} n={n}; numba threads={numba.get_num_threads()}, "
          f"cpus={os.cpu_count()}")
    ids, scores, pos = make_data(n_q, k)
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            torch.set_num_threads(numba.get_num_threads())
        except ImportError:
            torch = None

    @numba.njit(parallel=True)
    def numba_sum(x):
        acc = 0.0
        for i in numba.prange(x.shape[0]):
            r = 0.0
            for j in range(x.shape[1]):
                r += x[i, j]
            acc += r
        return acc

    results = {"n_queries": n_q, "k": k, "n": n, "rows": []}
    floor_np = timeit(lambda: np.sum(scores, dtype=np.float64), args.repeat)
    floor_nb = timeit(lambda: numba_sum(scores), args.repeat)
    scale = n_q / sub
    for a in args.a:
        rows = []
        if not args.no_baselines:
            _baselines(rows, scores, pos, n, a, sub, scale, torch)
        t_single = timeit(lambda: sf.simans_negatives(ids, scores, pos, n, a=a), args.repeat)
        rows.append(("simans_fast single shot (simans_negatives)", t_single, ""))
        t_build = timeit(lambda: sf.SimANSSampler(ids, scores, pos, n=n, a=a), 1)
        smp = sf.SimANSSampler(ids, scores, pos, n=n, a=a)
        rows.append(("simans_fast build tables (SimANSSampler)", t_build, "once"))
        t_redraw = timeit(lambda: smp.sample(epoch=1), args.repeat)
        rows.append(("simans_fast sampler.sample(epoch=1) (ids)", t_redraw, ""))
        t_cols = timeit(lambda: smp.sample_columns(epoch=1), args.repeat)
        rows.append(("simans_fast sampler.sample_columns(epoch=1)", t_cols, "columns only"))
        rows.append(("floor: np.sum over scores (1 thread)", floor_np, ""))
        rows.append(("floor: numba parallel sum over scores", floor_nb, ""))
        print(f"\na = {a}")
        print(f"{'method':48s} {'time (s)':>10s} {'per query':>11s} {'vs single shot':>15s} "
              f"{'vs floor':>9s}")
        for name, secs, note in rows:
            print(f"{name:48s} {secs:10.3f} {secs / n_q * 1e6:9.2f}us {secs / t_single:14.2f}x"
                  f" {secs / floor_nb:8.1f}x  {note}")
        results["rows"].append({"a": a, "methods": [
            {"method": m, "seconds": s, "note": note} for m, s, note in rows]})
        del smp

    if not args.no_first_call:
        lat = first_call_latency()
        print("\nfirst use in a fresh process (top-k, single shot, sampler, draw, a strategy):")
        for key in lat[0]:
            print(f"  {key:40s} cold {lat[0][key]:7.2f} s   warm {lat[1][key]:6.2f} s")
        results["first_call"] = lat
    if args.compile_times:
        cold, warm = compile_times(args.compile_groups, args.compile_dtypes)
        print_compile_times(cold, warm)
        results["compile_times"] = {"cold": cold, "warm": warm}
    if args.no_memory:
        if args.json:
            _write_json(args.json, results)
        return
    mem = memory_check(n_q, k, n)
    extra = mem["peak_rss"] - mem["rss_before_call"]
    print(f"single shot: peak RSS during the call {mem['peak_rss'] / 2**30:.2f} GiB (whole "
          f"process: interpreter, numba, inputs) for inputs + outputs of "
          f"{mem['inputs_outputs'] / 2**30:.2f} GiB: ratio "
          f"{mem['peak_rss'] / mem['inputs_outputs']:.2f}; the call added {extra / 2**20:.0f} MiB "
          f"above the RSS before it (the output is {n_q * n * 8 / 2**20:.0f} MiB)")
    results["memory"] = mem
    if args.json:
        _write_json(args.json, results)


def _write_json(path, results):
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
