"""Fit and predict on Dask collections: per-block statistics reduced with ``+``.

The ARN normal equations only need sums over rows (:class:`SufficientStatistics`),
so each Dask block is accumulated on its worker, the blocks' statistics are
added in a tree, and the small ``m(d+1)``-square system is solved once on the
client. Anchors and the auto softness come from a bounded random sample of
whole blocks. Dask is imported lazily: ``import arn_sklearn`` never needs it.
"""

import sys

import numpy as np
from array_api_compat import array_namespace
from sklearn.utils.validation import check_is_fitted

from .._utils._optional import import_optional
from .._utils._validation import check_array_meta
from ._pipeline import accumulate_rows

# Statistics of this many blocks are added per node of the reduction tree.
_TREE_WIDTH = 8


def is_dask_collection(obj):
    """True for a Dask array, DataFrame or Series, without importing dask."""
    # A Dask collection can only exist once dask was imported by its creator.
    dask = sys.modules.get("dask")
    if dask is None or not hasattr(dask, "is_dask_collection"):
        return False
    return dask.is_dask_collection(obj)


def _import_dask_array():
    dask = import_optional("dask", "dask", "Fitting on Dask collections")
    return dask, import_optional("dask.array", "dask", "Fitting on Dask collections")


def _as_dask_array(obj, name, da):
    """Dask array from a Dask array, DataFrame or Series, or a local array."""
    if hasattr(obj, "to_dask_array"):
        # lengths=True computes the partition lengths so blocks can be aligned.
        return obj.to_dask_array(lengths=True)
    if is_dask_collection(obj):
        return obj
    return da.from_array(np.asarray(obj))


def _check_block(X, Y, w):
    """Lazy per-block validation: runs on the worker, before accumulation."""
    if not np.all(np.isfinite(X)):
        raise ValueError("Input X contains NaN or infinity (found in a Dask block).")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Input y contains NaN or infinity (found in a Dask block).")
    if w is not None and (not np.all(np.isfinite(w)) or np.any(w < 0)):
        raise ValueError("sample_weight must be finite and non-negative (found in a Dask block).")


def block_statistics(X, Y, w, assigner, batch_size):
    """Sufficient statistics of one block (runs on a Dask worker).

    The assigner (anchors, similarity, softness, top-k) is the in-memory fit's,
    so that a Dask fit solves the same system as the in-memory one.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    w = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
    _check_block(X, Y, w)
    return accumulate_rows(assigner, X, Y, w, array_namespace(X), batch_size=batch_size)


def _add_all(*parts):
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def tree_sum(parts, delayed):
    """Add delayed statistics in a tree of width ``_TREE_WIDTH``."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [
            delayed(_add_all)(*parts[i : i + _TREE_WIDTH])
            for i in range(0, len(parts), _TREE_WIDTH)
        ]
    return parts[0]


