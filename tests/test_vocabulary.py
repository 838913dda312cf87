"""One vocabulary (docs/vocabulary.md): renamed parameters warn for one release and give
identical results; the table lists every rename."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest

import simans_fast as sf
from simans_fast._validate import ParameterTypeError, renamed_kwargs

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "vocabulary.md"


def _data(seed=0, n_q=40, k=12):
    rng = np.random.default_rng(seed)
    scores = -np.sort(-rng.normal(size=(n_q, k)), axis=1).astype(np.float32)
    ids = rng.integers(0, 1000, size=(n_q, k))
    pos = rng.normal(1.0, 0.3, size=n_q)
    pos[[3, 7]] = np.nan
    return ids, scores, pos


def _no_warning(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return fn(*a, **kw)


def test_renamed_kwargs_helper():
    @renamed_kwargs(old="new")
    def f(x, *, new=1):
        """doc"""
        return x + new

    assert f.__name__ == "f" and f.__doc__ == "doc"
    assert f.__renamed_kwargs__ == {"old": "new"}
    assert _no_warning(f, 1, new=2) == 3
    with pytest.warns(DeprecationWarning, match=r"f\(\): old= is deprecated.*use new="):
        assert f(1, old=2) == 3
    with pytest.raises(ParameterTypeError, match="got both new= and its old name old=") as e:
        f(1, old=2, new=3)
    assert isinstance(e.value, TypeError) and e.value.parameter == "new"


def test_missing_positive_is_fallback():
    ids, scores, pos = _data()
    new = _no_warning(sf.ambiguity_log_weights, scores, pos, a=0.7, fallback="uniform",
                      candidate_ids=ids)
    with pytest.warns(DeprecationWarning, match="missing_positive= is deprecated.*fallback="):
        old = sf.ambiguity_log_weights(scores, pos, a=0.7, missing_positive="uniform",
                                       candidate_ids=ids)
    assert np.array_equal(new, old)
    assert np.isfinite(new[3]).all() and (new[3] == 0).all()  # uniform row
    with pytest.raises(ValueError, match="fallback='uniform'"):
        _no_warning(sf.ambiguity_log_weights, scores, pos)  # default "raise"
    with pytest.raises(ValueError, match="fallback"):
        sf.ambiguity_log_weights(scores, pos, fallback="lowest")  # not a weight rule
    # diagnostics uses the new name (no warning from inside the package)
    eff = _no_warning(sf.simans_effective_candidates, scores, pos, a=0.7) \
        if hasattr(sf, "simans_effective_candidates") else None
    if eff is None:
        from simans_fast.diagnostics import simans_effective_candidates

        eff = _no_warning(simans_effective_candidates, scores, pos, a=0.7)
    assert eff.effective.shape == (scores.shape[0],)


def test_chunk_size_of_the_iterable_dataset_is_query_block():
    pytest.importorskip("torch")
    from simans_fast.torch import SimANSIterableDataset

    ids, scores, pos = _data(1)
    s = sf.SimANSSampler(ids, scores, np.nan_to_num(pos), n=4, seed=3)
    new = _no_warning(SimANSIterableDataset, s, epoch=2, query_block=7)
    with pytest.warns(DeprecationWarning, match="chunk_size= is deprecated.*query_block="):
        old = SimANSIterableDataset(s, epoch=2, chunk_size=7)
    assert new.query_block == old.query_block == old.chunk_size == 7
    a, b = list(new), list(old)
    assert len(a) == len(b) == s.n_queries
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert np.array_equal(x[key].numpy(), y[key].numpy()), key
    # and the items do not depend on the block
    c = list(_no_warning(SimANSIterableDataset, s, epoch=2, query_block=1000))
    assert all(np.array_equal(x["negative_ids"].numpy(), z["negative_ids"].numpy())
               for x, z in zip(a, c))


def test_query_chunk_of_sharded_topk_is_query_block(tmp_path):
    pytest.importorskip("torch")
    import torch.distributed as dist

    from simans_fast.torch.distributed import sharded_mine_candidates, sharded_topk

    if dist.is_initialized():  # pragma: no cover - another test left a group
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        rng = np.random.default_rng(2)
        q = rng.normal(size=(23, 8)).astype(np.float32)
        c = rng.normal(size=(50, 8)).astype(np.float32)
        ex = [[i % 50] for i in range(23)]
        new = _no_warning(sharded_topk, q, c, 6, exclude=ex, query_block=5)
        with pytest.warns(DeprecationWarning, match="query_chunk= is deprecated.*query_block="):
            old = sharded_topk(q, c, 6, exclude=ex, query_chunk=5)
        one = sf.topk(q, c, 6, exclude=ex)
        for got in (new, old):
            assert np.array_equal(got.ids, one.ids) and np.array_equal(got.scores, one.scores)
        m_new = _no_warning(sharded_mine_candidates, q, c, ex, k=6, query_block=4)
        with pytest.warns(DeprecationWarning, match="query_chunk"):
            m_old = sharded_mine_candidates(q, c, ex, k=6, query_chunk=4)
        for field in ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores"):
            assert np.array_equal(getattr(m_new, field), getattr(m_old, field), equal_nan=True)
        want = sf.mine_candidates(q, c, ex, k=6)
        assert np.array_equal(m_new.candidate_ids, want.candidate_ids)
    finally:
        dist.destroy_process_group()


def test_the_table_lists_every_rename():
    from simans_fast import core

    text = DOC.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    renamed = [core.ambiguity_log_weights]
    try:
        from simans_fast.torch import SimANSIterableDataset
        from simans_fast.torch import distributed as tdist

        renamed += [SimANSIterableDataset.__init__, tdist.sharded_topk,
                    tdist.sharded_mine_candidates]
    except ImportError:  # pragma: no cover - torch not installed
        pass
    for fn in renamed:
        for old, new in fn.__renamed_kwargs__.items():
            rows = [r for r in table if f"`{old}`" in r.split("|")[3]]
            assert rows, f"{old} missing from the old-names column of docs/vocabulary.md"
            assert any(f"`{new}`" in r.split("|")[2] for r in rows), (old, new)
