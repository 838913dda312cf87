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
``q~, d~`` are the float32 rows rounded to bfloat16 (round to nearest, unit roundoff
``u = 2**-8``); their products are exact in float32, summed in float32 (the error of any
summation order is at most ``g = (dim + 1) 2**-24 / (1 - (dim + 1) 2**-24)`` of the sum of the
absolute products), and the result is rounded to bfloat16 once more. With Cauchy-Schwarz,
``sum |q_i d_i| <= ||q|| ||d||``, so the bfloat16 score ``s~`` of the float32 score ``s = <q, d>``
satisfies::

    |s~ - s| <= c ||q|| ||d||,   c = e + u (1 + e),   e = 2u + u**2 + g (1 + u)**2

(:func:`error_bound`; about ``0.0118`` for any dimension up to a few thousand). The returned
scores are :func:`simans_fast.rescore`'s (products summed in float64, rounded to float32 once),
whose own error adds ``2 x 2**-24 + (dim + 1) 2**-53`` (plus, for cosine, the float32 normalisation
of the rows, ``2 (dim + 4) 2**-24``) times ``||q|| ||d||``. ``delta_q`` is the sum of these terms
times ``||q||`` and the largest corpus row norm.

The certificate
---------------
For each query the first pass keeps the best ``m > k`` documents by ``s~`` (the exact selection
of :mod:`simans_fast.kernels.topk`, ties by lower id). A document left out has ``s~`` at most the
``m``-th kept one, so its rescored score is at most ``s~_(m) + delta_q``; at least ``k`` kept ones
score at least ``s~_(k) - delta_q``. When ``s~_(m) + 2 delta_q < s~_(k)`` no left-out document can
reach the top k (not even by a tie), and the best ``k`` of the rescored kept documents *are* the
top k of the rescored scores over the whole corpus. A query whose certificate fails (ties or near
ties at its k-th place, duplicated documents) is searched again with a larger ``m``, up to the
whole corpus, so the result is always exact.

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


def error_bound(dim):
    """``c`` of the module docstring: ``|s~ - s| <= c ||q|| ||d||`` for the bfloat16 score
    ``s~`` of two float32 rows of dimension ``dim``."""
    u = U_BF16
    g = (dim + 1) * 2.0**-24
    g = g / (1.0 - g)
    e = 2.0 * u + u * u + g * (1.0 + u) ** 2
    return e + u * (1.0 + e)


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
              check=True, z=5.0):
    """Exact top-k (ids, scores) of float32/float16 ``queries`` against ``corpus`` for
    ``metric`` "ip" or "cosine", screened in bfloat16 (module docstring).

    ``excl``: None or a CSR pair (indptr, ids) with sorted ids per row, as
    ``candidates._normalize_exclude`` returns. ``m`` overrides the number of
    candidates kept by the first pass (the tests force certificates to fail with it); ``z`` is
    the margin of the selection's threshold guess (0: no guessing; see
    :func:`simans_fast.kernels.topk._compact`). Rows whose guess or certificate fails are
    searched again without guessing and with four times ``m``."""
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
    c_coef = error_bound(d) + rescore_error(d, cosine)

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
    cnorm = np.empty(cb, dtype=np.float32)
    import numba

    fbuf = np.empty((numba.config.NUMBA_NUM_THREADS, cb), dtype=np.float32)
    n_tot = float(n_d)
    d_max = 0.0  # largest squared norm of the float32 corpus rows seen (all of them after pass 1)
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
            Qt = _to_bf16(torch, Q)
            q_norm = np.sqrt(np.einsum("ij,ij->i", Q, Q, dtype=np.float64))
            st, th, kq = state[:nb], thr[:nb], keys[:nb]
            st[:, 0] = 0
            st[:, 1] = indptr[qs:qe]
            st[:, 2] = 0
            th[:] = -np.inf
            for lo in range(0, n_d, cb):
                hi = min(n_d, lo + cb)
                C = block_f32(corpus, lo, hi, cconv, cosine)
                if qs == 0:
                    if check:
                        check_finite(C, "corpus", lo, badbuf)
                    K.sq_norms(C, cnorm[: hi - lo])
                    d_max = max(d_max, float(cnorm[: hi - lo].max()))
                Ct = _to_bf16(torch, C)
                for r0 in range(0, nb, _MM_ROWS):
                    r1 = min(nb, r0 + _MM_ROWS)
                    S = torch.mm(Qt[r0:r1], Ct.T).view(torch.int16).numpy().view(np.uint16)
                    if not checked:
                        _check_bound(Q[r0:r1], C, S, q_norm[r0:r1])
                        checked = True
                    K.select_bf16_block(S, lo, kq[r0:r1], st[r0:r1], th[r0:r1], m, indptr,
                                        eids, qs + r0, n_tot, z, fbuf)
                bar.update(1)
            K.finalize(kq, st, th, m, 1, ids_m[:nb], sc_m[:nb], ok[:nb])
            # the certificate (module docstring), in float64
            d_norm = np.sqrt(d_max) * (1.0 + (d + 2) * 2.0**-24)
            delta = c_coef * q_norm * (1.0 + 2.0**-40) * d_norm
            im, sm = ids_m[:nb], sc_m[:nb]
            cert = (ok[:nb] == 1) & ((m >= n_d) | (im[:, m - 1] < 0)
                                     | (sm[:, m - 1].astype(np.float64) + 2.0 * delta
                                        < sm[:, k_sel - 1]))
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
                         query_block, m=m2, check=False, z=0.0)
        ids_out[rows] = i
        scores_out[rows] = s
    return ids_out, scores_out


