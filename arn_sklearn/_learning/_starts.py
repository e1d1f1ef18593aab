"""Where a fit starts: anchors and softness from the data, ranked when several compete.

``anchors="auto"`` with a learned solver tries the KMeans and the k-plane
starts (and, with ``softness="auto"``, the rule and a harder softness); the
start with the lowest generalised cross-validation score of its closed form
on a bounded subsample is kept
(:func:`~arn_sklearn._learning._varpro.best_start`).
"""

import time
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from .._anchors._init import (
    AUTO_SOFTNESS_MAX_ROWS,
    KMEANS_MIN_ROWS,
    KMEANS_ROWS_PER_ANCHOR,
    auto_softness,
    init_anchors,
    subsample_indices,
)
from .._kernels._topk import sparse_top_k
from .._utils._threads import single_threaded_blas, single_threaded_openmp
from ._varpro import best_start

# softness="auto" for a learned solver starting from unsupervised anchors also
# tries this many times the closed form's auto rule: from the auto softness the
# closed-form regressors are large and cancel each other, a stiff start.
GRADIENT_START_SOFTNESS = 4.0

# A learned fit's KMeans start (at most this many anchors) runs on one OpenMP
# thread: on 10,000 rows and 16 anchors it took 0.23 s against 1.3-1.9 s with
# sklearn's threads on a busy 2-core machine (threads that spin waiting for a
# descheduled peer); the learned fit that follows dwarfs it either way.
ONE_THREAD_KMEANS_MAX_ANCHORS = 64

# softness="auto" looks at a rows x anchors similarity block: at most this many bytes.
_AUTO_SOFTNESS_BYTES = 256 * 2**20


@dataclass(frozen=True)
class StartSpec:
    """How a new model's anchors and softness are chosen (the estimator's parameters).

    Parameters
    ----------
    anchors : {"auto", "kmeans", "kplane", "random"} or ndarray of shape \
            (n_anchors, n_features)
        An array is copied, so that the fitted model never aliases user data.
        ``"auto"`` is ``"kmeans"`` for the closed form; for learned anchors
        (``learned=True``) the KMeans and k-plane starts compete.
    similarity : str
    softness : "auto" or float
    top_k : int or None
    linear_solver : {"auto", "dense", "sparse", "iterative"}
        How a top-k model's system is solved.
    alpha : float
        Ridge penalty of the k-plane regressors and of the start ranking.
    learned : bool
        Whether the anchors will be learned: with ``softness="auto"``,
        unsupervised anchors then also try ``GRADIENT_START_SOFTNESS`` times
        the rule, and the start with the lowest GCV score of its closed form on a
        bounded subsample is kept.
    verbose : int
    """

    anchors: object = "auto"
    similarity: str = "euclidean"
    softness: object = "auto"
    top_k: int | None = None
    linear_solver: str = "auto"
    alpha: float = 1.0
    learned: bool = False
    verbose: int = 0


def anchor_sample_size(n_anchors):
    """Rows that the anchor initialisation and the auto softness look at, at most."""
    return max(KMEANS_MIN_ROWS, KMEANS_ROWS_PER_ANCHOR * n_anchors, AUTO_SOFTNESS_MAX_ROWS)


def initial_anchors(X, sample_weight, n_anchors, spec, random_state, y=None):
    """Anchors and softness of a new model, from host arrays.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    n_anchors : int
    spec : StartSpec
    random_state : numpy.random.RandomState
    y : ndarray of shape (n_samples,) or (n_samples, n_targets), default=None
        Targets, for the supervised k-plane start and to rank competing starts.

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features), float64
    softness : float
    """
    tic = time.perf_counter()
    if isinstance(spec.anchors, str):
        method = spec.anchors
        if method == "auto":
            method = "kmeans|kplane" if spec.learned and y is not None else "kmeans"
    else:
        method = "given"
    starts, labels, seconds = [], [], []
    for name in method.split("|"):
        began = time.perf_counter()
        for start in _starts(name, X, sample_weight, n_anchors, spec, random_state, y):
            starts.append(start)
            labels.append(f"{name} K={start[1]:.4g}")
        seconds.append(f"{name} {time.perf_counter() - began:.2f} s")
    centres, value = starts[0]
    if len(starts) > 1:
        ranked = time.perf_counter()
        # Every start on the same bounded subsample, ranked by GCV of its closed form.
        rows = subsample_indices(X.shape[0], anchor_sample_size(n_anchors), random_state)
        Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)[rows]
        X_rows = np.asarray(X[rows], dtype=np.float64)
        # Small systems (a few thousand rows): BLAS threads were measured to
        # cost 2 s of a 4 s start on a busy 2-core machine, for nothing on a quiet one.
        with single_threaded_blas():
            index, values = best_start(
                X_rows,
                Y,
                sample_weight[rows],
                starts,
                spec.similarity,
                spec.alpha,
                array_namespace(X_rows),
            )
        centres, value = starts[index]
        if spec.verbose:
            tried = ", ".join(f"{a}: {v:.4g}" for a, v in zip(labels, values, strict=True))
            print(f"[ARN] start {labels[index]} (generalised cross-validation {tried})")
            print(
                f"[ARN] start times: {', '.join(seconds)}, "
                f"ranking {time.perf_counter() - ranked:.2f} s"
            )
    if spec.verbose:
        print(
            f"[ARN] anchors ({method}) and softness={value:.4g} in "
            f"{time.perf_counter() - tic:.2f} s"
        )
    return centres, value


def _starts(method, X, sample_weight, n_anchors, spec, random_state, y):
    """Candidate ``(anchors, softness)`` starts of one anchor method."""
    supervised_softness = None
    if method == "given":
        centres = np.array(spec.anchors, dtype=np.float64, copy=True)
    elif method == "kplane":
        with single_threaded_blas():  # per-cluster solves and an (n, m) classifier: small
            centres, supervised_softness = init_anchors(
                X,
                sample_weight,
                n_anchors,
                method,
                random_state,
                y,
                similarity=spec.similarity,
                alpha=spec.alpha,
                return_softness=True,
            )
    elif spec.learned and method == "kmeans" and n_anchors <= ONE_THREAD_KMEANS_MAX_ANCHORS:
        with single_threaded_openmp():
            centres = init_anchors(
                X, sample_weight, n_anchors, method, random_state, similarity=spec.similarity
            )
    else:
        centres = init_anchors(
            X, sample_weight, n_anchors, method, random_state, similarity=spec.similarity
        )
    if spec.softness != "auto":
        return [(centres, float(spec.softness))]
    if supervised_softness is not None:
        return [(centres, supervised_softness)]
    # The rule looks at a rows x anchors block: bound it for huge anchor counts.
    max_rows = max(16, min(AUTO_SOFTNESS_MAX_ROWS, _AUTO_SOFTNESS_BYTES // (8 * n_anchors)))
    rows = subsample_indices(X.shape[0], max_rows, random_state)
    X_rows = np.asarray(X[rows], dtype=np.float64)
    value = auto_softness(
        X_rows,
        centres,
        spec.similarity,
        array_namespace(X_rows),
        random_state,
        top_k=sparse_top_k(centres.shape[0], spec.top_k),
    )
    if spec.learned and y is not None:
        # From too soft a start the closed-form regressors are large and cancel.
        return [(centres, value), (centres, GRADIENT_START_SOFTNESS * value)]
    return [(centres, value)]
