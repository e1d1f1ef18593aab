"""``arn-superres``: train, upscale and benchmark from the command line.

Examples::

    arn-superres train --output arn_x3.skops             # scikit-image training images
    arn-superres train --images my_photos/ --method aplus --anchors 1024 --output aplus.skops
    arn-superres upscale arn_x3.skops small.png big.png
    arn-superres benchmark --model arn_x3.skops --test-dir Set14/

Models are saved in the skops format and loaded trusting only arn_sklearn's
own classes (:mod:`arn_sklearn._persistence`); pickle/joblib files are refused
unless ``--trust-pickle`` is given. Errors a user can fix (a missing file, an
unreadable image, an untrusted model) print one line and exit with status 2.
"""

import argparse
import sys
import time

import numpy as np

from .._estimators._arn import ARNRegressor
from .._persistence import load_model, save_model
from ._aplus import APlusRegressor, aplus_anchors
from ._color import as_float_image, luminance, psnr
from ._data import TEST_IMAGES, TRAIN_IMAGES, load_folder, load_skimage_images, read_image
from ._features import build_training_set, degrade, modcrop
from ._model import SuperResolver

# Above this many anchors, the CLI's closed form keeps each patch's top 4 by default.
AUTO_TOP_K_ANCHORS = 256


def make_regressor(
    method,
    n_anchors,
    similarity,
    alpha,
    random_state,
    X=None,
    verbose=0,
    solver="closed_form",
    top_k=None,
):
    """The regressor the CLI trains: A+, or ARN on A+'s anchors.

    ARN's anchors start like A+'s (:func:`aplus_anchors` on the training
    features ``X``) so that both models partition the feature space alike; the
    features are normalised by :class:`SuperResolver`. Unit-norm dense patch
    features suit ``similarity="absdot"`` with these spherical (k-lines)
    anchors: a patch and its negative share a regressor, and KMeans anchors
    with the euclidean similarity were measured below them. ``solver`` is
    ARN's; ``"lbfgs"`` learns the anchors with ``early_stopping=True``: on 8
    training images the training objective keeps falling while the held-out
    PSNR peaks after a few iterations. ``top_k`` keeps each patch's ``top_k``
    largest assignments (closed form only): the fit of 1024 anchors then
    accumulates block-sparse statistics instead of a 25,600-square Gram. When
    ``top_k`` is None, the closed form keeps every assignment up to
    ``AUTO_TOP_K_ANCHORS`` anchors and ``top_k=4`` above: a dense 1024-anchor
    Gram is 5 GiB and its accumulation takes about an hour on two cores, where
    top-4 fits in about a minute (``benchmarks/superres_topk.py``).
    """

    if method == "aplus":
        return APlusRegressor(n_anchors, alpha=alpha, random_state=random_state)

    learned = {}
    if top_k is None and solver == "closed_form" and n_anchors > AUTO_TOP_K_ANCHORS:
        top_k = 4
    if top_k is not None:
        if solver != "closed_form":
            raise ValueError(f"--top-k needs --solver closed_form, not {solver!r}.")
        learned["top_k"] = top_k
    if solver == "lbfgs":
        learned = {"solver": "lbfgs", "early_stopping": True}
    elif solver != "closed_form":
        learned = {"solver": solver}
    return ARNRegressor(
        n_anchors,
        similarity=similarity,
        alpha=alpha,
        anchors=aplus_anchors(X, n_anchors, random_state=random_state),
        random_state=random_state,
        verbose=verbose,
        **learned,
    )


def train_model(images, args, verbose=1):
    """Extract the training set of ``images`` and fit the model ``args`` describe."""
    features, X, Y = build_training_set(
        images,
        args.scale,
        max_patches_per_image=args.max_patches,
        random_state=args.seed,
        verbose=verbose,
    )
    regressor = make_regressor(
        args.method,
        args.anchors,
        args.similarity,
        args.alpha,
        args.seed,
        X,
        verbose=verbose,
        solver=getattr(args, "solver", "closed_form"),
        top_k=getattr(args, "top_k", None),
    )
    model = SuperResolver(
        regressor,
        scale=args.scale,
        patch_weights=getattr(args, "patch_weights", "uniform"),
        max_patches_per_image=args.max_patches,
        random_state=args.seed,
        verbose=verbose,
    )
    return model.fit_patches(features, X, Y)


def _load_training(args):
    if args.images:
        images = load_folder(args.images)
    else:
        images = load_skimage_images(TRAIN_IMAGES)
    print(f"Training on {len(images)} images: {', '.join(images)}")
    return list(images.values())


def _train(args):
    images = _load_training(args)
    tic = time.perf_counter()
    model = train_model(images, args)
    print(f"Trained in {time.perf_counter() - tic:.1f} s; saving {args.output}")
    save_model(model, args.output)
    return 0


def _load_resolver(args):
    model = load_model(args.model, trust_pickle=args.trust_pickle)
    if not isinstance(model, SuperResolver):
        raise ValueError(
            f"{args.model} holds a {type(model).__name__}, not a SuperResolver; "
            "make one with `arn-superres train`."
        )
    return model


