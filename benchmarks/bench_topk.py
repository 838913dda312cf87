"""pytest-benchmark suite for exact top-k and rescoring (small shapes, quick).

Run::

    pytest benchmarks/bench_topk.py --benchmark-columns=min,median,max

Not part of the test suite (``testpaths = ["tests"]``). The headline comparison at the issue's
shape is ``python benchmarks/compare_topk.py``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import simans_fast as sf  # noqa: E402

N_DOCS, N_QUERIES, DIM = 50_000, 1_000, 256


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((500, DIM), dtype=np.float32)
    corpus = centres[rng.integers(0, 500, N_DOCS)]
    corpus += 0.7 * rng.standard_normal((N_DOCS, DIM), dtype=np.float32)
    queries = centres[rng.integers(0, 500, N_QUERIES)]
    queries += 0.7 * rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
    sf.topk(queries[:16], corpus[:2000], 10)  # compile outside the timings
    return queries, corpus


def _run(benchmark, fn):
    return benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("k", [100, 1000])
def test_topk_simans_fast(benchmark, data, k):
    q, c = data
    out = _run(benchmark, lambda: sf.topk(q, c, k, backend="numba"))
    assert out.ids.shape == (N_QUERIES, k)


@pytest.mark.parametrize("k", [100, 1000])
def test_topk_faiss_flat(benchmark, data, k):
    q, c = data
    out = _run(benchmark, lambda: sf.topk(q, c, k, backend="faiss"))
    assert out.ids.shape == (N_QUERIES, k)


@pytest.mark.parametrize("k", [100, 1000])
def test_topk_numpy_argpartition(benchmark, data, k):
    q, c = data

    def run():
        out = np.empty((q.shape[0], k), dtype=np.int64)
        for s in range(0, q.shape[0], 1024):
            sc = q[s : s + 1024] @ c.T
            part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sc, part, axis=1), axis=1, kind="stable")
            out[s : s + 1024] = np.take_along_axis(part, order, axis=1)
        return out

    assert _run(benchmark, run).shape == (N_QUERIES, k)


def test_topk_float16_memmap(benchmark, data, tmp_path):
    q, c = data
    path = tmp_path / "corpus16.npy"
    np.save(path, c.astype(np.float16))
    cm = np.load(path, mmap_mode="r")
    out = _run(benchmark, lambda: sf.topk(q, cm, 100))
    assert out.ids.shape == (N_QUERIES, 100)


def test_topk_with_exclusions(benchmark, data):
    q, c = data
    rng = np.random.default_rng(1)
    excl = [rng.integers(0, N_DOCS, 3) for _ in range(N_QUERIES)]
    out = _run(benchmark, lambda: sf.topk(q, c, 100, exclude=excl))
    assert out.ids.shape == (N_QUERIES, 100)


def test_rescore(benchmark, data):
    q, c = data
    ids = np.random.default_rng(2).integers(0, N_DOCS, size=(N_QUERIES, 200))
    out = _run(benchmark, lambda: sf.rescore(q, c, ids))
    assert out.shape == ids.shape
