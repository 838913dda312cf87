"""simans_fast.hn_mine: FlagEmbedding's hn_mine.py meaning, seeded, without its padding bugs.

Array steps are compared to plain-Python/NumPy references of FlagEmbedding's loop; the whole
call runs once per strategy on ~40 real (docstring -> code) records with all-MiniLM-L6-v2
(offline), against a NumPy reference computed from the same embeddings.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from scipy import stats

from simans_fast.formats import FormatError
from simans_fast.formats import flagembedding as fe
from simans_fast import hn_mine as H
from simans_fast.cli import hn_mine as CH  # FlagEmbedding's flags live in the CLI


# ============================================================================ references
def naive_window(top_ids, lo, hi, forbidden_sets):
    """FlagEmbedding's loop: ranks lo..hi-1 of the raw list, stop at -1, drop forbidden."""
    out = []
    for r, row in enumerate(top_ids):
        keep = []
        for x in list(row)[lo:hi]:
            if x == -1:
                break
            if x not in forbidden_sets[r]:
                keep.append(int(x))
        out.append(keep)
    return out


def _csr(sets):
    indptr = np.zeros(len(sets) + 1, np.int64)
    ids = []
    for r, s in enumerate(sets):
        ids.extend(sorted(s))
        indptr[r + 1] = len(ids)
    return indptr, np.asarray(ids, np.int64)


def _random_lists(rng, n_q=60, hi=40, n_corpus=70):
    top = np.stack([rng.choice(n_corpus, hi, replace=False) for _ in range(n_q)]).astype(np.int64)
    for r in range(0, n_q, 7):  # some short lists (corpus smaller than hi for them)
        top[r, int(rng.integers(0, hi)):] = -1
    scores = -np.sort(-rng.normal(size=(n_q, hi)), axis=1).astype(np.float32)
    scores[top < 0] = -np.inf
    forb = []
    for r in range(n_q):
        valid = top[r][top[r] >= 0]
        inside = set(rng.choice(valid, min(len(valid), int(rng.integers(0, 4))), replace=False)
                     .tolist()) if len(valid) else set()
        outside = set(rng.choice(n_corpus, 2, replace=False).tolist())
        forb.append(inside | outside)
    return top, scores, forb


# ============================================================================ array steps
def test_parse_range():
    assert H.parse_range("10-210") == (10, 210)
    assert H.parse_range((0, 5)) == (0, 5)
    for bad in ("10", "10-", "a-b", "5-5", "9-3", "-1-4", "1-2-3", 7, (3, 1), None, (2, None)):
        with pytest.raises(ValueError, match="range_for_sampling"):
            H.parse_range(bad)


@pytest.mark.parametrize("lo, hi", [(0, 40), (10, 40), (3, 17), (39, 40)])
def test_window_rule_matches_flagembedding_loop(lo, hi):
    rng = np.random.default_rng(lo * 100 + hi)
    top, scores, forb = _random_lists(rng)
    w_ids, w_scores = H.window_candidates(top[:, :hi], scores[:, :hi], lo, hi, _csr(forb))
    assert w_ids.shape == (top.shape[0], hi - lo)
    ref = naive_window(top, lo, hi, forb)
    for r in range(top.shape[0]):
        assert [int(x) for x in w_ids[r] if x >= 0] == ref[r]
    # ranks are raw: a forbidden document inside the window takes a slot, it does not shift
    # the window (the window never reaches past rank hi-1)
    np.testing.assert_array_equal(w_scores, scores[:, lo:hi])


