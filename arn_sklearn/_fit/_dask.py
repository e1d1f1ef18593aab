"""Fit and predict on Dask collections: per-block statistics reduced with ``+``.

The ARN normal equations only need sums over rows (:class:`SufficientStatistics`),
so each Dask block is accumulated on its worker, the blocks' statistics are
added in a tree, and the small ``m(d+1)``-square system is solved once on the
client. Anchors and the auto softness come from a bounded random sample of
whole blocks. Dask is imported lazily: ``import arn_sklearn`` never needs it.
"""

import sys
from dataclasses import replace
from functools import reduce
from operator import add

import numpy as np
from array_api_compat import array_namespace
from sklearn.utils import check_array, check_random_state

from .._learning._starts import anchor_sample_size, initial_anchors
from .._model._layer import accumulate_rows, check_fits_memory, make_assignment, solve_layer
from .._utils._backend import Backend
from .._utils._optional import import_optional
from .._utils._validation import check_array_meta

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


def block_statistics(X, Y, w, assignment, batch_size):
    """Sufficient statistics of one block (runs on a Dask worker).

    The assignment (anchors, similarity, softness, top-k) is the in-memory fit's,
    so that a Dask fit solves the same system as the in-memory one.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    w = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
    _check_block(X, Y, w)
    return accumulate_rows(assignment, X, Y, w, array_namespace(X), batch_size=batch_size)


def _sum(parts):
    return reduce(add, parts)


def tree_sum(parts, delayed):
    """Add delayed statistics in a tree of width ``_TREE_WIDTH``."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [
            delayed(_sum)(parts[i : i + _TREE_WIDTH]) for i in range(0, len(parts), _TREE_WIDTH)
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


def accumulate(assignment, X, Y, w, batch_size=None):
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
    # The assignment is wrapped once so the graph ships the anchors to each worker once.
    assignment_d = delayed(assignment)
    parts = [
        delayed(block_statistics)(xb, yb, wb, assignment_d, batch_size)
        for xb, yb, wb in zip(x_blocks, y_blocks, w_blocks, strict=True)
    ]
    (stats,) = dask.compute(tree_sum(parts, delayed))
    return stats


def fit_dask(X, Y, w, n_anchors, spec, anchor_array, *, batch_size, random_state, backend):
    """A closed-form layer of validated Dask arrays (see :func:`validate_fit`).

    Anchors and softness come from whole blocks drawn at random until
    :func:`~arn_sklearn._learning._starts.anchor_sample_size` rows are held
    (from all of them, the in-memory fit's); ``anchor_array`` is the validated
    array of ``spec.anchors`` when it is one. The blocks run on the CPU; the
    small system is solved where ``backend`` says, and so the layer lives there.
    """
    n_targets = 1 if Y.ndim == 1 else Y.shape[1]
    check_fits_memory(n_anchors, spec.top_k, X.shape[1], n_targets, batch_size)
    if anchor_array is None or spec.softness == "auto":
        n_rows = anchor_sample_size(n_anchors)
        Xs, ws = sample_rows(X, w, n_rows, check_random_state(random_state))
        # A fresh generator, as in memory: when every block is drawn, the
        # anchors and softness equal the in-memory fit's.
        anchors, softness = initial_anchors(
            Xs, ws, n_anchors, spec, check_random_state(random_state)
        )
    else:
        anchors, softness = anchor_array.copy(), spec.softness
    assignment = make_assignment(anchors, spec.similarity, softness, spec.top_k, spec.linear_solver)
    stats = accumulate(assignment, X, Y, w, batch_size)
    return solve_layer(
        stats.map_arrays(backend.to_compute),
        assignment.moved(backend.to_compute),
        spec.alpha,
        verbose=spec.verbose,
    )


def check_predict_input(X, n_features, estimator_name):
    """A 2-D Dask array of ``n_features`` columns, one block per row range."""
    _, da = _import_dask_array()
    X = _as_dask_array(X, "X", da)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D Dask array for X, got {X.ndim} dimensions.")
    if X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {estimator_name} is expecting "
            f"{n_features} features as input."
        )
    return X.rechunk({1: -1})


class _StdState:
    """A layer with its statistics and their predictive state, computed once per process.

    The state (a factorisation) holds its array module, so it is dropped when
    pickled and computed again where it lands, as a fitted estimator's cache is.
    """

    def __init__(self, layer, state=None):
        self.layer, self.state = layer, state

    def get(self):
        if self.state is None:
            self.state = self.layer.predictive_state()
        return self.state

    def __getstate__(self):
        return {"layer": self.layer, "state": None}


def _predict_block(block, layer, method, std, device, batch_size, squeeze):
    """One block's predictions, assignments or standard deviations (runs on a worker)."""
    dtype = block.dtype if np.issubdtype(block.dtype, np.floating) else np.float64
    block = check_array(block, dtype=[np.float64, np.float32], ensure_min_samples=0)
    backend = Backend(device, block)
    xp, Xc = backend.xp, backend.to_compute(block)
    layer = layer.moved(backend.to_compute)
    if method == "soft_assignments":
        out = layer.assign(Xc, xp, batch_size)
    elif method == "predict_std":
        out = layer.predict_std(Xc, xp, std.get(), batch_size)
    else:
        out = layer.predict(Xc, xp, batch_size)
    out = backend.to_output(xp.astype(out, Xc.dtype))
    if block.shape[0] == 0:  # an empty partition, e.g. after filtering rows
        out = np.empty(out.shape, dtype=dtype)
    return out[:, 0] if squeeze else out


def predict(
    layer,
    X,
    *,
    method,
    n_features,
    y_ndim,
    estimator_name,
    state=None,
    device="auto",
    batch_size=None,
):
    """Lazy predictions (``method``: "predict", "predict_std" or "soft_assignments").

    Maps the fitted layer over the blocks of ``X``: without its statistics,
    except for ``predict_std``, which needs them (with their predictive
    ``state``, if computed, for an in-process scheduler). Returns a Dask array
    with the row chunks of ``X``.
    """
    X = check_predict_input(X, n_features, estimator_name)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
    std = _StdState(layer, state) if method == "predict_std" else None
    layer = replace(layer, stats=None)
    squeeze = method != "soft_assignments" and y_ndim == 1
    args = (layer, method, std, device, batch_size, squeeze)
    if squeeze:
        return X.map_blocks(
            _predict_block, *args, dtype=dtype, drop_axis=1, meta=np.empty(0, dtype)
        )
    n_out = layer.assignment.n_anchors if method == "soft_assignments" else layer.coef.shape[1]
    return X.map_blocks(
        _predict_block,
        *args,
        dtype=dtype,
        chunks=(X.chunks[0], (n_out,)),
        meta=np.empty((0, 0), dtype),
    )
