"""Models saved by earlier versions keep loading and predicting the same.

The files in ``tests/data`` were written by ``tests/data/make_saved_models.py``
with the package as it was before its modules moved into subpackages, so they
name the old private module paths (``arn_sklearn._estimator.ARNRegressor``,
``arn_sklearn._lifting.SufficientStatistics``...).
"""

from pathlib import Path

import numpy as np
import pytest

from arn_sklearn import load_model

sio = pytest.importorskip("skops.io")

DATA = Path(__file__).parent / "data"
NAMES = ["dense", "topk", "cv", "deep", "lbfgs", "aplus", "superres"]


@pytest.mark.parametrize("name", NAMES)
def test_saved_model_loads_and_predicts_the_same(name):
    path = DATA / f"saved_{name}.skops"
    # The file needs trusting only our own classes, under the paths it was saved with.
    untrusted = sio.get_untrusted_types(file=path)
    assert untrusted and all(t.startswith("arn_sklearn.") for t in untrusted), untrusted
    model = load_model(path)  # refuses anything but our own classes
    expected = np.load(DATA / f"saved_{name}.npz")
    X = expected["X"]
    y_pred = model.upscale(X) if name == "superres" else model.predict(X)
    # Equal to rounding: threaded BLAS may sum in another order.
    np.testing.assert_allclose(y_pred, expected["y_pred"], rtol=1e-10, atol=1e-12)


def test_saved_files_name_the_old_private_paths():
    # Guards the point of the fixtures: they must keep recording the old layout.
    untrusted = sio.get_untrusted_types(file=DATA / "saved_dense.skops")
    assert "arn_sklearn._estimator.ARNRegressor" in untrusted
    assert "arn_sklearn._lifting.SufficientStatistics" in untrusted
