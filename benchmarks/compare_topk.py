"""Exact top-k: simans_fast against faiss, NumPy, torch and the GEMM-only floor.

Corpus 100,000 x 768 float32 (clustered Gaussian, seeded), 5,000 queries, k in {200, 1000}.
Every method runs in its own subprocess (so its peak RSS is its own: VmHWM of the child) and warms
up on a slice of the queries before it is timed. The methods are run in rounds (each round runs
every method once per k, in turn) and the median over ``--repeat`` rounds is reported, so that
load changes on a shared machine hit all methods alike. All methods
get the same number of threads (``--threads``, default 2): Numba and OpenBLAS for simans_fast,
faiss' OpenMP pool, torch's intra-op pool, OpenBLAS for NumPy. Results of every method are
compared with simans_fast's ("agree": fraction of equal ids; random float data has near-ties
whose order legitimately depends on float rounding, so values slightly below 1 are expected).
The GEMM floor is simans_fast's own loop with the selection switched off: the same fixed-shape
BLAS calls (256 queries x 1024 corpus rows x dim, zero-padded, single-threaded), so
"simans_fast / floor" is the cost of selection on top of exactly the arithmetic it needs.

Run::

    python benchmarks/compare_topk.py            # full table (several minutes on 2 cores)
    python benchmarks/compare_topk.py --quick    # small shapes, a smoke test

Times on a shared machine are noisy; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

METHODS = ["simans_fast", "faiss_flat_ip", "numpy_argpartition", "torch_topk", "gemm_floor",
           "gemm_floor_numpy"]
LABELS = {
    "simans_fast": "simans_fast exact (numba)",
    "faiss_flat_ip": "faiss IndexFlatIP",
    "numpy_argpartition": "numpy GEMM + argpartition + sort",
    "torch_topk": "torch matmul + topk",
    "gemm_floor": "GEMM only, simans_fast's BLAS calls",
    "gemm_floor_numpy": "GEMM only, numpy 2048 x 4096 blocks",
}


# ----------------------------------------------------------------------------------- child


def _peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # pragma: no cover


def _cur_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")  # pragma: no cover


def _method(name, threads, qb, cb):
    """A function (queries, corpus, k) -> ids for the method ``name``."""
    qb = qb or None
    cb = cb or None
    if name == "simans_fast":
        sys.path.insert(0, ROOT)
        import simans_fast as sf

        def run(q, c, k):
            return sf.topk(q, c, k, backend="numba", query_block=qb, corpus_block=cb).ids

        return run
    if name == "faiss_flat_ip":
        import faiss

        faiss.omp_set_num_threads(threads)

        def run(q, c, k):
            index = faiss.IndexFlatIP(c.shape[1])
            index.add(c)
            _, ids = index.search(q, k)
            return ids

        return run
    if name == "numpy_argpartition":

        def run(q, c, k, block=1024):
            out = np.empty((q.shape[0], k), dtype=np.int64)
            for s in range(0, q.shape[0], block):
                sc = q[s : s + block] @ c.T
                part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
                ps = np.take_along_axis(sc, part, axis=1)
                order = np.argsort(-ps, axis=1, kind="stable")
                out[s : s + block] = np.take_along_axis(part, order, axis=1)
            return out

        return run
    if name == "torch_topk":
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)

        def run(q, c, k, block=1024):
            ct = torch.from_numpy(c)
            out = np.empty((q.shape[0], k), dtype=np.int64)
            for s in range(0, q.shape[0], block):
                sc = torch.from_numpy(q[s : s + block]) @ ct.T
                out[s : s + block] = torch.topk(sc, k, dim=1).indices.numpy()
            return out

        return run
    if name == "gemm_floor":
        # simans_fast's own loop with the selection switched off: the same fixed-shape,
        # zero-padded, single-threaded BLAS calls (256 queries x 1024 docs x d), blocks, tiles
        # and threads; measured for each k, since the query blocks (candidate buffers) depend
        # on k
        sys.path.insert(0, ROOT)
        from simans_fast import candidates

        def run(q, c, k):
            candidates._topk_numba(q, c, k, "ip", None, False, qb, cb, select=False)
            return None

        return run
    if name == "gemm_floor_numpy":
        qb, cb = 2048, 4096

        def run(q, c, k):
            buf = np.empty(qb * cb, dtype=np.float32)
            for s in range(0, q.shape[0], qb):
                qq = q[s : s + qb]
                for t in range(0, c.shape[0], cb):
                    cc = c[t : t + cb]
                    np.matmul(qq, cc.T, out=buf[: qq.shape[0] * cc.shape[0]].reshape(
                        qq.shape[0], cc.shape[0]))
            return None

        return run
    raise ValueError(name)


def child(args):
    q = np.load(os.path.join(args.data, "queries.npy"))
    c = np.load(os.path.join(args.data, "corpus.npy"))
    rss_data = _cur_rss_mb()
    run = _method(args.child, args.threads, args.query_block, args.corpus_block)
    out = {"method": args.child, "rss_data_mb": rss_data, "times": {}, "ids": {}}
    for k in args.ks:
        run(q[:256], c, k)  # warm-up: compilation, thread pools, page faults of buffers
    for k in args.ks:
        times = []
        ids = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ids = run(q, c, k)
            times.append(time.perf_counter() - t0)
        out["times"][str(k)] = times
        if ids is not None:
            path = os.path.join(args.data, f"ids_{args.child}_{k}.npy")
            np.save(path, np.asarray(ids, dtype=np.int64))
            out["ids"][str(k)] = path
    out["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------- parent


def make_data(path, n_d, n_q, dim, seed=0, n_clusters=1000):
    """Clustered Gaussian embeddings: documents and queries around shared centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    corpus = np.empty((n_d, dim), dtype=np.float32)
    step = 10_000
    for s in range(0, n_d, step):
        e = min(n_d, s + step)
        corpus[s:e] = centres[rng.integers(0, n_clusters, e - s)]
        corpus[s:e] += 0.7 * rng.standard_normal((e - s, dim), dtype=np.float32)
    queries = centres[rng.integers(0, n_clusters, n_q)]
    queries += 0.7 * rng.standard_normal((n_q, dim), dtype=np.float32)
    np.save(os.path.join(path, "corpus.npy"), corpus)
    np.save(os.path.join(path, "queries.npy"), queries)