def validate_fit(X, y, sample_weight=None, estimator_name="ARNRegressor"):
    """Dask arrays ``(X, Y, w)`` with whole rows per block, aligned row chunks.

    ``w`` is None without sample weights. Shapes and dtypes are checked with the
    rules numpy input gets from ``validate_data``; values lazily, per block.
    """
    _, da = _import_dask_array()
    X = _as_dask_array(X, "X", da)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D Dask array for X, got {X.ndim} dimensions.")
    check_array_meta(X.shape, X.dtype, "X", estimator_name)
    if any(np.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    # One block per row range: each block holds whole rows.
    X = X.rechunk({1: -1})
    Y = _as_dask_array(y, "y", da)
    if Y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got {Y.ndim} dimensions.")
    # The rules numpy input gets from validate_data: no complex, no 0 columns.
    check_array_meta(Y.shape, Y.dtype, "y", estimator_name)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(
            f"X and y have inconsistent numbers of samples: {X.shape[0]} and {Y.shape[0]}."
        )
    Y = Y.rechunk((X.chunks[0],) + ((-1,) if Y.ndim == 2 else ()))
    w = None
    if sample_weight is not None:
        w = _as_dask_array(sample_weight, "sample_weight", da)
        if w.shape != (X.shape[0],):
            raise ValueError(f"sample_weight has shape {w.shape}; expected ({X.shape[0]},).")
        w = w.rechunk((X.chunks[0],))
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {X.shape}; at least 1 row and column needed.")
    return X, Y, w


def sample_rows(X, w, n_rows, random_state):
    """Host ``(X, w)`` of whole blocks, drawn at random, until at least ``n_rows`` rows."""
    dask, _ = _import_dask_array()
    order = random_state.permutation(len(X.chunks[0]))
    chosen, held = [], 0
    for b in order:
        chosen.append(b)
        held += X.chunks[0][b]
        if held >= n_rows:
            break
    chosen = sorted(chosen)
    parts = [X.blocks[b] for b in chosen]
    wparts = [w.blocks[b] for b in chosen] if w is not None else []
    Xs, ws = dask.compute(parts, wparts)
    Xs = np.concatenate(Xs).astype(np.float64)
    ws = np.concatenate(ws).astype(np.float64) if w is not None else np.ones(Xs.shape[0])
    _check_block(Xs, np.zeros(1), ws)
    return Xs, ws


def accumulate(assigner, X, Y, w, batch_size=None):
    """Statistics of Dask arrays ``(X, Y, w)``: per block on the workers, summed in a tree.

    The blocks are accumulated on the active ``dask.distributed`` client if
    there is one, the default local scheduler otherwise; the sum comes back as
    host (numpy) statistics.
    """
    dask, _ = _import_dask_array()
    delayed = dask.delayed
    x_blocks = X.to_delayed().ravel()
    y_blocks = Y.to_delayed().ravel()
    w_blocks = w.to_delayed().ravel() if w is not None else [None] * len(x_blocks)
    # The assigner is wrapped once so the graph ships the anchors to each worker once.
    assigner_d = delayed(assigner)
    parts = [
        delayed(block_statistics)(xb, yb, wb, assigner_d, batch_size)
        for xb, yb, wb in zip(x_blocks, y_blocks, w_blocks, strict=True)
    ]
    (stats,) = dask.compute(tree_sum(parts, delayed))
    return stats


def _check_predict_input(estimator, X):
    _, da = _import_dask_array()
    check_is_fitted(estimator)
    X = _as_dask_array(X, "X", da)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D Dask array for X, got {X.ndim} dimensions.")
    if X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X.rechunk({1: -1})


def _predict_block(block, estimator, method):
    if block.shape[0] == 0:  # an empty partition, e.g. after filtering rows
        return _empty_output(estimator, method, block.dtype)
    return getattr(estimator, method)(block)


def _empty_output(estimator, method, dtype):
    dtype = dtype if np.issubdtype(dtype, np.floating) else np.float64
    if method == "soft_assignments":
        return np.empty((0, estimator.anchors_.shape[0]), dtype=dtype)
    if estimator.coef_.ndim == 2:
        return np.empty((0,), dtype=dtype)
    return np.empty((0, estimator.coef_.shape[1]), dtype=dtype)


def predict(estimator, X, method="predict"):
    """Lazy ``estimator.predict`` (or ``soft_assignments``) over Dask blocks.

    Returns a Dask array with the row chunks of ``X``.
    """
    X = _check_predict_input(estimator, X)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
    if method == "soft_assignments":
        n_out = estimator.anchors_.shape[0]
    elif estimator.coef_.ndim == 2:
        return X.map_blocks(
            _predict_block, estimator, method, dtype=dtype, drop_axis=1, meta=np.empty(0, dtype)
        )
    else:
        n_out = estimator.coef_.shape[1]
    return X.map_blocks(
        _predict_block,
        estimator,
        method,
        dtype=dtype,
        chunks=(X.chunks[0], (n_out,)),
        meta=np.empty((0, 0), dtype),
    )
