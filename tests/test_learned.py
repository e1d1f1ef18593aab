"""Gradient-trained ARN and Deep ARN through the estimator API."""

import pickle
import warnings

import numpy as np
import pytest
from array_api_compat import array_namespace
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from arn_sklearn import ARNRegressor, DeepARNRegressor
from arn_sklearn._kernels._gradients import objective
from arn_sklearn._kernels._lifting import pack_weights
from arn_sklearn._model._layer import as_2d, as_3d

EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "KMeans initialisation and minibatch order depend on row repetition"
    ),
}

xp = array_namespace(np.empty(0))


@parametrize_with_checks(
    [
        ARNRegressor(n_anchors=3, solver="adam", max_iter=3, random_state=0),
        DeepARNRegressor(n_layers=2, n_anchors=3, max_iter=3, random_state=0),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


def piecewise_linear(n, seed=0):
    """Four Voronoi cells, each with its own affine map: known partitions."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    centres = 0.6 * np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]])
    cell = np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    W = np.array([[3.0, -2.0], [-1.0, 4.0], [2.0, 2.0], [-3.0, 1.0]])
    b = np.array([1.0, -2.0, 0.5, 2.0])
    return X, np.sum(X * W[cell], axis=1) + b[cell] + 0.01 * rng.normal(size=n)


def training_objective(model, X, y):
    """Eq. (10) over the total weight, evaluated independently of the solver."""
    y_mean = y.mean()
    layer = {
        "anchors": model.anchors_,
        "weights": pack_weights(as_3d(model.coef_), as_2d(model.intercept_) - y_mean, xp),
        "log_softness": np.asarray(np.log(model.softness_)),
    }
    w = np.ones(len(y))
    value = objective([layer], X, (y - y_mean)[:, None], w, model.alpha_ / len(y), "euclidean", xp)
    return float(value[0])


@pytest.mark.parametrize("solver, rate, ratio", [("adam", 0.01, 0.3), ("sgd", 0.003, 0.5)])
def test_learned_anchors_beat_the_closed_form_on_known_partitions(solver, rate, ratio):
    X, y = piecewise_linear(3000)
    X_test, y_test = piecewise_linear(2000, seed=1)
    params = dict(n_anchors=4, softness=10.0, alpha=1e-3, anchors="kmeans", random_state=0)
    closed = ARNRegressor(**params).fit(X, y)
    learned = ARNRegressor(
        solver=solver, learning_rate_init=rate, batch_size=100, max_iter=60, **params
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned.fit(X, y)
    closed_mse = np.mean((closed.predict(X_test) - y_test) ** 2)
    learned_mse = np.mean((learned.predict(X_test) - y_test) ** 2)
    assert learned_mse < ratio * closed_mse
    assert learned.softness_ > 10.0  # sharper cells for a discontinuous target
    assert learned.best_loss_ == pytest.approx(training_objective(learned, X, y), rel=1e-10)
    assert learned.best_loss_ < training_objective(closed, X, y)
    assert len(learned.loss_curve_) == learned.n_iter_
    assert not hasattr(learned, "validation_scores_")


def test_training_never_ends_above_the_closed_form():
    # A rate far too large: every epoch is worse, the closed form is kept.
    X, y = piecewise_linear(400)
    params = dict(n_anchors=4, softness=5.0, alpha=1e-2, anchors="kmeans", random_state=0)
    closed = ARNRegressor(**params).fit(X, y)
    model = ARNRegressor(solver="sgd", learning_rate_init=50.0, max_iter=3, **params)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    assert model.best_loss_ <= training_objective(closed, X, y) * (1 + 1e-12)
    assert np.all(np.isfinite(model.predict(X)))
    np.testing.assert_allclose(model.predict(X), closed.predict(X), rtol=1e-10)


def test_reproducible_with_random_state():
    X, y = piecewise_linear(300)
    params = dict(n_anchors=4, solver="adam", max_iter=4, batch_size=50, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = ARNRegressor(**params).fit(X, y)
        second = ARNRegressor(**params).fit(X, y)
    np.testing.assert_array_equal(first.anchors_, second.anchors_)
    np.testing.assert_array_equal(first.predict(X), second.predict(X))


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = piecewise_linear(600)
    model = ARNRegressor(
        4,
        softness=10.0,
        solver="adam",
        learning_rate_init=0.01,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        max_iter=50,
        random_state=0,
    ).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ >= max(model.validation_scores_)
    assert model.n_iter_ < 50  # it stopped early


def test_verbose_prints_each_epoch(capsys):
    X, y = piecewise_linear(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ARNRegressor(3, solver="adam", max_iter=2, verbose=1, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "Epoch 1: loss" in out and "Epoch 2: loss" in out and " s\n" in out


def test_warm_start_continues_from_the_fitted_model():
    X, y = piecewise_linear(500)
    params = dict(n_anchors=4, softness=10.0, solver="adam", learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(max_iter=5, random_state=0, warm_start=True, **params).fit(X, y)
        first = model.best_loss_
        anchors = model.anchors_.copy()
        model.fit(X, y)
    assert model.best_loss_ <= first
    # A warm start does not re-run KMeans: the starting point is the fitted model.
    assert np.abs(model.anchors_ - anchors).max() < 0.5
    with pytest.raises(ValueError, match="targets"):
        model.fit(X, np.stack([y, y], axis=1))


def test_gradient_solvers_refuse_what_they_cannot_do():
    X, y = piecewise_linear(100)
    with pytest.raises(ValueError, match="top_k"):
        ARNRegressor(4, solver="adam", top_k=2).fit(X, y)
    assert not hasattr(ARNRegressor(solver="adam"), "partial_fit")
    with pytest.raises(ValueError, match="validation rows"):
        ARNRegressor(2, solver="adam", early_stopping=True, validation_fraction=0.01).fit(
            X[:3], y[:3]
        )
    model = ARNRegressor(4, solver="adam")
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.where(X > 0.99, np.nan, X), y)
    assert not hasattr(model, "coef_")


def test_gradient_solver_rejects_dask_input():
    da = pytest.importorskip("dask.array")
    X, y = piecewise_linear(100)
    with pytest.raises(ValueError, match="in memory"):
        ARNRegressor(4, solver="adam").fit(da.from_array(X, chunks=50), da.from_array(y, chunks=50))


def test_multi_output_gradient_fit():
    X, y = piecewise_linear(400)
    Y = np.stack([y, -2 * y + X[:, 0]], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(4, solver="adam", max_iter=3, random_state=0).fit(X, Y)
    assert model.coef_.shape == (4, 2, 2) and model.predict(X).shape == (400, 2)


# ---------------------------------------------------------------- Deep ARN
def test_deep_arn_defaults_do_not_over_fit_small_data():
    # scikit-learn's diabetes (442 rows) in a StandardScaler pipeline: the
    # defaults' 5-fold R^2 within 0.03 of RidgeCV's.
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    folds = KFold(5, shuffle=True, random_state=0)

    def cv_r2(model):
        return cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=folds).mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep = cv_r2(DeepARNRegressor(random_state=0))
    assert deep >= cv_r2(RidgeCV(np.logspace(-3, 3, 13))) - 0.03


def test_deep_arn_starts_as_the_single_layer_closed_form():
    X, y = piecewise_linear(300)
    params = dict(alpha=0.1, anchors="kmeans", softness=2.0, random_state=0)
    closed = ARNRegressor(4, **params).fit(X, y)
    deep = DeepARNRegressor(3, 4, learning_rate_init=1e-12, max_iter=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep.fit(X, y)
    np.testing.assert_allclose(deep.predict(X), closed.predict(X), rtol=1e-8, atol=1e-10)
    assert [c.shape for c in deep.coefs_] == [(4, 2, 2), (4, 2, 2), (4, 1, 2)]
    assert all(np.abs(c).max() < 1e-9 for c in deep.coefs_[:-1])  # identity residuals


def test_deep_arn_improves_on_single_layer_in_training_loss():
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(1500, 3))
    y = np.sin(2 * X[:, 0]) * X[:, 1] + np.abs(X[:, 2])
    params = dict(
        alpha=1e-3, learning_rate_init=0.01, batch_size=100, early_stopping=False, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = DeepARNRegressor(1, 8, max_iter=30, **params).fit(X, y)
        deep = DeepARNRegressor(2, 8, max_iter=30, **params).fit(X, y)
    closed = ARNRegressor(8, alpha=1e-3, random_state=0).fit(X, y)
    assert single.best_loss_ < training_objective(closed, X, y)
    assert deep.best_loss_ < single.best_loss_
    assert deep.score(X, y) > closed.score(X, y)


def test_deep_arn_in_a_pipeline_grid_search_and_pickle():
    X, y = piecewise_linear(300)
    pipe = make_pipeline(StandardScaler(), DeepARNRegressor(2, max_iter=2, random_state=0))
    search = GridSearchCV(pipe, {"deeparnregressor__n_anchors": [2, [3, 2]]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X), search.predict(X))


def test_deep_arn_checks_anchor_counts():
    X, y = piecewise_linear(50)
    with pytest.raises(ValueError, match="one per layer"):
        DeepARNRegressor(3, n_anchors=[4, 4]).fit(X, y)
    with pytest.warns(UserWarning, match="n_anchors=60 > n_samples=50"):
        model = DeepARNRegressor(2, n_anchors=[60, 4], max_iter=1).fit(X, y)
    assert model.n_anchors_ == [50, 4] and model.anchors_[0].shape[0] == 50
