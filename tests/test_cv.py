import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit
from sklearn.utils.estimator_checks import parametrize_with_checks

from arn_sklearn import ARNRegressor, ARNRegressorCV
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._solve import solve_ridge
from arn_sklearn._model._cv_path import fold_squared_errors, ridge_path
from arn_sklearn._model._statistics import SufficientStatistics, accumulate


def _data(n=300, n_targets=1, offset=0.0, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.maximum(X[:, 1], 0)], 1)
    Y = Y[:, :n_targets] + 0.3 * rng.normal(size=(n, n_targets)) + offset
    return X, (Y[:, 0] if n_targets == 1 else Y)


ALPHAS = [1e-4, 1e-2, 0.3, 3.0, 30.0, 300.0]
ANCHORS = np.random.RandomState(1).normal(size=(6, 3))


@pytest.mark.parametrize("scoring", [None, "neg_mean_squared_error"])
@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_agrees_with_grid_search(scoring, n_targets, offset):
    X, y = _data(n_targets=n_targets, offset=offset)
    cv = KFold(4, shuffle=True, random_state=0)
    base = ARNRegressor(6, anchors=ANCHORS, softness=0.7)
    search = GridSearchCV(base, {"alpha": ALPHAS}, cv=cv, scoring=scoring).fit(X, y)
    model = ARNRegressorCV(
        6, anchors=ANCHORS, softness=0.7, alphas=ALPHAS, cv=cv, scoring=scoring or "r2"
    ).fit(X, y)
    assert model.alpha_ == search.best_params_["alpha"]
    for key in ["mean_test_score", "std_test_score"] + [f"split{j}_test_score" for j in range(4)]:
        np.testing.assert_allclose(
            model.cv_results_[key], search.cv_results_[key], rtol=0, atol=1e-8, err_msg=key
        )
    np.testing.assert_array_equal(
        model.cv_results_["rank_test_score"], search.cv_results_["rank_test_score"]
    )
    np.testing.assert_allclose(model.predict(X), search.best_estimator_.predict(X), atol=1e-10)
    np.testing.assert_allclose(model.coef_, search.best_estimator_.coef_, atol=1e-10)


def test_softness_grid_agrees_with_grid_search():
    X, y = _data()
    cv = KFold(3)
    grid = {"alpha": [0.01, 1.0, 100.0], "softness": [0.2, 1.0, 5.0]}
    search = GridSearchCV(ARNRegressor(6, anchors=ANCHORS), grid, cv=cv).fit(X, y)
    model = ARNRegressorCV(
        6, anchors=ANCHORS, softness=grid["softness"], alphas=grid["alpha"], cv=cv
    ).fit(X, y)
    assert (model.alpha_, model.softness_) == (
        search.best_params_["alpha"],
        search.best_params_["softness"],
    )
    assert model.cv_results_["params"] == search.cv_results_["params"]
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"], atol=1e-8
    )
    assert model.best_score_ == pytest.approx(search.best_score_, abs=1e-8)


def test_ridge_path_and_fold_errors_match_direct_formulas():
    # Independent reference: Cholesky solve per alpha and explicit held-out residuals.
    rng = np.random.RandomState(3)
    X, Y = rng.normal(size=(120, 2)), rng.normal(size=(120, 2)) + 5.0
    w = rng.uniform(0.1, 2, 120)
    anchors = rng.normal(size=(3, 2))
    from arn_sklearn._kernels._assignment import soft_assignments
    from arn_sklearn._kernels._lifting import lift

    def assign(c):
        return soft_assignments(c, anchors, "euclidean", 1.0, np)

    def stats(idx):
        zero = SufficientStatistics.zeros(9, 2, np)
        return accumulate(iter_chunks(X[idx], Y[idx], w[idx], 50), assign, np, zero)

    train, test = np.arange(80), np.arange(80, 120)
    alphas = np.array([1e-3, 0.1, 10.0])
    W, y_mean = ridge_path(stats(train), alphas)
    c = np.array([4.0, 6.0])
    yt = Y[test] - c
    sse = fold_squared_errors(W, y_mean, stats(test), c, w[test] @ yt, w[test] @ yt**2)
    Z = lift(X[test], assign(X[test]), np)
    for a, alpha in enumerate(alphas):
        W_ref, mean_ref = solve_ridge(stats(train), alpha, np)
        np.testing.assert_allclose(W[a], W_ref, atol=1e-10)
        resid = Z @ W_ref + mean_ref - Y[test]
        np.testing.assert_allclose(sse[a], w[test] @ resid**2, rtol=1e-9)


def test_auto_softness_and_kmeans_anchors_match_arn_regressor():
    X, y = _data()
    model = ARNRegressorCV(5, alphas=[0.5], cv=3, random_state=0).fit(X, y)
    ref = ARNRegressor(5, alpha=0.5, random_state=0).fit(X, y)
    np.testing.assert_allclose(model.anchors_, ref.anchors_)
    assert model.softness_ == pytest.approx(ref.softness_)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), atol=1e-10)


def test_grid_search_over_n_anchors_still_works():
    X, y = _data()
    search = GridSearchCV(
        ARNRegressorCV(alphas=[0.1, 10.0], cv=3, random_state=0), {"n_anchors": [1, 8]}, cv=3
    ).fit(X, y)
    assert search.best_params_["n_anchors"] == 8


def test_bad_parameters():
    X, y = _data(n=60)
    with pytest.raises(ValueError, match="partition"):
        ARNRegressorCV(2, cv=ShuffleSplit(3, random_state=0)).fit(X, y)
    with pytest.raises(ValueError, match="alphas"):
        ARNRegressorCV(2, alphas=[-1.0]).fit(X, y)
    with pytest.raises(ValueError, match="softness"):
        ARNRegressorCV(2, softness=[1.0, -2.0]).fit(X, y)


@parametrize_with_checks(
    [ARNRegressorCV(n_anchors=2, alphas=[0.1, 1.0], cv=2, random_state=0)],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": (
            "KMeans anchor initialisation depends on row repetition"
        ),
    },
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
