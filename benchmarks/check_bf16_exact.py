"""Is ``sf.topk(prefilter="bfloat16")`` the exact top k at scale? Both search paths against a
float64 brute force on clustered unit rows (the shape of compare_st.py's 200k size), and their
times, in one run.

    python benchmarks/check_bf16_exact.py [--docs 200000] [--queries 5000] [--k 100]
                                          [--data clustered|uniform]

``--data uniform``: unit rows drawn uniformly on the sphere, queries near a planted positive:
the scores of the top few hundred documents are packed within a few hundredths, the hard case
for the certificate (near ties at the k-th place).
"""

import argparse
import time

import numpy as np

import simans_fast as sf


def uniform_data(n_d, n_q, dim, seed=0):
    """Unit rows uniform on the sphere; each query is a planted positive plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_d, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pos = rng.choice(n_d, size=n_q, replace=False)
    q = x[pos] + np.float32(0.08) * rng.standard_normal((n_q, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32), x, pos


def data(n_d, n_q, dim, seed=0):
    """compare_st.py's synthetic corpus: 1000 centres + noise, unit rows; queries near one
    planted positive each (excluded from the search)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    x = centres[rng.integers(0, 1000, n_d)]
    x += np.float32(0.7) * rng.standard_normal((n_d, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pos = rng.choice(n_d, size=n_q, replace=False)
    q = x[pos] + np.float32(0.04) * rng.standard_normal((n_q, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32), x.astype(np.float32), pos


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    args = ap.parse_args()
    make = data if args.data == "clustered" else uniform_data
    q, c, pos = make(args.docs, args.queries, args.dim)
    k = args.k
    excl = [[p] for p in pos]
    sf.topk(q[:64], c[:4096], k, prefilter="bfloat16")  # compile first
    sf.topk(q[:64], c[:4096], k)
    res = {}
    for name, pre in (("bfloat16 first pass", "bfloat16"), ("float32", None)):
        t = time.perf_counter()
        res[name] = sf.topk(q, c, k, exclude=excl, prefilter=pre)
        print(f"{name}: {time.perf_counter() - t:.2f} s")
    c64 = c.astype(np.float64)
    wrong = {name: 0 for name in res}
    for lo in range(0, q.shape[0], 250):
        s = q[lo:lo + 250].astype(np.float64) @ c64.T
        s[np.arange(s.shape[0]), pos[lo:lo + 250]] = -np.inf
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
        for i in range(s.shape[0]):
            want = set(np.flatnonzero(s[i] >= kth[i]).tolist())
            for name, r in res.items():
                wrong[name] += set(r.ids[lo + i].tolist()) != want
    for name in res:
        print(f"{name}: {wrong[name]} of {q.shape[0]} queries differ from the float64 top {k}")


if __name__ == "__main__":
    main()
