import numpy as np
import pytest

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._solve import check_system_fits_memory


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 3))
    return X, X[:, 0] ** 2


def test_nan_and_inf_rejected(data):
    X, y = data
    X = X.copy()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ARNRegressor(4).fit(X, y)
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        ARNRegressor(4).fit(X, y)
    y = y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ARNRegressor(4).fit(data[0], y)


def test_wrong_number_of_features_at_predict(data):
    X, y = data
    model = ARNRegressor(4, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])


def test_fewer_samples_than_anchors(data):
    # As sklearn's Nystroem: warn and use one anchor per row (tests/test_hardening.py).
    X, y = data
    with pytest.warns(UserWarning, match="n_anchors=60 > n_samples=50"):
        model = ARNRegressor(60).fit(X, y)
    assert model.n_anchors_ == model.anchors_.shape[0] == 50


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.empty((0, 3)), np.empty(0), "0 sample"),
        (np.zeros((5, 2, 2)), np.zeros(5), "dim 3"),
        (np.array([["a", "b"], ["c", "d"]]), np.zeros(2), "string|convert"),
        (np.zeros((5, 2)), np.zeros(4), "inconsistent numbers of samples"),
    ],
)
def test_bad_arrays(X, y, match):
    with pytest.raises(ValueError, match=match):
        ARNRegressor(1).fit(X, y)


def test_bad_parameters(data):
    X, y = data
    with pytest.raises(ValueError, match="n_anchors"):
        ARNRegressor(0).fit(X, y)
    with pytest.raises(ValueError, match="similarity"):
        ARNRegressor(2, similarity="manhattan").fit(X, y)
    with pytest.raises(ValueError, match="softness"):
        ARNRegressor(2, softness=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="anchors has shape"):
        ARNRegressor(2, anchors=np.zeros((3, 3))).fit(X, y)
    with pytest.raises(ValueError, match="zero"):
        ARNRegressor(2, random_state=0).fit(X, y, sample_weight=np.zeros(50))
    with pytest.raises(ValueError, match="[Nn]egative"):
        ARNRegressor(2).fit(X, y, sample_weight=-np.ones(50))


def test_failed_fit_leaves_previous_model_intact(data):
    X, y = data
    model = ARNRegressor(4, random_state=0).fit(X, y)
    before, coef_before = model.predict(X), model.coef_.copy()
    with pytest.raises(ValueError):
        # Fails after validation has seen 2 features: the anchors have 5.
        model.set_params(anchors=np.zeros((4, 5))).fit(X[:, :2], y)
    assert model.n_features_in_ == 3
    np.testing.assert_array_equal(model.coef_, coef_before)
    np.testing.assert_allclose(model.predict(X), before, rtol=1e-12, atol=1e-14)


def test_failed_first_fit_leaves_model_unfitted(data):
    from sklearn.exceptions import NotFittedError

    X, y = data
    model = ARNRegressor(4, anchors=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="anchors has shape"):
        model.fit(X, y)
    assert not hasattr(model, "n_features_in_")
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_failed_partial_fit_keeps_statistics(data):
    X, y = data
    model = ARNRegressor(4, random_state=0).partial_fit(X, y)
    before, coef_before = model.predict(X), model.coef_.copy()
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.partial_fit(bad, y)
    np.testing.assert_array_equal(model.coef_, coef_before)
    np.testing.assert_allclose(model.predict(X), before, rtol=1e-12, atol=1e-14)


def test_system_too_large_for_memory_is_a_clear_error():
    with pytest.raises(MemoryError, match=r"needs about .* GiB.*fewer anchors"):
        check_system_fits_memory(4096, 255, 1, 256, available=2**30)
    with pytest.raises(MemoryError, match="GiB"):
        # 1e5 anchors x 1001 lifted columns per anchor cannot fit any machine here.
        ARNRegressor(100_000, anchors=np.zeros((100_000, 1000))).fit(
            np.zeros((10, 1000)), np.zeros(10)
        )
