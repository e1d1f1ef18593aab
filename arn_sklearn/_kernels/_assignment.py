"""Similarity, softmax and soft assignments of samples to anchors.

These kernels know nothing of the estimator API: they take arrays and an array
namespace ``xp`` (numpy, CuPy, array-api-strict, ...) and return arrays.

Every similarity is one GEMM on rows augmented with two columns, so that, e.g.,
``-||x - c||^2 = [2x, -||x||^2, -1] . [c, 1, ||c||^2]`` needs no ``n x m``
temporaries. On numpy the rows are processed in cache-sized blocks written in
place into the output, on all cores. Rows and anchors are first divided by
powers of two (exact) wherever a square could overflow, and the similarity is
carried as a finite scaled block plus a per-row factor: the similarity itself
is then at worst ``-inf`` (never NaN) for finite input of any magnitude, and
the softmax, computed on the scaled block, stays a valid distribution (one-hot
when the factor is huge).
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._utils._arrays import is_numpy
from .._utils._chunks import rows_for
from .._utils._threads import blas_thread_count, single_threaded_blas

SIMILARITIES = ("euclidean", "dot", "absdot", "cosine")

# Guards the cosine similarity against zero-norm rows or anchors.
_NORM_EPS = 1e-12

# Rows and anchors whose largest entry is below this are used unscaled: a sum of
# up to 2^100 squares of them stays finite, so the plain formulas are exact.
_SAFE_ABS = 2.0**400

# Row blocks of about this many bytes of similarities (L2/L3-resident).
_BLOCK_BYTES = 2**21


def similarity(X, anchors, kind, xp):
    """Similarity ``s(x, c)`` of every row of ``X`` to every anchor.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    anchors : array of shape (n_anchors, n_features)
    kind : {"euclidean", "dot", "absdot", "cosine"}
        ``"euclidean"`` is ``-||x - c||^2``, ``"dot"`` is ``x.c``,
        ``"absdot"`` is ``|x.c|`` and ``"cosine"`` is ``x.c / (||x|| ||c||)``.
    xp : array namespace

    Returns
    -------
    S : array of shape (n_samples, n_anchors)
        Never NaN for finite input; ``-inf``/``inf`` where the true value
        overflows float64.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> X = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> -similarity(X, X, "euclidean", array_namespace(X)) + 0.0
    array([[ 0., 25.],
           [25.,  0.]])
    """
    _check_kind(kind)
    if is_numpy(X):
        return _similarity_numpy(X, anchors, kind)
    T, f1, f2 = _scaled_similarity_xp(X, anchors, kind, xp)
    return (T * f1[:, None]) * f2[:, None]


def _similarity_numpy(X, anchors, kind):
    out = np.empty((X.shape[0], anchors.shape[0]), dtype=np.result_type(X, anchors))
    prepared = _Prepared(anchors, kind)

    def block(rows):
        f1, f2 = _scaled_block(X[rows], prepared, out[rows])
        if f1 is not None:
            scaled = np.flatnonzero((f1 != 1.0) | (f2 != 1.0))
            o = out[rows]
            with np.errstate(over="ignore"):  # overflow to -inf is the answer
                o[scaled] *= f1[scaled, None]
                o[scaled] *= f2[scaled, None]

    _run_blocks(X.shape[0], anchors.shape[0], block)
    return out


def softmax(S, xp):
    """Row-wise softmax, stable for any magnitude of ``S`` (max-subtracted).

    A row whose maximum is infinite is a one-hot at its first maximum.
    """
    M = xp.max(S, axis=1, keepdims=True)
    if is_numpy(S) and np.all(np.isfinite(M)):
        # The common case, in place: the same values (the guards below select
        # these), 3-4x faster on a learned fit's (rows, 16) blocks.
        E = S - M
        np.exp(E, out=E)
        E /= np.sum(E, axis=1, keepdims=True)
        return E
    finite = xp.isfinite(M)
    D = S - xp.where(finite, M, xp.zeros_like(M))
    D = xp.where(finite, D, xp.where(S == M, xp.zeros_like(S), -xp.inf * xp.ones_like(S)))
    E = xp.exp(D)
    return E / xp.sum(E, axis=1, keepdims=True)


def soft_assignments(X, anchors, kind, softness, xp, out=None):
    """Soft assignments ``pi(x) = softmax(K s(x, c_1..m))`` (paper eq. 4).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    anchors : array of shape (n_anchors, n_features)
    kind : str
        See :func:`similarity`.
    softness : float
        ``K > 0``.
    xp : array namespace
    out : numpy array of shape (n_samples, n_anchors), optional
        Buffer to write into (numpy only), e.g. reused across chunks.

    Returns
    -------
    A : array of shape (n_samples, n_anchors)
        Non-negative rows summing to one; never NaN for finite input.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> X, C = np.array([[0.0], [1e200]]), np.array([[0.0], [1.0]])
    >>> soft_assignments(X, C, "euclidean", 1.0, array_namespace(X)).round(3)
    array([[0.731, 0.269],
           [0.   , 1.   ]])
    """
    _check_kind(kind)
    softness = float(softness)
    if is_numpy(X):
        if out is None:
            out = np.empty((X.shape[0], anchors.shape[0]), dtype=np.result_type(X, anchors))
        prepared = _Prepared(anchors, kind)

        def block(rows):
            o = out[rows]
            f1, f2 = _scaled_block(X[rows], prepared, o, row_constant=False)
            o -= o.max(axis=1, keepdims=True)
            o *= softness
            if f1 is not None:
                scaled = np.flatnonzero((f1 != 1.0) | (f2 != 1.0))
                # (T - max T) K f1 f2 in this order: the zero stays zero, the
                # rest may reach -inf, never NaN.
                with np.errstate(over="ignore"):
                    o[scaled] *= f1[scaled, None]
                    o[scaled] *= f2[scaled, None]
            np.exp(o, out=o)
            o /= o.sum(axis=1, keepdims=True)

        _run_blocks(X.shape[0], anchors.shape[0], block)
        return out
    T, f1, f2 = _scaled_similarity_xp(X, anchors, kind, xp, row_constant=False)
    D = (((T - xp.max(T, axis=1, keepdims=True)) * softness) * f1[:, None]) * f2[:, None]
    E = xp.exp(D)
    return E / xp.sum(E, axis=1, keepdims=True)


def similarity_backward(X, anchors, S, grad_S, kind, xp, *, input_grad=False):
    """Back-propagate ``dL/dS`` through ``S = s(X, anchors)``.

    Returns
    -------
    grad_anchors : array of shape (n_anchors, n_features)
    grad_X : array of shape (n_samples, n_features) or None
    """
    if kind == "absdot":
        grad_S = grad_S * xp.sign(X @ anchors.T)
        kind = "dot"
    if kind == "dot":
        grad_X = grad_S @ anchors if input_grad else None
        return grad_S.T @ X, grad_X
    if kind == "euclidean":
        # s = 2 x.c - |x|^2 - |c|^2
        grad_anchors = 2.0 * (grad_S.T @ X - xp.sum(grad_S, axis=0)[:, None] * anchors)
        if not input_grad:
            return grad_anchors, None
        return grad_anchors, 2.0 * (grad_S @ anchors - xp.sum(grad_S, axis=1)[:, None] * X)
    if kind == "cosine":
        # s = x.c / (|x| |c|): a dot term, and one term per norm.
        x_norm = xp.linalg.vector_norm(X, axis=1)
        c_norm = xp.linalg.vector_norm(anchors, axis=1)
        denominator = xp.maximum(x_norm[:, None] * c_norm[None, :], xp.full_like(S, _NORM_EPS))
        grad_dot = grad_S / denominator
        weighted = grad_S * S
        c_sq = xp.maximum(c_norm * c_norm, xp.full_like(c_norm, _NORM_EPS))
        grad_anchors = grad_dot.T @ X - (xp.sum(weighted, axis=0) / c_sq)[:, None] * anchors
        if not input_grad:
            return grad_anchors, None
        x_sq = xp.maximum(x_norm * x_norm, xp.full_like(x_norm, _NORM_EPS))
        grad_X = grad_dot @ anchors - (xp.sum(weighted, axis=1) / x_sq)[:, None] * X
        return grad_anchors, grad_X
    raise ValueError(f"Unknown similarity {kind!r}.")


def best_abs_dot(X, D, block_bytes=2**24):
    """Index and value of each row's largest ``|x . c|`` over the rows ``c`` of ``D``.

    The search runs in float32 and in row blocks of about ``block_bytes`` of
    correlations (the full ``(n, n_atoms)`` matrix and its absolute value were
    1.6 GB at 100k rows and 1024 atoms, and writing them cost more than the
    product); the chosen atom's correlation is recomputed in float64.
    """
    n = X.shape[0]
    label = np.empty(n, dtype=np.intp)
    X32, D32 = X.astype(np.float32), D.astype(np.float32)
    step = max(1, block_bytes // (4 * D.shape[0]))
    for start in range(0, n, step):
        block = X32[start : start + step] @ D32.T
        np.abs(block, out=block)
        label[start : start + step] = np.argmax(block, axis=1)
    return label, np.einsum("ij,ij->i", X, D[label])


def top_two_gap(X, anchors, kind, xp):
    """Per-sample gap between the largest and second largest similarity.

    The data-driven softness is derived from the median of this gap: it is the
    quantity that decides how far the softmax is from a hard assignment.
    """
    S = xp.sort(similarity(X, anchors, kind, xp), axis=1, descending=True)
    return S[:, 0] - S[:, 1]


# -- scaled similarity blocks -------------------------------------------------------------


def _check_kind(kind):
    if kind not in SIMILARITIES:
        raise ValueError(f"Unknown similarity {kind!r}; expected one of {SIMILARITIES}.")


def _pow2_at_least(v):
    """Smallest power of two ``>= v`` (1 for 0), elementwise, as float64."""
    v = np.asarray(v, dtype=np.float64)
    _, e = np.frexp(np.where(v > 0, v, 1.0))
    return np.ldexp(1.0, e)


class _Prepared:
    """Anchors prepared once per call: scaled, augmented, transposed for GEMMs."""

    def __init__(self, anchors, kind):
        C = np.asarray(anchors, dtype=np.float64)
        self.kind = kind
        cmax = float(np.max(np.abs(C))) if C.size else 0.0
        if not np.isfinite(cmax):
            raise ValueError("The anchors contain NaN or infinity.")
        # t: anchors divided by a power of two when their squares could overflow.
        self.t = 1.0 if cmax <= _SAFE_ABS else float(_pow2_at_least(cmax))
        Cs = C / self.t
        if kind == "euclidean":
            c_sq = np.einsum("ij,ij->i", Cs, Cs)
            self.CT = np.ascontiguousarray(np.vstack([Cs.T, np.ones(len(C)), c_sq]))
        elif kind == "cosine":
            norm = np.sqrt(np.einsum("ij,ij->i", Cs, Cs))
            self.CT = np.ascontiguousarray((Cs / np.maximum(norm, _NORM_EPS / self.t)[:, None]).T)
            # Zero anchors: x.c / eps, i.e. 0, as in the plain formula.
            self.CT[:, norm * self.t < _NORM_EPS] = 0.0
        else:
            self.CT = np.ascontiguousarray(Cs.T)


def _scaled_block(Xb, prep, out, row_constant=True):
    """Write a finite ``T`` into ``out`` with ``S = T * f1[:, None] * f2[:, None]``.

    With ``row_constant=False`` the euclidean ``-||x||^2`` term, the same for
    every anchor, is left out: the softmax and the top-k selection do not
    depend on it, and without it nothing cancels, so even rows far outside the
    anchors' range get their exact nearest anchor.

    Returns ``(f1, f2)``, or ``(None, None)`` when every factor is one.
    """
    A, f1, f2 = _scaled_rows(Xb, prep, row_constant)
    np.matmul(A, prep.CT, out=out)
    if prep.kind == "euclidean" and row_constant:
        np.minimum(out, 0.0, out=out)  # the expansion can round above 0 at x == c
    elif prep.kind == "absdot":
        np.abs(out, out=out)
    return f1, f2


def _scaled_rows(Xb, prep, row_constant=True):
    """The left factor of :func:`_scaled_block`: ``T = A @ prep.CT`` (``|.|`` for absdot).

    Returns ``(A, f1, f2)``; ``A`` is float64 with ``prep.CT.shape[0]`` columns.
    """
    Xb = np.asarray(Xb, dtype=np.float64)
    b = Xb.shape[0]
    amax = np.max(np.abs(Xb), axis=1) if Xb.shape[1] else np.zeros(b)
    if not np.all(np.isfinite(amax)):
        raise ValueError("X contains NaN or infinity.")
    t = prep.t
    if prep.kind == "cosine":
        u = _pow2_at_least(amax)
        Xs = Xb / u[:, None]
        norm = np.sqrt(np.einsum("ij,ij->i", Xs, Xs))
        # Rows of norm below eps keep the plain formula's x.c / eps (about 0).
        Xs /= np.where(norm * u < _NORM_EPS, _NORM_EPS / u, norm)[:, None]
        return Xs, None, None
    safe = bool(amax.max(initial=0.0) <= _SAFE_ABS) and t == 1.0
    if prep.kind == "euclidean":
        A = np.empty((b, Xb.shape[1] + 2))
        if safe:
            np.multiply(Xb, 2.0, out=A[:, :-2])
            A[:, -2] = -np.einsum("ij,ij->i", Xb, Xb) if row_constant else 0.0
            A[:, -1] = -1.0
            return A, None, None
        # -||x - c||^2 / r^2 with x = u x', c = t c', r = max(u, t): every
        # term is at most d in size; scaling by powers of two is exact.
        u = np.where(amax <= _SAFE_ABS, 1.0, _pow2_at_least(amax))
        r = np.maximum(u, t)
        Xs = Xb / u[:, None]
        np.multiply(Xs, (2.0 * (u / r) * (t / r))[:, None], out=A[:, :-2])
        A[:, -2] = -((u / r) ** 2) * np.einsum("ij,ij->i", Xs, Xs) if row_constant else 0.0
        A[:, -1] = -((t / r) ** 2)
        return A, r, r
    if safe:
        return Xb, None, None
    u = np.where(amax <= _SAFE_ABS, 1.0, _pow2_at_least(amax))
    return Xb / u[:, None], u, np.full(b, t)


def _block_rows(n_anchors, block_bytes=None, itemsize=8):
    block_bytes = _BLOCK_BYTES if block_bytes is None else block_bytes
    return min(8192, rows_for(n_anchors, block_bytes, minimum=64, itemsize=itemsize))


_POOL = []


def _run_blocks(n_rows, n_anchors, block, step=None):
    """Call ``block(slice)`` on row blocks, on one Python thread per BLAS thread.

    Each block's GEMM is small, so BLAS runs single-threaded meanwhile and the
    blocks (GEMM plus in-cache elementwise passes, which release the GIL) are
    spread over the cores instead. ``step``: rows per block (default
    :func:`_block_rows`).
    """
    step = step or _block_rows(n_anchors)
    slices = [slice(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]
    n_threads = blas_thread_count() if len(slices) > 1 else 1

    if n_threads == 1:
        if len(slices) == 1:
            block(slices[0])
            return
        with single_threaded_blas():
            for s in slices:
                block(s)
        return
    if not _POOL or _POOL[0]._max_workers != n_threads:
        _POOL[:] = [ThreadPoolExecutor(n_threads)]

    def run(part):
        for s in part:
            block(s)

    with single_threaded_blas():
        futures = [_POOL[0].submit(run, slices[t::n_threads]) for t in range(n_threads)]
        for f in futures:
            f.result()


def _scaled_similarity_xp(X, anchors, kind, xp, row_constant=True):
    """Array-API version of the scaled block: ``(T, f1, f2)`` over all rows."""
    dtype = X.dtype
    one = xp.ones((X.shape[0],), dtype=dtype, device=getattr(X, "device", None))
    amax = xp.max(xp.abs(X), axis=1) if X.shape[1] else one * 0
    cmax = float(xp.max(xp.abs(anchors))) if anchors.shape[0] * anchors.shape[1] else 0.0
    t = 1.0 if cmax <= _SAFE_ABS else 2.0 ** math.ceil(math.log2(cmax))
    C = anchors / t
    u = xp.where(amax <= _SAFE_ABS, one, 2.0 ** xp.ceil(xp.log2(xp.where(amax > 0, amax, one))))
    Xs = X / u[:, None]
    if kind == "cosine":
        x_norm = xp.linalg.vector_norm(Xs, axis=1)
        c_norm = xp.linalg.vector_norm(C, axis=1)
        x_den = xp.where(x_norm * u < _NORM_EPS, _NORM_EPS / u, x_norm)
        c_den = xp.where(c_norm * t < _NORM_EPS, xp.full_like(c_norm, _NORM_EPS / t), c_norm)
        return (Xs / x_den[:, None]) @ (C / c_den[:, None]).T, one, one
    if kind == "euclidean":
        r = xp.maximum(u, t * one)
        a, e = u / r, t / r
        dot = Xs @ C.T
        x_sq = xp.sum(Xs * Xs, axis=1)
        c_sq = xp.sum(C * C, axis=1)
        T = (2.0 * a * e)[:, None] * dot - (e * e)[:, None] * c_sq[None, :]
        if not row_constant:
            return T, r, r
        T = T - (a * a * x_sq)[:, None]
        return xp.minimum(T, xp.zeros_like(T)), r, r
    T = Xs @ C.T
    if kind == "absdot":
        T = xp.abs(T)
    return T, u, t * one
