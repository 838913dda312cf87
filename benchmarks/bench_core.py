"""pytest-benchmark suite for the core kernels (compilation kept out of the timings).

    python -m pytest benchmarks/bench_core.py --benchmark-only

Sizes are moderate (100k queries x k = 200) so the suite runs in about a minute; the full
1M-query comparison against the alternatives is benchmarks/compare_sampling.py.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_sampling import make_data  # noqa: E402

import simans_fast as sf  # noqa: E402

N_Q, K, N = 100_000, 200, 15


@pytest.fixture(scope="module")
def data():
    ids, s, pos = make_data(N_Q, K)
    # warm up every kernel once (compilation / cache load out of the timings)
    lw = sf.ambiguity_log_weights(s[:100], pos[:100])
    sf.sample(sf.build_alias(lw), N)
    sf.simans_negatives(ids[:100], s[:100], pos[:100], N)
    smp = sf.SimANSSampler(ids[:100], s[:100], pos[:100], n=N)
    smp.sample(epoch=0)
    smp.sample(rows=np.arange(5), epoch=0, parallel=False)
    return ids, s, pos


@pytest.mark.parametrize("a", [0.5, 10.0, 1000.0])
def test_single_shot(benchmark, data, a):
    ids, s, pos = data
    benchmark(sf.simans_negatives, ids, s, pos, N, a=a)


@pytest.mark.parametrize("a", [0.5, 1000.0])
def test_log_weights(benchmark, data, a):
    ids, s, pos = data
    benchmark(sf.ambiguity_log_weights, s, pos, a=a)


@pytest.mark.parametrize("a", [0.5, 1000.0])
def test_build_alias(benchmark, data, a):
    ids, s, pos = data
    lw = sf.ambiguity_log_weights(s, pos, a=a)
    benchmark(sf.build_alias, lw)


@pytest.mark.parametrize("a", [0.5, 10.0, 1000.0])
def test_redraw_from_tables(benchmark, data, a):
    ids, s, pos = data
    t = sf.build_alias(sf.ambiguity_log_weights(s, pos, a=a))
    benchmark(sf.sample, t, N, epoch=1)


def test_redraw_with_replacement(benchmark, data):
    ids, s, pos = data
    t = sf.build_alias(sf.ambiguity_log_weights(s, pos, a=0.5))
    benchmark(sf.sample, t, N, replace=True, epoch=1)


@pytest.mark.parametrize("a", [0.5, 1000.0])
def test_sampler_build(benchmark, data, a):
    """``SimANSSampler``: log-weights and alias tables in one pass."""
    ids, s, pos = data
    benchmark(sf.SimANSSampler, ids, s, pos, n=N, a=a)


@pytest.mark.parametrize("a", [0.5, 1000.0])
def test_sampler_sample_epoch(benchmark, data, a):
    """What a training loop calls each epoch: ``sampler.sample(epoch=...)`` (document ids)."""
    ids, s, pos = data
    smp = sf.SimANSSampler(ids, s, pos, n=N, a=a)
    benchmark(lambda: smp.sample(epoch=1))


def test_sampler_sample_batch(benchmark, data):
    """One DataLoader batch: 64 query rows, serial (as inside a worker)."""
    ids, s, pos = data
    smp = sf.SimANSSampler(ids, s, pos, n=N)
    rows = np.random.default_rng(0).permutation(N_Q)[:64]
    benchmark(lambda: smp.sample(rows=rows, epoch=1, parallel=False))
