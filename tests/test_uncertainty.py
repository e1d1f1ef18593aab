"""Predictive uncertainty: predict(X, return_std=True)."""

import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._lifting import lift

Z90 = norm.ppf(0.95)  # half-width of a central 90% interval, in standard deviations


def homoscedastic(n, seed, noise=0.3):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    f = np.sin(1.5 * X[:, 0]) + 0.5 * X[:, 1] ** 2
    return X, f + noise * rng.normal(size=n), f


def naive_std(model, X, y, w, X_new):
    """Reference: the weighted fit as rows repeated ``w`` times, explicit inverse and hat matrix."""
    Xr, yr = np.repeat(X, w, axis=0), np.repeat(y, w, axis=0)
    Yr = yr.reshape(len(yr), -1)
    Z = lift(Xr, model.soft_assignments(Xr), np)
    N, p = Z.shape
    K_inv = np.linalg.inv(Z.T @ Z + model.alpha * np.eye(p))
    center = np.eye(N) - np.ones((N, N)) / N
    P = np.ones((N, N)) / N + Z @ K_inv @ Z.T @ center  # y -> fitted values, mean included
    residual = Yr - P @ Yr
    sigma2 = np.sum(residual**2, axis=0) / (N - np.trace(P))
    Z_new = lift(X_new, model.soft_assignments(X_new), np)
    leverage = np.einsum("ip,pq,iq->i", Z_new, K_inv, Z_new)
    return np.sqrt(sigma2[None, :] * (1 + leverage[:, None])), P @ Yr


@pytest.mark.parametrize("top_k", [None, 2])
@pytest.mark.parametrize("multi_output", [False, True])
def test_std_matches_explicit_inverse(top_k, multi_output):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 2))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1], X[:, 0] * X[:, 1]], axis=1) + 0.1 * rng.normal(
        size=(40, 2)
    )
    y = Y if multi_output else Y[:, 0]
    w = rng.randint(1, 4, size=40)
    model = ARNRegressor(4, alpha=0.5, top_k=top_k, random_state=0).fit(X, y, sample_weight=w)
    X_new = rng.normal(size=(7, 2))
    expected, fitted = naive_std(model, X, y, w, X_new)
    # The reference's fitted values are the model's: the same estimator.
    np.testing.assert_allclose(
        fitted, model.predict(np.repeat(X, w, axis=0)).reshape(fitted.shape), rtol=1e-8
    )
    y_pred, y_std = model.predict(X_new, return_std=True)
    np.testing.assert_array_equal(y_pred, model.predict(X_new))
    assert y_std.shape == y_pred.shape
    np.testing.assert_allclose(y_std, expected.reshape(y_std.shape), rtol=1e-8)


def test_nominal_90_interval_covers_90_percent():
    X, y, _ = homoscedastic(3000, seed=0)
    X_test, y_test, _ = homoscedastic(20000, seed=1)
    model = ARNRegressor(16, alpha=1e-2, random_state=0).fit(X, y)
    y_pred, y_std = model.predict(X_test, return_std=True)
    covered = np.abs(y_test - y_pred) <= Z90 * y_std
    # 20,000 rows: the binomial standard error of the coverage is 0.2%.
    assert 0.88 <= covered.mean() <= 0.92, covered.mean()
    # sigma recovers the noise level (0.3) and the intervals are not padded.
    assert 0.28 < np.median(y_std) < 0.33


def test_std_grows_away_from_the_data():
    X, y, _ = homoscedastic(1000, seed=0)
    model = ARNRegressor(8, alpha=1e-3, random_state=0).fit(X, y)
    _, inside = model.predict(np.zeros((1, 2)), return_std=True)
    _, outside = model.predict(np.full((1, 2), 6.0), return_std=True)
    assert outside[0] > 2 * inside[0]


def test_partial_fit_gives_the_same_std_as_fit():
    X, y, _ = homoscedastic(600, seed=0)
    anchors = X[:6].copy()
    params = dict(n_anchors=6, anchors=anchors, softness=2.0, alpha=0.1)
    full = ARNRegressor(**params).fit(X, y)
    streamed = ARNRegressor(**params)
    for part in np.array_split(np.arange(600), 3):
        streamed.partial_fit(X[part], y[part])
    X_new = homoscedastic(50, seed=3)[0]
    np.testing.assert_allclose(
        streamed.predict(X_new, return_std=True)[1],
        full.predict(X_new, return_std=True)[1],
        rtol=1e-9,
    )
    # A later partial_fit call updates the cached noise estimate.
    _, before = streamed.predict(X_new, return_std=True)
    streamed.partial_fit(X[:100], y[:100] + 5.0)
    _, after = streamed.predict(X_new, return_std=True)
    assert np.all(after > 2 * before)


