"""Top-k assignments and the top-k prediction.

Keeping the ``k`` largest assignments of each sample makes its lifted row
block-sparse: ``k`` blocks of ``d + 1`` non-zeros out of ``m``. The selection
never forms the full softmax, and the prediction groups rows by anchor (one
small GEMM per anchor). The block-sparse statistics of such rows are in
:mod:`arn_sklearn._model._blocksparse`.
"""

import threading

import numpy as np

from .._utils._arrays import is_numpy
from .._utils._threads import single_threaded_blas
from ._assignment import (
    _block_rows,
    _Prepared,
    _run_blocks,
    _scaled_rows,
    _scaled_similarity_xp,
)


def sparse_top_k(n_anchors, top_k):
    """``top_k`` when it sparsifies a model of ``n_anchors``, else None (the dense model).

    The one place where the dense/top-k rule is written.
    """
    return None if top_k is None or top_k >= n_anchors else int(top_k)


def top_k_assignments(X, anchors, kind, softness, k, xp):
    """The ``k`` largest soft assignments of each sample, renormalised.

    The softmax is taken over the ``k`` largest similarities only, which is the
    same as renormalising the ``k`` largest entries of the full softmax; the
    full softmax is never formed. On numpy the similarities are computed and
    selected in cache-sized row blocks (see :mod:`arn_sklearn._kernels._assignment`),
    scaled so that finite input of any magnitude gives finite assignments.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    anchors : array of shape (n_anchors, n_features)
    kind : str
        Similarity, see :func:`arn_sklearn._kernels._assignment.similarity`.
    softness : float
    k : int
        Number of anchors kept per sample, ``1 <= k <= n_anchors``.
    xp : array namespace

    Returns
    -------
    idx : integer array of shape (n_samples, k)
        Anchor indices, in decreasing order of assignment (ties: lower index first).
    vals : array of shape (n_samples, k)
        Their assignments; rows sum to one.

    Examples
    --------
    >>> import numpy as np
    >>> from array_api_compat import array_namespace
    >>> X, C = np.array([[0.1], [1e300]]), np.array([[0.0], [1.0], [5.0]])
    >>> idx, vals = top_k_assignments(X, C, "euclidean", 1.0, 2, array_namespace(X))
    >>> idx
    array([[0, 1],
           [2, 1]])
    >>> vals.round(3)
    array([[0.69, 0.31],
           [1.  , 0.  ]])
    """
    softness = float(softness)
    if is_numpy(X):
        return _top_k_numpy(X, anchors, kind, softness, k)
    T, f1, f2 = _scaled_similarity_xp(X, anchors, kind, xp, row_constant=False)
    idx = xp.argsort(T, axis=1, descending=True, stable=True)[:, :k]
    top = xp.take_along_axis(T, idx, axis=1)
    D = (((top - top[:, :1]) * softness) * f1[:, None]) * f2[:, None]
    E = xp.exp(D)
    return idx, E / xp.sum(E, axis=1, keepdims=True)


# Up to this k, the top k are selected by k passes of argmax.
_ARGMAX_MAX_K = 8

# Extra float32 candidates per row re-scored in float64 (see _top_k_numpy).
# One: rows with a near tie at the k-th place (0.01-0.8% of rows on the
# benchmark data) are recomputed; a second margin pass costs more than that saves.
_SCREEN_MARGIN = 1

# Unit roundoffs of float32 and float64.
_U32, _U64 = 2.0**-24, 2.0**-53

# float32 screening only where A's and the anchors' entries are this small or
# smaller: no product or sum of 2^10 of them can overflow float32 (2^128).
_SCREEN_MAX_ABS = 2.0**50

# Row blocks of about this many bytes of float32 similarities when screening.
_SCREEN_BLOCK_BYTES = 2**22


