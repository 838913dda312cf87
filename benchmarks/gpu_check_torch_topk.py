"""Device check of ``backend="torch"`` (simans_fast.torch.topk.topk_torch) on CUDA.

Runs the torch backend on the GPU against the numba backend (``sf.topk``) on the CPU on a
modest problem and prints, per case, the agreement and the times:

* integer-valued embeddings (every score exact, many ties): ids and scores must be identical
  bit for bit -- this is what checks the tie handling against CUDA's ``torch.topk``;
* random float data (ip / cosine / l2, exclusions, a float16 corpus, bfloat16): ids must agree
  wherever the scores are more than 1e-4 apart (near-ties may swap with the BLAS), scores to
  1e-4;
* block-size independence on the GPU (bit for bit), ``return_tensors``, numpy vs device input;
* throughput on a larger float16 corpus already on the GPU (times and peak memory).

Exit status 0 when every check passes, 1 when one fails, 0 with a message when there is no
CUDA device (nothing to check)::

    python benchmarks/gpu_check_torch_topk.py            # about a minute on an H100-class GPU
    python benchmarks/gpu_check_torch_topk.py --quick    # smaller shapes
    python benchmarks/gpu_check_torch_topk.py --device cpu --tiny   # dry run of this script
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _untied(ref_scores, tol):
    """Positions whose reference score is more than ``tol`` from both neighbours."""
    s = ref_scores.astype(np.float64)
    gap = np.abs(np.diff(s, axis=1))
    gap = np.where(np.isfinite(gap), gap, np.inf)
    left = np.concatenate([np.full((s.shape[0], 1), np.inf), gap], axis=1)
    right = np.concatenate([gap, np.full((s.shape[0], 1), np.inf)], axis=1)
    return (left > tol) & (right > tol)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a dry run)")
    ap.add_argument("--device", default="cuda", help="default cuda; cpu for a dry run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("gpu_check_torch_topk: torch is not installed; nothing to check")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check_torch_topk: no CUDA device (torch {torch.__version__}, "
              f"cuda={torch.version.cuda}); nothing to check")
        return 0

    import simans_fast as sf
    from simans_fast.torch import topk as tt
    from simans_fast.torch.topk import topk_torch

    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if gpu else args.device
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {name}; "
          f"tiles {tt.tile_shape(dev)}")
    sync = torch.cuda.synchronize if gpu else (lambda *a: None)
    for dt in (torch.float16, torch.bfloat16):
        print(f"  {dt} product with float32 output: "
              f"{tt._reduced_mm_supported(dt, dev, torch)}")
    failures = []

    def check(name, ok, detail=""):
        print(f"  [{'ok' if ok else 'FAIL'}] {name} {detail}")
        if not ok:
            failures.append(name)

    def timed_gpu(fn, repeat=3):
        fn()  # warm-up (kernels, allocator)
        sync()
        best = np.inf
        for _ in range(repeat):
            t = time.perf_counter()
            out = fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return out, best

    def timed_cpu(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    rng = np.random.default_rng(args.seed)
    n_q, n_d, d, k = (500, 50_000, 128, 50) if args.quick else (2000, 200_000, 384, 100)
    if args.tiny:
        n_q, n_d, d, k = 60, 6000, 32, 20

    # --- integer-valued data: exact scores, many ties -> identical results
    print(f"\ninteger data {n_q} x {n_d // 4} x 16, k={k}: identical ids and scores")
    qi = rng.integers(-3, 4, (n_q, 16)).astype(np.float32)
    ci = rng.integers(-2, 3, (n_d // 4, 16)).astype(np.float32)
    ex = [rng.choice(ci.shape[0], 5, replace=False) for _ in range(n_q)]
    for metric in ("ip", "l2"):
        want = sf.topk(qi, ci, k, exclude=ex, metric=metric)
        for name, q_in, c_in in (("float32", qi, ci),
                                 ("float16", qi.astype(np.float16), ci.astype(np.float16)),
                                 ("bfloat16", torch.from_numpy(qi).to(dev, torch.bfloat16),
                                  torch.from_numpy(ci).to(dev, torch.bfloat16))):
            got, t_gpu = timed_gpu(lambda: topk_torch(q_in, c_in, k, exclude=ex, metric=metric,
                                                      device=dev))
            same = np.array_equal(got.ids, want.ids) and np.array_equal(got.scores,
                                                                         want.scores)
            check(f"integer {metric} {name}", same,
                  f"(torch {t_gpu:.3f} s; {np.mean(got.ids == want.ids):.6f} of ids equal)")

    # --- random float data
    print(f"\nrandom data {n_q} x {n_d} x {d}, k={k}, 5 exclusions per query")
    q = rng.standard_normal((n_q, d)).astype(np.float32)
    c = rng.standard_normal((n_d, d)).astype(np.float32)
    ex = [rng.choice(n_d, 5, replace=False) for _ in range(n_q)]
    qt, ct = torch.from_numpy(q).to(dev), torch.from_numpy(c).to(dev)
    c16 = c.astype(np.float16)
    c16t = torch.from_numpy(c16).to(dev)
    q16 = q.astype(np.float16)
    cases = [("ip float32 (device tensors)", "ip", qt, ct, q, c),
             ("ip float32 (numpy in)", "ip", q, c, q, c),
             ("cosine float32", "cosine", qt, ct, q, c),
             ("l2 float32", "l2", qt, ct, q, c),
             ("ip float16 corpus", "ip", qt, c16t, q, c16),
             ("ip float16 both", "ip", qt.half(), c16t, q16, c16),
             ("cosine float16 both", "cosine", qt.half(), c16t, q16, c16)]
    for name, metric, q_in, c_in, q_ref, c_ref in cases:
        want, t_cpu = timed_cpu(lambda: sf.topk(q_ref, c_ref, k, exclude=ex, metric=metric))
        got, t_gpu = timed_gpu(lambda: topk_torch(q_in, c_in, k, exclude=ex, metric=metric,
                                                  device=dev))
        mask = _untied(want.scores, 1e-4)
        agree = np.mean(got.ids == want.ids)
        ok = np.array_equal(got.ids[mask], want.ids[mask]) and \
            np.allclose(got.scores, want.scores, rtol=1e-4, atol=1e-4)
        check(name, ok, f"ids equal {agree:.5f} (untied {mask.mean():.3f}), max |ds| "
              f"{np.abs(got.scores - want.scores).max():.2e}; numba cpu {t_cpu:.3f} s, "
              f"torch {dev.type} {t_gpu:.3f} s ({t_cpu / t_gpu:.1f}x)")

    # --- blocks do not change the bits; return_tensors
    base = topk_torch(qt, ct, k, exclude=ex, device=dev)
    for qb, cb in ((n_q // 2, n_d // 10), (n_q - 1, n_d // 3), (1, 16384)):
        if qb == 1:
            qb_q, ex_q = qt[:50], ex[:50]
        else:
            qb_q, ex_q = qt, ex
        got = topk_torch(qb_q, ct, k, exclude=ex_q, device=dev, query_block=qb,
                         corpus_block=cb)
        n = qb_q.shape[0]
        check(f"blocks {qb} x {cb} bit-identical", np.array_equal(got.ids, base.ids[:n])
              and np.array_equal(got.scores, base.scores[:n]))
    got = topk_torch(qt, ct, k, exclude=ex, device=dev, return_tensors=True)
    check(f"return_tensors on {dev.type}", got.ids.device.type == dev.type
          and np.array_equal(got.ids.cpu().numpy(), base.ids))

    # --- throughput: a float16 corpus already on the GPU
    n_big = 1_000_000 if args.quick else 4_000_000
    n_qb = 2000 if args.quick else 10_000
    if args.tiny:
        n_big, n_qb = 20_000, 300
    print(f"\nthroughput: {n_qb} queries x {n_big} float16 docs x {d}, k=200 (on {dev.type})")
    g = torch.Generator(device=dev).manual_seed(1)
    big = torch.randn((n_big, d), device=dev, generator=g, dtype=torch.float16)
    qq = torch.randn((n_qb, d), device=dev, generator=g, dtype=torch.float16)
    for name, q_in, dt in (("float16 product", qq, None), ("float32 product", qq, "float32")):
        if gpu:
            torch.cuda.reset_peak_memory_stats(dev)
            base_mem = torch.cuda.memory_allocated(dev)
        _, t = timed_gpu(lambda: topk_torch(q_in, big, 200, dtype=dt, return_tensors=True),
                         repeat=2)
        peak = (torch.cuda.max_memory_allocated(dev) - base_mem) / 2**20 if gpu else np.nan
        flops = 2.0 * n_qb * n_big * d
        print(f"  {name}: {t:.3f} s ({flops / t / 1e12:.1f} TFLOP/s effective), peak extra "
              f"memory {peak:.0f} MiB")
    one = topk_torch(qq[:200], big, 200, return_tensors=True)
    ref = torch.topk(torch.mm(qq[:200].float(), big.float().T), 200, dim=1).values
    check("throughput case: scores equal a dense float32 reference to 1e-3",
          bool(torch.allclose(one.scores, ref, rtol=1e-3, atol=1e-3)))

    print("\nall checks passed" if not failures else f"\nFAILED: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
