"""The backend-agnostic code path: array-api-strict on CPU, CuPy where a GPU is."""

import warnings

import numpy as np
import pytest
import sklearn
from array_api_compat import array_namespace
from scipy.linalg import LinAlgWarning
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, DeepARNRegressor
from arn_sklearn._kernels._assignment import soft_assignments, top_two_gap
from arn_sklearn._kernels._lifting import iter_chunks, predict_lifted
from arn_sklearn._kernels._solve import _solve_namespace
from arn_sklearn._kernels._topk import predict_top_k, top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics
from arn_sklearn._model._statistics import SufficientStatistics, accumulate

xps = pytest.importorskip("array_api_strict")
npx = array_namespace(np.empty(0))


def data(n=240, d=3, m=5, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]), X[:, 1] * (X[:, 2] > 0)], axis=1)
    return X, Y, rng.uniform(0.5, 2, size=n), rng.normal(size=(m, d))


def run_kernels(X, Y, w, anchors, xp, top_k=None):
    """fit + predict through the kernels only, in namespace xp."""
    m, d = anchors.shape
    zeros = SufficientStatistics.zeros(m * (d + 1), Y.shape[1], xp)
    chunks = iter_chunks(X, Y, w, 50)
    if top_k is None:
        stats = accumulate(
            chunks, lambda c: soft_assignments(c, anchors, "euclidean", 0.6, xp), xp, zeros
        )
    else:
        stats = BlockSparseStatistics.zeros(m, d, Y.shape[1], xp).accumulate(
            chunks, lambda c: top_k_assignments(c, anchors, "euclidean", 0.6, top_k, xp), xp
        )
    W, y_mean = stats.solve(0.1, xp)
    if top_k is not None:
        stats = stats.to_dense()
    if top_k is None:
        pred = predict_lifted(X, soft_assignments(X, anchors, "euclidean", 0.6, xp), W, xp)
    else:
        idx, vals = top_k_assignments(X, anchors, "euclidean", 0.6, top_k, xp)
        pred = predict_top_k(X, idx, vals, W, xp)
    return stats, pred + y_mean


@pytest.mark.parametrize("top_k", [None, 2])
def test_kernels_in_array_api_strict_match_numpy(top_k):
    X, Y, w, anchors = data()
    ref_stats, ref_pred = run_kernels(X, Y, w, anchors, npx, top_k)
    stats, pred = run_kernels(*(xps.asarray(a) for a in (X, Y, w, anchors)), xps, top_k)
    assert array_namespace(pred) is xps
    np.testing.assert_allclose(np.asarray(stats.gram), ref_stats.gram, atol=1e-10)
    np.testing.assert_allclose(np.asarray(pred), ref_pred, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
def test_similarity_kernels_in_array_api_strict(kind):
    X, _, _, anchors = data()
    ref = soft_assignments(X, anchors, kind, 0.6, npx)
    got = soft_assignments(xps.asarray(X), xps.asarray(anchors), kind, 0.6, xps)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12)
    gap = top_two_gap(xps.asarray(X), xps.asarray(anchors), kind, xps)
    np.testing.assert_allclose(np.asarray(gap), top_two_gap(X, anchors, kind, npx))


def test_namespace_cholesky_solve_matches_scipy():
    rng = np.random.RandomState(0)
    B = rng.normal(size=(30, 12))
    gram, rhs = B.T @ B, rng.normal(size=(12, 2))
    got = _solve_namespace(xps.asarray(gram), xps.asarray(rhs), 0.5, xps)
    np.testing.assert_allclose(np.asarray(got), np.linalg.solve(gram + 0.5 * np.eye(12), rhs))


def test_namespace_solve_falls_back_on_singular_system():
    gram = np.ones((4, 4))  # rank one, and alpha = 0
    rhs = np.arange(4.0)[:, None]
    with pytest.warns(LinAlgWarning, match="singular"):
        got = _solve_namespace(xps.asarray(gram), xps.asarray(rhs), 0.0, xps)
    np.testing.assert_allclose(np.asarray(got), np.linalg.pinv(gram) @ rhs, atol=1e-12)


