"""Issue 14: no silent NaN, no broken model after a failed fit, safe limits, boundaries.

Superres and CLI cases are in test_superres.py, persistence in test_persistence.py,
the fuzz test in test_fuzz.py and the default-parameter checks in test_sklearn_compat.py.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor
from arn_sklearn._kernels._solve import check_system_fits_memory
from arn_sklearn.superres import APlusRegressor, SuperResolver, build_training_set


def _data(n=120, d=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    return X, np.abs(X[:, 0]) + X[:, 1] * (X[:, -1] > 0) + 0.05 * rng.normal(size=n)


def _quiet(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit()


def _estimators():
    """One small instance of each public estimator on feature vectors."""
    return [
        ARNRegressor(4, random_state=0),
        ARNRegressorCV(4, alphas=[0.1, 1.0], cv=3, random_state=0),
        DeepARNRegressor(2, 3, max_iter=3, random_state=0),
        APlusRegressor(4, neighborhood_size=30, random_state=0),
    ]


# ------------------------------------------------------------ silent NaN in y
@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("as_pandas", [False, True])
def test_object_y_with_none_raises_like_ridge(estimator, as_pandas):
    X, y = _data()
    y_obj = y.astype(object)
    y_obj[5] = None
    if as_pandas:
        pd = pytest.importorskip("pandas")
        y_obj = pd.Series(y_obj, dtype=object)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        _quiet(lambda: estimator.fit(X, y_obj))


def test_object_y_with_none_raises_in_partial_fit_and_two_columns():
    X, y = _data()
    Y = np.stack([y, y], axis=1).astype(object)
    Y[3, 1] = None
    with pytest.raises(ValueError, match="Input y contains NaN"):
        ARNRegressor(4).partial_fit(X, Y)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        ARNRegressor(4).fit(X, Y)


def test_super_resolver_fit_patches_refuses_none_in_targets():
    rng = np.random.RandomState(0)
    features, X, Y = build_training_set(
        [rng.uniform(size=(24, 24)) for _ in range(2)], 2, random_state=0
    )
    Y = Y.astype(object)
    Y[0, 0] = None
    model = SuperResolver(APlusRegressor(4, neighborhood_size=30, random_state=0), scale=2)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        model.fit_patches(features, X, Y)


# ------------------------------------------------- CV scores of huge targets
@pytest.mark.parametrize("scoring", ["r2", "neg_mean_squared_error"])
def test_cv_scores_are_scale_invariant_for_huge_targets(scoring):
    X, y = _data(200)
    # The best alpha is not the first: a broken scorer (all ties) picks the first.
    params = dict(alphas=[1e4, 1e2, 1.0, 1e-3], cv=4, scoring=scoring, random_state=0)
    small = ARNRegressorCV(4, **params).fit(X, y)
    scale = 1e200 if scoring == "r2" else 1e100  # the MSE itself must stay finite
    big = ARNRegressorCV(4, **params).fit(X, y * scale)
    assert small.alpha_ != 1e4
    assert big.alpha_ == small.alpha_
    factor = 1.0 if scoring == "r2" else scale**2
    np.testing.assert_allclose(
        big.cv_results_["mean_test_score"] / factor,
        small.cv_results_["mean_test_score"],
        rtol=1e-9,
    )
    np.testing.assert_allclose(big.predict(X) / scale, small.predict(X), rtol=1e-9, atol=1e-12)


def test_cv_refit_equals_arn_regressor_with_the_selected_parameters():
    # Scaling y by a power of two inside the CV must not change the refitted model.
    X, y = _data(150)
    cv = ARNRegressorCV(4, alphas=[0.01, 1.0], cv=3, random_state=0).fit(X, y * 3e5)
    ref = ARNRegressor(4, anchors=cv.anchors_, softness=cv.softness_, alpha=cv.alpha_)
    ref.fit(X, y * 3e5)
    # Equal up to the order of the sums (folds added vs one stream).
    np.testing.assert_allclose(cv.coef_, ref.coef_, rtol=1e-9)
    np.testing.assert_allclose(cv.intercept_, ref.intercept_, rtol=1e-9)


# ------------------------------------------- rollback after a failed fit
def _assert_unchanged(model, saved, X, before):
    assert model.__dict__.keys() == saved.keys()
    for key, value in saved.items():
        assert model.__dict__[key] is value, key
    np.testing.assert_array_equal(np.asarray(model.predict(X)), before)


def _boom(*args, **kwargs):
    raise RuntimeError("injected failure")


# (estimator, the internal step that is made to fail after validation)
_INJECTIONS = [
    (ARNRegressor(4, random_state=0), "arn_sklearn._model._layer.accumulate_rows"),
    (
        ARNRegressorCV(4, alphas=[0.1, 1.0], cv=3, random_state=0),
        "arn_sklearn._fit._cv.ridge_path",
    ),
    (
        DeepARNRegressor(2, 3, max_iter=2, random_state=0),
        "arn_sklearn._fit._deep.train_layers",
    ),
    (
        APlusRegressor(4, neighborhood_size=30, random_state=0),
        "arn_sklearn.superres._aplus._nearest_by_correlation",
    ),
    # Late failures, after attributes were set or trained arrays produced: the
    # earlier model must not have been mutated in place either.
    (
        ARNRegressorCV(4, alphas=[0.1, 1.0], cv=3, random_state=0),
        "arn_sklearn._estimators._arn.ARNRegressor._set_fitted",
    ),
    (
        DeepARNRegressor(2, 3, max_iter=2, random_state=0),
        "arn_sklearn._estimators._deep.DeepARNRegressor._set_fitted",
    ),
    (
        DeepARNRegressor(2, 3, max_iter=2, warm_start=True, random_state=0),
        "arn_sklearn._estimators._deep.DeepARNRegressor._set_fitted",
    ),
    (
        ARNRegressor(4, solver="adam", max_iter=2, warm_start=True, random_state=0),
        "arn_sklearn._fit._learned.train_layers",
    ),
]


@pytest.mark.parametrize(
    "estimator, target",
    _INJECTIONS,
    ids=[f"{type(e).__name__}-{t.rsplit('.', 1)[1]}" for e, t in _INJECTIONS],
)
def test_failed_refit_leaves_the_earlier_model_intact(estimator, target, monkeypatch):
    X, y = _data()
    model = _quiet(lambda: estimator.fit(X, y))
    saved, before = dict(model.__dict__), np.asarray(model.predict(X))
    monkeypatch.setattr(target, _boom)
    # Other features (validation resets n_features_in_), unless warm-starting.
    X2, y2 = _data(80, d=3 if estimator.get_params().get("warm_start") else 2, seed=1)
    with pytest.raises(RuntimeError, match="injected"):
        _quiet(lambda: model.fit(X2, y2))
    _assert_unchanged(model, saved, X, before)


def test_failed_partial_fit_rolls_back(monkeypatch):
    X, y = _data()
    model = ARNRegressor(4, random_state=0).partial_fit(X, y)
    saved, before = dict(model.__dict__), model.predict(X)
    monkeypatch.setattr("arn_sklearn._estimators._arn.ARNRegressor._set_fitted", _boom)
    with pytest.raises(RuntimeError, match="injected"):
        model.partial_fit(X[:10], y[:10])
    _assert_unchanged(model, saved, X, before)


def test_super_resolver_failed_refit_rolls_back(monkeypatch):
    rng = np.random.RandomState(0)
    images = [rng.uniform(size=(24, 24)) for _ in range(2)]
    model = SuperResolver(APlusRegressor(4, neighborhood_size=30, random_state=0), scale=2)
    model.fit(images)
    saved = dict(model.__dict__)
    lr = rng.uniform(size=(8, 8))
    before = model.upscale(lr)
    monkeypatch.setattr(APlusRegressor, "fit", _boom)
    with pytest.raises(RuntimeError, match="injected"):
        model.set_params(scale=3).fit(images)
    model.set_params(scale=2)
    assert model.__dict__.keys() == saved.keys()
    assert all(model.__dict__[k] is v for k, v in saved.items())
    np.testing.assert_array_equal(model.upscale(lr), before)


def test_cv_refit_failing_on_too_many_folds_keeps_the_model():
    # The case of the issue: validation passes, the splitter then refuses 2 rows.
    X, y = _data()
    model = ARNRegressorCV(4, alphas=[0.1, 1.0], cv=3, random_state=0).fit(X, y)
    saved, before = dict(model.__dict__), model.predict(X)
    with pytest.raises(ValueError, match="n_splits"):
        model.fit(X[:2, :2], y[:2])
    _assert_unchanged(model, saved, X, before)


def test_aplus_refit_with_fewer_rows_than_anchors_keeps_the_model():
    X, y = _data()
    model = APlusRegressor(4, neighborhood_size=30, random_state=0).fit(X, y)
    saved, before = dict(model.__dict__), model.predict(X)
    with pytest.raises(ValueError, match="n_samples >= n_anchors"):
        model.fit(X[:3, :2], y[:3])
    _assert_unchanged(model, saved, X, before)


# --------------------------------------------------------- memory limits
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """/proc and /sys/fs/cgroup files under tmp_path, no RLIMIT_AS."""
    import resource

    from arn_sklearn._utils import _memory

    _write(tmp_path / "meminfo", "MemTotal: 8000000 kB\nMemAvailable: 4194304 kB\n")
    _write(tmp_path / "status", "Name: python\nVmSize:  524288 kB\n")
    _write(tmp_path / "cgroup", "0::/\n")
    monkeypatch.setattr(_memory, "_MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(_memory, "_SELF_STATUS", str(tmp_path / "status"))
    monkeypatch.setattr(_memory, "_SELF_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(_memory, "_CGROUP_ROOT", str(tmp_path / "sys"))
    infinity = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    monkeypatch.setattr(resource, "getrlimit", lambda which: infinity)
    return tmp_path, _memory


GiB = 2**30


def test_memory_machine_available_without_limits(fake_system):
    _, _memory = fake_system
    assert _memory.available_memory_bytes() == 4 * GiB


def test_memory_cgroup_v2_limit_of_the_process_or_a_parent(fake_system):
    fake_system, _memory = fake_system
    _write(fake_system / "cgroup", "0::/app/worker\n")
    sys_root = fake_system / "sys"
    _write(sys_root / "app/worker/memory.max", "max\n")  # no limit at this level
    _write(sys_root / "app/worker/memory.current", "100\n")
    _write(sys_root / "app/memory.max", f"{2 * GiB}\n")
    _write(sys_root / "app/memory.current", f"{GiB // 2}\n")
    assert _memory.available_memory_bytes() == 2 * GiB - GiB // 2
    from arn_sklearn._kernels import _solve

    assert _solve.available_memory_bytes() == 2 * GiB - GiB // 2
    # A container: /proc/self/cgroup says "/", the limit sits at the mount's root.
    _write(fake_system / "cgroup", "0::/\n")
    _write(sys_root / "memory.max", f"{GiB}\n")
    _write(sys_root / "memory.current", f"{GiB // 4}\n")
    assert _memory.available_memory_bytes() == GiB - GiB // 4


def test_memory_cgroup_v1_limit_and_unlimited(fake_system):
    fake_system, _memory = fake_system
    _write(fake_system / "cgroup", "4:memory:/job\n0::/\n")
    v1 = fake_system / "sys" / "memory" / "job"
    _write(v1 / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "unlimited"
    _write(v1 / "memory.usage_in_bytes", "1000\n")
    assert _memory.available_memory_bytes() == 4 * GiB
    _write(v1 / "memory.limit_in_bytes", f"{3 * GiB}\n")
    _write(v1 / "memory.usage_in_bytes", f"{GiB}\n")
    assert _memory.available_memory_bytes() == 2 * GiB


def test_memory_cgroup_page_cache_counts_as_headroom(fake_system):
    # A container's usage includes the page cache of the files it read; the
    # kernel drops the inactive part before it kills anything, so a fit in a
    # container that has read 1.5 GiB of data is not refused for it.
    fake_system, _memory = fake_system
    sys_root = fake_system / "sys"
    _write(sys_root / "memory.max", f"{2 * GiB}\n")
    _write(sys_root / "memory.current", f"{GiB + GiB // 2 + GiB // 4}\n")
    _write(sys_root / "memory.stat", f"anon 123\ninactive_file {GiB + GiB // 2}\nfile 9\n")
    assert _memory.available_memory_bytes() == 2 * GiB - GiB // 4
    _write(fake_system / "cgroup", "4:memory:/job\n0::/\n")
    (sys_root / "memory.max").unlink()
    v1 = sys_root / "memory" / "job"
    _write(v1 / "memory.limit_in_bytes", f"{3 * GiB}\n")
    _write(v1 / "memory.usage_in_bytes", f"{2 * GiB + GiB // 2}\n")
    _write(v1 / "memory.stat", f"cache 5\ntotal_inactive_file {GiB}\n")
    assert _memory.available_memory_bytes() == GiB + GiB // 2


def test_memory_rlimit_as(fake_system, monkeypatch):
    import resource

    _, _memory = fake_system

    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * GiB, resource.RLIM_INFINITY))
    assert _memory.available_memory_bytes() == 3 * GiB - GiB // 2  # minus VmSize
    # 64 x 256 = 16,384 unknowns: 2 GiB per matrix, beyond the 2.5 GiB left.
    with pytest.raises(MemoryError, match="GiB is available"):
        check_system_fits_memory(64, 255, 1, 256)
    check_system_fits_memory(16, 255, 1, 256)  # 0.25 GiB fits


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_memory_guard_under_a_real_rlimit_as():
    # A fresh process limited to its current size + 1.5 GiB of address space:
    # a 2 GiB system is refused by the guard, not by numpy's "Unable to allocate".
    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        from arn_sklearn import ARNRegressor
        from arn_sklearn._utils._memory import (
            _SELF_STATUS, _proc_field_bytes, available_memory_bytes
        )
        used = _proc_field_bytes(_SELF_STATUS, "VmSize")
        limit = used + 3 * 2**29
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        available = available_memory_bytes()
        assert available <= limit - used, (available, limit, used)
        X = np.random.RandomState(0).normal(size=(20, 63))
        try:
            # 176 anchors x 64 = 11,264 unknowns: two 0.95 GiB matrices.
            ARNRegressor(176, anchors=np.zeros((176, 63)), softness=1.0).fit(X, X[:, 0])
        except MemoryError as exc:
            assert "GiB is available" in str(exc), str(exc)
            print("refused:", exc)
        else:
            raise SystemExit("the fit was not refused")
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout


# ------------------------------------------------------------- Dask parity
def _dask():
    return pytest.importorskip("dask.array")


@pytest.mark.parametrize("n_targets", [1, 2])
def test_dask_predict_with_an_empty_partition(n_targets):
    da = _dask()
    X, y = _data()
    Y = y if n_targets == 1 else np.stack([y, -y], axis=1)
    model = ARNRegressor(4, random_state=0).fit(X, Y)
    # An empty partition, as filtering rows leaves.
    Xd = da.from_array(X, chunks=((40, 0, 80), (3,)))
    np.testing.assert_allclose(model.predict(Xd).compute(), model.predict(X), rtol=1e-12)
    np.testing.assert_allclose(
        model.soft_assignments(Xd).compute(), model.soft_assignments(X), rtol=1e-12
    )
    filtered = da.from_array(X, chunks=(40, 3))
    filtered = filtered[filtered[:, 0] > 10]  # every partition empty, sizes unknown
    assert model.predict(filtered).compute().shape == (0,) + Y.shape[1:]


@pytest.mark.parametrize(
    "make_input, match",
    [
        (lambda X, y: (X + 1j, y), "Complex data not supported"),
        (lambda X, y: (X, y + 1j), "Complex data not supported"),
        (lambda X, y: (X, np.zeros((X.shape[0], 0))), r"0 feature\(s\)"),
    ],
    ids=["complex X", "complex y", "y with 0 columns"],
)
def test_dask_fit_validates_like_numpy(make_input, match):
    da = _dask()
    X, y = make_input(*_data())
    with pytest.raises(ValueError, match=match):
        ARNRegressor(4).fit(X, y)
    with pytest.raises(ValueError, match=match):
        ARNRegressor(4).fit(da.from_array(X, chunks=40), da.from_array(y, chunks=40))


# --------------------------------------------------------- smaller boundaries
@pytest.mark.parametrize(
    "anchors",
    [
        [["a", "b", "c"]] * 4,
        np.array([["1", "2", "3"]] * 4),  # numeric-looking strings are strings too
        np.ones((4, 3)) + 1j,
    ],
    ids=["list of str", "str array", "complex"],
)
@pytest.mark.parametrize("make", [ARNRegressor, ARNRegressorCV, APlusRegressor])
def test_non_numeric_anchors_are_a_value_error(anchors, make):
    X, y = _data()
    with pytest.raises(ValueError, match="numeric array"):
        make(4, anchors=anchors).fit(X, y)


def test_unknown_anchor_option_is_a_value_error():
    X, y = _data()
    for make in (ARNRegressor, ARNRegressorCV, DeepARNRegressor, APlusRegressor):
        with pytest.raises(ValueError, match="anchors"):
            make(n_anchors=4, anchors="kmeans++").fit(X, y)


@pytest.mark.parametrize("n_anchors", [[2.5, 3], [2.0, 3], [True, 3], 2.5])
def test_deep_arn_refuses_non_integer_anchor_counts(n_anchors):
    X, y = _data()
    with pytest.raises(ValueError, match="n_anchors"):
        DeepARNRegressor(2, n_anchors=n_anchors, max_iter=1).fit(X, y)


def test_deep_arn_accepts_numpy_integer_counts():
    X, y = _data()
    model = _quiet(lambda: DeepARNRegressor(2, np.array([3, 2]), max_iter=1).fit(X, y))
    assert [a.shape[0] for a in model.anchors_] == [3, 2]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_aplus_refuses_non_finite_anchors(bad):
    X, y = _data()
    anchors = np.ones((4, 3))
    anchors[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        APlusRegressor(4, anchors=anchors).fit(X, y)


# -------------------------------------- defaults on tiny data (Nystroem's rule)
@pytest.mark.parametrize(
    "make",
    [
        lambda: ARNRegressor(random_state=0),
        lambda: ARNRegressor(random_state=0, anchors="random", top_k=12),
        lambda: ARNRegressorCV(random_state=0, cv=2),
        lambda: DeepARNRegressor(max_iter=2, random_state=0),
    ],
    ids=["ARN", "ARN random top_k", "ARNRegressorCV", "DeepARN"],
)
def test_defaults_warn_and_use_one_anchor_per_row(make):
    X, y = _data(10)
    model = make()
    with pytest.warns(UserWarning, match="n_anchors=16 > n_samples=10"):
        _quiet(lambda: model.fit(X, y))
    anchors = model.anchors_ if isinstance(model.anchors_, list) else [model.anchors_]
    counts = model.n_anchors_ if isinstance(model.n_anchors_, list) else [model.n_anchors_]
    assert [a.shape[0] for a in anchors] == counts and max(counts) == 10
    assert np.all(np.isfinite(model.predict(X)))


def test_given_anchor_array_keeps_the_strict_shape_error():
    X, y = _data(10)
    with pytest.raises(ValueError, match="anchors has shape"):
        ARNRegressor(16, anchors=np.zeros((10, 3))).fit(X, y)
    # Given anchors may outnumber the rows: they are not drawn from them.
    model = ARNRegressor(16, anchors=np.random.RandomState(0).normal(size=(16, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(X, y)
    assert model.n_anchors_ == 16


# ------------------------------------------- overflow found by the fuzz test
def test_fit_whose_statistics_overflow_is_a_value_error():
    # |x| ~ 1e19 and |y| ~ 1e300: x * y overflows the statistics (found by test_fuzz.py).
    X = np.array([[-9.2e18], [1.0e18], [3.0e18]])
    y = np.array([4e299, -1e299, 2e299])
    model = ARNRegressor(1, softness=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="overflowed float64"):
            model.fit(X, y)
    assert not hasattr(model, "coef_")


@pytest.mark.parametrize(
    "make",
    [
        lambda: ARNRegressor(4, random_state=0),
        lambda: DeepARNRegressor(1, 4, max_iter=1, random_state=0),
    ],
)
def test_float32_predictions_beyond_the_float32_range_raise(make):
    # Predictions follow X's dtype; 1e100 in float32 would be a silent inf.
    X, y = _data()
    with warnings.catch_warnings():
        # Adam squares gradients of ~1e160 (overflow warning; _optim.py keeps the best epoch).
        warnings.simplefilter("ignore", RuntimeWarning)
        model = _quiet(lambda: make().fit(X.astype(np.float32), y * 1e100))
    with pytest.raises(ValueError, match="float32 range"):
        model.predict(X.astype(np.float32))
    assert np.all(np.isfinite(model.predict(X)))
