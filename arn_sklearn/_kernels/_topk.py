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
from ._assignment import _block_rows, _Prepared, _run_blocks, _scaled_block, _scaled_similarity_xp


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


def _top_k_numpy(X, anchors, kind, softness, k):
    n, m = X.shape[0], anchors.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"top_k={k} must be in [1, n_anchors={m}].")
    idx = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k))
    prepared = _Prepared(anchors, kind)
    step = _block_rows(m)
    buffers = {}

    def block(rows):
        b = rows.stop - rows.start
        key = threading.get_ident()
        if key not in buffers or buffers[key].shape[0] < b:
            buffers[key] = np.empty((b, m))
        T = buffers[key][:b]
        f1, f2 = _scaled_block(X[rows], prepared, T, row_constant=False)
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
        else:
            if k < m:
                # argpartition is linear in m; only the k kept columns are sorted.
                part = np.argpartition(T, m - k, axis=1)[:, m - k :]
            else:
                part = np.broadcast_to(np.arange(m), (b, m))
            top = np.take_along_axis(T, part, axis=1)
            # Decreasing similarity, ties broken by the lower anchor index.
            order = np.lexsort((part, -top), axis=1)
            ib = np.take_along_axis(part, order, axis=1)
            top = np.take_along_axis(top, order, axis=1)
        top -= top[:, :1]
        top *= softness
        if f1 is not None:
            top *= f1[:, None]
            top *= f2[:, None]
        np.exp(top, out=top)
        top /= top.sum(axis=1, keepdims=True)
        idx[rows] = ib
        vals[rows] = top

    _run_blocks(n, m, block) if step < n else block(slice(0, n))
    return idx, vals


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
