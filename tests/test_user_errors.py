"""What a user meets on bad input or a bad setting: clear errors, warnings at their own line.

Issue 20, points 5, 6 and 8: each check feeds a public estimator the input a
user could give and asserts the exception type and that the message names the
problem and the fix.
"""

import warnings

import numpy as np
import pytest
from scipy.linalg import LinAlgWarning
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    return X, np.sin(X[:, 0]) + 0.1 * X[:, 1]


# ------------------------------------------------------------ too-large features
@pytest.mark.parametrize(
    "estimator",
    [
        ARNRegressor(4),
        ARNRegressor(4, solver="lbfgs"),
        ARNRegressorCV(n_anchors=4, alphas=(1.0,)),
        DeepARNRegressor(n_layers=1, n_anchors=4, max_iter=2),
    ],
    ids=["closed_form", "lbfgs", "cv", "deep"],
)
@pytest.mark.parametrize("scale", [1e300, 1e200, 1e101])
def test_too_large_features_name_the_problem_and_the_fix(data, estimator, scale):
    # Before: LinAlgError "SVD did not converge in Linear Least Squares" from the solve.
    X, y = data
    with pytest.raises(ValueError, match=r"X has features as large as .*StandardScaler"):
        estimator.fit(X * scale, y)
    assert not hasattr(estimator, "coef_") and not hasattr(estimator, "coefs_")


def test_large_but_safe_features_still_fit(data):
    # The bound is far from where float64 fails: features of 1e99 still fit
    # (with a ridge penalty scaled like the squared features; biases are then
    # penalised hard, hence a slightly lower score than on X).
    X, y = data
    small = ARNRegressor(4, random_state=0).fit(X, y)
    large = ARNRegressor(4, alpha=1e-8 * 1e198, random_state=0).fit(X * 1e99, y)
    assert large.score(X * 1e99, y) > small.score(X, y) - 0.1


@pytest.mark.parametrize(
    "estimator",
    [
        ARNRegressor(4, solver="lbfgs"),
        ARNRegressor(4, solver="adam", max_iter=2),
        DeepARNRegressor(n_layers=2, n_anchors=4, max_iter=2),
    ],
    ids=["lbfgs", "adam", "deep"],
)
def test_too_large_targets_for_a_learned_solver(data, estimator):
    # Before: ValueError "All-NaN slice encountered" from inside the start (|y| >= 1e160).
    X, y = data
    with pytest.raises(ValueError, match=r"y has targets as large as .*TransformedTargetRegressor"):
        estimator.fit(X, y * 1e145)
    # The closed form copes: the same model, scaled.
    small = ARNRegressor(4, random_state=0).fit(X, y).predict(X)
    large = ARNRegressor(4, random_state=0).fit(X, y * 1e145).predict(X)
    np.testing.assert_allclose(large / 1e145, small, rtol=1e-6, atol=1e-9)


