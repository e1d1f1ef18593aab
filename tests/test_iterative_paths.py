"""Every way of fitting a top-k model works when the cost model picks conjugate gradients.

The solver choice is forced to "iterative" (as the cost model picks it for
large top-k systems) and each fit is compared with the same fit solved by the
dense Cholesky: predictions within the documented 1e-6 relative.
"""

import numpy as np
import pytest

import arn_sklearn._model._blocksparse as bs
from arn_sklearn import ARNRegressor, ARNRegressorCV

_choose = bs.choose_linear_solver


def _force(monkeypatch, solver):
    def forced(*args, **kwargs):
        kwargs["requested"] = solver
        return _choose(*args, **kwargs)

    monkeypatch.setattr(bs, "choose_linear_solver", forced)


def _data(n=1500, d=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.sin(2 * X[:, 1])], 1)
    return X, Y + 0.05 * rng.normal(size=Y.shape)


def _close(a, b):
    scale = np.linalg.norm(b - b.mean(axis=0))
    assert np.linalg.norm(a - b) <= 1e-6 * scale


def _fits(monkeypatch, fit):
    """``fit()`` solved densely and iteratively: both fitted models."""
    _force(monkeypatch, "dense")
    dense = fit()
    _force(monkeypatch, "iterative")
    iterative = fit()
    return dense, iterative


PARAMS = dict(n_anchors=12, top_k=3, alpha=0.1, random_state=0, batch_size=200)


def test_fit_and_partial_fit(monkeypatch):
    X, Y = _data()

    def fit():
        model = ARNRegressor(**PARAMS).partial_fit(X[:700], Y[:700])
        return model.partial_fit(X[700:], Y[700:])

    dense, iterative = _fits(monkeypatch, fit)
    _close(iterative.predict(X), dense.predict(X))
    # An explanation uses the same fitted regressors.
    _close(iterative.local_linear(X[:50])[0], dense.local_linear(X[:50])[0])


def test_dask_fit(monkeypatch):
    da = pytest.importorskip("dask.array")
    X, Y = _data()

    def fit():
        return ARNRegressor(**PARAMS).fit(da.from_array(X, chunks=400), Y)

    dense, iterative = _fits(monkeypatch, fit)
    _close(iterative.predict(X), dense.predict(X))


def test_cv_alpha_path(monkeypatch):
    X, Y = _data()
    alphas = [1e-2, 1.0, 10.0]

    def fit():
        params = {key: value for key, value in PARAMS.items() if key != "alpha"}
        return ARNRegressorCV(alphas=alphas, cv=3, **params).fit(X, Y)

    dense, iterative = _fits(monkeypatch, fit)
    assert iterative.alpha_ == dense.alpha_
    np.testing.assert_allclose(
        iterative.cv_results_["mean_test_score"], dense.cv_results_["mean_test_score"], rtol=1e-6
    )
    _close(iterative.predict(X), dense.predict(X))


def test_return_std(monkeypatch):
    X, Y = _data()

    def fit():
        return ARNRegressor(**PARAMS).fit(X, Y)

    dense, iterative = _fits(monkeypatch, fit)
    _force(monkeypatch, "iterative")
    _, std_iterative = iterative.predict(X[:40], return_std=True)
    _force(monkeypatch, "dense")
    _, std_dense = dense.predict(X[:40], return_std=True)
    np.testing.assert_allclose(std_iterative, std_dense, rtol=1e-5)


@pytest.mark.parametrize("solver", ["dense", "sparse", "iterative"])
def test_linear_solver_parameter(monkeypatch, solver):
    """The public parameter reaches the solver choice, and every forced solver agrees."""
    requested = []

    def spy(*args, **kwargs):
        requested.append(kwargs["requested"])
        return _choose(*args, **kwargs)

    monkeypatch.setattr(bs, "choose_linear_solver", spy)
    X, Y = _data()
    reference = ARNRegressor(**PARAMS).fit(X, Y)
    model = ARNRegressor(**PARAMS, linear_solver=solver).fit(X, Y)
    assert requested == ["auto", solver]
    _close(model.predict(X), reference.predict(X))
    cv = ARNRegressorCV(12, top_k=3, alphas=[0.1, 1.0], cv=3, linear_solver=solver, random_state=0)
    cv_auto = ARNRegressorCV(12, top_k=3, alphas=[0.1, 1.0], cv=3, random_state=0)
    _close(cv.fit(X, Y).predict(X), cv_auto.fit(X, Y).predict(X))
    assert solver in requested[2:]


def test_iterative_needs_a_penalty():
    X, Y = _data(300)
    model = ARNRegressor(12, top_k=3, alpha=0.0, linear_solver="iterative", random_state=0)
    with pytest.raises(ValueError, match="linear_solver='iterative' needs alpha > 0"):
        model.fit(X, Y)
    assert not hasattr(model, "coef_")