def _upscale(args):
    import skimage.io

    model = _load_resolver(args)
    image = as_float_image(read_image(args.input))
    out = model.upscale(image)
    skimage.io.imsave(args.output, np.round(out * 255).astype(np.uint8), check_contrast=False)
    print(
        f"{args.input} {image.shape[1]}x{image.shape[0]} -> {args.output} "
        f"{out.shape[1]}x{out.shape[0]} (x{model.scale})"
    )
    return 0


def evaluate(model, images, scale):
    """PSNR (Y, ``scale`` pixels shaved) of bicubic and of ``model`` per image.

    Each HR image is cropped to a multiple of ``scale``, shrunk bicubically
    and super-resolved; the model's output is clipped to [0, 1].

    Returns
    -------
    rows : list of (name, bicubic_psnr, model_psnr)
    """
    rows = []
    for name, image in images.items():
        hr = modcrop(luminance(image), scale)
        lr, mid = degrade(hr, scale)
        est = np.clip(model.upscale_y(lr), 0, 1) if model is not None else None
        rows.append(
            (
                name,
                psnr(hr, np.clip(mid, 0, 1), border=scale),
                psnr(hr, est, border=scale) if est is not None else float("nan"),
            )
        )
    return rows


def _benchmark(args):
    if args.model:
        model = _load_resolver(args)
    else:
        print("No --model given: training one first (see `arn-superres train --help`).")
        model = train_model(_load_training(args), args)
    tests = load_folder(args.test_dir) if args.test_dir else load_skimage_images(TEST_IMAGES)
    rows = evaluate(model, tests, model.scale)
    print(f"\nPSNR (dB) on Y, x{model.scale}, {model.scale}-pixel border shaved")
    print(f"{'image':<24}{'bicubic':>10}{'model':>10}")
    for name, bic, est in rows:
        print(f"{name:<24}{bic:>10.2f}{est:>10.2f}")
    bic, est = np.mean([r[1] for r in rows]), np.mean([r[2] for r in rows])
    print(f"{'mean':<24}{bic:>10.2f}{est:>10.2f}   (+{est - bic:.2f} dB)")
    return 0


def _positive_int(text):
    """argparse type: an int of at least 1 (argparse names the flag in the error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text):
    """argparse type: a float of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _skops_path(text):
    """argparse type: a model path ending in .skops, checked before any training."""
    if not text.lower().endswith(".skops"):
        raise argparse.ArgumentTypeError(
            f"models are saved in the skops format: {text!r} should end in '.skops'"
        )
    return text


def build_parser():
    parser = argparse.ArgumentParser(
        prog="arn-superres",
        description="Single-image super-resolution with ARN or A+ on the A+ patch pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def training_options(p):
        p.add_argument(
            "--images",
            help="folder of HR training images (default: natural images shipped with scikit-image)",
        )
        p.add_argument("--scale", type=int, default=3, choices=(2, 3, 4))
        p.add_argument("--method", choices=("arn", "aplus"), default="arn")
        p.add_argument("--anchors", type=_positive_int, default=64, help="number of anchors")
        p.add_argument(
            "--similarity",
            default="absdot",
            choices=("absdot", "cosine", "euclidean", "dot"),
            help="ARN only",
        )
        p.add_argument("--alpha", type=_non_negative_float, default=0.1, help="ridge penalty")
        p.add_argument(
            "--solver",
            default="closed_form",
            choices=("closed_form", "lbfgs", "adam"),
            help="ARN only: lbfgs learns the anchors (with early stopping)",
        )
        p.add_argument(
            "--top-k",
            type=_positive_int,
            default=None,
            help="ARN closed form only: keep each patch's top_k anchors (fast with many "
            f"anchors; default: all up to {AUTO_TOP_K_ANCHORS} anchors, 4 above)",
        )
        p.add_argument(
            "--patch-weights",
            default="uniform",
            choices=("uniform", "contrast"),
            help="ARN only: weigh training patches by their feature norm (contrast), "
            "as their error in the image is",
        )
        p.add_argument(
            "--max-patches",
            type=_positive_int,
            default=20000,
            help="random training patches per image",
        )
        p.add_argument("--seed", type=int, default=0)

    def trust_pickle_option(p):
        p.add_argument(
            "--trust-pickle",
            action="store_true",
            help="also load pickle/joblib model files; they run any code they contain, "
            "so only for files you created yourself",
        )

    p = sub.add_parser("train", help="train a model and save it (skops format)")
    training_options(p)
    p.add_argument("--output", "-o", type=_skops_path, default="model.skops")
    p.set_defaults(func=_train)

    p = sub.add_parser("upscale", help="super-resolve an image file")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("output")
    trust_pickle_option(p)
    p.set_defaults(func=_upscale)

    p = sub.add_parser("benchmark", help="PSNR of bicubic and a model on test images")
    training_options(p)
    p.add_argument("--model", help="a saved model (else one is trained first)")
    trust_pickle_option(p)
    p.add_argument(
        "--test-dir",
        help="folder of HR test images, e.g. Set5, Set14 or B100 "
        "(default: held-out scikit-image images)",
    )
    p.set_defaults(func=_benchmark)
    return parser


def main(argv=None):
    """Entry point of the ``arn-superres`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, ImportError) as exc:
        # Bad input or a missing extra: one line, argparse's exit status for usage errors.
        message = " ".join(str(exc).split())
        print(f"arn-superres: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
