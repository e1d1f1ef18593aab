"""Compare ARN with the regressors users pick instead, on data that ships with
scikit-learn and scikit-image, and print a table of MAE and fit time.

Run with ``python -m arn_sklearn.demo`` (or the ``arn-demo`` script).
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._estimator import ARNRegressor


def diabetes_task():
    """Disease progression from 10 clinical variables (442 patients)."""
    X, y = load_diabetes(return_X_y=True)
    return ("diabetes (442 x 10 -> 1)", *train_test_split(X, y, test_size=0.25, random_state=0))


def image_patch_task():
    """x2 upscaling of scikit-image's 'camera': 3x3 low-resolution patch -> 2x2 pixels.

    The low-resolution image is the 2x2 block mean; the top half of the image
    trains, the bottom half tests.
    """
    from skimage import data

    hr = data.camera().astype(np.float64) / 255.0
    lr = hr.reshape(hr.shape[0] // 2, 2, hr.shape[1] // 2, 2).mean(axis=(1, 3))
    windows = np.lib.stride_tricks.sliding_window_view(lr, (3, 3))
    rows, cols = windows.shape[:2]
    X = windows.reshape(rows * cols, 9)
    blocks = hr.reshape(lr.shape[0], 2, lr.shape[1], 2).transpose(0, 2, 1, 3)
    Y = blocks[1:-1, 1:-1].reshape(rows * cols, 4)
    # Residual to the patch centre, as super-resolution pipelines do.
    Y = Y - X[:, 4:5]
    train = np.repeat(np.arange(rows) < rows // 2, cols)
    return "camera x2 patches (3x3 -> 2x2)", X[train], X[~train], Y[train], Y[~train]


def models(n_anchors):
    scaled = lambda est: make_pipeline(StandardScaler(), est)  # noqa: E731
    out = {
        "Ridge": scaled(Ridge(alpha=1.0)),
        "KNN (k=10)": scaled(KNeighborsRegressor(10)),
        "MLP (100)": scaled(
            MLPRegressor(
                hidden_layer_sizes=(100,), max_iter=300, early_stopping=True, random_state=0
            )
        ),
    }
    for m in n_anchors:
        out[f"ARN (m={m})"] = scaled(ARNRegressor(m, random_state=0))
    return out


def run(tasks, n_anchors=(4, 16, 64)):
    """Fit every model on every task; return rows of (task, model, MAE, fit s)."""
    results = []
    for name, X_train, X_test, y_train, y_test in tasks:
        for label, model in models(n_anchors).items():
            if label.startswith("ARN") and int(label[7:-1]) > len(X_train) // 4:
                continue
            tic = time.perf_counter()
            model.fit(X_train, y_train)
            fit_time = time.perf_counter() - tic
            mae = mean_absolute_error(y_test, model.predict(X_test))
            results.append((name, label, mae, fit_time))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--anchors",
        type=int,
        nargs="+",
        default=[4, 16, 64],
        help="anchor counts to try (default: 4 16 64)",
    )
    args = parser.parse_args(argv)
    tasks = [diabetes_task()]
    try:
        tasks.append(image_patch_task())
    except ImportError:
        print(
            "scikit-image is not installed: skipping the image task "
            "(pip install 'arn-sklearn[examples]')."
        )
    rows = run(tasks, args.anchors)
    print(f"{'task':34s} {'model':12s} {'MAE':>10s} {'fit (s)':>9s}")
    for task, label, mae, fit_time in rows:
        print(f"{task:34s} {label:12s} {mae:10.4g} {fit_time:9.2f}")


if __name__ == "__main__":
    main()
