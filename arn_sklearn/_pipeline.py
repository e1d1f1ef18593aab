"""One statistics pipeline for every caller: assign, accumulate, solve, predict.

The dense model and the top-k model differ in three places only: how a chunk of
rows is assigned to the anchors, which sufficient statistics hold the normal
equations, and how a chunk is predicted. :func:`make_assigner` makes that choice
once, into a small value (:class:`Assigner`); ``fit``, ``partial_fit``,
``predict``, the Dask blocks, ``ARNRegressorCV`` and the gradient solvers then
call the plain functions below with plain values. Nothing here knows the
estimators: arrays, namespaces and numbers in, arrays and statistics out.
"""

import time
from dataclasses import dataclass, replace

import numpy as np
from array_api_compat import array_namespace

from ._anchors import (
    AUTO_SOFTNESS_MAX_ROWS,
    KMEANS_MIN_ROWS,
    KMEANS_ROWS_PER_ANCHOR,
    auto_softness,
    init_anchors,
)
from ._assignment import soft_assignments
from ._base import check_finite_solution
from ._blocksparse import BlockSparseStatistics
from ._blocksparse import chunk_row_bytes as block_chunk_row_bytes
from ._lifting import (
    SufficientStatistics,
    iter_chunks,
    lifted_size,
    predict_lifted,
    unpack_weights,
)
from ._solve import check_system_fits_memory, system_bytes
from ._sparse import densify, predict_top_k, top_k_assignments
from ._training import GRADIENT_START_SOFTNESS
from ._varpro import best_start

# batch_size=None streams chunks whose widest temporary is about this many bytes:
# large enough for BLAS to run at full speed, small enough to keep memory flat.
AUTO_CHUNK_BYTES = 64 * 2**20
MIN_AUTO_BATCH = 256
MAX_AUTO_CHUNK_BYTES = 2**30
# Top-k chunks: their temporaries are small per row (no m-wide lifted block).
TOP_K_CHUNK_BYTES = 256 * 2**20
MAX_TOP_K_BATCH = 262_144

# softness="auto" looks at a rows x anchors similarity block: at most this many bytes.
_AUTO_SOFTNESS_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Assigner:
    """How samples are assigned to anchors: the full softmax, or its top ``k``.

    Parameters
    ----------
    anchors : array of shape (n_anchors, n_features)
    similarity : {"euclidean", "dot", "absdot", "cosine"}
    softness : float
    top_k : int or None
        Number of kept anchors per sample; None is the dense model (the
        constructor :func:`make_assigner` maps ``top_k >= n_anchors`` to None).
    """

    anchors: object
    similarity: str
    softness: float
    top_k: int | None = None

    @property
    def n_anchors(self):
        return self.anchors.shape[0]

    @property
    def sparse(self):
        return self.top_k is not None

    def moved(self, convert):
        """The same assigner with its anchors passed through ``convert``."""
        return replace(self, anchors=convert(self.anchors))

    def assign(self, X, xp):
        """Dense assignments ``(n, m)``, or ``(idx, vals)`` of shape ``(n, k)`` for top-k."""
        if self.top_k is None:
            return soft_assignments(X, self.anchors, self.similarity, self.softness, xp)
        return top_k_assignments(X, self.anchors, self.similarity, self.softness, self.top_k, xp)

    def dense_assignments(self, X, xp):
        """Assignments as a dense ``(n, m)`` array (zeros outside the top k)."""
        A = self.assign(X, xp)
        return A if self.top_k is None else densify(*A, self.n_anchors, xp)

    def predict_chunk(self, X, W, xp):
        """ARN output of the rows ``X`` for lifted weights ``W`` of shape (p, t)."""
        if self.top_k is None:
            return predict_lifted(X, self.assign(X, xp), W, xp)
        idx, vals = self.assign(X, xp)
        return predict_top_k(X, idx, vals, W, xp)


def make_assigner(anchors, similarity, softness, top_k=None):
    """The :class:`Assigner` of a model; ``top_k >= n_anchors`` is the dense model."""
    dense = top_k is None or top_k >= anchors.shape[0]
    return Assigner(anchors, similarity, float(softness), None if dense else int(top_k))