def test_jacobian_and_std_refuse_features_whose_squares_overflow(data):
    # Before: silently non-finite at |x| ~ 1e300 (predict itself stays exact there).
    X, y = data
    model = ARNRegressor(4, random_state=0).fit(X, y)
    deep = DeepARNRegressor(n_layers=2, n_anchors=4, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep.fit(X, y)
    assert np.all(np.isfinite(model.predict(X * 1e300)))
    for call in (
        lambda: model.jacobian(X * 1e300),
        lambda: model.predict(X * 1e300, return_std=True),
        lambda: deep.jacobian(X * 1e300),
    ):
        with pytest.raises(ValueError, match="X has features as large as"):
            call()


# ------------------------------------------------------------ diverging optimiser
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_diverging_learning_rate_warns_and_keeps_the_best_iterate(data, solver):
    # Before: ValueError "The anchors contain NaN or infinity." from the assignment.
    X, y = data
    model = ARNRegressor(4, solver=solver, learning_rate_init=1e6, max_iter=20, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert any("diverged" in m and "smaller learning_rate_init" in m for m in messages)
    assert not [w for w in caught if w.category is RuntimeWarning]  # no overflow noise
    assert np.all(np.isfinite(model.predict(X)))
    # The kept iterate is the best one seen, at worst the closed-form start.
    closed = ARNRegressor(4, random_state=0).fit(X, y)
    assert model.score(X, y) >= closed.score(X, y) - 1e-6


def test_diverging_deep_arn_warns_too(data):
    X, y = data
    model = DeepARNRegressor(
        n_layers=2, n_anchors=4, learning_rate_init=1e6, max_iter=5, random_state=0
    )
    with pytest.warns(ConvergenceWarning, match="diverged"):
        model.fit(X, y)
    assert np.all(np.isfinite(model.predict(X)))


# ------------------------------------------------------------ warnings at the user's line
def _caught(fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return caught


@pytest.mark.parametrize(
    "category, fit",
    [
        (UserWarning, lambda X, y: ARNRegressor(16).fit(X[:10], y[:10])),
        (ConvergenceWarning, lambda X, y: ARNRegressor(4, solver="adam", max_iter=1).fit(X, y)),
        (ConvergenceWarning, lambda X, y: ARNRegressor(4, solver="lbfgs", max_iter=1).fit(X, y)),
        (
            ConvergenceWarning,
            lambda X, y: DeepARNRegressor(n_layers=2, n_anchors=4, max_iter=1).fit(X, y),
        ),
        (
            LinAlgWarning,
            lambda X, y: ARNRegressor(4, alpha=0.0).fit(np.hstack([X, X]), y),
        ),
    ],
    ids=["anchors>rows", "adam", "lbfgs", "deep", "singular"],
)
def test_warnings_point_at_the_callers_line(data, category, fit):
    # Before: warnings named internal lines such as _estimator.py:373.
    X, y = data
    caught = [w for w in _caught(lambda: fit(X, y)) if issubclass(w.category, category)]
    assert caught
    for w in caught:
        assert w.filename == __file__, (w.filename, w.lineno, str(w.message))


# ------------------------------------------------------------ warm start after set_params
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_warm_start_refuses_a_changed_anchor_count(data, solver):
    # Before: fitted 4 anchors silently kept while get_params() said 6.
    X, y = data
    model = ARNRegressor(4, solver=solver, warm_start=True, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
        model.set_params(n_anchors=6)
        with pytest.raises(ValueError, match=r"4 anchors, but n_anchors=6.*warm_start=False"):
            model.fit(X, y)
        assert model.anchors_.shape == (4, 3)  # the fitted model is left as it was
        model.set_params(similarity="dot", n_anchors=4)
        with pytest.raises(ValueError, match="similarity='euclidean'"):
            model.fit(X, y)
        model.set_params(similarity="euclidean", warm_start=False, n_anchors=6)
        assert model.fit(X, y).anchors_.shape == (6, 3)


def test_deep_warm_start_refuses_a_changed_anchor_count(data):
    X, y = data
    model = DeepARNRegressor(n_layers=2, n_anchors=4, warm_start=True, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
        with pytest.raises(ValueError, match=r"\[4, 4\] anchors, but n_anchors=\[4, 6\]"):
            model.set_params(n_anchors=[4, 6]).fit(X, y)


# ------------------------------------------------------------ lbfgs barely more rows than anchors
@pytest.mark.parametrize(
    "seed, n_samples, similarity, alpha", [(8, 17, "euclidean", 1e-6), (14, 19, "cosine", 1.0)]
)
def test_lbfgs_with_barely_more_rows_than_anchors(seed, n_samples, similarity, alpha):
    # Before: OverflowError "math range error": a line-search trial took log K past 709.
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, 3)) * 10 ** rng.uniform(-2, 3)
    y = rng.normal(size=n_samples)
    model = ARNRegressor(
        16, similarity=similarity, alpha=alpha, solver="lbfgs", max_iter=30, random_state=seed
    )
    model.fit(X, y)
    assert np.isfinite(model.softness_) and np.all(np.isfinite(model.predict(X)))
    # 16 anchors on ~18 rows interpolate: the objective falls far below the start's.
    assert model.best_loss_ < 0.1 * model.loss_curve_[0] or model.score(X, y) > 0.99


# ------------------------------------------------------------ help() reads cleanly
@pytest.mark.parametrize("cls", [ARNRegressor, ARNRegressorCV, DeepARNRegressor])
def test_help_has_no_runs_of_spaces_in_parameter_types(cls):
    # Before: a backslash-continued type line showed as "shape             (n_anchors, ...".
    import inspect
    import re

    docs = [inspect.getdoc(cls)] + [
        inspect.getdoc(member)
        for _, member in inspect.getmembers(cls, callable)
        if (getattr(member, "__module__", None) or "").startswith("arn_sklearn")
    ]
    headers = [
        line.strip()
        for doc in docs
        for line in (doc or "").splitlines()
        if re.match(r"\s*\w+ : \S", line)
    ]
    assert len(headers) > 10
    assert not [h for h in headers if re.search(r"\S {2,}\S", h)]


@pytest.mark.parametrize("cls", [ARNRegressor, ARNRegressorCV, DeepARNRegressor])
def test_docstrings_keep_alpha_for_the_ridge_penalty(cls):
    # The assignments are pi_k(x); alpha_k(x) would read as the penalty.
    import inspect
    import re

    text = "".join(inspect.getdoc(m) or "" for _, m in inspect.getmembers(cls))
    assert not re.search(r"alpha_k|alpha\((x|X)\)", text)
