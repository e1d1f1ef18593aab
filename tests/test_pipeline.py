"""The one statistics pipeline: every caller fits and predicts through the same functions."""

import threading

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold
from threadpoolctl import threadpool_info

from arn_sklearn import ARNRegressor, ARNRegressorCV
from arn_sklearn._learning import _starts
from arn_sklearn._learning._starts import StartSpec
from arn_sklearn._model import _layer


def _data(n=400, d=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    y = np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0) + 0.05 * rng.normal(size=n)
    return X, y, rng


@pytest.mark.parametrize("top_k", [None, 2])
def test_predict_uses_fitted_attributes_not_parameters(top_k):
    X, y, rng = _data()
    model = ARNRegressor(6, top_k=top_k, softness=0.7, random_state=0).fit(X, y)
    expected = model.predict(X)
    assignments = model.soft_assignments(X)
    model.set_params(similarity="dot", top_k=1, softness=5.0, n_anchors=2, batch_size=7)
    # batch_size only changes the chunking (and so the rounding).
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.soft_assignments(X), assignments, rtol=1e-12, atol=1e-15)
    assert model.similarity_ == "euclidean" and model.top_k_ == top_k


def test_top_k_at_least_n_anchors_is_the_dense_model_exactly():
    X, y, _ = _data()
    dense = ARNRegressor(5, random_state=0).fit(X, y)
    full = ARNRegressor(5, top_k=5, random_state=0).fit(X, y)
    assert full.top_k_ is None
    np.testing.assert_array_equal(full.coef_, dense.coef_)
    np.testing.assert_array_equal(full.predict(X), dense.predict(X))


def test_fitted_model_does_not_alias_user_anchors():
    X, y, rng = _data()
    anchors = rng.normal(size=(4, 3))
    model = ARNRegressor(4, anchors=anchors, softness=1.0).fit(X, y)
    expected = model.predict(X)
    anchors[:] = 100.0
    np.testing.assert_array_equal(model.predict(X), expected)
    assert not np.shares_memory(model.anchors_, anchors)


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_concurrent_fits_leave_blas_threads_as_they_were():
    X, y, rng = _data(n=3000, d=5)
    anchors = rng.normal(size=(8, 5))
    before = _blas_threads()
    results, errors = [], []

    def job():
        try:
            for _ in range(4):
                model = ARNRegressor(8, anchors=anchors, random_state=0).fit(X, y)
                results.append(model.predict(X[:50]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _blas_threads() == before
    # Every thread fitted the same model.
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], rtol=1e-10, atol=1e-12)


def test_memory_guard_runs_before_anchors_and_softness(monkeypatch):
    X, y, rng = _data(n=5)
    anchors = rng.normal(size=(2000, 3))

    def forbidden(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("auto softness ran before the memory guard")

    monkeypatch.setattr(_starts, "auto_softness", forbidden)
    monkeypatch.setattr("arn_sklearn._kernels._solve.available_memory_bytes", lambda: 2**20)
    with pytest.raises(MemoryError, match="n_anchors=2000.*GiB"):
        ARNRegressor(2000, anchors=anchors).fit(X, y)


def test_auto_softness_work_is_bounded_for_many_anchors(monkeypatch):
    seen = {}
    original = _starts.auto_softness

    def spy(X, *args, **kwargs):
        seen["rows"] = X.shape[0]
        return original(X, *args, **kwargs)

    monkeypatch.setattr(_starts, "auto_softness", spy)
    rng = np.random.RandomState(0)
    X = rng.normal(size=(5000, 2))
    anchors = rng.normal(size=(200_000, 2))
    _starts.initial_anchors(X, np.ones(5000), 200_000, StartSpec(anchors, top_k=2), rng)
    # A rows x anchors block of at most _AUTO_SOFTNESS_BYTES.
    assert seen["rows"] * 200_000 * 8 <= _starts._AUTO_SOFTNESS_BYTES


def test_cv_memory_guard_names_the_sizes(monkeypatch):
    X, y, _ = _data()
    monkeypatch.setattr("arn_sklearn._kernels._solve.available_memory_bytes", lambda: 2**20)
    with pytest.raises(MemoryError, match="needs about .* GiB"):
        ARNRegressorCV(64, cv=3).fit(X, y)


@pytest.mark.parametrize("top_k", [2, 6])
def test_cv_with_top_k_matches_grid_search(top_k):
    X, y, rng = _data()
    anchors = rng.normal(size=(6, 3))
    alphas = [1e-3, 0.1, 10.0]
    cv = KFold(4, shuffle=True, random_state=0)
    model = ARNRegressorCV(6, anchors=anchors, softness=0.8, alphas=alphas, cv=cv, top_k=top_k).fit(
        X, y
    )
    search = GridSearchCV(
        ARNRegressor(6, anchors=anchors, softness=0.8, top_k=top_k),
        {"alpha": alphas},
        cv=cv,
    ).fit(X, y)
    assert model.alpha_ == search.best_params_["alpha"]
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"], atol=1e-8
    )
    ref = ARNRegressor(6, anchors=anchors, softness=0.8, alpha=model.alpha_, top_k=top_k)
    np.testing.assert_allclose(model.predict(X), ref.fit(X, y).predict(X), rtol=1e-9, atol=1e-10)
    assert model.estimator_.top_k_ == (None if top_k >= 6 else top_k)


def test_chunk_rules_are_shared():
    # Dense chunks follow the lifted width; top-k chunks do not grow with m.
    assert _layer.chunk_rows(64, None, 30, 81) != _layer.chunk_rows(256, None, 30, 81)
    assert _layer.chunk_rows(64, 4, 30, 81) == _layer.chunk_rows(4096, 4, 30, 81)
    assert _layer.chunk_rows(1024, 4, 30, 81, batch_size=77) == 77
