"""Super-resolution with many anchors on two cores: top-k ARN against the dense model.

Issue-12 target: ARN with 1024 anchors and ``top_k`` trains on the CLI's
default training set (the scikit-image training photographs, 20,000 patches
each, x3) in under two minutes on the 2-core CPU, with a held-out PSNR at
least that of the dense model with 256 anchors. Every model uses the CLI's
settings (``absdot`` on unit-norm features, A+'s spherical anchors, alpha=0.1);
the fit time includes the anchors.

    python benchmarks/superres_topk.py            # 256 dense; 1024 with top_k 4 and 8
    python benchmarks/superres_topk.py --dense 64 --sparse 256 --top-k 4 --max-patches 2000
"""

import argparse
import time

import numpy as np
from superres_table5 import evaluate

from arn_sklearn import ARNRegressor
from arn_sklearn.superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    load_skimage_images,
)


def fit(n_anchors, top_k, features, X, Y, scale, seed):
    tic = time.perf_counter()
    anchors = aplus_anchors(
        X / np.linalg.norm(X, axis=1, keepdims=True), n_anchors, random_state=seed
    )
    t_anchors = time.perf_counter() - tic
    model = SuperResolver(
        ARNRegressor(
            n_anchors,
            similarity="absdot",
            alpha=0.1,
            anchors=anchors,
            top_k=top_k,
            random_state=seed,
        ),
        scale=scale,
    )
    model.fit_patches(features, X, Y)
    return model, t_anchors, time.perf_counter() - tic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dense", type=int, default=256, help="anchors of the dense model (0: none)"
    )
    parser.add_argument("--sparse", type=int, default=1024, help="anchors of the top-k models")
    parser.add_argument("--top-k", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--max-patches", type=int, default=20_000, help="per training image")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train = load_skimage_images(TRAIN_IMAGES)
    tests = load_skimage_images(TEST_IMAGES)
    tic = time.perf_counter()
    features, X, Y = build_training_set(
        train.values(), args.scale, max_patches_per_image=args.max_patches, random_state=args.seed
    )
    print(
        f"{X.shape[0]} training patches, {X.shape[1]} PCA dims, {Y.shape[1]} outputs "
        f"(features in {time.perf_counter() - tic:.1f} s); test: {', '.join(tests)}"
    )
    bicubic = np.mean(list(evaluate(None, tests, args.scale).values()))
    rows = [("bicubic", "-", bicubic, 0.0, 0.0)]
    runs = [(args.dense, None)] if args.dense else []
    runs += [(args.sparse, k) for k in args.top_k]
    for n_anchors, top_k in runs:
        model, t_anchors, t_fit = fit(n_anchors, top_k, features, X, Y, args.scale, args.seed)
        score = np.mean(list(evaluate(model, tests, args.scale).values()))
        rows.append((f"ARN ({n_anchors})", top_k or "dense", score, t_anchors, t_fit))
        print(f"  {rows[-1][0]} top_k={rows[-1][1]}: {score:.3f} dB, fit {t_fit:.1f} s")

    print("\n| model | top_k | mean PSNR (dB) | anchors (s) | fit incl. anchors (s) |")
    print("|---|---|---|---|---|")
    for name, k, score, t_anchors, t_fit in rows:
        print(f"| {name} | {k} | {score:.3f} | {t_anchors:.1f} | {t_fit:.1f} |")


if __name__ == "__main__":
    main()
