"""Variable projection (solver="lbfgs" and "gauss_newton") against independent references."""

import math
import warnings

import numpy as np
import pytest
from _synthetic import cells
from array_api_compat import array_namespace
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES
from arn_sklearn._kernels._gradients import objective
from arn_sklearn._kernels._lifting import pack_weights
from arn_sklearn._kernels._parametrisation import _Parametrisation
from arn_sklearn._learning import _gauss_newton, _varpro
from arn_sklearn._learning._training import VARPRO_SOLVERS
from arn_sklearn._learning._varpro import reduced_objective
from arn_sklearn._model._layer import as_2d, as_3d

xp = array_namespace(np.empty(0))

EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "the anchor initialisation draws rows at random, which row repetition changes"
    ),
}


@parametrize_with_checks(
    [
        ARNRegressor(n_anchors=3, solver="lbfgs", max_iter=3, random_state=0),
        ARNRegressor(n_anchors=3, solver="gauss_newton", max_iter=3, random_state=0),
        ARNRegressor(n_anchors=3, anchors="kplane", random_state=0),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


def central_difference(f, value, eps=1e-6):
    grad = np.zeros(value.shape)
    for index in np.ndindex(value.shape):
        step = np.zeros(value.shape)
        step[index] = eps
        grad[index] = (f(value + step) - f(value - step)) / (2 * eps)
    return grad


def problem(seed=0, n=60, d=3, t=2):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, t)), rng.uniform(0.5, 2.0, size=n)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("scaled, n_targets", [(False, 2), (True, 2), (False, 6)])
def test_reduced_gradient_matches_central_differences(kind, scaled, n_targets):
    # The envelope gradient (regressors held at their optimum) against finite
    # differences of the reduced objective, which re-solves the regressors;
    # 2 and 6 targets for 3 features take both gradient paths.
    X, Y, w = problem(t=n_targets)
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    log_k = math.log(0.8)

    def loss(C, lk=log_k):
        return reduced_objective(C, lk, X, Y, w, kind, 0.3, xp, gradient=False)[0]

    _, grad_anchors, grad_log_k, _ = reduced_objective(anchors, log_k, X, Y, w, kind, 0.3, xp)
    expected = central_difference(loss, anchors)
    assert np.linalg.norm(grad_anchors - expected) <= 1e-6 * np.linalg.norm(expected)
    expected_log_k = (loss(anchors, log_k + 1e-6) - loss(anchors, log_k - 1e-6)) / 2e-6
    assert abs(grad_log_k - expected_log_k) <= 1e-6 * abs(expected_log_k)

    # ... and through the search variables, (C, log K) or (K C, log K).
    params = _Parametrisation(anchors.shape, 0.8, kind, learn_softness=True, scaled=scaled)
    theta = params.pack(anchors, 0.8)
    got = params.gradient(theta, grad_anchors, grad_log_k)
    expected_theta = central_difference(lambda t: loss(*params.unpack(t)), theta)
    assert np.linalg.norm(got - expected_theta) <= 1e-6 * np.linalg.norm(expected_theta)


@pytest.mark.parametrize("kind", ["euclidean", "absdot"])
def test_reduced_objective_is_equation_10_at_the_closed_form(kind):
    X, Y, w = problem(seed=2, n=80)
    anchors = np.random.RandomState(3).normal(size=(4, 3))
    closed = ARNRegressor(4, similarity=kind, anchors=anchors, softness=0.7, alpha=0.3)
    closed.fit(X, Y, sample_weight=w)
    y_mean = np.average(Y, axis=0, weights=w)
    layer = {
        "anchors": anchors,
        "weights": pack_weights(closed.coef_, closed.intercept_ - y_mean, xp),
        "log_softness": np.asarray(math.log(0.7)),
    }
    expected = float(objective([layer], X, Y - y_mean, w, 0.3 / w.sum(), kind, xp)[0])
    got = reduced_objective(anchors, math.log(0.7), X, Y, w, kind, 0.3, xp, gradient=False)[0]
    assert got == pytest.approx(expected, rel=1e-10)


