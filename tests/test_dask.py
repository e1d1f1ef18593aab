import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

from arn_sklearn import ARNRegressor  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=3, threads_per_worker=1, processes=False, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _data(n=1000, d=3, n_targets=1, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([np.abs(X[:, 0]) + X[:, 1] * (X[:, 2] > 0), np.maximum(X[:, 1], 0)], 1)
    Y = Y[:, :n_targets] + 0.05 * rng.normal(size=(n, n_targets))
    return X, (Y[:, 0] if n_targets == 1 else Y)


@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_dask_fit_equals_in_memory_fit(client, n_targets, weighted):
    X, y = _data(n_targets=n_targets)
    w = np.random.RandomState(2).uniform(0, 2, size=X.shape[0]) if weighted else None
    anchors = np.random.RandomState(1).normal(size=(6, 3))
    params = dict(softness=0.8, alpha=0.2, anchors=anchors, batch_size=50)
    ref = ARNRegressor(6, **params).fit(X, y, sample_weight=w)
    Xd = da.from_array(X, chunks=(130, 2))  # uneven row blocks, split columns
    yd = da.from_array(y, chunks=170)  # chunks not aligned with X's
    wd = None if w is None else da.from_array(w, chunks=200)
    model = ARNRegressor(6, **params).fit(Xd, yd, sample_weight=wd)
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=0, atol=1e-10)
    pred = model.predict(Xd)
    assert isinstance(pred, da.Array) and pred.shape == ref.predict(X).shape
    np.testing.assert_allclose(pred.compute(), ref.predict(X), rtol=0, atol=1e-10)
    A = model.soft_assignments(Xd)
    assert isinstance(A, da.Array)
    np.testing.assert_allclose(A.compute(), ref.soft_assignments(X), atol=1e-12)


def test_dask_top_k_fit_equals_in_memory_top_k_fit(client):
    # The sparsified model must be fitted on Dask exactly as in memory,
    # otherwise predict (which applies top_k) would not match its own fit.
    X, y = _data()
    anchors = np.random.RandomState(1).normal(size=(6, 3))
    params = dict(softness=0.8, alpha=0.2, anchors=anchors, batch_size=50, top_k=2)
    ref = ARNRegressor(6, **params).fit(X, y)
    dense = ARNRegressor(6, **{**params, "top_k": None}).fit(X, y)
    assert not np.allclose(ref.coef_, dense.coef_, atol=1e-3)
    model = ARNRegressor(6, **params).fit(da.from_array(X, chunks=(130, 3)), y)
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=0, atol=1e-10)


def test_dask_auto_anchors_from_all_blocks_match_in_memory(client):
    # Fewer rows than the anchor sample: every block is drawn, so KMeans and the
    # auto softness see the same rows as the in-memory fit.
    X, y = _data(n=600)
    ref = ARNRegressor(5, random_state=0).fit(X, y)
    model = ARNRegressor(5, random_state=0).fit(da.from_array(X, chunks=100), y)
    np.testing.assert_allclose(model.softness_, ref.softness_, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), atol=1e-8)


def test_dask_anchor_sample_is_bounded(client, monkeypatch):
    from arn_sklearn._anchors import _init as _anchors
    from arn_sklearn._learning import _starts

    monkeypatch.setattr(_starts, "KMEANS_MIN_ROWS", 100)
    monkeypatch.setattr(_starts, "AUTO_SOFTNESS_MAX_ROWS", 100)
    seen = {}
    original = _anchors.init_anchors

    def spy(X, *args, **kwargs):
        seen["rows"] = X.shape[0]
        return original(X, *args, **kwargs)

    monkeypatch.setattr("arn_sklearn._learning._starts.init_anchors", spy)
    X, y = _data(n=2000)
    model = ARNRegressor(4, random_state=0).fit(da.from_array(X, chunks=50), y)
    # max(100, 64 rows per anchor) = 256 rows, drawn as whole 50-row blocks.
    assert 256 <= seen["rows"] < 256 + 50
    assert model.score(X, y) > 0.5


def test_dask_dataframe_input(client):
    pd = pytest.importorskip("pandas")
    X, y = _data(n=400)
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = dict(softness=1.0, anchors=anchors)
    ref = ARNRegressor(4, **params).fit(X, y)
    ddf = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=3)
    ys = dd.from_pandas(pd.Series(y), npartitions=3)
    model = ARNRegressor(4, **params).fit(ddf, ys)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-10)
    np.testing.assert_allclose(model.predict(ddf).compute(), ref.predict(X), atol=1e-10)


def test_dask_nan_and_shape_errors(client):
    X, y = _data(n=300)
    anchors = np.zeros((2, 3))
    model = ARNRegressor(2, softness=1.0, anchors=anchors)
    Xn = X.copy()
    Xn[250, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(da.from_array(Xn, chunks=100), y)
    assert not hasattr(model, "coef_")
    with pytest.raises(ValueError, match="inconsistent"):
        model.fit(da.from_array(X, chunks=100), y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        model.fit(da.from_array(X[:, 0], chunks=100), y)
    model.fit(da.from_array(X, chunks=100), y)
    with pytest.raises(ValueError, match="features"):
        model.predict(da.from_array(X[:, :2], chunks=100))


def test_local_scheduler_without_client():
    X, y = _data(n=300)
    anchors = np.random.RandomState(1).normal(size=(3, 3))
    params = dict(softness=0.5, anchors=anchors)
    ref = ARNRegressor(3, **params).fit(X, y)
    model = ARNRegressor(3, **params).fit(da.from_array(X, chunks=64), da.from_array(y))
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-10)


def test_core_imports_and_fits_without_dask():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
        "import numpy as np; from arn_sklearn import ARNRegressor, ARNRegressorCV\n"
        "X = np.random.RandomState(0).normal(size=(50, 2))\n"
        "ARNRegressor(2, random_state=0).fit(X, X[:, 0]).predict(X)\n"
        "assert sys.modules['dask'] is None\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[1]),
    )


def test_dask_predict_graph_ships_the_layer_not_its_statistics():
    # The p x p statistics stay on the client: a prediction graph holds the
    # anchors and regressors only (the old graph held the whole estimator).
    import pickle

    X, y = _data(n=2000, d=10)
    model = ARNRegressor(16, random_state=0).fit(X, y)
    Xd = da.zeros((2000, 10), chunks=(500, 10))
    y_pred = model.predict(Xd)
    graph = pickle.dumps(dict(y_pred.__dask_graph__()))
    layer_bytes = model.anchors_.nbytes + model.coef_.nbytes + model.intercept_.nbytes
    assert len(graph) < layer_bytes + model._stats.gram.nbytes / 10
    np.testing.assert_allclose(y_pred.compute(), model.predict(np.zeros((2000, 10))))
    # predict_std needs the statistics; its graph pickles (the factorisation is not shipped).
    _, y_std = model.predict(Xd, return_std=True)
    pickle.dumps(dict(y_std.__dask_graph__()))
    np.testing.assert_allclose(
        y_std.compute(), model.predict(np.zeros((2000, 10)), return_std=True)[1], rtol=1e-12
    )
