import pickle

import numpy as np
import pytest
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import Ridge

from arn_sklearn import ARNRegressor


def naive_softmax_assignments(X, anchors, kind, softness):
    """Eq. (4) written sample by sample, independent of the package kernels."""
    A = np.empty((X.shape[0], anchors.shape[0]))
    for i, x in enumerate(X):
        if kind == "euclidean":
            s = np.array([-np.sum((x - c) ** 2) for c in anchors])
        elif kind == "dot":
            s = anchors @ x
        elif kind == "absdot":
            s = np.abs(anchors @ x)
        else:
            s = anchors @ x / (np.linalg.norm(x) * np.linalg.norm(anchors, axis=1))
        e = np.exp(softness * s - np.max(softness * s))
        A[i] = e / e.sum()
    return A


def naive_arn(X, Y, X_test, anchors, kind, softness, alpha, w=None):
    """Eq. (17) built from the whole lifted matrix, with centred targets."""
    w = np.ones(X.shape[0]) if w is None else w

    def lifted(Xs):
        A = naive_softmax_assignments(Xs, anchors, kind, softness)
        X1 = np.hstack([Xs, np.ones((Xs.shape[0], 1))])
        return np.stack([np.kron(a, x1) for a, x1 in zip(A, X1, strict=True)])

    Z = lifted(X)
    y_mean = w @ Y / w.sum()
    G = Z.T @ (w[:, None] * Z) + alpha * np.eye(Z.shape[1])
    W = np.linalg.solve(G, Z.T @ (w[:, None] * (Y - y_mean)))
    return lifted(X_test) @ W + y_mean


def piecewise_data(n=400, d=3, n_targets=2, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.maximum(X[:, 1], 0)], 1)
    return X, Y[:, :n_targets] + 0.05 * rng.normal(size=(n, n_targets))


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_predictions_equal_naive_eq17(kind, n_targets):
    X, Y = piecewise_data(n_targets=n_targets)
    anchors = np.random.RandomState(1).normal(size=(5, 3))
    model = ARNRegressor(
        5, similarity=kind, softness=0.7, alpha=0.3, anchors=anchors, batch_size=37
    ).fit(X, Y)
    expected = naive_arn(X, Y, X[:50], anchors, kind, 0.7, 0.3)
    got = model.predict(X[:50]).reshape(expected.shape)
    assert np.max(np.abs(got - expected)) <= 1e-8 * np.max(np.abs(expected))


def test_one_dimensional_y_shapes():
    X, Y = piecewise_data(n_targets=1)
    model = ARNRegressor(4, random_state=0).fit(X, Y[:, 0])
    assert model.coef_.shape == (4, 3)
    assert model.intercept_.shape == (4,)
    assert model.predict(X).shape == (400,)
    model2 = ARNRegressor(4, random_state=0).fit(X, Y)
    assert model2.coef_.shape == (4, 1, 3)
    assert model2.predict(X).shape == (400, 1)
    np.testing.assert_allclose(model2.predict(X)[:, 0], model.predict(X))


