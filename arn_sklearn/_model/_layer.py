"""The fitted ARN layer: an assignment strategy and per-anchor regressors.

The dense model and the top-k model differ in three places only: how a chunk of
rows is assigned to the anchors, which sufficient statistics hold the normal
equations, and how a chunk is predicted. :func:`make_assignment` makes that
choice once, into one of two strategies (:class:`DenseAssignment`,
:class:`TopKAssignment`); a :class:`FittedLayer` holds one with the regressors
and, for the closed form, the statistics they solve. ``fit``, ``partial_fit``,
``predict``, the Dask blocks, cross-validation and the learned solvers all go
through these values and the plain functions below: arrays, namespaces and
numbers in, arrays, statistics and layers out. Nothing here knows the estimators.
"""

import time
from dataclasses import dataclass, replace

from array_api_compat import array_namespace

from .._kernels import _explain
from .._kernels._assignment import soft_assignments
from .._kernels._lifting import (
    iter_chunks,
    lift,
    lifted_size,
    pack_weights,
    predict_lifted,
    unpack_weights,
)
from .._kernels._solve import check_system_fits_memory, system_bytes
from .._kernels._topk import densify, predict_top_k, sparse_top_k, top_k_assignments
from .._utils._arrays import device_of
from .._utils._chunks import rows_for
from .._utils._validation import check_finite_solution
from . import _uncertainty
from ._blocksparse import BlockSparseStatistics
from ._blocksparse import chunk_row_bytes as block_chunk_row_bytes
from ._statistics import SufficientStatistics

# batch_size=None streams dense chunks of about CHUNK_BYTES of lifted rows, and
# past ~8k unknowns up to MAX_AUTO_CHUNK_BYTES (see chunk_rows).
MAX_AUTO_CHUNK_BYTES = 2**30
# Top-k chunks: their temporaries are small per row (no m-wide lifted block).
TOP_K_CHUNK_BYTES = 256 * 2**20
MAX_TOP_K_BATCH = 262_144


# ------------------------------------------------------- the strategies
@dataclass(frozen=True)
class _Assignment:
    """What both strategies hold: the anchors, the similarity and the softness."""

    anchors: object
    similarity: str
    softness: float

    @property
    def n_anchors(self):
        return self.anchors.shape[0]

    def moved(self, convert):
        """The same strategy with its anchors passed through ``convert``."""
        return replace(self, anchors=convert(self.anchors))


@dataclass(frozen=True)
class DenseAssignment(_Assignment):
    """Every sample assigned to every anchor: ``softmax(K s(x, c_1..m))``.

    Parameters
    ----------
    anchors : array of shape (n_anchors, n_features)
    similarity : {"euclidean", "dot", "absdot", "cosine"}
    softness : float
    """

    top_k = None

    def assign(self, X, xp):
        """Assignments of the rows ``X``, shape ``(n, m)``."""
        return soft_assignments(X, self.anchors, self.similarity, self.softness, xp)

    def dense_assignments(self, X, xp):
        """Assignments as a dense ``(n, m)`` array."""
        return self.assign(X, xp)

    def predict_chunk(self, X, W, xp):
        """ARN output of the rows ``X`` for lifted weights ``W`` of shape (p, t)."""
        return predict_lifted(X, self.assign(X, xp), W, xp)

    def new_statistics(self, n_features, n_targets, xp, device=None):
        """Zero statistics of this model: the dense Gram matrix."""
        n_lifted = lifted_size(self.n_anchors, n_features)
        return SufficientStatistics.zeros(n_lifted, n_targets, xp, device=device)


