"""Write the saved-model fixtures of ``tests/test_saved_models.py``.

Run once, from the project root, with the code whose files must keep loading
(``python tests/data/make_saved_models.py``): it saves small fitted models in
the skops format with the inputs and the predictions they gave, so that later
versions of the package can be checked to load and predict them identically
(skops records the private module path of every class it saves).
"""

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from arn_sklearn import ARNRegressor, ARNRegressorCV, DeepARNRegressor, save_model
from arn_sklearn.superres import APlusRegressor, SuperResolver

HERE = Path(__file__).parent


def models():
    """name -> (fitted model, input to predict)."""
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(120, 2))
    y = np.abs(X[:, 0]) + np.sin(2 * X[:, 1])
    Y = np.stack([y, X[:, 0] * X[:, 1]], axis=1)
    X_test = rng.uniform(-2, 2, size=(15, 2))
    images = [rng.uniform(size=(18, 18)) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = {
            "dense": (ARNRegressor(4, random_state=0).fit(X, y), X_test),
            "topk": (ARNRegressor(5, top_k=2, random_state=0).fit(X, Y), X_test),
            "cv": (ARNRegressorCV(3, alphas=[0.1, 1.0], cv=3, random_state=0).fit(X, y), X_test),
            "deep": (
                DeepARNRegressor(n_layers=2, n_anchors=3, max_iter=3, random_state=0).fit(X, y),
                X_test,
            ),
            "lbfgs": (
                ARNRegressor(3, solver="lbfgs", max_iter=3, random_state=0).fit(X, y),
                X_test,
            ),
        }
    aplus = APlusRegressor(3, neighborhood_size=40, random_state=0).fit(X, Y)
    out["aplus"] = (aplus, X_test)
    resolver = SuperResolver(
        ARNRegressor(3, random_state=0),
        scale=2,
        energy=0.9,
        max_patches_per_image=60,
        random_state=0,
    ).fit(images)
    out["superres"] = (resolver, rng.uniform(size=(6, 7)))
    return out


def predictions(model, X):
    """What the test compares: ``upscale`` for a SuperResolver, else ``predict``."""
    return model.upscale(X) if isinstance(model, SuperResolver) else model.predict(X)


if __name__ == "__main__":
    for name, (model, X) in models().items():
        save_model(model, HERE / f"saved_{name}.skops")
        np.savez(HERE / f"saved_{name}.npz", X=X, y_pred=predictions(model, X))
        print(name, (HERE / f"saved_{name}.skops").stat().st_size, "bytes")
