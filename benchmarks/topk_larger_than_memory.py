"""Exact top-k over a float16 corpus file opened with ``np.load(mmap_mode="r")``.

Shows that peak memory is set by the block sizes, not by the corpus: float16 corpus files of
growing size (default 0.5, 1 and 2 GB, 768-d) are written in chunks, then each is mined in a
fresh subprocess with ``simans_fast.topk(queries, np.load(path, mmap_mode="r"), k)``; the
child's peak RSS (VmHWM, which counts mapped file pages too) and time are printed per size. The
files are deleted afterwards.

Optionally the child runs inside a memory cgroup capped below the largest file
(``--cgroup-limit-mb``); this needs a writable cgroup (v2 or v1 memory controller) under the
current process' own cgroup and is skipped with a message otherwise.

Finally the MS MARCO passage shape (8,841,823 x 768, 502,939 queries, k = 200) is extrapolated
from the measured throughput (GFLOP/s): time, I/O and memory.

Run::

    python benchmarks/topk_larger_than_memory.py                 # 0.5, 1, 2 GB files
    python benchmarks/topk_larger_than_memory.py --sizes-gb 0.1 0.2 --n-queries 128  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MSMARCO_DOCS = 8_841_823
MSMARCO_QUERIES = 502_939
MSMARCO_K = 200


def write_corpus(path, n_docs, dim, seed=0, chunk=65_536):
    """Write an (n_docs, dim) float16 .npy in chunks (clustered Gaussian rows), O(chunk) memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                "shape": (n_docs, dim)})
        for s in range(0, n_docs, chunk):
            e = min(n_docs, s + chunk)
            x = centres[rng.integers(0, 1000, e - s)]
            x += 0.7 * rng.standard_normal((e - s, dim), dtype=np.float32)
            f.write(x.astype(np.float16).tobytes())
    os.replace(tmp, path)


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(args):
    sys.path.insert(0, ROOT)
    import simans_fast as sf

    corpus = np.load(args.child, mmap_mode="r")
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((args.n_queries, corpus.shape[1]), dtype=np.float32)
    sf.topk(queries[:8], corpus[:5000], args.k)  # compile / warm up outside the timing
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    cands = sf.topk(queries, corpus, args.k, query_block=args.query_block,
                    corpus_block=args.corpus_block, progress=args.progress)
    dt = time.perf_counter() - t0
    out = {
        "n_docs": int(corpus.shape[0]),
        "seconds": dt,
        "peak_rss_mb": _status("VmHWM"),
        "rss_before_mb": rss0,
        "rss_after_mb": _status("VmRSS"),
        "checksum": int(cands.ids[:, 0].sum()),
        "backend": cands.backend,
    }
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------- cgroups


