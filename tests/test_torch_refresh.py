"""Refresh hook: schedule, re-score and re-mine with new embeddings, refresher object."""

import numpy as np
import pytest
import torch

import simans_fast as sf
from simans_fast.torch import RefreshSchedule, SimANSDataset, SimANSRefresher, refresh

import naive_torch as nv


def _setup(seed=0, n_q=12, n_docs=60, dim=8, k=10, m=1):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((n_q, dim)).astype(np.float32)
    C = rng.standard_normal((n_docs, dim)).astype(np.float32)
    pos = rng.choice(n_docs, (n_q, m), replace=False) if m > 1 else \
        rng.choice(n_docs, n_q, replace=False)
    pos_m = pos.reshape(n_q, -1).copy()
    if m > 1:
        pos_m[3, 1] = -1
    excl = [p[p >= 0] for p in pos_m]
    cands = sf.topk(Q, C, k, exclude=excl)
    ps = sf.rescore(Q, C, pos_m).astype(np.float64)
    ps[pos_m < 0] = np.nan
    sampler = sf.SimANSSampler(cands.ids, cands.scores, ps if m > 1 else ps[:, 0], n=3, a=0.7,
                               b=0.1, seed=4, positive_choice="random")
    return Q, C, pos_m if m > 1 else pos, sampler


def test_schedule():
    s = RefreshSchedule(3)
    assert [t for t in range(12) if s.due(t)] == [3, 6, 9]
    s = RefreshSchedule(5, start=0)
    assert [t for t in range(12) if s.due(t)] == [0, 5, 10]
    with pytest.raises(ValueError, match="every"):
        RefreshSchedule(0)
    with pytest.raises(ValueError, match="start"):
        RefreshSchedule(2, start=-1)


@pytest.mark.parametrize("m", [1, 2])
def test_refresh_mine_equals_manual_rebuild(m):
    Q, C, pos, sampler = _setup(m=m)
    rng = np.random.default_rng(1)
    Q2 = Q + 0.5 * rng.standard_normal(Q.shape).astype(np.float32)
    C2 = C + 0.5 * rng.standard_normal(C.shape).astype(np.float32)
    new = refresh(sampler, lambda: torch.from_numpy(Q2), lambda: C2, positive_ids=pos,
                  mode="mine", k=8)
    pm = np.asarray(pos).reshape(Q.shape[0], -1)
    excl = [p[p >= 0] for p in pm]
    ref_ids, ref_sc = nv.topk(Q2, C2, 8, excl)
    assert np.array_equal(new.candidate_ids, ref_ids)
    assert np.allclose(new.candidate_scores, ref_sc, rtol=1e-5, atol=1e-5)
    want_ps = np.where(pm >= 0, np.einsum("qd,qmd->qm", Q2.astype(np.float64),
                                          C2[np.maximum(pm, 0)].astype(np.float64)), np.nan)
    assert np.allclose(new.positive_scores, want_ps, equal_nan=True, atol=1e-5)
    # settings are kept, and sampling equals a sampler built by hand from the same arrays
    for attr in ("n", "a", "b", "kernel", "seed", "fallback", "positive_choice"):
        assert getattr(new, attr) == getattr(sampler, attr)
    manual = sf.SimANSSampler(new.candidate_ids, new.candidate_scores, new.positive_scores,
                              n=3, a=0.7, b=0.1, seed=4)
    assert np.array_equal(new.sample(epoch=2), manual.sample(epoch=2))
    # no positive among the new candidates
    for q in range(Q.shape[0]):
        assert not set(pm[q][pm[q] >= 0].tolist()) & set(new.candidate_ids[q].tolist())


def test_refresh_rescore_keeps_ids():
    Q, C, pos, sampler = _setup()
    Q2, C2 = Q * 2.0, C[::-1].copy()
    new = refresh(sampler, lambda: Q2, lambda: C2, positive_ids=pos, mode="rescore")
    assert np.array_equal(new.candidate_ids, sampler.candidate_ids)
    want = np.einsum("qd,qkd->qk", Q2.astype(np.float64),
                     C2[sampler.candidate_ids].astype(np.float64))
    assert np.allclose(new.candidate_scores, want, atol=1e-5)
    assert np.allclose(new.positive_scores[:, 0], np.einsum("qd,qd->q", Q2, C2[pos]), atol=1e-5)


def test_refresher_updates_datasets_on_schedule():
    Q, C, pos, sampler = _setup()
    calls = []

    def enc_q():
        calls.append("q")
        return Q * (1 + len(calls))

    ds = SimANSDataset(sampler, positive_ids=pos)
    r = SimANSRefresher(sampler, enc_q, lambda: C, positive_ids=pos, every=2, datasets=[ds],
                        mode="mine")
    done = [step for step in range(1, 6) if r.step(step)]
    assert done == [2, 4] == r.history
    assert ds.sampler is r.sampler is not sampler
    assert np.array_equal(ds[0]["negative_ids"].numpy(), r.sampler.sample(rows=[0], epoch=0)[0])


def test_refresh_errors():
    Q, C, pos, sampler = _setup()
    with pytest.raises(ValueError, match="mode"):
        refresh(sampler, lambda: Q, lambda: C, positive_ids=pos, mode="both")
    with pytest.raises(ValueError, match="encode_queries returned"):
        refresh(sampler, lambda: Q[:3], lambda: C, positive_ids=pos)
    with pytest.raises(ValueError, match="dimension"):
        refresh(sampler, lambda: Q, lambda: C[:, :4], positive_ids=pos)
    with pytest.raises(ValueError, match="positive_ids"):
        refresh(sampler, lambda: Q, lambda: C, positive_ids=np.zeros((Q.shape[0], 2), np.int64))
    with pytest.raises(ValueError, match="2-D floating"):
        refresh(sampler, lambda: Q, lambda: C.astype(np.int64), positive_ids=pos)
    with pytest.raises(ValueError, match="outside the corpus"):
        refresh(sampler, lambda: Q, lambda: C[:5], positive_ids=pos)