def training_objective(model, X, y, kind="euclidean"):
    """Eq. (10) over the total weight, evaluated independently of the solver."""
    y_mean = y.mean()
    layer = {
        "anchors": model.anchors_,
        "weights": pack_weights(as_3d(model.coef_), as_2d(model.intercept_) - y_mean, xp),
        "log_softness": np.asarray(np.log(model.softness_)),
    }
    value = objective(
        [layer], X, (y - y_mean)[:, None], np.ones(len(y)), model.alpha_ / len(y), kind, xp
    )
    return float(value[0])


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_varpro_never_ends_above_the_closed_form(solver, seed):
    X, y, _ = cells(1500, seed)
    anchors = np.random.RandomState(seed).normal(size=(4, 4))
    params = dict(anchors=anchors, softness=0.5, alpha=1.0, random_state=seed)
    closed = ARNRegressor(4, **params).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(4, solver=solver, max_iter=15, **params).fit(X, y)
    start = training_objective(closed, X, y)
    assert learned.best_loss_ == pytest.approx(training_objective(learned, X, y), rel=1e-9)
    assert learned.best_loss_ < start
    curve = np.array(learned.loss_curve_)
    assert np.all(
        np.diff(curve) <= 1e-12 * start
    )  # monotone: line searches, or only decreasing steps accepted
    assert len(learned.loss_curve_) == learned.n_iter_


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_varpro_regressors_are_the_closed_form_of_its_anchors(solver):
    X, y, _ = cells(800)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(4, solver=solver, max_iter=5, random_state=0).fit(X, y)
    again = ARNRegressor(
        4, anchors=learned.anchors_, softness=learned.softness_, alpha=learned.alpha_
    ).fit(X, y)
    np.testing.assert_allclose(learned.coef_, again.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(learned.intercept_, again.intercept_, rtol=1e-9, atol=1e-12)
    # The statistics kept are those of the final anchors (for partial-fit-like reuse);
    # Gauss-Newton sums its training and held-out rows' chunks in another order.
    gram = again._stats.gram
    np.testing.assert_allclose(
        learned._stats.gram, gram, rtol=1e-12, atol=1e-12 * np.abs(gram).max()
    )


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_varpro_defaults_recover_cells_cut_along_low_variance_directions(solver):
    # What a user writes: no rate, no softness, no anchors.
    X, y, _ = cells(4000)
    X_test, y_test, _ = cells(2000, seed=1)
    closed = ARNRegressor(4, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(4, solver=solver, random_state=0).fit(X, y)
    closed_mse = np.mean((closed.predict(X_test) - y_test) ** 2)
    learned_mse = np.mean((learned.predict(X_test) - y_test) ** 2)
    assert learned_mse < closed_mse / 10


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_varpro_early_stopping_keeps_the_best_validation_iterate(solver):
    X, y, _ = cells(1000)
    model = ARNRegressor(
        4, solver=solver, early_stopping=True, n_iter_no_change=3, max_iter=40, random_state=0
    ).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ >= max(model.validation_scores_)


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
@pytest.mark.parametrize("kind", ["dot", "absdot"])
def test_scale_free_similarities_keep_the_softness(solver, kind):
    # K s(x, c) = s(x, K c): only the scaled anchors are searched.
    X, y, _ = cells(500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(
            4, similarity=kind, softness=2.0, solver=solver, max_iter=3, random_state=0
        ).fit(X, y)
    assert model.softness_ == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_varpro_refuses_what_it_cannot_do(solver):
    X, y, _ = cells(100)
    with pytest.raises(ValueError, match="top_k"):
        ARNRegressor(4, solver=solver, top_k=2).fit(X, y)
    assert not hasattr(ARNRegressor(solver=solver), "partial_fit")


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pairs", [False, True])
def test_varpro_learns_on_every_similarity_with_and_without_weights(
    solver, kind, weighted, pairs, monkeypatch
):
    # The kept anchors' weighted training objective is never above the start's
    # (the closed form at the same anchors and softness), and zero weights are
    # the same as dropping the rows; with the passes summed through anchor pairs
    # or through the lifted block (forced, whatever the sizes would choose).
    for module in (_gauss_newton, _varpro):
        monkeypatch.setattr(module, "pair_form_pays", lambda *args: pairs)
    X, y, _ = cells(600)
    w = np.random.RandomState(3).uniform(0.0, 2.0, len(y)) if weighted else None
    start = np.random.RandomState(4).normal(size=(4, 4))
    # A fixed penalty: the training objective is then the closed form's.
    params = dict(similarity=kind, anchors=start, softness=1.0, alpha=1.0, random_state=0)
    closed = ARNRegressor(4, **params).fit(X, y, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(4, solver=solver, max_iter=20, **params).fit(X, y, sample_weight=w)
    weights = np.ones(len(y)) if w is None else w
    assert learned.best_loss_ <= weighted_objective(closed, X, y, weights, kind) * (1 + 1e-12)
    assert learned.best_loss_ == pytest.approx(
        weighted_objective(learned, X, y, weights, kind), rel=1e-8
    )
    if weighted:
        zero = weights.copy()
        zero[::3] = 0.0
        keep = zero > 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            a = ARNRegressor(4, solver=solver, max_iter=5, **params).fit(X, y, sample_weight=zero)
            b = ARNRegressor(4, solver=solver, max_iter=5, **params).fit(
                X[keep], y[keep], sample_weight=zero[keep]
            )
        np.testing.assert_allclose(a.anchors_, b.anchors_, rtol=1e-6, atol=1e-8)


def weighted_objective(model, X, y, w, kind):
    """Eq. (10) over the total weight, with sample weights, independently of the solver."""
    y_mean = np.sum(w * y) / np.sum(w)
    layer = {
        "anchors": model.anchors_,
        "weights": pack_weights(as_3d(model.coef_), as_2d(model.intercept_) - y_mean, xp),
        "log_softness": np.asarray(np.log(model.softness_)),
    }
    value = objective([layer], X, (y - y_mean)[:, None], w, model.alpha_ / np.sum(w), kind, xp)
    return float(value[0])


@pytest.mark.parametrize("solver", VARPRO_SOLVERS)
def test_varpro_verbose_prints_one_line_per_iteration(solver, capsys):
    X, y, _ = cells(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(
            4, solver=solver, early_stopping=True, max_iter=6, verbose=1, random_state=0
        ).fit(X, y)
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(f"[ARN] {solver} ") and "objective" in line
    ]
    assert len(lines) == model.n_iter_
    assert all("validation score" in line and line.endswith(" s") for line in lines)