@pytest.mark.parametrize("top_k", [None, 2])
def test_estimator_with_array_api_dispatch_returns_input_namespace(top_k):
    X, Y, w, anchors = data()
    params = dict(n_anchors=5, softness=0.6, anchors=anchors, top_k=top_k, batch_size=64)
    ref = ARNRegressor(**params).fit(X, Y, sample_weight=w)
    with sklearn.config_context(array_api_dispatch=True):
        model = ARNRegressor(**params).fit(
            xps.asarray(X), xps.asarray(Y), sample_weight=xps.asarray(w)
        )
        pred = model.predict(xps.asarray(X))
        A = model.soft_assignments(xps.asarray(X))
    assert array_namespace(pred) is xps and array_namespace(model.coef_) is xps
    np.testing.assert_allclose(np.asarray(model.coef_), ref.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(pred), ref.predict(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(A), ref.soft_assignments(X), atol=1e-12)


@pytest.mark.parametrize("estimator", ["arn", "deep"])
def test_gradient_training_with_array_api_dispatch_matches_numpy(estimator):
    # The same minibatches, the same updates: only the namespace differs.
    X, Y, w, anchors = data(n=120)
    if estimator == "arn":
        model_class = ARNRegressor
        params = dict(n_anchors=5, softness=0.6, anchors=anchors, solver="adam")
    else:
        model_class = DeepARNRegressor
        params = dict(n_layers=2, n_anchors=4, softness=0.6, solver="sgd")
    params.update(max_iter=3, batch_size=40, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = model_class(**params).fit(X, Y, sample_weight=w)
        with sklearn.config_context(array_api_dispatch=True):
            model = model_class(**params).fit(
                xps.asarray(X), xps.asarray(Y), sample_weight=xps.asarray(w)
            )
            pred = model.predict(xps.asarray(X))
    assert array_namespace(pred) is xps
    np.testing.assert_allclose(np.asarray(pred), ref.predict(X), rtol=1e-9, atol=1e-11)
    assert model.loss_curve_ == pytest.approx(ref.loss_curve_, rel=1e-10)


def test_cuda_device_without_cupy_names_the_extra():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed")
    X, Y, _, _ = data()
    model = ARNRegressor(3, device="cuda", random_state=0)
    with pytest.raises(ImportError, match=r"arn-sklearn\[gpu\]"):
        model.fit(X, Y)
    assert not hasattr(model, "coef_")


def _cupy_with_gpu():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.parametrize("top_k", [None, 2])
def test_cuda_device_with_numpy_input_returns_numpy(top_k):
    _cupy_with_gpu()
    X, Y, w, anchors = data()
    params = dict(n_anchors=5, softness=0.6, anchors=anchors, top_k=top_k)
    ref = ARNRegressor(**params).fit(X, Y, sample_weight=w)
    model = ARNRegressor(device="cuda", **params).fit(X, Y, sample_weight=w)
    pred = model.predict(X)
    assert isinstance(pred, np.ndarray) and isinstance(model.coef_, np.ndarray)
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-6, atol=1e-8)


def test_cupy_input_gives_cupy_output():
    cupy = _cupy_with_gpu()
    X, Y, _, anchors = data()
    ref = ARNRegressor(5, softness=0.6, anchors=anchors).fit(X, Y)
    with sklearn.config_context(array_api_dispatch=True):
        model = ARNRegressor(5, softness=0.6, anchors=anchors).fit(cupy.asarray(X), cupy.asarray(Y))
        pred = model.predict(cupy.asarray(X))
    assert isinstance(pred, cupy.ndarray)
    np.testing.assert_allclose(pred.get(), ref.predict(X), rtol=1e-6, atol=1e-8)


def test_cuda_defaults_kmeans_auto_softness_match_cpu():
    # The default path (KMeans anchors on the host, auto softness) must give
    # the same model whichever device runs the accumulation and the solve.
    _cupy_with_gpu()
    X, Y, w, _ = data(n=600)
    params = dict(n_anchors=6, random_state=0)
    ref = ARNRegressor(**params).fit(X, Y, sample_weight=w)
    model = ARNRegressor(device="cuda", **params).fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(model.anchors_, ref.anchors_, rtol=1e-12, atol=1e-12)
    assert model.softness_ == pytest.approx(ref.softness_, rel=1e-12)
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-6, atol=1e-8)