def test_forbidden_rows_are_positives_and_query_text():
    recs = [{"query": "q0", "pos": ["a", "b"]}, {"query": "c", "pos": ["zz"]},
            {"query": "q2", "pos": ["c"], "neg": ["a"]}]
    corpus, index = H.build_corpus(recs)
    assert corpus == ["a", "b", "zz", "c"]  # pos + neg, in order of first appearance
    indptr, ids = H.forbidden_rows(recs, index)
    rows = [set(ids[indptr[r]:indptr[r + 1]].tolist()) for r in range(3)]
    assert rows == [{0, 1}, {2, 3}, {3}]  # record 1: its query text "c" is in the corpus
    corpus, index = H.build_corpus(recs, ["x", "c", "x", "y"])  # a candidate pool replaces it
    assert corpus == ["x", "c", "y"]
    indptr, ids = H.forbidden_rows(recs, index)
    assert [ids[indptr[r]:indptr[r + 1]].tolist() for r in range(3)] == [[], [1], [1]]


def test_choose_top_and_small_windows_in_rank_order():
    rng = np.random.default_rng(3)
    top, scores, forb = _random_lists(rng)
    w_ids, w_scores = H.window_candidates(top, scores, 5, 40, _csr(forb))
    ref = naive_window(top, 5, 40, forb)
    for n in (1, 8, 40):
        for strategy in H.STRATEGIES:
            pos = np.full(top.shape[0], 2.0)
            got = H.choose_negatives(w_ids, w_scores, n, strategy=strategy, positive_scores=pos)
            for r in range(top.shape[0]):
                row = [int(x) for x in got[r] if x >= 0]
                if strategy == "top" or len(ref[r]) <= n:
                    assert row == ref[r][:n]  # every candidate, best first
                else:
                    assert len(row) == n == len(set(row)) and set(row) <= set(ref[r])
                assert np.all(got[r, len(row):] == -1)


def test_choose_random_is_uniform_without_replacement():
    """20,000 rows with the same 30 candidates, 5 drawn: each is taken with probability 1/6."""
    n_q, k, n = 20_000, 30, 5
    ids = np.tile(np.arange(k, dtype=np.int64), (n_q, 1))
    ids[:, [4, 11]] = -1  # forbidden entries of the window are never drawn
    scores = np.tile(np.linspace(1, 0, k, dtype=np.float32), (n_q, 1))
    got = H.choose_negatives(ids, scores, n, strategy="random", seed=17)
    assert np.all(np.sort(got, axis=1)[:, 1:] != np.sort(got, axis=1)[:, :-1])  # distinct
    counts = np.bincount(got.ravel(), minlength=k)
    assert counts[4] == counts[11] == 0
    kept = np.delete(counts, [4, 11])
    assert kept.sum() == n_q * n
    assert stats.chisquare(kept).pvalue > 1e-3
    # the first draw is uniform too (draw order, as random.sample)
    assert stats.chisquare(np.delete(np.bincount(got[:, 0], minlength=k), [4, 11])).pvalue > 1e-3


def test_choose_is_seeded_and_simans_uses_scaled_scores():
    import simans_fast as sf

    rng = np.random.default_rng(8)
    top, scores, forb = _random_lists(rng, n_q=80)
    w_ids, w_scores = H.window_candidates(top, scores, 0, 40, _csr(forb))
    pos = rng.normal(1.0, 0.3, size=80)
    for strategy in ("random", "simans"):
        kw = dict(strategy=strategy, positive_scores=pos, a=0.7, b=-0.2, score_scale=4.0)
        x1 = H.choose_negatives(w_ids, w_scores, 6, seed=1, **kw)
        x2 = H.choose_negatives(w_ids, w_scores, 6, seed=1, **kw)
        x3 = H.choose_negatives(w_ids, w_scores, 6, seed=2, **kw)
        np.testing.assert_array_equal(x1, x2)
        assert not np.array_equal(x1, x3)
        # a subset of rows with their keys draws the same negatives
        sub = np.arange(10, 50)
        xs = H.choose_negatives(w_ids[sub], w_scores[sub], 6, seed=1, row_keys=sub,
                                **{**kw, "positive_scores": pos[sub]})
        np.testing.assert_array_equal(xs, x1[sub])
    # SimANS: exactly sf.select_negatives on score_scale * scores (rows with > n candidates)
    got = H.choose_negatives(w_ids, w_scores, 6, strategy="simans", positive_scores=pos,
                             a=0.7, b=-0.2, kernel="laplace", score_scale=4.0, seed=5)
    many = np.flatnonzero((w_ids >= 0).sum(axis=1) > 6)
    ref = sf.select_negatives(w_ids[many], w_scores[many].astype(np.float64) * 4.0,
                              pos[many] * 4.0, 6, a=0.7, b=-0.2, kernel="laplace", seed=5,
                              row_keys=many)
    np.testing.assert_array_equal(got[many], ref)