def _own_cgroup_dir():
    """(version, directory) of a memory cgroup this process may create children in, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if hid == "0" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            d = "/sys/fs/cgroup" + path
            if os.access(d, os.W_OK):
                return 2, d
        if "memory" in ctrls.split(","):
            for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
                d = base + path
                if os.path.exists(os.path.join(d, "memory.limit_in_bytes")) and \
                        os.access(d, os.W_OK):
                    return 1, d
    return None


def make_cgroup(limit_mb):
    """Create a child memory cgroup capped at ``limit_mb``; returns (procs_file, dir) or None."""
    found = _own_cgroup_dir()
    if found is None:
        return None
    ver, base = found
    d = os.path.join(base, f"simans_topk_bench_{os.getpid()}")
    try:
        os.mkdir(d)
        if ver == 2:
            with open(os.path.join(d, "memory.max"), "w") as f:
                f.write(str(limit_mb * 2**20))
            return os.path.join(d, "cgroup.procs"), d
        with open(os.path.join(d, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit_mb * 2**20))
        return os.path.join(d, "tasks"), d
    except OSError:
        try:
            os.rmdir(d)
        except OSError:
            pass
        return None


# --------------------------------------------------------------------------------- parent


def run_child(path, args, cgroup=None):
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    env.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path,
           "--n-queries", str(args.n_queries), "--k", str(args.k)]
    if args.query_block:
        cmd += ["--query-block", str(args.query_block)]
    if args.corpus_block:
        cmd += ["--corpus-block", str(args.corpus_block)]
    if args.progress:
        cmd += ["--progress"]
    preexec = None
    if cgroup is not None:
        procs = cgroup[0]

        def preexec():  # join the capped cgroup before exec
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if args.progress else
                       subprocess.PIPE, text=True, env=env, preexec_fn=preexec)
    if r.returncode != 0:
        sys.stderr.write((r.stderr or "")[-3000:])
        return {"failed": r.returncode}
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--n-queries", type=int, default=2048)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--query-block", type=int, default=None)
    p.add_argument("--corpus-block", type=int, default=None)
    p.add_argument("--dir", default=None, help="where to write the corpus files (default: tmp)")
    p.add_argument("--cgroup-limit-mb", type=int, default=None,
                   help="also run the largest file inside a memory cgroup capped at this")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    workdir = tempfile.mkdtemp(prefix="topk_ltm_", dir=args.dir)
    rows = []
    try:
        free = shutil.disk_usage(workdir).free / 2**30
        need = max(args.sizes_gb) * 1.05
        if free < need + 5:
            sys.exit(f"not enough disk in {workdir}: {free:.1f} GB free, need {need:.1f} + 5 GB")
        for gb in args.sizes_gb:
            n_docs = int(gb * 2**30 // (args.dim * 2))
            path = os.path.join(workdir, f"corpus_{gb:g}GB.npy")
            t0 = time.perf_counter()
            write_corpus(path, n_docs, args.dim)
            tw = time.perf_counter() - t0
            print(f"wrote {path} ({n_docs:,} x {args.dim} float16, "
                  f"{os.path.getsize(path) / 2**30:.2f} GB) in {tw:.1f} s; mining ...",
                  file=sys.stderr, flush=True)
            res = run_child(path, args)
            res["gb"] = os.path.getsize(path) / 2**30
            res["label"] = f"{res['gb']:.2f} GB"
            rows.append(res)
            os.remove(path)  # keep disk use at one file at a time
        if args.cgroup_limit_mb:
            gb = max(args.sizes_gb)
            cg = make_cgroup(args.cgroup_limit_mb)
            if cg is None:
                print(f"cgroup: no writable memory cgroup here; skipped the "
                      f"{args.cgroup_limit_mb} MB capped run", file=sys.stderr)
            else:
                n_docs = int(gb * 2**30 // (args.dim * 2))
                path = os.path.join(workdir, f"corpus_{gb:g}GB.npy")
                write_corpus(path, n_docs, args.dim)
                try:
                    res = run_child(path, args, cgroup=cg)
                finally:
                    try:
                        os.rmdir(cg[1])
                    except OSError:
                        pass
                res["gb"] = os.path.getsize(path) / 2**30
                res["label"] = f"{gb:g} GB, cgroup {args.cgroup_limit_mb} MB"
                rows.append(res)
                os.remove(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nExact top-k over a memory-mapped float16 corpus ({args.dim}-d), "
          f"{args.n_queries} queries, k={args.k}, {args.threads} threads")
    print("| corpus file | docs | time | GFLOP/s | peak RSS | RSS before | result |")
    print("|---|---:|---:|---:|---:|---:|---|")
    rates = []
    for r in rows:
        if "failed" in r:
            print(f"| {r['label']} | | | | | | failed (exit {r['failed']}) |")
            continue
        fl = 2.0 * args.n_queries * r["n_docs"] * args.dim
        rate = fl / r["seconds"] / 1e9
        rates.append(rate)
        print(f"| {r['label']} | {r['n_docs']:,} | {r['seconds']:.1f} s | "
              f"{rate:.0f} | {r['peak_rss_mb']:.0f} MB | {r['rss_before_mb']:.0f} MB | ok |")
    ok = [r for r in rows if "failed" not in r]
    if len(ok) >= 2:
        growth = ok[-1]["peak_rss_mb"] - ok[0]["peak_rss_mb"]
        print(f"\npeak RSS change from {ok[0]['label']} to {ok[-1]['label']}: {growth:+.0f} MB "
              f"while the corpus grew by {(ok[-1]['gb'] - ok[0]['gb']) * 1024:.0f} MB")
    if rates:
        rate = float(np.median(rates))
        flops = 2.0 * MSMARCO_QUERIES * MSMARCO_DOCS * args.dim
        secs = flops / (rate * 1e9)
        sys.path.insert(0, ROOT)
        from simans_fast.candidates import DEFAULT_QUERY_BLOCK

        qb = args.query_block or DEFAULT_QUERY_BLOCK
        passes = -(-MSMARCO_QUERIES // qb)
        corpus_gb = MSMARCO_DOCS * args.dim * 2 / 2**30
        out_gb = MSMARCO_QUERIES * MSMARCO_K * 12 / 2**30
        print(f"\nMS MARCO passage on paper ({MSMARCO_DOCS:,} x {args.dim} float16 = "
              f"{corpus_gb:.1f} GB, {MSMARCO_QUERIES:,} queries, k={MSMARCO_K}):")
        print(f"  {flops / 1e15:.2f} PFLOP at the measured {rate:.0f} GFLOP/s -> "
              f"{secs / 3600:.1f} h on {args.threads} threads")
        print(f"  corpus streamed {passes} times (query blocks of {qb}) = "
              f"{passes * corpus_gb / 1024:.1f} TB read; from the page cache if it fits, else "
              f"at 1 GB/s from disk +{passes * corpus_gb / 3600:.1f} h (reads are not overlapped "
              f"with compute)")
        print(f"  memory: peak RSS as measured above (blocks) + the output "
              f"({out_gb:.2f} GB of ids and scores)")


if __name__ == "__main__":
    main()
