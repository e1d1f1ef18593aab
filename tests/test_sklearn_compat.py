import pickle

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor

# Weighting a row equals repeating it only for fixed anchors (tested exactly in
# test_estimator.py): the KMeans initialisation draws rows at random, and
# repeated rows change that draw, as for sklearn's own KMeans.
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "KMeans anchor initialisation depends on row repetition"
    ),
}


# Some checks fit on as few as a dozen rows, so fewer anchors than the default.
@parametrize_with_checks(
    [ARNRegressor(n_anchors=3, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# Default parameters (16 anchors) on the checks' datasets of 10-20 rows: as
# Nystroem, warn and use one anchor per row. DeepARNRegressor keeps every
# default but max_iter (200 epochs of every check's fits took 19 s, 20 take 2 s).
@parametrize_with_checks(
    [ARNRegressor(), ARNRegressorCV(), DeepARNRegressor(max_iter=20)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_compatible_with_default_parameters(estimator, check):
    # The checks' systems are tiny: threaded BLAS only adds contention here.
    with threadpool_limits(1):
        check(estimator)


def _data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4))
    return X, np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0)


def test_pipeline_grid_search_and_cross_val():
    X, y = _data()
    pipe = make_pipeline(StandardScaler(), ARNRegressor(random_state=0))
    search = GridSearchCV(
        pipe, {"arnregressor__n_anchors": [1, 4, 16]}, cv=KFold(3, shuffle=True, random_state=0)
    ).fit(X, y)
    assert search.best_params_["arnregressor__n_anchors"] > 1
    scores = cross_val_score(ARNRegressor(8, random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_clone_and_pickle():
    X, y = _data()
    model = ARNRegressor(8, alpha=0.5, random_state=0)
    cloned = clone(model)
    assert cloned.get_params() == model.get_params()
    model.fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.coef_, model.coef_)
    np.testing.assert_allclose(restored.predict(X), model.predict(X), rtol=1e-12, atol=1e-14)
