"""ONNX export: onnxruntime's predictions against predict."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES

skl2onnx = pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("arn_sklearn.onnx")


def _data(n=400, d=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-2, 2, size=(n, d)).astype(np.float32)
    Y = np.stack([np.sin(X[:, 0]) * X[:, 1], X[:, 2] ** 2 - X[:, 3]], axis=1)
    return X, Y


def onnx_predict(model, X):
    onx = skl2onnx.to_onnx(model, X[:1])
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})[0]


def assert_agrees(y_onnx, y_pred, rtol=1e-5):
    """Equal to ``rtol`` relative to the predictions' scale: float32 has no
    elementwise relative accuracy for predictions that cross zero."""
    y_pred = np.asarray(y_pred).reshape(y_onnx.shape)
    assert y_onnx.dtype == y_pred.dtype
    np.testing.assert_allclose(y_onnx, y_pred, rtol=rtol, atol=rtol * np.max(np.abs(y_pred)))


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("multi_output", [False, True])
def test_pipeline_export_matches_predict(kind, top_k, multi_output):
    X, Y = _data()
    y = Y if multi_output else Y[:, 0]
    model = make_pipeline(
        StandardScaler(), ARNRegressor(16, similarity=kind, top_k=top_k, alpha=0.01, random_state=0)
    ).fit(X, y)
    X_test = _data(n=300, seed=1)[0]
    y_onnx = onnx_predict(model, X_test)
    assert y_onnx.shape == (300, 2 if multi_output else 1)
    assert_agrees(y_onnx, model.predict(X_test))


def test_export_alone_float64_and_learned_anchors():
    X, Y = _data()
    model = ARNRegressor(8, similarity="cosine", random_state=0).fit(X, Y)
    assert_agrees(onnx_predict(model, X), model.predict(X))
    X64 = X.astype(np.float64)
    assert_agrees(onnx_predict(model, X64), model.predict(X64), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        learned = ARNRegressor(8, solver="adam", max_iter=3, random_state=0).fit(X, Y[:, 0])
    assert_agrees(onnx_predict(learned, X), learned.predict(X))


def test_export_deep_and_cv():
    X, Y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep = DeepARNRegressor(3, 6, max_iter=3, learning_rate_init=0.01, random_state=0)
        deep.fit(X, Y)
    assert_agrees(onnx_predict(deep, X), deep.predict(X))
    cv = ARNRegressorCV(8, alphas=[0.1, 1.0], cv=3, random_state=0).fit(X, Y[:, 0])
    assert_agrees(onnx_predict(cv, X), cv.predict(X))


# ------------------------------------------------- issue 20: robustness like predict's
def test_export_of_an_unfitted_model_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    X, _ = _data()
    for model in (ARNRegressor(4), ARNRegressorCV(4), DeepARNRegressor(2, 4)):
        with pytest.raises(NotFittedError, match="not fitted"):
            skl2onnx.to_onnx(model, X[:1])


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("scale, shift", [(1e8, 0.0), (1.0, 1e8), (1e30, 0.0), (1e-30, 0.0)])
def test_export_matches_predict_at_extreme_scales(kind, scale, shift):
    # Before: float32 |x| ~ 1e8 was off by >100% (x @ W + b cancels in float32)
    # and |x| ~ 1e30 gave NaN (squared distances overflow float32).
    X, Y = _data()
    X = (X.astype(np.float64) * scale + shift).astype(np.float32)
    with warnings.catch_warnings():  # the shifted data are ill-conditioned for the solve
        warnings.simplefilter("ignore")
        model = ARNRegressor(8, similarity=kind, alpha=1e-2 * scale**2, random_state=0)
        model.fit(X, Y[:, 0])
    X_test = (_data(n=200, seed=1)[0].astype(np.float64) * scale + shift).astype(np.float32)
    y_onnx = onnx_predict(model, X_test)
    assert np.all(np.isfinite(y_onnx))
    assert_agrees(y_onnx, model.predict(X_test))


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("magnitude", [1e8, 3e19])
def test_export_matches_predict_far_from_the_anchors(kind, magnitude):
    # Extrapolation far from every anchor, in float32: the assignments are one-hot.
    X, Y = _data()
    model = ARNRegressor(8, similarity=kind, random_state=0).fit(X, Y[:, 0])
    rows = np.array([[1, 1, 1, 1], [-1, 0.5, 0, 2], [0.5, -1, 1, -3]], dtype=np.float64)
    X_far = (rows * magnitude).astype(np.float32)
    y_pred = model.predict(X_far)
    assert np.all(np.isfinite(y_pred))
    assert_agrees(onnx_predict(model, X_far), y_pred)