def _top_k_numpy(X, anchors, kind, softness, k):
    n, m = X.shape[0], anchors.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"top_k={k} must be in [1, n_anchors={m}].")
    idx = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k))
    prepared = _Prepared(anchors, kind)
    screen = _Screen(prepared, k, m) if k <= _ARGMAX_MAX_K and k < m else None
    if screen is not None:
        # Larger blocks: a block's few dozen numpy calls cost 0.3 us a row
        # at 256 rows (1024 anchors), and float32 halves the bytes.
        step = _block_rows(m, _SCREEN_BLOCK_BYTES, itemsize=4)
    else:
        step = _block_rows(m)
    buffers = {}

    def buffer(b, dtype):
        key = (threading.get_ident(), dtype)
        if key not in buffers or buffers[key].shape[0] < b:
            buffers[key] = np.empty((b, m), dtype=dtype)
        return buffers[key][:b]

    def block(rows):
        b = rows.stop - rows.start
        A, f1, f2 = _scaled_rows(X[rows], prepared, row_constant=False)
        if screen is not None and screen.usable(A):
            ib, top = screen.select(A, buffer(b, np.float32))
        else:
            T = buffer(b, np.float64)
            _finish_block(A, prepared, T)
            ib, top = _select(T, k)
        top -= top[:, :1]
        top *= softness
        if f1 is not None:
            # (T - max T) K f1 f2 in this order: the zero stays zero, the
            # rest may reach -inf (rows and anchors both huge), never NaN.
            with np.errstate(over="ignore"):
                top *= f1[:, None]
                top *= f2[:, None]
        np.exp(top, out=top)
        top /= top.sum(axis=1, keepdims=True)
        idx[rows] = ib
        vals[rows] = top

    _run_blocks(n, m, block, step) if step < n else block(slice(0, n))
    return idx, vals


def _finish_block(A, prep, out):
    """The float64 block ``T`` of :func:`_scaled_rows`' ``A`` (``row_constant=False``)."""
    np.matmul(A, prep.CT, out=out)
    if prep.kind == "absdot":
        np.abs(out, out=out)


def _select(T, k):
    """Indices and values of the ``k`` largest entries of each row of ``T`` (overwritten).

    In decreasing order, ties broken by the lower index.
    """
    b, m = T.shape
    if k <= _ARGMAX_MAX_K:
        # k passes of argmax over the in-cache block beat a partition for
        # small k; argmax takes the first maximum, so ties go to the lower
        # index, and the k come out in decreasing order.
        ib = np.empty((b, k), dtype=np.int64)
        top = np.empty((b, k))
        ar = np.arange(b)
        for j in range(k):
            col = np.argmax(T, axis=1)
            ib[:, j] = col
            top[:, j] = T[ar, col]
            T[ar, col] = -np.inf
        return ib, top
    if k < m:
        # argpartition is linear in m; only the k kept columns are sorted.
        part = np.argpartition(T, m - k, axis=1)[:, m - k :]
    else:
        part = np.broadcast_to(np.arange(m), (b, m))
    top = np.take_along_axis(T, part, axis=1)
    return _ordered(part, top)


def _ordered(cols, vals):
    """``cols`` and ``vals`` per row by decreasing value, ties by the lower column."""
    order = np.lexsort((cols, -vals), axis=1)
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)


