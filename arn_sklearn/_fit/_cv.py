"""Cross-validation of alpha (and softness) in one pass over the rows.

The anchors are chosen once on all rows; for each softness one pass
accumulates each test fold's statistics, and the ridge path of every training
system (the sum of the other folds) is scored on the held-out fold's
statistics (:mod:`~arn_sklearn._model._cv_path`). The refit is the solution of
all folds together: no second pass over the data.
"""

from dataclasses import dataclass, replace
from functools import reduce
from operator import add

import numpy as np
from sklearn.utils import check_random_state

from .._learning._starts import initial_anchors
from .._model._cv_path import fold_squared_errors, power_of_two_scale, ridge_path, scores_of
from .._model._layer import accumulate_rows, check_fits_memory, make_assignment, solve_layer


@dataclass(frozen=True)
class CVResult:
    """What :func:`cross_validate` finds.

    ``scores`` has shape (n_softnesses, n_alphas, n_folds); ``layer`` is the
    refit of the best pair on all rows, in the compute namespace.
    """

    scores: object
    softnesses: list
    alpha: float
    softness: float
    best_score: float
    layer: object


def cross_validate(
    X,
    Y,
    w,
    folds,
    n_anchors,
    spec,
    alphas,
    softness_grid,
    *,
    scoring,
    batch_size,
    random_state,
    backend,
):
    """Score every (softness, alpha) on the folds, and refit the best on all rows.

    Parameters
    ----------
    X, Y, w : ndarray
        The rows, their targets (2-D, float64) and weights (float64).
    folds : list of ndarray
        Test rows of each fold; they partition the rows.
    n_anchors : int
    spec : StartSpec
        Anchors, similarity and ``top_k`` (its softness and alpha are not read).
    alphas : ndarray of shape (n_alphas,)
    softness_grid : list of "auto" or float
        Every "auto" is the rule's value for the anchors.
    scoring : {"r2", "neg_mean_squared_error"}
    batch_size : int or None
    random_state : int, RandomState instance or None
    backend : Backend

    Returns
    -------
    CVResult
    """
    n_features, n_targets = X.shape[1], Y.shape[1]
    # Each fold's statistics, their training sum, its factorisation and the
    # total are held at once.
    check_fits_memory(
        n_anchors, spec.top_k, n_features, n_targets, batch_size, n_systems=len(folds) + 3
    )
    # Scores are computed from squares of y: scale it (by powers of two, so
    # exactly) to keep them finite and R^2 scale-invariant for |y| ~ 1e200.
    y_scale = power_of_two_scale(Y)
    Y = Y / y_scale
    # Anchors once on all rows; "auto" softness from the same rule as ARNRegressor.
    first = "auto" if "auto" in softness_grid else softness_grid[0]
    anchors, first_value = initial_anchors(
        X, w, n_anchors, replace(spec, softness=first), check_random_state(random_state)
    )
    softnesses = [first_value if s == "auto" else float(s) for s in softness_grid]

    xp = backend.xp
    Xc, Yc, wc = (backend.to_compute(a) for a in (X, Y, w))
    y_center = w @ Y / w.sum() if w.sum() > 0 else np.zeros(n_targets)
    moments = [
        (
            np.sum(w[idx, None] * (Y[idx] - y_center), 0),
            np.sum(w[idx, None] * (Y[idx] - y_center) ** 2, 0),
        )
        for idx in folds
    ]
    scores = np.empty((len(softnesses), len(alphas), len(folds)))
    totals = []
    for s, softness in enumerate(softnesses):
        assignment = make_assignment(
            backend.to_compute(anchors), spec.similarity, softness, spec.top_k, spec.linear_solver
        )
        fold_stats = []
        for idx in folds:
            rows = backend.to_compute(idx)
            fold_stats.append(
                accumulate_rows(
                    assignment,
                    xp.take(Xc, rows, axis=0),
                    xp.take(Yc, rows, axis=0),
                    xp.take(wc, rows, axis=0),
                    xp,
                    batch_size=batch_size,
                )
            )
        for j, fold in enumerate(fold_stats):
            # The sum of the other folds, not the total minus this fold: a
            # difference would carry the rounding of the larger total into the
            # smaller system, and block-sparse statistics have no subtraction.
            # With k ~ 5 folds the k^2 additions cost far less than the k solves.
            train = reduce(add, [other for i, other in enumerate(fold_stats) if i != j])
            W, y_mean = ridge_path(train, alphas, xp)
            yc_sum, yc_sq = moments[j]
            sse = fold_squared_errors(W, y_mean, fold, y_center, yc_sum, yc_sq)
            scores[s, :, j] = scores_of(sse, fold.weight_sum, yc_sum, yc_sq, scoring, y_scale)
        totals.append((reduce(add, fold_stats), assignment))

    best_s, best_a = np.unravel_index(
        np.argmax(scores.mean(axis=2).T), (len(alphas), len(softnesses))
    )[::-1]
    stats, assignment = totals[best_s]
    # Back to the units of y: the statistics are linear in y, y_sq_sum quadratic.
    scale = backend.to_compute(y_scale)
    with np.errstate(over="ignore"):  # sum y^2 is infinite for |y| ~ 1e200
        stats = replace(
            stats,
            zty=stats.zty * scale,
            y_sum=stats.y_sum * scale,
            y_sq_sum=stats.y_sq_sum * scale * scale,
        )
    alpha = float(alphas[best_a])
    return CVResult(
        scores=scores,
        softnesses=softnesses,
        alpha=alpha,
        softness=float(softnesses[best_s]),
        best_score=float(scores[best_s, best_a].mean()),
        layer=solve_layer(stats, assignment, alpha),
    )