@dataclass(frozen=True)
class TopKAssignment(_Assignment):
    """Each sample assigned to its ``top_k`` nearest anchors, the softmax renormalised.

    Parameters
    ----------
    anchors, similarity, softness
        As :class:`DenseAssignment`'s.
    top_k : int
        Anchors kept per sample, fewer than ``n_anchors``.
    linear_solver : {"auto", "dense", "sparse", "iterative"}
        How its block-sparse system is solved (see
        :class:`BlockSparseStatistics`); ``"auto"`` lets the cost model decide.
    """

    top_k: int = 1
    linear_solver: str = "auto"

    def assign(self, X, xp):
        """``(idx, vals)`` of shape ``(n, k)``: the kept anchors and their weights."""
        return top_k_assignments(X, self.anchors, self.similarity, self.softness, self.top_k, xp)

    def dense_assignments(self, X, xp):
        """Assignments as a dense ``(n, m)`` array (zeros outside the top k)."""
        return densify(*self.assign(X, xp), self.n_anchors, xp)

    def predict_chunk(self, X, W, xp):
        """ARN output of the rows ``X`` for lifted weights ``W`` of shape (p, t)."""
        idx, vals = self.assign(X, xp)
        return predict_top_k(X, idx, vals, W, xp)

    def new_statistics(self, n_features, n_targets, xp, device=None):
        """Zero statistics of this model: the block-sparse Gram matrix."""
        return BlockSparseStatistics.zeros(
            self.n_anchors, n_features, n_targets, xp, device, linear_solver=self.linear_solver
        )


def make_assignment(anchors, similarity, softness, top_k=None, linear_solver="auto"):
    """The strategy of a model; ``top_k`` None or ``>= n_anchors`` is the dense model.

    ``linear_solver`` only concerns top-k models (a dense system is always
    factorised by Cholesky).
    """
    top_k = sparse_top_k(anchors.shape[0], top_k)
    if top_k is None:
        return DenseAssignment(anchors, similarity, float(softness))
    return TopKAssignment(anchors, similarity, float(softness), top_k, linear_solver)