class _Screen:
    """Top-k selection by a float32 GEMM, exact in float64.

    The float32 block picks ``k + margin`` candidates per row (half the GEMM's
    time and half its bytes); their similarities are then recomputed in
    float64 and the ``k`` largest kept. That is the float64 selection whenever
    no other anchor can reach the ``k``-th kept value: every float32 entry is
    within ``e = (p + 4)(u32 + 2 u64) ||a|| max_j ||c_j||`` of the float64 one
    (``p`` terms per dot product, inputs rounded to float32; Higham's bound
    for any summation order, with Cauchy-Schwarz), so rows whose ``k``-th value
    does not exceed the last candidate's float32 value plus ``e`` (near ties
    with an unscreened anchor) are recomputed wholly in float64.
    """

    def __init__(self, prep, k, m):
        self.prep, self.k = prep, k
        self.r = min(_SCREEN_MARGIN, m - k)
        CT = prep.CT
        self.cmax = float(np.max(np.abs(CT), initial=0.0))
        # Anchors too large for the screen leave it unused (see usable).
        self.CT32 = CT.astype(np.float32) if self.cmax <= _SCREEN_MAX_ABS else None
        self.C_rows = np.ascontiguousarray(CT.T)  # (m, p): one anchor's column per row
        p = CT.shape[0]
        self.rel = (p + 4) * (_U32 + 2 * _U64) * float(np.max(np.linalg.norm(CT, axis=0)))
        # Entries below float32's normal range round with an absolute error
        # (at most 2^-149 each); a generous bound of their effect on a dot.
        self.absolute = p * 2.0**-140 * (1.0 + _SCREEN_MAX_ABS) * (1.0 + self.cmax)

    def usable(self, A):
        if self.CT32 is None:
            return False
        return float(np.max(np.abs(A), initial=0.0)) <= _SCREEN_MAX_ABS

    def select(self, A, T32):
        k, r, prep = self.k, self.r, self.prep
        b = A.shape[0]
        np.matmul(A.astype(np.float32), self.CT32, out=T32)
        if prep.kind == "absdot":
            np.abs(T32, out=T32)
        ar = np.arange(b)
        cand = np.empty((b, k + r), dtype=np.int64)
        for j in range(k + r):
            col = np.argmax(T32, axis=1)
            cand[:, j] = col
            if j < k + r - 1:
                T32[ar, col] = -np.inf
        last = T32[ar, col].astype(np.float64)  # the largest float32 value left out, or more
        # mode="clip" skips numpy's buffered bounds check (indices are valid).
        exact = np.einsum("ij,ikj->ik", A, np.take(self.C_rows, cand, axis=0, mode="clip"))
        if prep.kind == "absdot":
            np.abs(exact, out=exact)
        ib, top = _ordered(cand[:, : k + r], exact)
        ib, top = ib[:, :k].copy(), top[:, :k].copy()
        bound = np.sqrt(np.einsum("ij,ij->i", A, A))
        bound *= self.rel
        bound += self.absolute
        bound += last
        near = np.flatnonzero(~(top[:, -1] > bound))
        if near.size:
            T = np.empty((near.size, self.C_rows.shape[0]))
            _finish_block(A[near], prep, T)
            ib[near], top[near] = _select(T, k)
        return ib, top


def densify(idx, vals, n_anchors, xp):
    """Dense ``(n_samples, n_anchors)`` assignments with zeros outside the top k."""
    onehot = xp.astype(idx[:, :, None] == xp.arange(n_anchors)[None, None, :], vals.dtype)
    return xp.sum(onehot * vals[:, :, None], axis=1)


def predict_top_k(X, idx, vals, W, xp):
    """ARN output with top-k assignments: ``sum_s vals[:, s] W_{idx[:, s]}^T [x, 1]``.

    On numpy the rows are grouped by anchor (a linear counting sort) and each
    anchor's rows go through one GEMM with its ``(d + 1, t)`` regressor: ``n k``
    row-products in all, without gathering a ``(d + 1, t)`` matrix per row.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    idx, vals : arrays of shape (n_samples, k)
        From :func:`top_k_assignments`.
    W : array of shape (n_anchors * (n_features + 1), n_targets)

    Returns
    -------
    Y : array of shape (n_samples, n_targets)
    """
    n_samples, n_features = X.shape
    d1 = n_features + 1
    W3 = xp.reshape(W, (W.shape[0] // d1, d1, W.shape[1]))
    if is_numpy(X):
        return _predict_top_k_numpy(X, idx, vals, W3)
    X1 = xp.concat([X, xp.ones((n_samples, 1), dtype=X.dtype)], axis=1)
    out = xp.zeros((n_samples, W.shape[1]), dtype=X.dtype)
    for s in range(idx.shape[1]):
        Ws = xp.take(W3, idx[:, s], axis=0)  # (n, d + 1, t)
        out = out + vals[:, s : s + 1] * xp.sum(X1[:, :, None] * Ws, axis=1)
    return out


def _predict_top_k_numpy(X, idx, vals, W3):
    import scipy.sparse as sp

    n, k = idx.shape
    m, d1, t = W3.shape
    X1 = np.empty((n, d1), dtype=np.result_type(X, W3))
    X1[:, :-1] = X
    X1[:, -1] = 1.0
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    groups = sp.csr_matrix((np.ravel(vals), (np.ravel(idx), rows)), shape=(m, n))
    ptr, g_rows, g_vals = groups.indptr, groups.indices, groups.data
    out = np.zeros((n, t), dtype=X1.dtype)

    # Each row occurs once per anchor, so the fancy += has no repeated rows.
    with single_threaded_blas():
        for a in np.flatnonzero(np.diff(ptr)):
            s, e = ptr[a], ptr[a + 1]
            r = g_rows[s:e]
            Xa = X1[r]
            Xa *= g_vals[s:e, None]
            out[r] += Xa @ W3[a]
    return out
