"""ARNRegressorCV against GridSearchCV(ARNRegressor) over alpha, on the same anchors.

Run: ``python benchmarks/bench_cv.py``. Prints the fit times, the speed ratio,
and checks that both pick the same alpha with the same scores. A second part
shows GridSearchCV over ``n_anchors`` wrapped around ARNRegressorCV.
"""

import time

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold

from arn_sklearn import ARNRegressor, ARNRegressorCV


def make_data(n, d, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    y = np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0) + np.sin(X[:, 3]) + 0.1 * rng.normal(size=n)
    return X, y


def compare(n=20_000, d=8, n_anchors=16, n_alphas=13, n_folds=5):
    X, y = make_data(n, d)
    anchors = ARNRegressor(n_anchors, random_state=0).fit(X, y).anchors_
    softness = 0.5
    alphas = np.logspace(-4, 4, n_alphas)
    cv = KFold(n_folds, shuffle=True, random_state=0)
    tic = time.perf_counter()
    search = GridSearchCV(
        ARNRegressor(n_anchors, anchors=anchors, softness=softness), {"alpha": alphas}, cv=cv
    ).fit(X, y)
    t_grid = time.perf_counter() - tic
    tic = time.perf_counter()
    model = ARNRegressorCV(n_anchors, anchors=anchors, softness=softness, alphas=alphas, cv=cv).fit(
        X, y
    )
    t_cv = time.perf_counter() - tic
    diff = np.max(
        np.abs(model.cv_results_["mean_test_score"] - search.cv_results_["mean_test_score"])
    )
    same = model.alpha_ == search.best_params_["alpha"]
    print(
        f"n={n} d={d} m={n_anchors} alphas={n_alphas} folds={n_folds}: "
        f"GridSearchCV {t_grid:.2f} s, ARNRegressorCV {t_cv:.2f} s, "
        f"ratio {t_grid / t_cv:.1f}x; same alpha: {same}; max |score diff| {diff:.1e}"
    )


def n_anchors_search(n=5_000, d=8):
    X, y = make_data(n, d)
    tic = time.perf_counter()
    search = GridSearchCV(
        ARNRegressorCV(alphas=np.logspace(-3, 3, 7), cv=3, random_state=0),
        {"n_anchors": [1, 4, 16, 32]},
        cv=3,
    ).fit(X, y)
    print(
        f"GridSearchCV over n_anchors around ARNRegressorCV: best n_anchors="
        f"{search.best_params_['n_anchors']}, alpha={search.best_estimator_.alpha_:g}, "
        f"score {search.best_score_:.3f} in {time.perf_counter() - tic:.2f} s"
    )


if __name__ == "__main__":
    compare(n_alphas=5)
    compare(n_alphas=13)
    compare(n=20_000, d=16, n_anchors=32, n_alphas=13)
    n_anchors_search()
