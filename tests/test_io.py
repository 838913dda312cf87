"""Readers and writers of simans_fast.io: round trips, determinism, atomicity, clear errors."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from simans_fast import io as sio


# ------------------------------------------------------------------------------ inputs
def test_read_embeddings_memmaps_float32_and_float16(tmp_path):
    for dt in (np.float32, np.float16):
        x = np.arange(12, dtype=dt).reshape(3, 4)
        p = tmp_path / f"e_{np.dtype(dt).name}.npy"
        np.save(p, x)
        got = sio.read_embeddings(str(p), arg="--corpus")
        assert isinstance(got, np.memmap) and got.dtype == dt
        np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("case,match", [
    ("missing", "file not found"),
    ("float64", "dtype float64"),
    ("int", "dtype int64"),
    ("1d", "2-D"),
    ("3d", "2-D"),
    ("npz", "npz"),
    ("text", "not a .npy"),
    ("object", "Python objects"),
    ("empty", "empty"),
])
def test_read_embeddings_errors_name_the_file(tmp_path, case, match):
    p = tmp_path / "bad.npy"
    if case == "float64":
        np.save(p, np.zeros((2, 3)))
    elif case == "int":
        np.save(p, np.zeros((2, 3), np.int64))
    elif case == "1d":
        np.save(p, np.zeros(3, np.float32))
    elif case == "3d":
        np.save(p, np.zeros((2, 3, 4), np.float32))
    elif case == "npz":
        with open(p, "wb") as f:
            np.savez(f, a=np.zeros((2, 3), np.float32))
    elif case == "text":
        p.write_text("hello")
    elif case == "object":
        np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    elif case == "empty":
        np.save(p, np.zeros((0, 3), np.float32))
    with pytest.raises(sio.InputError, match=match) as e:
        sio.read_embeddings(str(p), arg="--queries")
    msg = str(e.value)
    assert msg.startswith(f"--queries {p}") and "\n" not in msg


def test_read_ids(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_bytes(b"a\r\nb\nc")  # CRLF and no final newline
    assert sio.read_ids(str(p)) == ["a", "b", "c"]
    p.write_text("a\nb\n")
    assert sio.read_ids(str(p)) == ["a", "b"]
    assert sio.ids_sha256(["a", "b"]) == sio.file_sha256(str(p))
    for text, match in [("a\na\n", "twice"), ("a\n\nb\n", "empty"), ("a b\n", "whitespace"),
                        ("", "empty")]:
        p.write_text(text)
        with pytest.raises(sio.InputError, match=match):
            sio.read_ids(str(p), arg="--doc-ids")


def _index(ids):
    return {s: i for i, s in enumerate(ids)}


def test_read_qrels_trec_and_tsv(tmp_path):
    q = _index(["q1", "q2", "q3"])
    d = _index(["d1", "d2", "d3", "d4"])
    trec = tmp_path / "qrels.trec"
    trec.write_text("q2 0 d3 1\nq1 0 d2 2\nq1 0 d4 0\nq1 0 d1 1\nq1 0 d2 1\n\n# comment\n")
    indptr, ids, info = sio.read_qrels(str(trec), q, d)
    np.testing.assert_array_equal(indptr, [0, 2, 3, 3])
    np.testing.assert_array_equal(ids, [1, 0, 2])  # file order, rel 0 dropped, repeat dropped
    assert info["n_queries_with_positives"] == 2
    tsv = tmp_path / "qrels.tsv"
    tsv.write_text("query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td2\t1\nq1\td4\t0\nq1\td1\t1\n")
    i2, d2, _ = sio.read_qrels(str(tsv), q, d)
    np.testing.assert_array_equal(i2, indptr)
    np.testing.assert_array_equal(d2, ids)
    tsv2 = tmp_path / "pairs.tsv"
    tsv2.write_text("q2\td3\nq1\td2\nq1\td1\n")
    i3, d3, _ = sio.read_qrels(str(tsv2), q, d)
    np.testing.assert_array_equal(i3, indptr)
    np.testing.assert_array_equal(d3, ids)


def test_read_qrels_errors_and_skip_missing(tmp_path):
    q = _index(["q1", "q2"])
    d = _index(["d1", "d2"])
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq9 0 d1 1\nq2 0 d7 1\n")
    with pytest.raises(sio.InputError) as e:
        sio.read_qrels(str(p), q, d, query_arg="--query-ids qids.txt")
    msg = str(e.value)
    assert str(p) in msg and "'q9'" in msg and "line 2" in msg and "--skip-missing-qrels" in msg
    assert "--query-ids qids.txt" in msg and "\n" not in msg
    indptr, ids, info = sio.read_qrels(str(p), q, d, skip_missing=True)
    np.testing.assert_array_equal(indptr, [0, 1, 1])
    assert info["n_skipped"] == 2
    p.write_text("q1 0 d1 1\nq1 d1\tx y z\n")
    with pytest.raises(sio.InputError, match="line 2"):
        sio.read_qrels(str(p), q, d)
    p.write_text("q1 0 d1 0\n")
    with pytest.raises(sio.InputError, match="no judgement"):
        sio.read_qrels(str(p), q, d)


def test_read_texts(tmp_path):
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tfirst text\tT1\n2\tsecond\tT2\n")
    assert sio.read_texts(str(tsv)) == {"1": ("T1", "first text"), "2": ("T2", "second")}
    tsv.write_text("1\tplain\n2\tother\n")
    assert sio.read_texts(str(tsv), {"2"}) == {"2": ("", "other")}
    tsv.write_text("D1\thttp://x\tTitle\tBody text\n")
    assert sio.read_texts(str(tsv)) == {"D1": ("Title", "Body text")}
    jl = tmp_path / "corpus.jsonl"
    jl.write_text('{"_id": "a", "title": "t", "text": "x"}\n{"_id": "b", "text": "y"}\n')
    assert sio.read_texts(str(jl)) == {"a": ("t", "x"), "b": ("", "y")}
    jl.write_text('{"name": "a"}\n')
    with pytest.raises(sio.InputError, match="id field"):
        sio.read_texts(str(jl))


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with sio._AtomicFile(str(target), "w") as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    sio.atomic_write_text(str(target), "done\n")
    assert target.read_text() == "done\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    # same permissions an ordinary open() would give
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~mask
    with pytest.raises(ValueError, match="object"):
        sio.atomic_save_npy(str(tmp_path / "x.npy"), np.array([None], dtype=object))


# ------------------------------------------------------------------------------ candidates
def _candidates(n_q=4, k=5, m=2, n_docs=12, seed=0):
    rng = np.random.default_rng(seed)
    cids = np.stack([rng.permutation(n_docs)[:k] for _ in range(n_q)]).astype(np.int64)
    cs = -np.sort(-rng.standard_normal((n_q, k)), axis=1).astype(np.float32)
    cids[0, -1] = -1
    cs[0, -1] = -np.inf
    pids = np.full((n_q, m), -1, np.int64)
    ps = np.full((n_q, m), np.nan, np.float32)
    pids[:, 0] = 11
    ps[:, 0] = 1.5
    pids[1, 1] = 10
    ps[1, 1] = 0.25
    qids = [f"q{i}" for i in range(n_q)]
    dids = [f"doc-{j}" for j in range(n_docs)]
    return cids, cs, pids, ps, qids, dids


def test_candidates_round_trip_and_determinism(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    params = {"n": 3, "a": 0.5, "b": 0.0, "kernel": "gaussian", "seed": 1,
              "positive_choice": "random", "fallback": "lowest", "k": 5, "metric": "ip"}
    for name in ("c1", "c2"):
        sio.save_candidates(str(tmp_path / name), cids, cs, pids, ps, qids, dids,
                            parameters=params)
    files = sorted(os.listdir(tmp_path / "c1"))
    assert files == ["candidate_ids.npy", "candidate_scores.npy", "doc_ids.txt", "header.json",
                     "positive_ids.npy", "positive_scores.npy", "query_ids.txt"]
    for f in files:  # deterministic bytes
        assert (tmp_path / "c1" / f).read_bytes() == (tmp_path / "c2" / f).read_bytes()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    cf = sio.load_candidates(str(tmp_path / "c1"), verify=True)
    np.testing.assert_array_equal(cf.candidate_ids, cids)
    np.testing.assert_array_equal(cf.candidate_scores, cs)
    np.testing.assert_array_equal(cf.positive_ids, pids)
    np.testing.assert_array_equal(cf.positive_scores, ps)
    assert cf.query_ids == qids and cf.doc_ids == dids
    assert cf.parameters == params
    h = cf.header
    assert h["format"] == sio.CANDIDATES_FORMAT and h["version"] == sio.CANDIDATES_VERSION
    assert h["ids"]["doc_ids"]["sha256"] == sio.ids_sha256(dids)
    assert h["arrays"]["positive_scores"]["shape"] == [4, 2]
    # tampering is detected by verify=True
    np.save(tmp_path / "c1" / "candidate_scores.npy", cs + 1)
    with pytest.raises(sio.InputError, match="sha256"):
        sio.load_candidates(str(tmp_path / "c1"), verify=True)


def test_candidates_header_errors(tmp_path):
    cids, cs, pids, ps, qids, dids = _candidates()
    d = tmp_path / "c"
    sio.save_candidates(str(d), cids, cs, pids, ps, qids, dids)
    hp = d / "header.json"
    h = json.loads(hp.read_text())
    h["version"] = sio.CANDIDATES_VERSION + 1
    hp.write_text(json.dumps(h))
    with pytest.raises(sio.InputError, match="newer"):
        sio.load_candidates(str(d))
    h["format"] = "something-else"
    hp.write_text(json.dumps(h))
    with pytest.raises(sio.InputError, match="format"):
        sio.load_candidates(str(d))
    with pytest.raises(sio.InputError, match="not found"):
        sio.load_candidates(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(sio.InputError, match="header.json"):
        sio.load_candidates(str(tmp_path / "empty"))


# ------------------------------------------------------------------------------ negatives
def _epoch(texts=False):
    qids = ["q1", "q2", "q3"]
    dids = [f"d{j}" for j in range(10)]
    pos = np.array([[4, 7], [5, -1], [-1, -1]], np.int64)
    pos_s = np.array([[1.25, 0.5], [2.0, np.nan], [np.nan, np.nan]], np.float32)
    neg = np.array([[0, 2, 1], [3, 8, -1], [9, 6, 0]], np.int64)
    neg_s = np.array([[3.5, 1.0, 2.0], [0.1, -0.3, np.nan], [0.7, 0.2, 0.1]], np.float32)
    neg_r = np.array([[1, 3, 2], [1, 4, 0], [7, 8, 9]], np.int64)
    e = sio.EpochNegatives(qids, dids, pos, pos_s, neg, neg_s, neg_r)
    if texts:
        e.query_texts = {q: ("", f"what is {q}?\twith tab") for q in qids}
        e.doc_texts = {d: (f"T{d}" if d != "d3" else "", f"text of {d} ü") for d in dids}
    return e


def _expected(e):
    out = []
    for i, q in enumerate(e.query_ids):
        pos = [e.doc_ids[r] for r in e.positive_rows[i] if r >= 0]
        negs = [e.doc_ids[r] for r in e.negative_rows[i] if r >= 0]
        out.append((q, pos, negs))
    return out


@pytest.mark.parametrize("texts", [False, True])
def test_tevatron_round_trip(tmp_path, texts):
    e = _epoch(texts)
    p = str(tmp_path / "neg.jsonl")
    sio.write_negatives(p, e, "tevatron")
    assert sio.detect_format(p) == "tevatron"
    recs = sio.read_negatives(p)
    for rec, (q, pos, negs) in zip(recs, _expected(e), strict=True):
        assert rec["query_id"] == q and rec["positives"] == pos and rec["negatives"] == negs
        if texts:
            assert rec["query"] == e.query_texts[q][1]
            for psg in rec["positive_passages"] + rec["negative_passages"]:
                assert (psg["title"], psg["text"]) == e.doc_texts[psg["docid"]]
    first = json.loads(open(p, encoding="utf-8").readline())
    if texts:
        assert set(first) == {"query_id", "query", "positive_passages", "negative_passages"}
    else:
        assert set(first) == {"query_id", "positive_document_ids", "negative_document_ids"}


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
@pytest.mark.parametrize("texts", [False, True])
def test_sentence_transformers_round_trip(tmp_path, ext, texts):
    e = _epoch(texts)
    p = str(tmp_path / ("neg" + ext))
    sio.write_negatives(p, e, "sentence-transformers")
    assert sio.detect_format(p) == "sentence-transformers"
    recs = sio.read_negatives(p)
    exp = _expected(e)
    if texts:
        def tx(d):
            t, x = e.doc_texts[d]
            return f"{t} {x}" if t else x
        exp = [(e.query_texts[q][1], [tx(d) for d in pos[:1]], [tx(d) for d in negs])
               for q, pos, negs in exp]
    else:
        exp = [(q, pos[:1], negs) for q, pos, negs in exp]
    for rec, (anchor, pos, negs) in zip(recs, exp, strict=True):
        assert rec["query"] == anchor and rec["positives"] == pos and rec["negatives"] == negs
    if ext == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        assert t.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
        assert t.column("negative_3").to_pylist()[1] is None  # padding is null


def test_trec_run_round_trip(tmp_path):
    e = _epoch()
    p = str(tmp_path / "neg.trec")
    sio.write_negatives(p, e, "trec", tag="mytag")
    lines = open(p).read().splitlines()
    assert lines[0] == "q1 Q0 d0 1 3.5 mytag"
    assert all(len(ln.split()) == 6 for ln in lines)
    recs = sio.read_negatives(p)
    assert sio.detect_format(p) == "trec"
    for rec, i in zip(recs, range(3), strict=True):
        sel = e.negative_rows[i] >= 0
        order = np.argsort(e.negative_ranks[i][sel], kind="stable")
        assert rec["negatives"] == [e.doc_ids[r] for r in e.negative_rows[i][sel][order]]
        assert rec["negative_ranks"] == e.negative_ranks[i][sel][order].tolist()
        np.testing.assert_array_equal(np.float32(rec["negative_scores"]),
                                      e.negative_scores[i][sel][order])


@pytest.mark.parametrize("texts", [False, True])
def test_simxns_round_trip(tmp_path, texts):
    e = _epoch(texts)
    p = str(tmp_path / "neg.tsv")
    sio.write_negatives(p, e, "simxns")
    assert sio.detect_format(p) == "simxns"
    recs = sio.read_negatives(p)
    for i, (rec, (q, pos, negs)) in enumerate(zip(recs, _expected(e), strict=True)):
        assert rec["query_id"] == q and rec["positives"] == pos and rec["negatives"] == negs
        np.testing.assert_array_equal(np.float32(rec["negative_scores"]),
                                      e.negative_scores[i][e.negative_rows[i] >= 0])
        np.testing.assert_array_equal(np.float32(rec["positive_scores"]),
                                      e.positive_scores[i][e.positive_rows[i] >= 0])
        assert rec["query"] == ("what is %s? with tab" % q if texts else "")
    assert open(p).readline() == "q1\t%s\td4 1.25,d7 0.5\td0 3.5,d2 1.0,d1 2.0\n" % (
        "what is q1? with tab" if texts else "")


@pytest.mark.parametrize("fmt,ext", [("tevatron", ".jsonl"), ("sentence-transformers", ".parquet"),
                                     ("trec", ".trec"), ("simxns", ".tsv")])
def test_writers_are_deterministic_and_atomic(tmp_path, fmt, ext):
    e = _epoch(texts=fmt != "trec")
    a, b = str(tmp_path / ("a" + ext)), str(tmp_path / ("b" + ext))
    sio.write_negatives(a, e, fmt)
    sio.write_negatives(b, e, fmt)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert sorted(os.listdir(tmp_path)) == sorted(["a" + ext, "b" + ext])
    # a failure while writing (a text is missing) leaves neither the file nor a temp file
    if e.doc_texts is not None:
        e.doc_texts = {}
        e.query_texts = {}
    c = str(tmp_path / ("c" + ext))
    if fmt != "trec":
        with pytest.raises(KeyError):
            sio.write_negatives(c, e, fmt)
        assert sorted(os.listdir(tmp_path)) == sorted(["a" + ext, "b" + ext])


def test_format_from_extension_and_detect(tmp_path):
    assert sio.format_from_extension("x.parquet") == "sentence-transformers"
    assert sio.format_from_extension("x.run") == "trec"
    assert sio.format_from_extension("x.tsv") == "simxns"
    assert sio.format_from_extension("x.jsonl") == "tevatron"
    assert sio.format_from_extension("x.bin") is None
    p = tmp_path / "odd.txt"
    p.write_text("a b c\n")
    with pytest.raises(sio.InputError, match="not a negatives file"):
        sio.detect_format(str(p))
