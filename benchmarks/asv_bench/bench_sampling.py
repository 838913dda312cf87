"""asv suite over the same kernels as benchmarks/bench_core.py.

    cd benchmarks && asv run --python=same --quick     # or: asv run --python=same

``setup`` builds the data and calls each kernel once, so compilation stays out of the timings.
"""

import numpy as np

import simans_fast as sf

N_Q, K, N = 100_000, 200, 15


def _data(n_q=N_Q, k=K):
    rng = np.random.default_rng(0)
    s = -np.sort(-rng.standard_normal((n_q, k), dtype=np.float32), axis=1)
    ids = np.empty((n_q, k), np.int64)
    ids[:] = np.arange(k)
    pos = rng.normal(1.5, 0.5, n_q)
    return ids, s, pos


class SingleShot:
    params = [0.5, 10.0, 1000.0]
    param_names = ["a"]

    def setup(self, a):
        self.ids, self.s, self.pos = _data()
        sf.simans_negatives(self.ids[:100], self.s[:100], self.pos[:100], N, a=a)

    def time_simans_negatives(self, a):
        sf.simans_negatives(self.ids, self.s, self.pos, N, a=a)

    def peakmem_simans_negatives(self, a):
        sf.simans_negatives(self.ids, self.s, self.pos, N, a=a)


class Tables:
    params = [0.5, 1000.0]
    param_names = ["a"]

    def setup(self, a):
        self.ids, self.s, self.pos = _data()
        self.lw = sf.ambiguity_log_weights(self.s, self.pos, a=a)
        self.t = sf.build_alias(self.lw)
        sf.sample(self.t, N)

    def time_log_weights(self, a):
        sf.ambiguity_log_weights(self.s, self.pos, a=a)

    def time_build_alias(self, a):
        sf.build_alias(self.lw)

    def time_redraw(self, a):
        sf.sample(self.t, N, epoch=1)
