"""Learned anchors of one layer: variable projection (``lbfgs``) or minibatch training.

Both start from a closed-form layer (or, with ``warm_start``, from the fitted
one) and return the kept layer with its training history.
"""

import time

import numpy as np
from sklearn.utils import check_random_state

from .._anchors._init import KMEANS_ROWS_PER_ANCHOR, subsample_indices
from .._kernels._gradients import make_layer
from .._kernels._lifting import unpack_weights
from .._learning._gauss_newton import fit_gauss_newton
from .._learning._starts import initial_anchors
from .._learning._training import learn_varpro, train_layers
from .._learning._varpro import fit_varpro
from .._model._layer import (
    DenseAssignment,
    FittedLayer,
    check_fits_memory,
    closed_form_layer,
    make_assignment,
    solve_layer,
)
from .._utils._arrays import to_numpy
from .._utils._threads import single_threaded_blas
from .._utils._validation import check_target_count

# Rows that a learned fit's starts (KMeans, k-plane, their ranking) look at.
START_ROWS = 4000


def fit_variable_projection(
    X, Y, w, n_anchors, spec, options, *, random_state, backend, start=None
):
    """Variable projection (``solver="lbfgs"`` or ``"gauss_newton"``): learn anchors and
    softness, then the closed form on all rows.

    Parameters
    ----------
    X, Y, w : arrays
        The rows; ``Y`` 2-D float64.
    n_anchors : int
    spec : StartSpec
    options : TrainingOptions
    random_state : int, RandomState instance or None
    backend : Backend
    start : FittedLayer, default=None
        The fitted layer to continue from (``warm_start``); None starts anew.

    Returns
    -------
    layer : FittedLayer
        The closed form of the kept anchors on all rows (with its statistics).
    history : TrainingHistory
    """
    if start is None:
        check_fits_memory(n_anchors, None, X.shape[1], Y.shape[1], options.batch_size)
        # The learning that follows moves the anchors: the starts see a subsample.
        anchors, softness = _initial_anchors(
            X, Y, w, n_anchors, spec, random_state, max_rows=START_ROWS
        )
    else:
        check_target_count(Y, start.coef.shape[1])
        anchors, softness = start.assignment.anchors, start.assignment.softness
    xp = backend.xp
    Xc, Yc, wc = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
    tic = time.perf_counter()
    anchors, softness, history = learn_varpro(
        options,
        xp.asarray(np.asarray(to_numpy(anchors), dtype=np.float64)),
        softness,
        Xc,
        Yc,
        wc,
        xp,
        check_random_state(random_state),
        minimise=fit_gauss_newton if options.solver == "gauss_newton" else fit_varpro,
    )
    if options.verbose:
        print(
            f"[ARN] {options.solver}: {history.n_iter} iterations in "
            f"{time.perf_counter() - tic:.2f} s"
        )
    # The regressors are the exact ridge solution for the kept anchors on
    # all rows (with the learning's penalty), so the statistics kept in the
    # model are theirs.
    assignment = make_assignment(backend.to_compute(to_numpy(anchors)), spec.similarity, softness)
    stats, rows = history.statistics, (X, Y, w)
    if stats is not None:
        # The learning's statistics of the kept anchors on its training rows:
        # only the rows it held out (if any) are still to add.
        rows = history.remaining_rows
        history.statistics = history.remaining_rows = None
    # One BLAS thread, as the learned passes: on a busy 2-core machine the
    # threaded accumulation of 20,000 rows x 272 unknowns took 1.4 s against 0.15 s.
    with single_threaded_blas():
        if rows is None:
            layer = solve_layer(stats, assignment, history.alpha, verbose=options.verbose)
        else:
            layer = closed_form_layer(
                assignment,
                *(backend.to_compute(a) for a in rows),
                history.alpha,
                xp,
                stats=stats,
                batch_size=options.batch_size,
                verbose=options.verbose,
            )
    return layer, history


def fit_minibatch(X, Y, w, n_anchors, spec, options, *, random_state, backend, start=None):
    """``solver="adam"`` or ``"sgd"``: anchors and regressors trained together.

    The start is the closed form (or, with ``start``, the fitted layer); the
    returned layer keeps no statistics (they belong to the start's anchors).
    Parameters as :func:`fit_variable_projection`'s.
    """
    xp = backend.xp
    if start is None:
        check_fits_memory(n_anchors, None, X.shape[1], Y.shape[1], options.batch_size)
        anchors, softness = _initial_anchors(X, Y, w, n_anchors, spec, random_state)
        assignment = make_assignment(backend.to_compute(anchors), spec.similarity, softness)
        rows = (backend.to_compute(a) for a in (X, Y, w))
        start = closed_form_layer(
            assignment, *rows, spec.alpha, xp, batch_size=options.batch_size, verbose=spec.verbose
        )
    else:
        check_target_count(Y, start.coef.shape[1])
        start = start.moved(backend.to_compute)
    X, Y, w = (xp.astype(backend.to_compute(a), xp.float64) for a in (X, Y, w))
    y_mean = xp.sum(w[:, None] * Y, axis=0) / xp.sum(w)
    anchors = start.assignment.anchors
    # Trained on centred targets, like the closed form, so that the penalty
    # sees the same centred biases and the closed form is its starting point.
    layer = make_layer(
        anchors, start.coef, start.intercept - y_mean[None, :], start.assignment.softness, xp
    )
    tic = time.perf_counter()
    (layer,), history = train_layers(
        options, [layer], X, Y - y_mean[None, :], w, xp, check_random_state(random_state)
    )
    if options.verbose:
        print(
            f"[ARN] {options.solver}: {history.n_iter} epochs in {time.perf_counter() - tic:.2f} s"
        )
    coef, intercept = unpack_weights(
        layer["weights"], y_mean, anchors.shape[0], anchors.shape[1], xp
    )
    softness = float(xp.exp(layer["log_softness"]))
    assignment = DenseAssignment(layer["anchors"], spec.similarity, softness)
    return FittedLayer(assignment, coef, intercept), history


def _initial_anchors(X, Y, w, n_anchors, spec, random_state, max_rows=None):
    """Host anchors and softness of a new learned fit (the starts compete).

    With ``max_rows``, the starts see at most that many random rows (and
    ``KMEANS_ROWS_PER_ANCHOR`` per anchor).
    """
    random_state = check_random_state(random_state)
    X, Y, w = (to_numpy(a) for a in (X, Y, w))
    if max_rows is not None:
        rows = subsample_indices(
            X.shape[0], max(max_rows, KMEANS_ROWS_PER_ANCHOR * n_anchors), random_state
        )
        X, Y, w = X[rows], Y[rows], w[rows]
    return initial_anchors(X, w, n_anchors, spec, random_state, Y)