def _to_bf16(torch, x):
    """A new bfloat16 tensor of the float32 array ``x`` (read-only arrays too: torch only reads
    them here, so its warning about non-writable arrays does not apply)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x).to(torch.bfloat16)


def _rescore(Q, corpus, corpus_u16, ids, out, cosine, K):
    """:func:`simans_fast.rescore`'s scores of the kept candidates (queries ``Q`` already
    normalised for cosine)."""
    mode = 1 if cosine else 0
    if corpus_u16 is not None:
        K.rescore_f16(Q, corpus_u16, ids, mode, out)
    else:
        K.rescore_dense(Q, np.asarray(corpus), ids, mode, out)


def _check_bound(Q, C, S_u16, q_norm):
    """The first pass's scores of a few queries against the first corpus block, compared with
    float64 scores: a library whose bfloat16 product breaks :func:`error_bound` raises here."""
    rows = np.unique(np.linspace(0, Q.shape[0] - 1, min(_CHECK_ROWS, Q.shape[0])).astype(int))
    approx = (S_u16[rows].astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    exact = Q[rows].astype(np.float64) @ C.T.astype(np.float64)
    c_norm = np.sqrt(np.einsum("ij,ij->i", C, C, dtype=np.float64))
    bound = error_bound(Q.shape[1]) * np.outer(q_norm[rows], c_norm) * (1.0 + 2.0**-20)
    bad = np.abs(approx - exact) > bound
    if bad.any():
        raise RuntimeError(
            "prefilter='bfloat16': torch's bfloat16 matrix product on this machine is less "
            f"accurate than the bound the certificate assumes (error {np.abs(approx - exact).max():.3g} "
            f"> bound): pass prefilter=None")


def check_prefilter(prefilter, metric):
    """The first pass to use: ``"bfloat16"`` or ``None``."""
    if prefilter in (None, "none"):
        return None
    if prefilter == "auto":
        return "bfloat16" if metric in ("ip", "cosine") and native_bf16() else None
    if prefilter == "bfloat16":
        if metric not in ("ip", "cosine"):
            raise ParameterError("prefilter", f"prefilter='bfloat16' supports metric 'ip' and "
                                              f"'cosine', not {metric!r}: pass prefilter=None")
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ParameterError("prefilter", "prefilter='bfloat16' needs torch "
                                              "(pip install 'simans_fast[torch]')") from None
        return "bfloat16"
    raise ParameterError("prefilter", f"prefilter must be None, 'none', 'auto' or 'bfloat16', "
                                      f"got {prefilter!r}")