def test_std_survives_pickle_and_skops(tmp_path):
    X, y, _ = homoscedastic(300, seed=0)
    model = ARNRegressor(4, random_state=0).fit(X, y)
    _, expected = model.predict(X[:10], return_std=True)  # fills the cache
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(loaded.predict(X[:10], return_std=True)[1], expected, rtol=1e-12)
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert all(t.startswith("arn_sklearn.") for t in untrusted), untrusted
    loaded = sio.load(path, trusted=untrusted)
    np.testing.assert_allclose(loaded.predict(X[:10], return_std=True)[1], expected, rtol=1e-12)


def test_gradient_solver_has_no_std():
    X, y, _ = homoscedastic(200, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(4, solver="adam", max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="return_std=True needs the closed-form statistics"):
        model.predict(X, return_std=True)


def test_no_degrees_of_freedom_left():
    X, y, _ = homoscedastic(12, seed=0)
    model = ARNRegressor(4, alpha=0.0, anchors="random", random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="degrees of\nfreedom|degrees of freedom"):
        model.predict(X, return_std=True)


def test_std_on_dask_input():
    da = pytest.importorskip("dask.array")
    X, y, _ = homoscedastic(400, seed=0)
    model = ARNRegressor(4, random_state=0).fit(X, y)
    y_pred, y_std = model.predict(da.from_array(X, chunks=150), return_std=True)
    expected_pred, expected_std = model.predict(X, return_std=True)
    np.testing.assert_allclose(y_pred.compute(), expected_pred, rtol=1e-12)
    np.testing.assert_allclose(y_std.compute(), expected_std, rtol=1e-12)
    # Fitted block by block on Dask (fixed anchors and softness): the same std.
    params = dict(n_anchors=4, anchors=X[:4], softness=1.0)
    in_memory = ARNRegressor(**params).fit(X, y)
    on_dask = ARNRegressor(**params).fit(da.from_array(X, chunks=150), da.from_array(y, chunks=150))
    np.testing.assert_allclose(
        on_dask.predict(X, return_std=True)[1],
        in_memory.predict(X, return_std=True)[1],
        rtol=1e-9,
    )


@pytest.mark.parametrize("score", ["absolute", "std"])
def test_mapie_split_conformal(score):
    pytest.importorskip("mapie", minversion="1.0")
    from mapie.conformity_scores import StdConformityScore
    from mapie.regression import SplitConformalRegressor

    X, y, _ = homoscedastic(2000, seed=0)
    X_test, y_test, _ = homoscedastic(5000, seed=1)
    conformity_score = StdConformityScore() if score == "std" else "absolute"
    mapie = SplitConformalRegressor(
        ARNRegressor(16, alpha=1e-2, random_state=0),
        confidence_level=0.9,
        conformity_score=conformity_score,
        prefit=False,
    )
    mapie.fit(X[:1000], y[:1000]).conformalize(X[1000:], y[1000:])
    _, intervals = mapie.predict_interval(X_test)
    low, high = intervals[:, 0, 0], intervals[:, 1, 0]
    coverage = np.mean((y_test >= low) & (y_test <= high))
    assert 0.87 <= coverage <= 0.93, coverage


def test_cv_predict_return_std_is_the_refitted_models():
    from arn_sklearn import ARNRegressor, ARNRegressorCV

    rng = np.random.RandomState(3)
    X = rng.normal(size=(300, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=300)
    anchors = rng.normal(size=(4, 2))
    cv = ARNRegressorCV(4, anchors=anchors, softness=1.0, alphas=[0.1, 1.0], cv=3).fit(X, y)
    ref = ARNRegressor(4, anchors=anchors, softness=1.0, alpha=cv.alpha_).fit(X, y)
    y_pred, y_std = cv.predict(X[:20], return_std=True)
    ref_pred, ref_std = ref.predict(X[:20], return_std=True)
    np.testing.assert_allclose(y_pred, ref_pred, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(y_std, ref_std, rtol=1e-8)
