"""Exact top-k with a certified bfloat16 first pass (``topk(..., prefilter="bfloat16")``).

Owner: the "topk" engineer (the public entry is :func:`simans_fast.candidates.topk`).

Why
---
CPUs with AVX512-BF16 or AMX multiply bfloat16 matrices several times faster than float32 ones
(this project's 2-core Xeon: 1.8-3.1 TFLOP/s in bfloat16 through torch's oneDNN against
0.25-0.37 in float32). bfloat16 scores are not exact, but their error has a bound, so they can
*screen* the corpus without losing a single true top-k document.

The bound
---------
``q~, d~`` are the float32 rows rounded to bfloat16 (round to nearest, 8 significant bits, unit
roundoff ``u = 2**-8``) and ``e_q = q - q~``, ``e_d = d - d~`` the rounding errors (exact in
float32: the low half of each significand). The exact score splits as::

    <q, d> = <q~, d~> + <q~, e_d> + <e_q, d~> + <e_q, e_d>

The products of bfloat16 values are exact in float32; their float32 sum, in any order, is within
``g = (dim + 1) 2**-24 / (1 - (dim + 1) 2**-24)`` of the sum of the absolute products, at most
``g ||q~|| ||d~||`` (Cauchy-Schwarz); the result is rounded to bfloat16 once more, within
``u |s~|``. With Cauchy-Schwarz on the three cross terms, the bfloat16 score ``s~`` satisfies::

    |s~ - <q, d>| <= E + u |s~|,   E = ||q~|| ||e_d|| + ||e_q|| ||d~|| + ||e_q|| ||e_d|| + g ||q~|| ||d~||

(:func:`product_bound`). The norms are computed in float64 per row (:func:`simans_fast.kernels.topk.bf16_norms`);
for the certificate the document norms are the largest over the corpus. A rounding error's norm
is typically ``u / sqrt(3)`` of its row's, so ``E`` is about ``1.2 u`` for unit rows where the
worst case ``2u`` (every coordinate rounded by half a unit) was assumed before; with the output
rounding taken at the score's own size, this certificate is 2.4-2.8x tighter than that
worst-case one. The returned scores are :func:`simans_fast.rescore`'s (products summed in
float64, rounded to float32 once), whose own distance to ``<q, d>`` is at most
``2 x 2**-24 + (dim + 1) 2**-53`` (plus, for cosine, the float32 normalisation of the rows,
``2 (dim + 4) 2**-24``) times ``||q|| ||d||`` (:func:`rescore_error`). ``delta_q`` is ``E`` for
query ``q`` plus that term for the largest corpus row norm.

The certificate
---------------
For each query the first pass keeps the best ``m > k`` documents by ``s~`` (the exact selection
of :mod:`simans_fast.kernels.topk`, ties by lower id). A document left out has ``s~`` at most the
``m``-th kept one, so its rescored score is at most ``h(s~_(m)) + delta_q`` with
``h(x) = x + u |x|`` (non-decreasing); at least ``k`` kept ones score at least
``l(s~_(k)) - delta_q``, ``l(x) = x - u |x|``. When ``h(s~_(m)) + 2 delta_q < l(s~_(k))`` no
left-out document can reach the top k (not even by a tie), and the best ``k`` of the rescored
kept documents *are* the top k of the rescored scores over the whole corpus. The test is
evaluated in float64 with every term moved outwards by far more than its rounding. A query whose
certificate fails (ties or near ties at its k-th place, duplicated documents) is searched again
with a larger ``m``, up to the whole corpus, so the result is always exact.

Consequences: the scores are those of :func:`simans_fast.rescore` bit for bit (a function of the
query and the document alone), so the result depends on no block size, thread count or query
order, and the first pass may round however its library likes, as long as the bound holds.
The bound is checked on the first block of every call (the float32 scores of a few queries are
computed and compared); a library that breaks it raises instead of returning a wrong result.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np

from ._progress import progress_bar
from ._validate import ParameterError

logger = logging.getLogger(__name__)

#: unit roundoff of bfloat16 (8 significant bits)
U_BF16 = 2.0**-8
#: queries of one bfloat16 matrix product (its output block stays a few MB)
_MM_ROWS = 1024
#: corpus rows converted to bfloat16 at once (and columns of one product)
_CORPUS_ROWS = 8192
#: extra candidates kept by the first pass beyond k (at least this many, or k)
_MIN_EXTRA = 128
#: memory of one query block's selection state
_STATE_BUDGET = 64 * 2**20
#: queries whose bound is checked against float32 scores on the first block of every call
_CHECK_ROWS = 8


def _gamma(dim):
    """Bound, relative to the sum of the absolute products, of a float32 sum of ``dim``
    products in any order: ``gamma = (dim + 1) 2**-24 / (1 - (dim + 1) 2**-24)``."""
    g = (dim + 1) * 2.0**-24
    return g / (1.0 - g)


def linear_error(q_t, q_e, d_t, d_e, g):
    """``E`` of the module docstring: ``|q~||e_d| + |e_q||d~| + |e_q||e_d| + g |q~||d~|`` for
    the norms of the bfloat16 rows (``q_t``, ``d_t``) and of their rounding errors (``q_e``,
    ``d_e``): everything but the output rounding of the bound on ``|s~ - <q, d>|``."""
    # the last term: values the product's instructions may flush to zero (below 2**-126)
    return q_t * d_e + q_e * d_t + q_e * d_e + g * q_t * d_t + 2.0**-110 * (1.0 + q_t + d_t)


def product_bound(q_t, q_e, d_t, d_e, s_bf16, dim):
    """The bound on ``|s~ - <q, d>|`` for the bfloat16 product ``s~`` (module docstring):
    :func:`linear_error` plus the rounding of the float32 result to bfloat16,
    ``2**-8 |s~|``."""
    return linear_error(q_t, q_e, d_t, d_e, _gamma(dim)) + U_BF16 * np.abs(s_bf16)


def _up(x):
    """``x`` (float64, >= 0 or a bound) moved up by far more than its own rounding."""
    return x + np.abs(x) * 2.0**-40 + 2.0**-1000


def _down(x):
    return x - np.abs(x) * 2.0**-40 - 2.0**-1000


def _bits(t):
    """The uint16 bit view of a bfloat16 tensor (no copy)."""
    import torch

    return t.view(torch.int16).numpy().view(np.uint16)


def rescore_error(dim, cosine):
    """Bound (times ``||q|| ||d||``) of the rescored score's distance to the float32 score the
    first pass approximates."""
    # final rounding to float32, float32 conversion of a float64 corpus, float64 sums
    eps = 2.0 * 2.0**-24 + (dim + 1) * 2.0**-53
    if cosine:
        eps += 2.0 * (dim + 4) * 2.0**-24
    return eps


@functools.lru_cache(maxsize=None)
def native_bf16():
    """True when torch is installed and this CPU multiplies bfloat16 natively (AVX512-BF16 or
    AMX): the condition of ``prefilter="auto"``. A property of the machine, never a timing, so
    the choice (and hence the score bits) is the same in every run."""
    try:
        import torch
    except ImportError:
        return False
    cpu = getattr(torch, "cpu", None)
    flags = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                   "_is_amx_tile_supported")]
    try:
        return any(bool(f()) for f in flags if f is not None)
    except Exception:  # a private probe that changed: no first pass
        return False


def first_pass_m(k, n_d):
    """Candidates the first pass keeps for a top-``k``."""
    return min(n_d, k + max(k, _MIN_EXTRA))


def topk_bf16(queries, corpus, k, metric, excl, progress=False, query_block=None, m=None,
              check=True, z=5.0, norms=None):
    """Exact top-k (ids, scores) of float32/float16 ``queries`` against ``corpus`` for
    ``metric`` "ip" or "cosine", screened in bfloat16 (module docstring).

    ``excl``: None or a CSR pair (indptr, ids) with sorted ids per row, as
    ``candidates._normalize_exclude`` returns. ``m`` overrides the number of
    candidates kept by the first pass (the tests force certificates to fail with it); ``z`` is
    the margin of the selection's threshold guess (0: no guessing; see
    :func:`simans_fast.kernels.topk._compact`). Rows whose guess or certificate fails are
    searched again without guessing and with four times ``m``; that search gets ``norms``, the
    corpus' largest squared norms (float32 rows, bfloat16 rows, rounding errors) found by this
    one, instead of computing them again."""
    import torch

    from ._blocks import block_f32, check_finite, empty_result, sub_exclusions
    from .kernels import topk as K

    n_q, d = queries.shape
    n_d = corpus.shape[0]
    ids_out, scores_out = empty_result(n_q, k, n_d, "prefilter='bfloat16'")
    if n_q == 0 or n_d == 0:
        return ids_out, scores_out
    cosine = metric == "cosine"
    k_sel = min(k, n_d)
    m = first_pass_m(k_sel, n_d) if m is None else max(k_sel, min(int(m), n_d))
    cap = min(m + max(m, 128), n_d + 1)
    row_bytes = (cap + K.CHUNK) * 8
    qb = max(1, min(query_block or 4096, n_q, _STATE_BUDGET // row_bytes))
    cb = min(_CORPUS_ROWS, n_d)
    if excl is None:
        indptr = np.zeros(n_q + 1, dtype=np.int64)
        eids = np.zeros(0, dtype=np.int64)
    else:
        indptr, eids = excl
    rho = rescore_error(d, cosine)
    g = _gamma(d)

    keys = np.empty((qb, cap + K.CHUNK), dtype=np.uint64)
    state = np.empty((qb, 3), dtype=np.int64)
    thr = np.empty((qb, 1), dtype=np.float32)
    ok = np.empty(qb, dtype=np.uint8)
    ids_m = np.empty((qb, m), dtype=np.int64)
    sc_m = np.empty((qb, m), dtype=np.float32)
    r_m = np.empty((qb, m), dtype=np.float32)
    qconv = np.empty((qb, d), dtype=np.float32)
    cconv = np.empty((cb, d), dtype=np.float32)
    badbuf = np.empty(max(qb, cb), dtype=np.uint8)
    c_rounded2 = np.empty(cb, dtype=np.float64)
    c_error2 = np.empty(cb, dtype=np.float64)
    c_sq2 = np.empty(cb, dtype=np.float64)
    q_rounded2 = np.empty(qb, dtype=np.float64)
    q_error2 = np.empty(qb, dtype=np.float64)
    q_sq2 = np.empty(qb, dtype=np.float64)
    import numba

    fbuf = np.empty((numba.config.NUMBA_NUM_THREADS, cb), dtype=np.float32)
    # the products' and the converted blocks' buffers, allocated once: a fresh 16 MB output
    # per product is fresh pages to fault in, which cost more than the product on some VMs
    s_buf = torch.empty(min(_MM_ROWS, qb) * cb, dtype=torch.bfloat16)
    c_buf = torch.empty(cb * d, dtype=torch.bfloat16)
    q_buf = torch.empty(qb * d, dtype=torch.bfloat16)
    n_tot = float(n_d)
    # largest squared norms of the float32 corpus rows seen (all of them after pass 1), of the
    # bfloat16 rows and of their rounding errors
    d_max, dt_max, de_max = (0.0, 0.0, 0.0) if norms is None else norms
    scan = norms is None  # the first query block's pass computes them
    failed = []
    n_blocks = -(-n_q // qb) * -(-n_d // cb)
    checked = not check
    f16 = corpus.dtype == np.float16
    corpus_u16 = np.asarray(corpus).view(np.uint16) if f16 else None
    with progress_bar(n_blocks, desc="top-k (bfloat16 first pass)", enable=progress,
                      unit="block") as bar:
        for qs in range(0, n_q, qb):
            qe = min(n_q, qs + qb)
            nb = qe - qs
            Q = block_f32(queries, qs, qe, qconv, cosine)
            if check:
                check_finite(Q, "queries", qs, badbuf)
            Qt = _to_bf16(torch, Q, q_buf)
            K.bf16_norms(Q, _bits(Qt), q_rounded2[:nb], q_error2[:nb], q_sq2[:nb])
            q_norm = np.sqrt(q_sq2[:nb])
            q_t = _up(np.sqrt(q_rounded2[:nb]))
            q_e = _up(np.sqrt(q_error2[:nb]))
            st, th, kq = state[:nb], thr[:nb], keys[:nb]
            st[:, 0] = 0
            st[:, 1] = indptr[qs:qe]
            st[:, 2] = 0
            th[:] = -np.inf
            for lo in range(0, n_d, cb):
                hi = min(n_d, lo + cb)
                C = block_f32(corpus, lo, hi, cconv, cosine)
                if qs == 0 and check:
                    check_finite(C, "corpus", lo, badbuf)
                Ct = _to_bf16(torch, C, c_buf)
                if qs == 0 and scan:
                    ct2, ce2, cs2 = c_rounded2[: hi - lo], c_error2[: hi - lo], c_sq2[: hi - lo]
                    K.bf16_norms(C, _bits(Ct), ct2, ce2, cs2)
                    d_max = max(d_max, float(cs2.max()))
                    dt_max = max(dt_max, float(ct2.max()))
                    de_max = max(de_max, float(ce2.max()))
                for r0 in range(0, nb, _MM_ROWS):
                    r1 = min(nb, r0 + _MM_ROWS)
                    S = s_buf[: (r1 - r0) * (hi - lo)].view(r1 - r0, hi - lo)
                    torch.mm(Qt[r0:r1], Ct.T, out=S)
                    S = _bits(S)
                    if not checked:
                        _check_bound(Q[r0:r1], C, S, q_t[r0:r1], q_e[r0:r1],
                                     _up(np.sqrt(c_rounded2[: hi - lo])),
                                     _up(np.sqrt(c_error2[: hi - lo])))
                        checked = True
                    K.select_bf16_block(S, lo, kq[r0:r1], st[r0:r1], th[r0:r1], m, indptr,
                                        eids, qs + r0, n_tot, z, fbuf)
                bar.update(1)
            K.finalize(kq, st, th, m, 1, ids_m[:nb], sc_m[:nb], ok[:nb])
            # the certificate (module docstring), in float64
            d_norm = np.sqrt(d_max) * (1.0 + (d + 2) * 2.0**-24)
            e_q = linear_error(q_t, q_e, _up(np.sqrt(dt_max)), _up(np.sqrt(de_max)), g)
            delta = _up(e_q + rho * q_norm * d_norm)
            im, sm = ids_m[:nb], sc_m[:nb]
            s_m = sm[:, m - 1].astype(np.float64)
            s_k = sm[:, k_sel - 1].astype(np.float64)
            with np.errstate(invalid="ignore"):  # -inf padding: those rows pass by their ids
                cert = (ok[:nb] == 1) & ((m >= n_d) | (im[:, m - 1] < 0)
                                         | (_up(s_m + U_BF16 * np.abs(s_m) + 2.0 * delta)
                                            < _down(s_k - U_BF16 * np.abs(s_k))))
            rows = np.flatnonzero(cert)
            if rows.size:
                _rescore(Q, corpus, corpus_u16, im, r_m[:nb], cosine, K)
                bi = np.empty((rows.size, k_sel), dtype=np.int64)
                bs = np.empty((rows.size, k_sel), dtype=np.float32)
                K.rank_rescored(im, r_m[:nb].view(np.uint32), rows, k_sel, bi, bs)
                ids_out[qs + rows, :k_sel] = bi
                scores_out[qs + rows, :k_sel] = bs
            if rows.size < nb:
                failed.append(qs + np.flatnonzero(~cert))
    if failed:
        rows = np.concatenate(failed)
        m2 = min(n_d, 4 * m)
        logger.debug("simans_fast.topk: %d of %d rows not certified with m=%d; again with m=%d",
                     rows.size, n_q, m, m2)
        i, s = topk_bf16(np.asarray(queries[rows]), corpus, k, metric,
                         None if excl is None else sub_exclusions(excl, rows), False,
                         query_block, m=m2, check=False, z=0.0,
                         norms=(d_max, dt_max, de_max))
        ids_out[rows] = i
        scores_out[rows] = s
    return ids_out, scores_out


def _to_bf16(torch, x, buf):
    """The float32 array ``x`` rounded to bfloat16 into the flat tensor ``buf`` (read-only
    arrays too: torch only reads them here, so its warning about non-writable arrays does not
    apply); returns the view of ``buf`` shaped as ``x``."""
    out = buf[: x.size].view(x.shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        out.copy_(torch.from_numpy(x))
    return out


def _rescore(Q, corpus, corpus_u16, ids, out, cosine, K):
    """:func:`simans_fast.rescore`'s scores of the kept candidates (queries ``Q`` already
    normalised for cosine)."""
    mode = 1 if cosine else 0
    if corpus_u16 is not None:
        K.rescore_f16(Q, corpus_u16, ids, mode, out)
    else:
        K.rescore_dense(Q, np.asarray(corpus), ids, mode, out)


def _check_bound(Q, C, S_u16, q_t, q_e, c_t, c_e):
    """The first pass's scores of a few queries against the first corpus block, compared with
    float64 scores: a library whose bfloat16 product breaks :func:`product_bound` raises
    here (``q_t, q_e, c_t, c_e``: the norms of the rows' bfloat16 roundings and errors)."""
    rows = np.unique(np.linspace(0, Q.shape[0] - 1, min(_CHECK_ROWS, Q.shape[0])).astype(int))
    approx = (S_u16[rows].astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    exact = Q[rows].astype(np.float64) @ C.T.astype(np.float64)
    bound = product_bound(q_t[rows, None], q_e[rows, None], c_t[None, :], c_e[None, :], approx,
                          Q.shape[1]) * (1.0 + 2.0**-20)
    bad = np.abs(approx - exact) > bound
    if bad.any():
        raise RuntimeError(
            "prefilter='bfloat16': torch's bfloat16 matrix product on this machine is less "
            f"accurate than the bound the certificate assumes (error {np.abs(approx - exact).max():.3g} "
            f"> bound): pass prefilter='none'")


def check_prefilter(prefilter, metric):
    """The first pass to use: ``"bfloat16"`` or ``None`` (the value's rule is
    ``CONSTRAINTS["prefilter"]``; this adds what the metric and the installed packages allow)."""
    from ._validate import validate

    try:
        prefilter = validate("prefilter", prefilter)
    except ParameterError:
        raise ParameterError("prefilter", f"prefilter must be None, 'none', 'auto' or "
                                          f"'bfloat16', got {prefilter!r}") from None
    if prefilter in (None, "none"):
        return None
    if prefilter == "auto":
        return "bfloat16" if metric in ("ip", "cosine") and native_bf16() else None
    if metric not in ("ip", "cosine"):
        raise ParameterError("prefilter", f"prefilter='bfloat16' supports metric 'ip' and "
                                          f"'cosine', not {metric!r}: pass prefilter='none'")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ParameterError("prefilter", "prefilter='bfloat16' needs torch "
                                          "(pip install 'simans_fast[torch]')") from None
    return "bfloat16"