def _check_padding(neg, filled, padded, n_corpus, forb):
    for r in range(neg.shape[0]):
        before = [int(x) for x in neg[r] if x >= 0]
        row = [int(x) for x in filled[r] if x >= 0]
        assert row[:len(before)] == before  # chosen negatives kept, in order
        assert len(row) == len(set(row))  # no duplicate
        assert not set(row[len(before):]) & forb[r]  # never a positive / the query text
        allowed = n_corpus - len(forb[r] | set(before))
        assert len(row) == len(before) + min(neg.shape[1] - len(before), allowed)
        assert padded[r] == len(row) - len(before)
        assert np.all(filled[r, len(row):] == -1)


def test_padding_never_gives_positives_or_duplicates():
    rng = np.random.default_rng(21)
    n_q, n = 300, 8
    for n_corpus in (9, 12, 40, 1000):  # 9, 12: the corpus runs out; the exact finish runs
        forb = [set(rng.choice(n_corpus, int(rng.integers(0, 5)), replace=False).tolist())
                for _ in range(n_q)]
        neg = np.full((n_q, n), -1, np.int64)
        for r in range(n_q):
            ok = [x for x in range(n_corpus) if x not in forb[r]]
            k = int(rng.integers(0, n + 1))
            neg[r, :min(k, len(ok))] = rng.choice(ok, min(k, len(ok)), replace=False)
        filled, padded = H.pad_negatives(neg, n_corpus, _csr(forb), seed=3)
        _check_padding(neg, filled, padded, n_corpus, forb)
        again, _ = H.pad_negatives(neg, n_corpus, _csr(forb), seed=3)
        np.testing.assert_array_equal(filled, again)
        other, _ = H.pad_negatives(neg, n_corpus, _csr(forb), seed=4)
        if padded.sum() and n_corpus > 12:
            assert not np.array_equal(filled, other)


def test_padding_is_uniform_over_allowed_texts():
    """One slot to fill, 20 allowed of 25 (5 forbidden): chi-square over 16,000 rows."""
    n_q, n_corpus = 16_000, 25
    forb = [{0, 3, 7, 8, 24}] * n_q
    neg = np.full((n_q, 1), -1, np.int64)
    filled, _ = H.pad_negatives(neg, n_corpus, _csr(forb), seed=0)
    counts = np.bincount(filled[:, 0], minlength=n_corpus)
    assert counts[[0, 3, 7, 8, 24]].sum() == 0
    assert stats.chisquare(np.delete(counts, [0, 3, 7, 8, 24])).pvalue > 1e-3
    # the exact finish (almost everything taken) is uniform too
    forb = [set(range(20)) - {2, 5, 9}] * n_q  # 3 + 5 = 8 allowed of 25 ... draw 1
    filled, _ = H.pad_negatives(neg, n_corpus, _csr(forb), seed=1)
    allowed = sorted(set(range(n_corpus)) - forb[0])
    counts = np.bincount(filled[:, 0], minlength=n_corpus)[allowed]
    assert counts.sum() == n_q and stats.chisquare(counts).pvalue > 1e-3


# ============================================================================ the command line
def _parser():
    return CH.add_hn_mine_arguments(argparse.ArgumentParser(prog="hn-mine"))