def test_cuda_partial_fit_equals_cpu_fit():
    _cupy_with_gpu()
    X, Y, _, anchors = data(n=400)
    params = dict(n_anchors=5, softness=0.6, anchors=anchors)
    ref = ARNRegressor(**params).fit(X, Y)
    model = ARNRegressor(device="cuda", **params)
    for part in np.array_split(np.arange(X.shape[0]), 3):
        model.partial_fit(X[part], Y[part])
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-6, atol=1e-8)


def test_cupy_large_system_float32_input():
    # A few thousand unknowns: the GPU Cholesky path, float32 input predicted
    # in float32, solved in float64 (compared with the float64 host fit).
    cupy = _cupy_with_gpu()
    rng = np.random.RandomState(3)
    X = rng.normal(size=(6000, 31))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    params = dict(n_anchors=64, softness=0.05, anchors="random", random_state=0, alpha=1e-2)
    ref = ARNRegressor(**params).fit(X, y)
    with sklearn.config_context(array_api_dispatch=True):
        Xg = cupy.asarray(X, dtype=cupy.float32)
        model = ARNRegressor(**params).fit(Xg, cupy.asarray(y, dtype=cupy.float32))
        pred = model.predict(Xg)
    assert isinstance(pred, cupy.ndarray) and pred.dtype == cupy.float32
    # float32 input rounds X itself: compare at float32 resolution.
    np.testing.assert_allclose(pred.get(), ref.predict(X), rtol=0, atol=5e-3 * np.std(y))


def test_cupy_nan_input_is_rejected_without_corrupting_the_model():
    cupy = _cupy_with_gpu()
    X, Y, _, anchors = data()
    with sklearn.config_context(array_api_dispatch=True):
        model = ARNRegressor(5, softness=0.6, anchors=anchors).fit(cupy.asarray(X), cupy.asarray(Y))
        before = model.coef_.get()
        Xbad = X.copy()
        Xbad[3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            model.partial_fit(cupy.asarray(Xbad), cupy.asarray(Y))
    np.testing.assert_array_equal(model.coef_.get(), before)


def test_dask_fit_solves_on_the_gpu_with_device_cuda():
    # Blocks are accumulated on the CPU workers, the reduced system is moved
    # to the GPU and solved there; attributes come back as numpy.
    _cupy_with_gpu()
    da = pytest.importorskip("dask.array")
    X, Y, _, anchors = data(n=300)
    params = dict(n_anchors=5, softness=0.6, anchors=anchors)
    ref = ARNRegressor(**params).fit(X, Y)
    model = ARNRegressor(device="cuda", **params).fit(da.from_array(X, chunks=(70, 3)), Y)
    assert isinstance(model.coef_, np.ndarray)
    assert type(model._stats.gram).__module__.startswith("cupy")
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("estimator", ["arn", "deep"])
def test_cuda_gradient_training_matches_cpu(estimator):
    # Minibatch order comes from the host RNG, so both devices take the same
    # steps; they differ by float64 rounding only.
    _cupy_with_gpu()
    X, Y, w, _ = data(n=800)
    if estimator == "arn":
        model_class, params = ARNRegressor, dict(n_anchors=6, solver="adam")
    else:
        model_class, params = DeepARNRegressor, dict(n_layers=3, n_anchors=[4, 4, 6])
    params.update(max_iter=5, batch_size=100, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = model_class(**params).fit(X, Y, sample_weight=w)
        model = model_class(device="cuda", **params).fit(X, Y, sample_weight=w)
    pred = model.predict(X)
    assert isinstance(pred, np.ndarray)
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-7, atol=1e-9)
    assert model.loss_curve_ == pytest.approx(ref.loss_curve_, rel=1e-8)
