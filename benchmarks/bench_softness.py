"""Justify the softness="auto" rule: K = c / median(top-two similarity gap).

For several datasets, anchor counts and similarities, fit ARN with K = c / gap over a
grid of c and print the held-out R^2 of each c, then the mean rank of each c. The
package uses the c that ranks best overall (``AUTO_SOFTNESS_LOG_RATIO``).

Run: ``python benchmarks/bench_softness.py`` (``--top-k`` for the top-k rule only).

The top-k section compares, for top-k models on the same anchors, the held-out R^2 at
the dense rule's softness and at ``auto_softness(top_k=k)`` (which is at least the
softness that leaves at most ``AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS`` of the median sample's
softmax mass outside its k kept anchors), next to the dense model's.
"""

import sys

import numpy as np
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressor
from arn_sklearn._anchors._init import AUTO_SOFTNESS_LOG_RATIO

RATIOS = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def datasets():
    X, y = load_diabetes(return_X_y=True)
    yield "diabetes", X, y
    X, y = make_friedman1(4000, n_features=8, noise=0.5, random_state=0)
    yield "friedman1", X, y
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(4000, 4))
    y = np.abs(X[:, 0]) + np.where(X[:, 1] > 0, X[:, 2], -X[:, 3]) + 0.1 * rng.normal(size=4000)
    yield "piecewise", X, y
    try:
        from arn_sklearn.demo import image_patch_task

        _, X_train, X_test, y_train, y_test = image_patch_task()
        idx = rng.choice(len(X_train), 8000, replace=False)
        X = np.vstack([X_train[idx], X_test[:4000]])
        yield "camera-patches", X, np.vstack([y_train[idx], y_test[:4000]])
    except ImportError:
        pass


def main():
    scores = {}
    for name, X, y in datasets():
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        for m in (8, 32):
            if 4 * m > len(X_train):
                continue
            for kind in ("euclidean", "cosine"):
                base = ARNRegressor(m, similarity=kind, alpha=1.0, random_state=0)
                base.fit(X_train, y_train)
                gap_softness = base.softness_ / AUTO_SOFTNESS_LOG_RATIO  # = 1 / gap
                row = []
                for c in RATIOS:
                    model = ARNRegressor(
                        m,
                        similarity=kind,
                        alpha=1.0,
                        random_state=0,
                        anchors=base.anchors_,
                        softness=c * gap_softness,
                    )
                    row.append(model.fit(X_train, y_train).score(X_test, y_test))
                scores[(name, m, kind)] = row
                best = RATIOS[int(np.argmax(row))]
                print(
                    f"{name:15s} m={m:<3d} {kind:9s} "
                    + " ".join(f"{s:7.4f}" for s in row)
                    + f"   best c={best}"
                )
    ranks = np.array([np.argsort(np.argsort(-np.array(r))) + 1 for r in scores.values()])
    print("\nc:         " + " ".join(f"{c:7.2f}" for c in RATIOS))
    print("mean rank: " + " ".join(f"{r:7.2f}" for r in ranks.mean(axis=0)))
    print(f"package default c = {AUTO_SOFTNESS_LOG_RATIO}")


def top_k_section(ks=(2, 4), m=32):
    from array_api_compat import array_namespace

    from arn_sklearn._anchors._init import AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS, auto_softness

    print(
        f"\ntop-k: R^2 dense | top-k at the dense K | top-k at auto K(top_k) "
        f"(outside mass {AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS})"
    )
    for name, X, y in datasets():
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        if 4 * m > len(X_train):
            continue
        base = ARNRegressor(m, alpha=1.0, random_state=0).fit(X_train, y_train)
        xp = array_namespace(X_train)
        for k in ks:
            K = auto_softness(
                X_train, base.anchors_, "euclidean", xp, np.random.RandomState(0), top_k=k
            )
            scores = [base.score(X_test, y_test)]
            for softness in (base.softness_, K):
                model = ARNRegressor(
                    m, alpha=1.0, anchors=base.anchors_, softness=softness, top_k=k
                ).fit(X_train, y_train)
                scores.append(model.score(X_test, y_test))
            print(
                f"{name:15s} m={m} k={k}: {scores[0]:.4f} | {scores[1]:.4f} "
                f"(K={base.softness_:.3g}) | {scores[2]:.4f} (K={K:.3g})"
            )


if __name__ == "__main__":
    if "--top-k" not in sys.argv:
        main()
    top_k_section()