def test_flagembedding_flags_parse():
    argv = ["--embedder_name_or_path", "BAAI/bge-base-en-v1.5", "--input_file", "in.jsonl",
            "--output_file", "out.jsonl", "--range_for_sampling", "2-200", "--negative_number",
            "15", "--use_gpu_for_searching", "--embedder_query_max_length", "64",
            "--query_instruction_for_retrieval", "Represent: ",
            "--query_instruction_format_for_retrieval", "{}\\n{}", "--devices", "cuda:0",
            "cuda:1", "--use_fp16", "False", "--batch_size", "64"]
    kw = CH.hn_mine_kwargs(_parser().parse_args(argv))
    assert kw["model"] == "BAAI/bge-base-en-v1.5"
    assert (kw["input_file"], kw["output_file"]) == ("in.jsonl", "out.jsonl")
    assert kw["range_for_sampling"] == "2-200" and kw["negative_number"] == 15
    assert kw["use_gpu_for_searching"] is True and kw["use_fp16"] is False
    assert kw["query_instruction_format"] == "{}\n{}"  # '\\n' read as a line break
    assert kw["device"] == ["cuda:0", "cuda:1"] and kw["query_max_length"] == 64
    assert kw["passage_max_length"] is None and kw["pooling_method"] is None
    assert kw["normalize_embeddings"] is True and kw["strategy"] == "random"
    assert kw["search_batch_size"] == 64 and kw["batch_size"] == 64
    # older spelling, dashed spelling, --no_ forms, our flags
    kw = CH.hn_mine_kwargs(_parser().parse_args(
        ["--model_name_or_path", "m", "--input-file", "i", "--output-file", "o",
         "--no_normalize_embeddings", "--devices", "cpu", "--strategy", "simans", "--a", "2",
         "--b", "-0.5", "--kernel", "laplace", "--seed", "9", "--score_scale", "10",
         "--output_scores"]))
    assert kw["model"] == "m" and kw["normalize_embeddings"] is False and kw["device"] == "cpu"
    assert (kw["strategy"], kw["a"], kw["b"], kw["kernel"], kw["seed"], kw["score_scale"]) == \
        ("simans", 2.0, -0.5, "laplace", 9, 10.0)
    assert kw["output_scores"] is True
    import inspect

    assert set(kw) <= set(inspect.signature(H.hn_mine).parameters)


@pytest.mark.parametrize("extra, message", [
    (["--embedder_model_class", "encoder-only-m3"], "--embedder_model_class encoder-only-m3"),
    (["--embedder_model_class", "decoder-only-icl"], "not supported"),
    (["--examples_for_task", "ex.json"], "--examples_for_task"),
    (["--negative_number", "0"], "--negative_number 0"),
    (["--batch_size", "-1"], "--batch_size -1"),
])
def test_unsupported_flags_are_errors(extra, message):
    args = _parser().parse_args(["--embedder_name_or_path", "m", "--input_file", "i",
                                 "--output_file", "o"] + extra)
    with pytest.raises(ValueError, match=message):
        CH.hn_mine_kwargs(args)


def test_parser_rejects_bad_values():
    p = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(["--embedder_name_or_path", "m", "--input_file", "i", "--output_file",
                      "o", "--use_fp16", "maybe"])
    with pytest.raises(SystemExit):
        p.parse_args(["--input_file", "i", "--output_file", "o"])  # no model
    with pytest.raises(SystemExit):
        p.parse_args(["--embedder_name_or_path", "m", "--input_file", "i", "--output_file",
                      "o", "--strategy", "hardest"])