def test_coef_and_intercept_reproduce_predictions():
    X, Y = piecewise_data()
    model = ARNRegressor(6, random_state=0).fit(X, Y)
    A = model.soft_assignments(X)
    per_anchor = np.einsum("ktd,nd->nkt", model.coef_, X) + model.intercept_[None]
    np.testing.assert_allclose(
        np.einsum("nk,nkt->nt", A, per_anchor), model.predict(X), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(A.sum(axis=1), 1.0)
    assert A.shape == (400, 6) and np.all(A >= 0)


def test_single_anchor_is_ridge_with_penalised_intercept():
    X, Y = piecewise_data()
    model = ARNRegressor(1, alpha=2.0, random_state=0).fit(X, Y)
    # With one anchor the lifted features are [x, 1]: ridge on centred y with
    # the constant column penalised like the weights.
    X1 = np.hstack([X, np.ones((len(X), 1))])
    ridge = Ridge(alpha=2.0, fit_intercept=False).fit(X1, Y - Y.mean(0))
    np.testing.assert_allclose(
        model.predict(X), ridge.predict(X1) + Y.mean(0), rtol=1e-10, atol=1e-10
    )


def test_partial_fit_equals_fit():
    X, Y = piecewise_data(n=600)
    anchors = np.random.RandomState(3).normal(size=(7, 3))
    params = dict(n_anchors=7, anchors=anchors, softness=1.3, alpha=0.1)
    full = ARNRegressor(**params).fit(X, Y)
    streamed = ARNRegressor(**params)
    for chunk in np.array_split(np.arange(600), 5):
        streamed.partial_fit(X[chunk], Y[chunk])
    np.testing.assert_allclose(streamed.predict(X), full.predict(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(streamed.coef_, full.coef_, rtol=1e-10, atol=1e-10)


def test_partial_fit_first_call_fixes_anchors():
    X, Y = piecewise_data(n=600)
    model = ARNRegressor(4, random_state=0).partial_fit(X[:300], Y[:300])
    anchors, softness = model.anchors_.copy(), model.softness_
    model.partial_fit(X[300:], Y[300:])
    np.testing.assert_array_equal(model.anchors_, anchors)
    assert model.softness_ == softness
    with pytest.raises(ValueError, match="targets"):
        model.partial_fit(X[:10], Y[:10, :1])


def test_integer_sample_weight_equals_repetition():
    X, Y = piecewise_data(n=200)
    rng = np.random.RandomState(0)
    w = rng.randint(0, 4, size=200)
    anchors = rng.normal(size=(5, 3))
    params = dict(n_anchors=5, anchors=anchors, softness=0.5, alpha=0.2)
    weighted = ARNRegressor(**params).fit(X, Y, sample_weight=w)
    repeated = ARNRegressor(**params).fit(np.repeat(X, w, 0), np.repeat(Y, w, 0))
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-9, atol=1e-10)
    expected = naive_arn(X, Y, X, anchors, "euclidean", 0.5, 0.2, w=w.astype(float))
    np.testing.assert_allclose(weighted.predict(X), expected, rtol=1e-8, atol=1e-10)


def test_hard_assignment_limit_is_ridge_per_voronoi_cell():
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(600, 2))
    y = np.where(X[:, 0] > 0, 3 * X[:, 0] - X[:, 1], -X[:, 0] + 2 * X[:, 1] + 1)
    anchors = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    cell = np.argmax(-((X[:, None, :] - anchors[None]) ** 2).sum(-1), axis=1)
    X_test = rng.uniform(-2, 2, size=(200, 2))
    cell_test = np.argmax(-((X_test[:, None, :] - anchors[None]) ** 2).sum(-1), axis=1)
    expected = np.empty(200)
    for k in range(3):
        X1 = np.hstack([X[cell == k], np.ones(((cell == k).sum(), 1))])
        ridge = Ridge(alpha=0.5, fit_intercept=False).fit(X1, y[cell == k] - y.mean())
        Xt1 = np.hstack([X_test[cell_test == k], np.ones(((cell_test == k).sum(), 1))])
        expected[cell_test == k] = ridge.predict(Xt1) + y.mean()
    errors = []
    for softness in [1.0, 10.0, 100.0, 1e4]:
        model = ARNRegressor(3, anchors=anchors, softness=softness, alpha=0.5).fit(X, y)
        errors.append(np.max(np.abs(model.predict(X_test) - expected)))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3 < errors[0]


def test_huge_softness_and_inputs_give_no_overflow():
    X, Y = piecewise_data()
    model = ARNRegressor(4, softness=1e12, random_state=0).fit(X * 1e6, Y)
    assert np.all(np.isfinite(model.predict(X * 1e6)))
    assert np.all(np.isfinite(model.soft_assignments(X * 1e6)))


def test_float32_input_gives_float32_predictions_close_to_float64():
    X, Y = piecewise_data()
    m64 = ARNRegressor(4, random_state=0).fit(X, Y)
    m32 = ARNRegressor(4, random_state=0).fit(X.astype(np.float32), Y)
    pred32 = m32.predict(X.astype(np.float32))
    assert pred32.dtype == np.float32
    np.testing.assert_allclose(pred32, m64.predict(X), rtol=1e-3, atol=1e-3)


def test_singular_system_warns_and_stays_finite():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(100, 1))
    X = np.hstack([x, x, 2 * x])  # collinear columns
    y = x[:, 0] ** 2
    model = ARNRegressor(3, alpha=0.0, random_state=0)
    with pytest.warns(LinAlgWarning, match="singular"):
        model.fit(X, y)
    assert np.all(np.isfinite(model.predict(X)))


def test_auto_softness_is_scale_free():
    X, Y = piecewise_data()
    a = ARNRegressor(5, random_state=0).fit(X, Y)
    b = ARNRegressor(5, random_state=0).fit(10 * X, Y)
    # s = -||x - c||^2 scales by 100, so K must scale by 1/100.
    assert b.softness_ == pytest.approx(a.softness_ / 100, rel=1e-6)
    np.testing.assert_allclose(
        a.soft_assignments(X), b.soft_assignments(10 * X), rtol=1e-6, atol=1e-9
    )


def test_random_anchors_are_rows_of_x():
    X, Y = piecewise_data()
    model = ARNRegressor(5, anchors="random", random_state=0).fit(X, Y)
    for c in model.anchors_:
        assert np.any(np.all(X == c, axis=1))


def test_reproducible_with_random_state():
    X, Y = piecewise_data()
    a = ARNRegressor(6, random_state=42).fit(X, Y).predict(X)
    b = ARNRegressor(6, random_state=42).fit(X, Y).predict(X)
    # Same fitted model; predictions only to rounding, since multithreaded BLAS
    # may sum in another order for arrays at other addresses.
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_pickle_round_trip_is_identical():
    X, Y = piecewise_data()
    model = ARNRegressor(6, random_state=0).fit(X, Y)
    loaded = pickle.loads(pickle.dumps(model))
    for attr in ("anchors_", "coef_", "intercept_", "softness_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(model, attr))
    # Predictions to rounding: threaded BLAS may sum in another order for
    # arrays at other addresses (seen on a 16-core machine).
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-12, atol=1e-14)


def test_learns_a_piecewise_linear_function_better_than_ridge():
    X, Y = piecewise_data(n=2000)
    arn = ARNRegressor(16, random_state=0).fit(X[:1500], Y[:1500])
    ridge = Ridge().fit(X[:1500], Y[:1500])
    assert arn.score(X[1500:], Y[1500:]) > ridge.score(X[1500:], Y[1500:]) + 0.2