def sparse_top_k(n_anchors, top_k):
    """``top_k`` when it sparsifies a model of ``n_anchors``, else None."""
    return None if top_k is None or top_k >= n_anchors else int(top_k)


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
        return int(min(MAX_TOP_K_BATCH, max(MIN_AUTO_BATCH, TOP_K_CHUNK_BYTES // row_bytes)))
    n_lifted = lifted_size(n_anchors, n_features)
    large = min(n_lifted // 4, MAX_AUTO_CHUNK_BYTES // (8 * n_lifted))
    return max(MIN_AUTO_BATCH, AUTO_CHUNK_BYTES // (8 * n_lifted), large)


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


def check_fits_memory(n_anchors, top_k, n_features, n_targets, batch_size, n_systems=1):
    """Raise a ``MemoryError`` that names the sizes before anything large is allocated.

    ``n_systems`` statistics are held at once (cross-validation keeps one per
    fold, plus the training sum and its factorisation).
    """
    needed = n_systems * statistics_bytes(n_anchors, top_k, n_features, n_targets, batch_size)
    return check_system_fits_memory(
        n_anchors, n_features, n_targets, batch_size, needed=needed, top_k=top_k
    )


# ------------------------------------------------------------ anchors
def anchor_sample_size(n_anchors):
    """Rows that the anchor initialisation and the auto softness look at, at most."""
    return max(KMEANS_MIN_ROWS, KMEANS_ROWS_PER_ANCHOR * n_anchors, AUTO_SOFTNESS_MAX_ROWS)


def initial_anchors(
    X,
    sample_weight,
    n_anchors,
    anchors,
    similarity,
    softness,
    top_k,
    random_state,
    *,
    y=None,
    alpha=1.0,
    learned=False,
    verbose=0,
):
    """Anchors and softness of a new model, from host arrays.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    n_anchors : int
    anchors : {"auto", "kmeans", "kplane", "random"} or array-like of shape \
            (n_anchors, n_features)
        An array is copied, so that the fitted model never aliases user data.
        ``"auto"`` is ``"kmeans"`` for the closed form; for learned anchors
        (``learned=True``) the KMeans and k-plane starts compete.
    similarity : str
    softness : "auto" or float
    top_k : int or None
    random_state : numpy.random.RandomState
    y : ndarray of shape (n_samples,) or (n_samples, n_targets), default=None
        Targets, for the supervised k-plane start and to rank competing starts.
    alpha : float, default=1.0
        Ridge penalty of the k-plane regressors and of the start ranking.
    learned : bool, default=False
        Whether the anchors will be learned (a learned solver): with
        ``softness="auto"``, unsupervised anchors then also try
        ``GRADIENT_START_SOFTNESS`` times the rule, and the start with the
        lowest generalised cross-validation score of its closed form on a
        bounded subsample is kept (see ``_varpro.best_start``).

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features), float64
    softness : float
    """
    tic = time.perf_counter()
    if isinstance(anchors, str):
        method = anchors
        if method == "auto":
            method = "kmeans|kplane" if learned and y is not None else "kmeans"
    else:
        method = "given"
    starts, labels = [], []
    for name in method.split("|"):
        for start in _starts(
            name,
            X,
            sample_weight,
            n_anchors,
            anchors,
            similarity,
            softness,
            top_k,
            random_state,
            y,
            alpha,
            learned,
        ):
            starts.append(start)
            labels.append(f"{name} K={start[1]:.4g}")
    centres, value = starts[0]
    if len(starts) > 1:
        # Every start on the same bounded subsample, ranked by GCV of its closed form.
        rows = _subsample(X.shape[0], anchor_sample_size(n_anchors), random_state)
        Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)[rows]
        X_rows = np.asarray(X[rows], dtype=np.float64)
        index, values = best_start(
            X_rows, Y, sample_weight[rows], starts, similarity, alpha, array_namespace(X_rows)
        )
        centres, value = starts[index]
        if verbose:
            tried = ", ".join(f"{a}: {v:.4g}" for a, v in zip(labels, values, strict=True))
            print(f"[ARN] start {labels[index]} (generalised cross-validation {tried})")
    if verbose:
        print(
            f"[ARN] anchors ({method}) and softness={value:.4g} in "
            f"{time.perf_counter() - tic:.2f} s"
        )
    return centres, value


def _starts(
    method,
    X,
    sample_weight,
    n_anchors,
    anchors,
    similarity,
    softness,
    top_k,
    random_state,
    y,
    alpha,
    learned,
):
    """Candidate ``(anchors, softness)`` starts of one anchor method."""
    supervised_softness = None
    if method == "given":
        centres = np.array(anchors, dtype=np.float64, copy=True)
    elif method == "kplane":
        centres, supervised_softness = init_anchors(
            X,
            sample_weight,
            n_anchors,
            method,
            random_state,
            y,
            similarity=similarity,
            alpha=alpha,
            return_softness=True,
        )
    else:
        centres = init_anchors(X, sample_weight, n_anchors, method, random_state)
    if softness != "auto":
        return [(centres, float(softness))]
    if supervised_softness is not None:
        return [(centres, supervised_softness)]
    # The rule looks at a rows x anchors block: bound it for huge anchor counts.
    max_rows = max(16, min(AUTO_SOFTNESS_MAX_ROWS, _AUTO_SOFTNESS_BYTES // (8 * n_anchors)))
    rows = _subsample(X.shape[0], max_rows, random_state)
    X_rows = np.asarray(X[rows], dtype=np.float64)
    value = auto_softness(
        X_rows,
        centres,
        similarity,
        array_namespace(X_rows),
        random_state,
        top_k=sparse_top_k(centres.shape[0], top_k),
    )
    if learned and y is not None:
        # From too soft a start the closed-form regressors are large and cancel.
        return [(centres, value), (centres, GRADIENT_START_SOFTNESS * value)]
    return [(centres, value)]


def _subsample(n_samples, n_rows, random_state):
    if n_samples <= n_rows:
        return np.arange(n_samples)
    return np.sort(random_state.choice(n_samples, size=n_rows, replace=False))


# ------------------------------------------------------- statistics
def new_statistics(assigner, n_features, n_targets, xp, device=None):
    """Zero statistics of the type the assigner's model needs."""
    if assigner.sparse:
        return BlockSparseStatistics.zeros(assigner.n_anchors, n_features, n_targets, xp, device)
    n_lifted = lifted_size(assigner.n_anchors, n_features)
    return SufficientStatistics.zeros(n_lifted, n_targets, xp, device=device)


def accumulate_rows(assigner, X, Y, w, xp, stats=None, batch_size=None, verbose=0):
    """Statistics of the rows ``(X, Y, w)`` added to ``stats`` (new ones when None).

    Parameters
    ----------
    assigner : Assigner
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
        stats = new_statistics(assigner, n_features, n_targets, xp, _device(X))
    rows = chunk_rows(assigner.n_anchors, assigner.top_k, n_features, n_targets, batch_size)
    tic = time.perf_counter()

    def assign(chunk):
        return assigner.assign(chunk, xp)

    stats = stats.accumulate(iter_chunks(X, Y, w, rows), assign, xp, verbose=verbose)
    if verbose:
        kind = f"top-{assigner.top_k} " if assigner.sparse else ""
        print(
            f"[ARN] accumulated {X.shape[0]} rows into the {kind}statistics of "
            f"{lifted_size(assigner.n_anchors, n_features)} unknowns in "
            f"{time.perf_counter() - tic:.2f} s"
        )
    return stats


def solve_statistics(stats, alpha, n_anchors, n_features, xp, *, verbose=0):
    """Per-anchor regressors of the ridge solution of ``stats``.

    Returns
    -------
    coef : array of shape (n_anchors, n_targets, n_features)
    intercept : array of shape (n_anchors, n_targets)
    """
    tic = time.perf_counter()
    W, y_mean = stats.solve(alpha, xp)
    check_finite_solution(W, y_mean, xp)
    if verbose:
        print(f"[ARN] solved in {time.perf_counter() - tic:.2f} s")
    return unpack_weights(W, y_mean, n_anchors, n_features, xp)


def fitted_attributes(stats, assigner, alpha, y_ndim, to_output, *, verbose=0):
    """The fitted attributes of the closed-form model of ``stats``.

    Parameters
    ----------
    stats : SufficientStatistics or BlockSparseStatistics
    assigner : Assigner
        In the statistics' namespace.
    alpha : float
    y_ndim : int
        1 for a 1-D ``y`` (the target axis is dropped).
    to_output : callable
        Moves an array to the caller's namespace.

    Returns
    -------
    dict
        ``anchors_``, ``softness_``, ``similarity_``, ``top_k_``, ``coef_``,
        ``intercept_`` and the statistics, ``_stats``.
    """
    xp = array_namespace(stats.zty)
    coef, intercept = solve_statistics(
        stats, alpha, assigner.n_anchors, assigner.anchors.shape[1], xp, verbose=verbose
    )
    if y_ndim == 1:
        coef, intercept = coef[:, 0, :], intercept[:, 0]
    return {
        "anchors_": to_output(assigner.anchors),
        "softness_": assigner.softness,
        "similarity_": assigner.similarity,
        "top_k_": assigner.top_k,
        "coef_": to_output(coef),
        "intercept_": to_output(intercept),
        "_stats": stats,
        # The penalty of this solution (the parameter may change before predict).
        "_alpha": float(alpha),
    }


def predict_rows(assigner, X, W, xp, batch_size=None):
    """ARN output for all rows of ``X``, chunk by chunk (memory stays flat).

    Returns
    -------
    Y : array of shape (n_samples, n_targets), float64
    """
    n_features, n_targets = X.shape[1], W.shape[1]
    rows = chunk_rows(assigner.n_anchors, assigner.top_k, n_features, n_targets, batch_size)
    X = xp.astype(X, xp.float64)
    parts = [assigner.predict_chunk(chunk, W, xp) for chunk in row_chunks(X, rows)]
    if not parts:
        return xp.zeros((0, n_targets), dtype=xp.float64)
    return xp.concat(parts, axis=0)


def assign_rows(assigner, X, xp, batch_size=None):
    """Dense soft assignments of all rows of ``X``, chunk by chunk."""
    rows = chunk_rows(assigner.n_anchors, assigner.top_k, X.shape[1], 1, batch_size)
    X = xp.astype(X, xp.float64)
    parts = [assigner.dense_assignments(chunk, xp) for chunk in row_chunks(X, rows)]
    if not parts:
        return xp.zeros((0, assigner.n_anchors), dtype=xp.float64)
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


def _device(X):
    return None if isinstance(X, np.ndarray) else getattr(X, "device", None)