def run_child(method, args, data, rnd=0):
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    env.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    env.setdefault("MKL_NUM_THREADS", str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--data", data,
           "--repeat", "1", "--threads", str(args.threads),
           "--query-block", str(args.query_block), "--corpus-block", str(args.corpus_block),
           "--ks", *map(str, args.ks[:1] if method == "gemm_floor_numpy" else args.ks)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"  {method} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
        return None
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    if method == "gemm_floor_numpy":  # k plays no part: measured once, shown for every k
        t = res["times"][str(args.ks[0])]
        res["times"] = {str(k): t for k in args.ks}
    print(f"  round {rnd + 1}: {method} done in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-docs", type=int, default=100_000)
    p.add_argument("--n-queries", type=int, default=5_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--ks", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--query-block", type=int, default=0,
                   help="simans_fast query block (default: simans_fast's own choice)")
    p.add_argument("--corpus-block", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="20,000 x 128, 1,000 queries, k=200")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    if args.quick:
        args.n_docs, args.n_queries, args.dim, args.ks = 20_000, 1_000, 128, [200]
    methods = ["simans_fast"] + [m for m in args.methods if m != "simans_fast"]
    with tempfile.TemporaryDirectory(prefix="compare_topk_") as data:
        print(f"data: corpus {args.n_docs:,} x {args.dim} float32, {args.n_queries:,} queries, "
              f"k in {args.ks}; {args.threads} threads; median of {args.repeat}",
              file=sys.stderr, flush=True)
        make_data(data, args.n_docs, args.n_queries, args.dim)
        results = {m: None for m in methods}
        failed = set()
        for rnd in range(args.repeat):
            for m in methods:
                if m in failed:
                    continue
                res = run_child(m, args, data, rnd)
                if res is None:
                    failed.add(m)
                    results[m] = None
                    continue
                if results[m] is None:
                    results[m] = res
                else:
                    for kk, ts in res["times"].items():
                        results[m]["times"][kk] += ts
                    results[m]["peak_rss_mb"] = max(results[m]["peak_rss_mb"],
                                                    res["peak_rss_mb"])
        ref = results.get("simans_fast")
        rows = []
        for m in methods:
            res = results[m]
            if res is None:
                rows.append((LABELS[m], ["failed"] * (2 * len(args.ks) + 1), "", ""))
                continue
            cells = []
            agree = []
            for k in args.ks:
                t = float(np.median(res["times"][str(k)]))
                cells.append(f"{t:.2f} s")
                if ref is not None:
                    t_ref = float(np.median(ref["times"][str(k)]))
                    cells.append(f"{t / t_ref:.2f}x")
                else:
                    cells.append("")
                if ref is not None and str(k) in res["ids"] and m != "simans_fast":
                    a = np.load(res["ids"][str(k)])
                    b = np.load(ref["ids"][str(k)])
                    agree.append(f"{np.mean(a == b):.4f}")
            rows.append((LABELS[m], cells, f"{res['peak_rss_mb'] / 1024:.2f} GB",
                         "/".join(agree) if agree else ("-" if m != "simans_fast" else "ref")))
        head = ["method"]
        for k in args.ks:
            head += [f"k={k}", "vs simans_fast"]
        head += ["peak RSS", "agree ids"]
        table = [head] + [[r[0], *r[1], r[2], r[3]] for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        lines = []
        for i, row in enumerate(table):
            lines.append("| " + " | ".join(str(x).ljust(w) if j == 0 else str(x).rjust(w)
                                           for j, (x, w) in enumerate(zip(row, widths))) + " |")
            if i == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        print(f"\nExact top-k, corpus {args.n_docs:,} x {args.dim} float32, {args.n_queries:,} "
              f"queries, {args.threads} threads, median of {args.repeat} "
              f"(ratios: time / simans_fast time)")
        print("\n".join(lines))
        for fl in ("gemm_floor", "gemm_floor_numpy"):
            if ref is None or not results.get(fl):
                continue
            for k in args.ks:
                t_ref = float(np.median(ref["times"][str(k)]))
                t_f = float(np.median(results[fl]["times"][str(k)]))
                gflops = 2.0 * args.n_queries * args.n_docs * args.dim / t_f / 1e9
                print(f"k={k}: simans_fast / ({LABELS[fl]}) = {t_ref / t_f:.3f} "
                      f"(floor {t_f:.2f} s = {gflops:.0f} GFLOP/s)")
        if ref is not None:
            print(f"input data resident in every child: {ref['rss_data_mb'] / 1024:.2f} GB")


if __name__ == "__main__":
    main()
