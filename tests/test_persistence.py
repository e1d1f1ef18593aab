import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor

sio = pytest.importorskip("skops.io")


def assert_same_model(loaded, model, X):
    """Identical fitted arrays; predictions equal to rounding (threaded BLAS may
    sum in another order for arrays at other addresses)."""
    for attr in ("anchors_", "coef_", "intercept_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(model, attr))
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-12, atol=1e-14)


def _fitted_models():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = np.abs(X[:, 0]) + X[:, 1]
    Y = np.stack([y, X[:, 2] ** 2], axis=1)
    return X, [
        ARNRegressor(5, random_state=0).fit(X, y),
        ARNRegressor(4, similarity="cosine", random_state=0).fit(X, Y),
        ARNRegressorCV(4, alphas=[0.1, 1.0], cv=3, random_state=0).fit(X, y),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_skops_round_trip(tmp_path, index):
    X, models = _fitted_models()
    model = models[index]
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    # Only our own estimator and statistics classes need trusting.
    assert all(t.startswith("arn_sklearn.") for t in untrusted), untrusted
    loaded = sio.load(path, trusted=untrusted)
    assert_same_model(loaded, model, X)
    assert loaded.get_params()["n_anchors"] == model.get_params()["n_anchors"]


def test_skops_refuses_untrusted_by_default(tmp_path):
    X, models = _fitted_models()
    path = tmp_path / "model.skops"
    sio.dump(models[0], path)
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.load(path)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_pickle_round_trip(index):
    X, models = _fitted_models()
    loaded = pickle.loads(pickle.dumps(models[index]))
    assert_same_model(loaded, models[index], X)


def test_skops_loaded_model_continues_partial_fit(tmp_path):
    # The accumulated statistics survive the safe format, so training can resume.
    X, models = _fitted_models()
    model = models[0]
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    loaded = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    X2 = np.random.RandomState(5).normal(size=(50, 3))
    y2 = X2[:, 0] - X2[:, 1]
    loaded.partial_fit(X2, y2)
    model.partial_fit(X2, y2)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)


def test_skops_round_trip_of_learned_models(tmp_path):
    X, _ = _fitted_models()
    y = np.abs(X[:, 0]) + X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models = [
            ARNRegressor(4, solver="adam", max_iter=2, random_state=0).fit(X, y),
            DeepARNRegressor(2, 3, max_iter=2, random_state=0).fit(X, y),
        ]
    for model in models:
        path = tmp_path / "model.skops"
        sio.dump(model, path)
        untrusted = sio.get_untrusted_types(file=path)
        assert all(t.startswith("arn_sklearn.") for t in untrusted), untrusted
        loaded = sio.load(path, trusted=untrusted)
        np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-12, atol=1e-14)
        assert loaded.loss_curve_ == model.loss_curve_


# ------------------------------------ issue 14: save_model / load_model (safe by default)
def test_save_and_load_model_round_trip_every_estimator(tmp_path):
    from arn_sklearn._persistence import load_model, save_model
    from arn_sklearn.superres import APlusRegressor, SuperResolver

    X, models = _fitted_models()
    y = np.abs(X[:, 0]) + X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models.append(DeepARNRegressor(2, 3, max_iter=2, random_state=0).fit(X, y))
    models.append(APlusRegressor(4, neighborhood_size=50, random_state=0).fit(X, y))
    for model in models:
        loaded = load_model(save_model(model, tmp_path / "m.skops"))
        assert type(loaded) is type(model)
        np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-12, atol=1e-14)
    rng = np.random.RandomState(0)
    sr = SuperResolver(APlusRegressor(4, neighborhood_size=64, random_state=0), scale=2)
    sr.fit([rng.uniform(size=(24, 24)) for _ in range(2)])
    lr = rng.uniform(size=(8, 8))
    loaded = load_model(save_model(sr, tmp_path / "sr.skops"))
    np.testing.assert_allclose(loaded.upscale(lr), sr.upscale(lr), rtol=1e-12, atol=1e-14)


def test_load_model_refuses_foreign_types_and_lists_them(tmp_path):
    import os

    from arn_sklearn._persistence import UntrustedModelError, load_model

    X, models = _fitted_models()
    model = models[0]
    model.hook_ = os.system  # a crafted file could name any callable
    sio.dump(model, tmp_path / "evil.skops")
    with pytest.raises(UntrustedModelError, match=r"system") as info:
        load_model(tmp_path / "evil.skops")
    assert "ARNRegressor" not in str(info.value)  # only the foreign types are listed


def test_load_model_refuses_pickles_unless_trusted(tmp_path):
    from arn_sklearn._persistence import UntrustedModelError, load_model

    X, models = _fitted_models()
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(models[0]))
    with pytest.raises(UntrustedModelError, match="pickle"):
        load_model(path)
    loaded = load_model(path, trust_pickle=True)
    np.testing.assert_array_equal(loaded.coef_, models[0].coef_)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.skops")


def test_only_classes_defined_in_the_package_are_trusted():
    from arn_sklearn._persistence import _is_own_class

    assert _is_own_class("arn_sklearn._estimators._arn.ARNRegressor")
    assert _is_own_class("arn_sklearn._model._statistics.SufficientStatistics")
    assert not _is_own_class("arn_sklearn._kernels._solve.warnings")  # a module imported by ours
    assert not _is_own_class("arn_sklearn.superres._cli.main")  # a function
    assert not _is_own_class("arn_sklearn._estimators._arn.np")
    assert not _is_own_class("arn_sklearn._estimators._cv.ARNRegressor")  # re-exported, not defined
    assert not _is_own_class("arn_sklearn_evil.Model")
    assert not _is_own_class("numpy.ndarray")


# ------------------------------------------------- issue 20: suffix and damaged files
@pytest.mark.parametrize("name", ["m.joblib", "m.pkl", "model", "m.skops.bak"])
def test_save_model_refuses_a_non_skops_suffix(tmp_path, name):
    from arn_sklearn import save_model

    _, models = _fitted_models()
    with pytest.raises(ValueError, match=r"should end in '\.skops'"):
        save_model(models[0], tmp_path / name)
    assert not (tmp_path / name).exists()
    assert save_model(models[0], tmp_path / "M.SKOPS").is_file()  # case-insensitive


def test_truncated_or_empty_skops_files_are_reported_as_corrupt(tmp_path):
    from arn_sklearn import UntrustedModelError, load_model, save_model

    _, models = _fitted_models()
    data = save_model(models[0], tmp_path / "m.skops").read_bytes()
    cases = {
        "truncated.skops": data[: len(data) // 2],
        "truncated_renamed.bin": data[: len(data) // 2],  # still starts with the zip magic
        "garbage.skops": b"not a zip at all",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="truncated or corrupt") as info:
            load_model(tmp_path / name, trust_pickle=True)
        assert not isinstance(info.value, UntrustedModelError), name
        assert "pickle" not in str(info.value)
    (tmp_path / "empty.skops").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_model(tmp_path / "empty.skops")
    # A damaged pickle, when trusted, is a ValueError too (not an UnpicklingError).
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(models[0])[:50])
    with pytest.raises(ValueError, match="cannot be unpickled"):
        load_model(tmp_path / "bad.pkl", trust_pickle=True)


def test_persistence_is_in_the_api_reference():
    from pathlib import Path

    api = (Path(__file__).parents[1] / "docs" / "api.rst").read_text()
    for name in ("save_model", "load_model", "UntrustedModelError"):
        assert f"   {name}\n" in api, name
