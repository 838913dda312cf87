"""Smoke runs of the two quality benchmarks at tiny sizes (they must run end to end)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_bench(name):
    bench_dir = os.path.join(ROOT, "benchmarks")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    spec = importlib.util.spec_from_file_location(f"_bench_{name}",
                                                  os.path.join(bench_dir, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_quality_synthetic_tiny(tmp_path):
    qs = _load_bench("quality_synthetic")
    png = tmp_path / "q.png"
    js = tmp_path / "q.json"
    res = qs.run(300, n=8, seed=1, plot_path=str(png), json_path=str(js), verbose=False)
    assert png.stat().st_size > 1000
    saved = json.loads(js.read_text())
    assert set(saved["results"]) == set(qs.SCENARIOS)
    for scenario, per in res.items():
        assert set(per) == set(qs.STRATEGIES)
        top = per["top"]
        assert top["fill"] == 1.0 and top["rank_mean"] == pytest.approx(4.5)  # ranks 1..8
        assert per["top skip 10"]["rank_mean"] == pytest.approx(14.5)
        u = per["uniform 10-210"]
        assert 11 <= u["rank_mean"] <= 210
        for m in per.values():
            assert 0.0 <= m["fn_pct"] <= 100.0 and m["useful"] >= 0.0 and m["harmful"] >= 0.0
            assert m["useful"] + m["harmful"] <= 1.0 + 1e-12
    # no false negatives exist in the clean-qrels world
    assert all(m["fn_pct"] == 0.0 for m in res["clean qrels"].values())
    # the same seed gives the same numbers
    again = qs.run(300, n=8, seed=1, verbose=False, scenarios=["default"])
    assert again["default"]["simans gauss a=0.5"] == res["default"]["simans gauss a=0.5"]


def test_quality_real_tiny(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("ir_measures")
    qr = _load_bench("quality_real")
    out = tmp_path / "real.json"
    res = qr.run("tiny", "simans,top", out=str(out), cache_dir=str(tmp_path / "cache"),
                 threads=1, verbose=False)
    saved = json.loads(out.read_text())
    assert saved["fingerprint"] == res["fingerprint"]
    r = saved["results"]
    assert set(r) == {"zero-shot", "simans", "top"}
    for name in ("zero-shot", "simans", "top"):
        assert 0.0 <= r[name]["ndcg@10"] <= 1.0 and 0.0 <= r[name]["recall@100"] <= 1.0
        assert len(r[name]["per_query_ndcg@10"]) == saved["data"]["test_queries"] == 40
    for name in ("simans", "top"):
        assert len(r[name]["rounds"]) == 2  # mined at the start and re-mined midway
        assert np.isfinite(r[name]["final_loss"])
    assert r["top"]["rounds"][0]["rank_mean"] == 1.0  # one negative: the best candidate
    # resuming with the same settings recomputes nothing
    again = qr.run("tiny", "simans,top", out=str(out), cache_dir=str(tmp_path / "cache"),
                   threads=1, verbose=False)
    assert again["results"]["simans"] == r["simans"]
