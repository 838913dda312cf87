"""SimANS sampling: simans_fast against the alternatives, measured in one run.

    python benchmarks/compare_sampling.py [--n-queries 1000000] [--k 200] [--n 15]

For n_q x k candidate scores and n negatives without replacement, for a in {0.5, 10, 1000}:

* the paper code's loop (math.exp per candidate, random.choices, set union; re-implemented),
  timed on a subset and extrapolated;
* numpy per-row ``Generator.choice(replace=False, p=...)``, subset, extrapolated;
* ``torch.multinomial(replacement=False)`` on the whole weight matrix (if torch is installed);
* numpy exponential keys (log w - log E, top n by argpartition), in chunks;
* simans_fast single shot (``simans_negatives``: weights + per-row CDF + draws, fused);
* simans_fast alias-table build (``SimANSSampler``) and re-draw of one epoch from cached tables;
* the floor: one pass over the score matrix (numpy sum, 1 thread; numba sum, all threads).

Also: first-call compile time of every kernel, cold (empty numba cache) and warm (from cache),
in fresh subprocesses, and peak memory of the single-shot path against its inputs + outputs.
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
    s = rng.normal(size=(64, 32)).astype(np.float32)
    ids = np.arange(64 * 32).reshape(64, 32)
    pos = rng.normal(size=64)
    t1 = time.perf_counter()
    lw = sf.ambiguity_log_weights(s, pos)
    t = sf.build_alias(lw)
    sf.sample(t, 5)
    sf.simans_negatives(ids, s, pos, 5)
    smp = sf.SimANSSampler(ids, s, pos, n=5)
    smp.sample(epoch=1)
    t2 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "first_calls": t2 - t1}))
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
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = []
        for _ in range(2):  # cold, then warm from the cache
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return res


def memory_check(n_q, k, n):
    code = MEMORY.format(here=HERE, n_q=n_q, k=k, n=n)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
        t_paper = None
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
        t_single = timeit(lambda: sf.simans_negatives(ids, scores, pos, n, a=a), args.repeat)
        rows.append(("simans_fast single shot (simans_negatives)", t_single, ""))
        t_build = timeit(lambda: sf.SimANSSampler(ids, scores, pos, n=n, a=a), 1)
        smp = sf.SimANSSampler(ids, scores, pos, n=n, a=a)
        rows.append(("simans_fast build tables (SimANSSampler)", t_build, "once"))
        t_redraw = timeit(lambda: smp.sample_columns(epoch=1), args.repeat)
        rows.append(("simans_fast re-draw one epoch from tables", t_redraw, ""))
        rows.append(("floor: np.sum over scores (1 thread)", floor_np, ""))
        rows.append(("floor: numba parallel sum over scores", floor_nb, ""))
        print(f"\na = {a}")
        print(f"{'method':48s} {'time (s)':>10s} {'per query':>11s} {'vs single shot':>15s}")
        for name, secs, note in rows:
            print(f"{name:48s} {secs:10.3f} {secs / n_q * 1e6:9.2f}us {secs / t_single:14.1f}x"
                  f"  {note}")
        results["rows"].append({"a": a, "methods": [
            {"method": m, "seconds": s, "note": note} for m, s, note in rows]})
        del smp

    lat = first_call_latency()
    print(f"\nfirst call of every kernel (fresh process): cold cache "
          f"{lat[0]['first_calls']:.2f} s (+ import {lat[0]['import']:.2f} s), warm cache "
          f"{lat[1]['first_calls']:.2f} s (+ import {lat[1]['import']:.2f} s)")
    results["first_call"] = lat
    mem = memory_check(n_q, k, n)
    extra = mem["peak_rss"] - mem["rss_before_call"]
    print(f"single shot: peak RSS during the call {mem['peak_rss'] / 2**30:.2f} GiB (whole "
          f"process: interpreter, numba, inputs) for inputs + outputs of "
          f"{mem['inputs_outputs'] / 2**30:.2f} GiB: ratio "
          f"{mem['peak_rss'] / mem['inputs_outputs']:.2f}; the call added {extra / 2**20:.0f} MiB "
          f"above the RSS before it (the output is {n_q * n * 8 / 2**20:.0f} MiB)")
    results["memory"] = mem
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