# ============================================================================ end to end
N_NEG = 5
LO, HI = 2, 30


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """~40 docstring -> code records, their embeddings (cached for every hn_mine call)."""
    from _models import minilm
    from _textdata import harvest

    from simans_fast.encode import encode

    summaries, codes, heads = harvest(per_module=3, max_chars=120)
    summaries, codes, heads = summaries[:40], codes[:40], heads[:40]
    recs = []
    for i, (q, d) in enumerate(zip(summaries, codes)):
        rec = {"query": q, "pos": [d], "neg": [codes[(i + 7) % len(codes)]],
               "neg_scores": [0.123], "id": f"r{i}", "meta": {"i": i}}
        if i % 9 == 0:
            rec["pos"].append(heads[i])  # two positives
        rec["pos_scores"] = [1.0] * len(rec["pos"])
        recs.append(rec)
    # a record whose query text is a corpus text (another record's positive): never its own
    # negative, though it ranks first
    recs[5]["query"] = codes[6]
    tmp = tmp_path_factory.mktemp("hn")
    inp = str(tmp / "in.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    model = minilm()
    cache = str(tmp / "emb")
    corpus, index = H.build_corpus(recs)
    d_emb = np.asarray(encode(model, corpus, role="document", cache_folder=cache, progress=False,
                              batch_size=64))
    q_emb = np.asarray(encode(model, list(dict.fromkeys(r["query"] for r in recs)),
                              role="query", cache_folder=cache, progress=False, batch_size=64))
    qpos = {t: i for i, t in enumerate(dict.fromkeys(r["query"] for r in recs))}
    q_emb = q_emb[[qpos[r["query"]] for r in recs]]
    return dict(recs=recs, inp=inp, tmp=tmp, model=model, cache=cache, corpus=corpus,
                index=index, d_emb=d_emb, q_emb=q_emb)


def _mine(world, name, lo=LO, **kw):
    out = str(world["tmp"] / f"{name}.jsonl")
    kw = {"range_for_sampling": f"{lo}-{HI}", "negative_number": N_NEG, "batch_size": 64,
          "cache_folder": world["cache"], "progress": False, **kw}
    res = H.hn_mine(world["inp"], out, world["model"], **kw)
    return res, fe.read_records(out), out


def _reference(world, lo=LO):
    """Plain NumPy: raw ranks by float64 scores of the same embeddings, FlagEmbedding's window."""
    S = world["q_emb"].astype(np.float64) @ world["d_emb"].astype(np.float64).T
    out = []
    for r, rec in enumerate(world["recs"]):
        order = np.lexsort((np.arange(S.shape[1]), -S[r]))[:HI]
        window = [int(j) for j in order[lo:HI]
                  if world["corpus"][j] not in rec["pos"] and world["corpus"][j] != rec["query"]]
        out.append((window, S[r]))
    return out


def _close_to_boundary(S_row, j, order_scores, tol=1e-5):
    return np.min(np.abs(order_scores - S_row[j])) < tol


def test_hn_mine_top_equals_reference_and_passes_keys_through(world):
    # from rank 0: the positives and the query's own text rank inside the window
    res, out, _ = _mine(world, "top", lo=0, strategy="top")
    recs, corpus = world["recs"], world["corpus"]
    ref = _reference(world, lo=0)
    assert res.n_records == len(recs) and res.n_corpus == len(corpus)
    assert res.padded_records == 0 and res.short_records == 0
    for r, (rec, got) in enumerate(zip(recs, out)):
        window, S = ref[r]
        want = [corpus[j] for j in window[:N_NEG]]
        if got["neg"] != want:  # only an exact-tie (float32 vs float64) swap may differ
            gs = sorted(S[world["index"][t]] for t in got["neg"])
            ws = sorted(S[world["index"][t]] for t in want)
            np.testing.assert_allclose(gs, ws, atol=1e-5)
        # every other key passes through unchanged, in order; stale neg_scores removed
        assert list(got) == [k for k in rec if k != "neg_scores"]
        for k in rec:
            if k not in ("neg", "neg_scores"):
                assert got[k] == rec[k]
    # the record whose query text is in the corpus ranks it first, and never gets it back
    assert int(np.argmax(ref[5][1])) == world["index"][recs[5]["query"]]
    assert recs[5]["query"] not in out[5]["neg"]
    # positives rank inside the window [0, 30) and are dropped from it, not replaced
    S = ref[0][1]
    assert np.argsort(-S).tolist().index(world["index"][recs[0]["pos"][0]]) < HI


def test_hn_mine_random_and_simans_sample_inside_the_window(world):
    recs, corpus = world["recs"], world["corpus"]
    ref = _reference(world)
    runs = {}
    for strategy in ("random", "simans"):
        res, out, path = _mine(world, strategy, strategy=strategy, seed=11)
        runs[strategy] = (res, out, open(path, "rb").read())
        for r, (rec, got) in enumerate(zip(recs, out)):
            window, S = ref[r]
            assert len(got["neg"]) == N_NEG == len(set(got["neg"]))
            for t in got["neg"]:
                assert t not in rec["pos"] and t != rec["query"]
                j = world["index"][t]
                if j not in window:  # only at a tie with the window's boundary
                    assert _close_to_boundary(S, j, S[np.array(window)[[0, -1]]])
    assert runs["simans"][0].effective is not None
    assert 1.0 <= runs["simans"][0].effective["mean_effective"] <= HI - LO
    assert runs["random"][0].effective is None
    # seeded: the same call writes the same bytes, another seed other negatives
    _, _, path = _mine(world, "random2", strategy="random", seed=11)
    assert open(path, "rb").read() == runs["random"][2]
    _, other, _ = _mine(world, "random3", strategy="random", seed=12)
    assert [o["neg"] for o in other] != [o["neg"] for o in runs["random"][1]]


def test_hn_mine_output_scores_are_the_embedders(world):
    _, out, _ = _mine(world, "scores", strategy="top", output_scores=True)
    S = world["q_emb"].astype(np.float64) @ world["d_emb"].astype(np.float64).T
    for r, (rec, got) in enumerate(zip(world["recs"], out)):
        assert list(got) == list(rec)  # neg_scores / pos_scores replaced in place
        np.testing.assert_allclose(got["neg_scores"],
                                   [S[r, world["index"][t]] for t in got["neg"]], atol=1e-5)
        np.testing.assert_allclose(got["pos_scores"],
                                   [S[r, world["index"][t]] for t in rec["pos"]], atol=1e-5)
        assert got["neg_scores"] == sorted(got["neg_scores"], reverse=True)  # top: best first


def test_hn_mine_candidate_pool_and_padding(world):
    """A small pool: windows run short, padding fills from the pool, never a positive, never
    the query's text, never a duplicate; positives outside the pool are still scored."""
    recs, corpus = world["recs"], world["corpus"]
    pool_texts = [corpus[j] for j in range(0, 12)] + [corpus[0], recs[5]["query"]]
    pool = str(world["tmp"] / "pool.jsonl")
    with open(pool, "w", encoding="utf-8") as f:
        for t in pool_texts:
            f.write(json.dumps({"text": t}) + "\n")
    res, out, _ = _mine(world, "pool", strategy="random", candidate_pool=pool,
                        range_for_sampling="3-8", negative_number=7, seed=2, output_scores=True)
    uniq = list(dict.fromkeys(pool_texts))
    assert res.n_corpus == len(uniq) == 13  # de-duplicated
    assert res.padded_records > 0 and res.short_records == 0
    for rec, got in zip(recs, out):
        assert len(got["neg"]) == 7 == len(set(got["neg"]))
        assert set(got["neg"]) <= set(uniq)
        assert not set(got["neg"]) & set(rec["pos"]) and rec["query"] not in got["neg"]
        assert len(got["pos_scores"]) == len(rec["pos"])
        assert all(np.isfinite(got["pos_scores"])) and all(np.isfinite(got["neg_scores"]))


def test_hn_mine_torch_search_gives_the_same_negatives(world):
    """use_gpu_for_searching: PyTorch's exact top-k (run here on the CPU device)."""
    pytest.importorskip("torch")
    _, cpu, _ = _mine(world, "numba_search", lo=0, strategy="top", output_scores=True)
    _, tor, _ = _mine(world, "torch_search", lo=0, strategy="top", output_scores=True,
                      use_gpu_for_searching=True, search_device="cpu")
    for a, b in zip(cpu, tor):
        if a["neg"] != b["neg"]:  # exact ties only
            np.testing.assert_allclose(a["neg_scores"], b["neg_scores"], atol=1e-6)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            H.hn_mine(world["inp"], str(world["tmp"] / "gpu.jsonl"), world["model"],
                      use_gpu_for_searching=True)
        assert not os.path.exists(world["tmp"] / "gpu.jsonl")
    with pytest.raises(ValueError, match="search_device is only used with"):
        H.hn_mine(world["inp"], str(world["tmp"] / "gpu.jsonl"), world["model"],
                  search_device="cpu")


def test_hn_mine_bad_input_is_one_clear_error(world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2", "pos": []}\n')
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(FormatError, match=r"bad.jsonl:2: 'pos' is empty"):
        H.hn_mine(str(bad), out, world["model"], progress=False)
    with pytest.raises(ValueError, match="strategy must be one of"):
        H.hn_mine(world["inp"], out, world["model"], strategy="hardest")
    with pytest.raises(ValueError, match="negative_number must be >= 1"):
        H.hn_mine(world["inp"], out, world["model"], negative_number=0)
    with pytest.raises(ValueError, match="query_instruction_format"):
        H.hn_mine(world["inp"], out, world["model"], query_instruction_format="{}")
    with pytest.raises(ValueError, match="pooling_method 'cls': the model pools with 'mean'"):
        H.hn_mine(world["inp"], out, world["model"], pooling_method="cls", progress=False,
                  cache_folder=world["cache"])
    with pytest.raises(ValueError, match="use_fp16 applies to a model loaded by name"):
        H.hn_mine(world["inp"], out, world["model"], use_fp16=True)
    with pytest.raises(ValueError, match="directory .* does not exist"):
        H.hn_mine(world["inp"], str(tmp_path / "no" / "out.jsonl"), world["model"])
    with pytest.raises(ValueError, match="model 'no-such-model-here': "):
        H.hn_mine(world["inp"], out, "no-such-model-here")
    with pytest.raises(ValueError, match="passage_max_length 100000: the model takes at most"):
        H.hn_mine(world["inp"], out, world["model"], passage_max_length=100000,
                  progress=False)
    assert not os.path.exists(out)


def test_hn_mine_small_cases(world, tmp_path):
    """A pool with nothing but a record's positive: that record cannot get a negative (one
    clear error, nothing written); max lengths apply during the call and are restored."""
    model = world["model"]
    inp = tmp_path / "two.jsonl"
    inp.write_text(json.dumps({"query": "sort a list", "pos": ["def sort(x): ..."]}) + "\n"
                   + json.dumps({"query": "parse a date", "pos": ["def parse(d): ..."]}) + "\n")
    pool = ["def sort(x): ..."]
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="record 1 gets no negative"):
        H.hn_mine(str(inp), out, model, candidate_pool=pool, range_for_sampling="0-5",
                  progress=False)
    assert not os.path.exists(out)
    before = model.max_seq_length
    res = H.hn_mine(str(inp), out, model, candidate_pool=pool + ["def other(): pass"],
                    range_for_sampling="0-5", negative_number=3, query_max_length=16,
                    passage_max_length=32, progress=False)
    assert model.max_seq_length == before
    got = fe.read_records(out)
    assert got[0]["neg"] == ["def other(): pass"]  # its positive and nothing else left
    assert sorted(got[1]["neg"]) == sorted(pool + ["def other(): pass"])
    assert res.short_records == 2 and res.padded_records == 0


def test_window_with_tied_scores_is_still_the_raw_columns():
    """Ranks are the columns of the sorted lists also where scores tie (many equal scores)."""
    rng = np.random.default_rng(11)
    top, _, forb = _random_lists(rng)
    scores = -np.sort(-rng.integers(0, 4, size=top.shape), axis=1).astype(np.float32)
    scores[top < 0] = -np.inf
    for lo, hi in ((0, 40), (7, 23)):
        w_ids, w_scores = H.window_candidates(top, scores, lo, hi, _csr(forb))
        ref = naive_window(top, lo, hi, forb)
        assert [[int(x) for x in r if x >= 0] for r in w_ids] == ref
        np.testing.assert_array_equal(w_scores, scores[:, lo:hi])