# ----------------------------------------------------------------- sizes
def chunk_rows(n_anchors, top_k, n_features, n_targets=1, batch_size=None):
    """Rows per streamed chunk: ``batch_size``, or the automatic rule.

    Dense chunks hold a lifted block of ``m (d + 1)`` columns: about 64 MiB of
    it, and past ~8k unknowns up to ``p / 4`` rows (capped at 1 GiB) so that each
    ``syrk`` stays compute-bound (it was 8x slower than one ``syrk`` on a GPU at
    31,744 unknowns with 64 MiB chunks). Top-k chunks are sized by their own
    temporaries, which do not grow with ``m``.
    """
    if batch_size is not None:
        return int(batch_size)
    top_k = sparse_top_k(n_anchors, top_k)
    if top_k is not None:
        # The block-sparse accumulation does one small GEMM per anchor pair and
        # chunk: it wants many rows per pair, so chunks of 1e5 rows and more.
        row_bytes = _top_k_row_bytes(top_k, n_features, n_targets)
        return min(MAX_TOP_K_BATCH, rows_for(row_bytes, TOP_K_CHUNK_BYTES, itemsize=1))
    n_lifted = lifted_size(n_anchors, n_features)
    large = min(n_lifted // 4, MAX_AUTO_CHUNK_BYTES // (8 * n_lifted))
    return max(rows_for(n_lifted), large)


def _top_k_row_bytes(top_k, n_features, n_targets):
    """Bytes per row of a top-k chunk: the rows themselves and the grouping temporaries."""
    return 8 * (n_features + n_targets) + block_chunk_row_bytes(top_k, n_features, n_targets)


def statistics_bytes(n_anchors, top_k, n_features, n_targets, batch_size):
    """Peak bytes of accumulating and solving one system (its chunk included)."""
    top_k = sparse_top_k(n_anchors, top_k)
    if top_k is not None:
        stats = BlockSparseStatistics.estimate_bytes(n_anchors, n_features, n_targets, top_k)
        return stats + batch_size * _top_k_row_bytes(top_k, n_features, n_targets)
    return system_bytes(lifted_size(n_anchors, n_features), n_targets, batch_size)


def check_fits_memory(n_anchors, top_k, n_features, n_targets, batch_size=None, n_systems=1):
    """Raise a ``MemoryError`` that names the sizes before anything large is allocated.

    ``n_systems`` statistics are held at once (cross-validation keeps one per
    fold, plus the training sum and its factorisation). ``batch_size`` None is
    :func:`chunk_rows`'s rule.
    """
    batch_size = chunk_rows(n_anchors, top_k, n_features, n_targets, batch_size)
    needed = n_systems * statistics_bytes(n_anchors, top_k, n_features, n_targets, batch_size)
    return check_system_fits_memory(
        n_anchors, n_features, n_targets, batch_size, needed=needed, top_k=top_k
    )


# ------------------------------------------------------- statistics
def accumulate_rows(assignment, X, Y, w, xp, stats=None, batch_size=None, verbose=0):
    """Statistics of the rows ``(X, Y, w)`` added to ``stats`` (new ones when None).

    Parameters
    ----------
    assignment : DenseAssignment or TopKAssignment
    X : array of shape (n_samples, n_features)
    Y : array of shape (n_samples, n_targets)
    w : array of shape (n_samples,)
    xp : array namespace of the arrays
    stats : statistics or None
        Not modified.
    batch_size : int or None
        Rows per chunk; None is :func:`chunk_rows`'s rule.

    Returns
    -------
    SufficientStatistics or BlockSparseStatistics
    """
    n_features, n_targets = X.shape[1], Y.shape[1]
    if stats is None:
        stats = assignment.new_statistics(n_features, n_targets, xp, device_of(X))
    rows = chunk_rows(assignment.n_anchors, assignment.top_k, n_features, n_targets, batch_size)
    tic = time.perf_counter()

    def assign(chunk):
        return assignment.assign(chunk, xp)

    stats = stats.accumulate(iter_chunks(X, Y, w, rows), assign, xp, verbose=verbose)
    if verbose:
        kind = f"top-{assignment.top_k} " if assignment.top_k else ""
        print(
            f"[ARN] accumulated {X.shape[0]} rows into the {kind}statistics of "
            f"{lifted_size(assignment.n_anchors, n_features)} unknowns in "
            f"{time.perf_counter() - tic:.2f} s"
        )
    return stats


def solve_layer(stats, assignment, alpha, *, verbose=0):
    """The closed-form layer of ``stats``: the ridge solution for the strategy's anchors.

    ``assignment`` is in the statistics' namespace, and so is the layer.
    """
    xp = array_namespace(stats.zty)
    tic = time.perf_counter()
    W, y_mean = stats.solve(alpha, xp)
    check_finite_solution(W, y_mean, xp)
    if verbose:
        note = getattr(stats, "solve_note", "")  # block-sparse: the solver and its work
        print(f"[ARN] solved in {time.perf_counter() - tic:.2f} s{note}")
    m, d = assignment.anchors.shape
    coef, intercept = unpack_weights(W, y_mean, m, d, xp)
    return FittedLayer(assignment, coef, intercept, stats=stats, alpha=float(alpha))


def closed_form_layer(assignment, X, Y, w, alpha, xp, *, stats=None, batch_size=None, verbose=0):
    """One pass over the rows ``(X, Y, w)`` (added to ``stats`` if given), then the solve.

    Every array, the strategy's anchors included, is in namespace ``xp``.
    """
    stats = accumulate_rows(
        assignment, X, Y, w, xp, stats=stats, batch_size=batch_size, verbose=verbose
    )
    return solve_layer(stats, assignment, alpha, verbose=verbose)


# ------------------------------------------------------- the fitted layer
@dataclass(frozen=True)
class FittedLayer:
    """A fitted ARN layer: ``f(x) = sum_k pi_k(x) (W_k x + b_k)``.

    Parameters
    ----------
    assignment : DenseAssignment or TopKAssignment
        Anchors, similarity, softness and the kept anchors per sample.
    coef : array of shape (n_anchors, n_targets, n_features)
        ``W_k``.
    intercept : array of shape (n_anchors, n_targets)
        ``b_k``, target mean included.
    stats : SufficientStatistics or BlockSparseStatistics or None
        The statistics that ``coef`` and ``intercept`` solve (closed form only);
        :meth:`predict_std` and ``partial_fit`` need them.
    alpha : float or None
        The ridge penalty of that solution.
    """

    assignment: _Assignment
    coef: object
    intercept: object
    stats: object = None
    alpha: float | None = None

    def moved(self, convert):
        """The same layer with its anchors and regressors passed through ``convert``."""
        return replace(
            self,
            assignment=self.assignment.moved(convert),
            coef=convert(self.coef),
            intercept=convert(self.intercept),
        )

    def predict(self, X, xp, batch_size=None):
        """Outputs of all rows of ``X`` (in ``xp``), chunk by chunk; shape (n, t), float64."""
        n_targets = self.coef.shape[1]
        W = pack_weights(self.coef, self.intercept, xp)
        parts = [
            self.assignment.predict_chunk(chunk, W, xp)
            for chunk in self._chunks(X, xp, n_targets, batch_size)
        ]
        return _concat(parts, (0, n_targets), xp)

    def assign(self, X, xp, batch_size=None):
        """Dense soft assignments of all rows of ``X``, chunk by chunk; shape (n, m)."""
        parts = [
            self.assignment.dense_assignments(chunk, xp)
            for chunk in self._chunks(X, xp, 1, batch_size)
        ]
        return _concat(parts, (0, self.assignment.n_anchors), xp)

    def local_linear(self, X, xp):
        """``(coef, intercept)`` of the local linear model of each row: (n, t, d), (n, t)."""
        anchors, coef, intercept = self._float64(xp)
        coefs, intercepts = [], []
        for chunk in row_chunks(xp.astype(X, xp.float64), _explain.chunk_rows(*coef.shape)):
            A, _ = self._explain_assignments(chunk, anchors, xp)
            local_coef, local_intercept = _explain.local_linear(A, coef, intercept, xp)
            coefs.append(local_coef)
            intercepts.append(local_intercept)
        t, d = coef.shape[1:]
        return _concat(coefs, (0, t, d), xp), _concat(intercepts, (0, t), xp)

    def jacobian(self, X, xp):
        """The exact Jacobian ``df/dx`` of each row, shape (n, t, d)."""
        anchors, coef, intercept = self._float64(xp)
        a = self.assignment
        parts = [
            _explain.layer_jacobian(
                chunk, anchors, coef, intercept, a.similarity, a.softness, a.top_k, xp
            )
            for chunk in row_chunks(xp.astype(X, xp.float64), _explain.chunk_rows(*coef.shape))
        ]
        return _concat(parts, (0,) + tuple(coef.shape[1:]), xp)

    def predictive_state(self):
        """``(factor, sigma2)`` of the predictive standard deviation (an ``O(p^3)`` step).

        Raises a ``ValueError`` when the layer keeps no statistics.
        """
        if self.stats is None:
            raise ValueError("The predictive standard deviation needs the closed-form statistics.")
        xp = array_namespace(self.stats.zty)
        factor = self.stats.factorize(self.alpha, xp)
        sigma2, _ = _uncertainty.noise_variance(self.stats, factor, xp)
        return factor, sigma2

    def predict_std(self, X, xp, state, batch_size=None):
        """Predictive standard deviation of each row, shape (n, t), from ``predictive_state()``."""
        factor, sigma2 = state
        anchors = xp.astype(self.assignment.anchors, xp.float64)
        n_targets = self.coef.shape[1]
        parts = []
        for chunk in self._chunks(X, xp, n_targets, batch_size):
            A, _ = self._explain_assignments(chunk, anchors, xp)
            leverage = _uncertainty.leverage(lift(chunk, A, xp), factor, xp)
            parts.append(_uncertainty.predictive_std(leverage, sigma2, xp))
        return _concat(parts, (0, n_targets), xp)

    def _chunks(self, X, xp, n_targets, batch_size):
        a = self.assignment
        rows = chunk_rows(a.n_anchors, a.top_k, X.shape[1], n_targets, batch_size)
        return row_chunks(xp.astype(X, xp.float64), rows)

    def _float64(self, xp):
        return (
            xp.astype(xp.asarray(a), xp.float64)
            for a in (self.assignment.anchors, self.coef, self.intercept)
        )

    def _explain_assignments(self, X, anchors, xp):
        a = self.assignment
        return _explain.layer_assignments(X, anchors, a.similarity, a.softness, a.top_k, xp)


def _concat(parts, empty_shape, xp):
    if not parts:
        return xp.zeros(empty_shape, dtype=xp.float64)
    return xp.concat(parts, axis=0)


def row_chunks(X, batch_size):
    """Consecutive row slices of at most ``batch_size`` rows."""
    for start in range(0, X.shape[0], batch_size):
        yield X[start : min(start + batch_size, X.shape[0]), ...]


def as_3d(coef):
    """Per-anchor weights as ``(n_anchors, n_targets, n_features)``."""
    return coef[:, None, :] if coef.ndim == 2 else coef


def as_2d(intercept):
    """Per-anchor intercepts as ``(n_anchors, n_targets)``."""
    return intercept[:, None] if intercept.ndim == 1 else intercept
