"""Top-k against dense: fit time and test R^2 at m=256, accumulation speed-up at m=1024.

``python benchmarks/topk_tradeoff.py`` (a few minutes on 2 cores). Everything is
measured in this one process on the same data.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arn_benchmarks.common import make_data  # noqa: E402
from efficiency import measure  # noqa: E402

from arn_sklearn import ARNRegressor  # noqa: E402


def accuracy(n=20_000, m=256, d=30, ks=(None, 2, 4, 8, 16)):
    X, y, X_test, y_test = make_data(n, d)
    # The same anchors and softness for every k: only the sparsity differs.
    base = ARNRegressor(n_anchors=m, random_state=0).fit(X[:2000], y[:2000])
    print(f"m={m}, d={d}, n_train={n}: fit (accumulate + solve) and test R^2")
    ref = None
    for k in ks:
        model = ARNRegressor(n_anchors=m, anchors=base.anchors_, softness=base.softness_, top_k=k)
        tic = time.perf_counter()
        model.fit(X, y)
        fit_s = time.perf_counter() - tic
        r2 = model.score(X_test, y_test)
        ref = fit_s if k is None else ref
        print(f"  top_k={k!s:5s} fit {fit_s:7.2f} s (x{ref / fit_s:5.1f} faster)  R^2 {r2:.4f}")


def speedup(n, m, d, k=4):
    dense = measure(n, m, d, repeat=1, syrk=False)["accumulate_s"]
    sparse = measure(n, m, d, top_k=k, repeat=1, syrk=False)["accumulate_s"]
    print(
        f"accumulation n={n} m={m} d={d}: dense {dense:.2f} s, top_k={k} {sparse:.2f} s, "
        f"speed-up x{dense / sparse:.0f}"
    )


if __name__ == "__main__":
    accuracy()
    speedup(20_000, 256, 30)
    speedup(2_000, 1024, 30)
