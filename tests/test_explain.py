"""Exact local explanations: local linear models, Jacobians and the display."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, DeepARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES, similarity

STEP = 1e-6


def _data(n=300, d=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-2, 2, size=(n, d))
    Y = np.stack([np.sin(X[:, 0]) * X[:, 1], X[:, 2] ** 2 - X[:, 0]], axis=1)
    return X, Y + 0.05 * rng.normal(size=Y.shape)


def central_differences(predict, X, step=STEP):
    """``d predict / dx`` by central differences: shape (n, [t,] d)."""
    columns = []
    for j in range(X.shape[1]):
        e = np.zeros(X.shape[1])
        e[j] = step
        columns.append((predict(X + e) - predict(X - e)) / (2 * step))
    return np.stack(columns, axis=-1)


def smooth_rows(model, X, margin=1e-3):
    """Rows away from the model's kinks: a change of the top-k set, or the sign of
    ``x.c`` for ``absdot`` (where the model is not differentiable)."""
    S = similarity(
        X, model.anchors_, "dot" if model.similarity == "absdot" else model.similarity, np
    )
    keep = np.ones(X.shape[0], dtype=bool)
    if model.similarity == "absdot":
        keep &= np.min(np.abs(S), axis=1) > margin
        S = np.abs(S)
    if model.top_k is not None:
        S_sorted = -np.sort(-S, axis=1)
        keep &= S_sorted[:, model.top_k - 1] - S_sorted[:, model.top_k] > margin
    return X[keep]


def naive_local_linear(model, X):
    """``sum_k alpha_k(x) W_k`` and ``sum_k alpha_k(x) b_k`` by an explicit loop over anchors."""
    A = model.soft_assignments(X)
    coef = model.coef_ if model.coef_.ndim == 3 else model.coef_[:, None, :]
    intercept = model.intercept_ if model.intercept_.ndim == 2 else model.intercept_[:, None]
    local_coef = sum(A[:, k, None, None] * coef[k][None] for k in range(A.shape[1]))
    local_intercept = sum(A[:, k, None] * intercept[k][None] for k in range(A.shape[1]))
    if model.coef_.ndim == 2:
        return local_coef[:, 0, :], local_intercept[:, 0]
    return local_coef, local_intercept


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("multi_output", [False, True])
def test_local_linear_reproduces_predict(kind, top_k, multi_output):
    X, Y = _data()
    y = Y if multi_output else Y[:, 0]
    model = ARNRegressor(8, similarity=kind, top_k=top_k, alpha=0.1, random_state=0).fit(X, y)
    coef, intercept = model.local_linear(X)
    n, d = X.shape
    assert coef.shape == ((n, 2, d) if multi_output else (n, d))
    assert intercept.shape == ((n, 2) if multi_output else (n,))
    reconstructed = np.einsum("n...d,nd->n...", coef, X) + intercept
    np.testing.assert_allclose(reconstructed, model.predict(X), rtol=1e-10, atol=1e-10)
    expected_coef, expected_intercept = naive_local_linear(model, X)
    np.testing.assert_allclose(coef, expected_coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(intercept, expected_intercept, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("multi_output", [False, True])
def test_jacobian_matches_finite_differences(kind, top_k, multi_output):
    X, Y = _data()
    y = Y if multi_output else Y[:, 0]
    # A hard softness makes the assignment term large, so that it is really tested.
    model = ARNRegressor(8, similarity=kind, top_k=top_k, alpha=0.1, random_state=0).fit(X, y)
    rows = smooth_rows(model, X[:60])
    assert rows.shape[0] >= 40
    J = model.jacobian(rows)
    expected = central_differences(model.predict, rows)
    assert J.shape == expected.shape
    np.testing.assert_allclose(J, expected, rtol=1e-5, atol=1e-6)
    # The assignment term matters: the local coefficients alone are not the derivative.
    coef, _ = model.local_linear(rows)
    assert np.max(np.abs(coef - J)) > 1e-2


def test_jacobian_of_learned_anchors_and_float32():
    X, Y = _data(n=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ARNRegressor(
            6, solver="adam", max_iter=5, learning_rate_init=0.01, random_state=0
        ).fit(X, Y[:, 0])
    J = model.jacobian(X[:30])
    np.testing.assert_allclose(J, central_differences(model.predict, X[:30]), rtol=1e-5, atol=1e-6)
    J32 = model.jacobian(X[:30].astype(np.float32))
    assert J32.dtype == np.float32
    np.testing.assert_allclose(J32, J, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("multi_output", [False, True])
def test_deep_jacobian_and_local_linear(kind, multi_output):
    X, Y = _data(n=200)
    y = Y if multi_output else Y[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepARNRegressor(
            3, 5, similarity=kind, max_iter=3, learning_rate_init=0.02, random_state=0
        ).fit(X, y)
    rows = X[:40]
    if kind == "absdot":  # away from the kinks of |h.c| in every layer
        rows = rows[np.all(np.abs(rows @ model.anchors_[0].T) > 1e-3, axis=1)]
    J = model.jacobian(rows)
    np.testing.assert_allclose(J, central_differences(model.predict, rows), rtol=1e-5, atol=1e-6)
    coef, intercept = model.local_linear(rows)
    assert coef.shape == J.shape
    reconstructed = np.einsum("n...d,nd->n...", coef, rows) + intercept
    np.testing.assert_allclose(reconstructed, model.predict(rows), rtol=1e-10, atol=1e-10)


def test_local_linear_of_one_anchor_is_ridge():
    # One anchor: the model is a ridge regression, its local model the ridge coefficients.
    from sklearn.linear_model import Ridge

    X, Y = _data(n=100)
    model = ARNRegressor(1, alpha=1.0).fit(X, Y[:, 0])
    coef, _ = model.local_linear(X[:5])
    np.testing.assert_allclose(model.jacobian(X[:5]), coef, rtol=1e-12)
    # ARN penalises the bias too; with the target centred it stays near zero.
    ridge = Ridge(alpha=1.0).fit(X, Y[:, 0])
    np.testing.assert_allclose(coef, np.broadcast_to(ridge.coef_, coef.shape), rtol=1e-2)


def test_display_shows_sample_contributions():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from arn_sklearn.inspection import LocalExplanationDisplay

    X, Y = _data(n=150)
    names = ["a", "b", "c"]
    model = make_pipeline(StandardScaler(), ARNRegressor(4, random_state=0)).fit(X, Y)
    fig, ax = plt.subplots()
    display = LocalExplanationDisplay.from_estimator(
        model, X, sample_index=7, feature_names=names, target_index=1, ax=ax
    )
    assert display.ax_ is ax and display.figure_ is fig
    Xs = model[0].transform(X)
    coef, intercept = model[-1].local_linear(Xs)
    np.testing.assert_allclose(display.sample_contributions_, coef[7, 1] * Xs[7])
    np.testing.assert_allclose(display.prediction_, model.predict(X[7:8])[0, 1], rtol=1e-10)
    # One box per feature, labelled with the features (largest contribution on top).
    labels = [t.get_text() for t in ax.get_yticklabels()]
    order = np.argsort(np.abs(display.sample_contributions_))
    assert labels == [names[j] for j in order]
    # The sample's markers sit at its contributions.
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], display.sample_contributions_[order])
    assert display.plot() is display and display.ax_ is not ax  # new figure
    plt.close("all")


def test_display_errors():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.linear_model import Ridge

    from arn_sklearn.inspection import LocalExplanationDisplay

    X, Y = _data(n=60)
    with pytest.raises(TypeError, match="local_linear"):
        LocalExplanationDisplay.from_estimator(Ridge().fit(X, Y[:, 0]), X)
    model = ARNRegressor(3, random_state=0).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="sample_index"):
        LocalExplanationDisplay.from_estimator(model, X, sample_index=60)
    with pytest.raises(ValueError, match="feature_names"):
        LocalExplanationDisplay.from_estimator(model, X, feature_names=["a"])
    with pytest.raises(ValueError, match="target_index"):
        LocalExplanationDisplay.from_estimator(model, X, target_index=1)


def test_explanations_and_std_in_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    import sklearn

    X, Y = _data(n=120)
    params = dict(n_anchors=4, anchors=X[:4], softness=1.0, top_k=3)
    reference = ARNRegressor(**params).fit(X, Y)
    with sklearn.config_context(array_api_dispatch=True):
        model = ARNRegressor(**params).fit(xps.asarray(X), xps.asarray(Y))
        X5 = xps.asarray(X[:5])
        coef, intercept = model.local_linear(X5)
        J = model.jacobian(X5)
        _, y_std = model.predict(X5, return_std=True)
    assert isinstance(J, type(X5))
    np.testing.assert_allclose(np.asarray(coef), reference.local_linear(X[:5])[0], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(J), reference.jacobian(X[:5]), rtol=1e-10)
    expected_std = reference.predict(X[:5], return_std=True)[1]
    np.testing.assert_allclose(np.asarray(y_std), expected_std, rtol=1e-10)
