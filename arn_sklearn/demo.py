"""Where ARN wins: x3 super-resolution of a held-out photo and a smooth multi-output regression.

Run with ``python -m arn_sklearn.demo`` (or the ``arn-demo`` script); about two
minutes on two cores, ``--quick`` for a few seconds. Every number is measured in
the run.

1. Super-resolution (the paper's section 4.2): bicubic, A+, ARN (closed form) and
   ARN with learned anchors, trained on patches of the natural photographs that
   ship with scikit-image and tested on a held-out one (``astronaut``); prints
   PSNR and fit times and saves a PNG: a zoom on the region where ARN gains most
   over A+, and each method's error map against the ground truth.
2. A smooth multi-output regression, the forward kinematics of a planar robot
   arm (four joint angles -> the (x, y) positions of its four joints, with
   noise): ARN against Ridge, k-NN and an MLP, test RMSE and fit time.
"""

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_squared_error
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._estimators._arn import ARNRegressor
from .superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    APlusRegressor,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    imresize,
    load_skimage_images,
    luminance,
    modcrop,
    psnr,
)

# The solver of "ARN (learned anchors)". On super-resolution features lbfgs gains
# about as much as Adam (+0.03 vs +0.02 dB at 16 anchors, benchmarks/results/
# learned_anchors.md) but each iteration is a closed-form fit: Adam keeps the demo
# within its two minutes.
LEARNED_SOLVER = "adam"
LEARNED_PARAMS = {"learning_rate_init": 1e-3}

# Sizes of the two parts; "quick" is for the tests (a few seconds).
SETTINGS = {
    "full": {
        "patches_per_image": 5_000,
        "sr_anchors": 64,
        "learned_epochs": 4,
        "arm_train": 20_000,
        "arm_anchors": 128,
        "mlp_max_iter": 300,
        "image_crop": None,
    },
    "quick": {
        "patches_per_image": 200,
        "sr_anchors": 8,
        "learned_epochs": 1,
        "arm_train": 1_000,
        "arm_anchors": 32,
        "mlp_max_iter": 50,
        "image_crop": 192,
    },
}
TEST_IMAGE = "astronaut"
# The face of the astronaut (row, column, size), in HR pixels: the quick mode's
# image is cut to a margin past it.
CROP = (60, 160, 120)
# Side of the zoomed region of the picture, in HR pixels.
ZOOM = 48
ARM_LINKS = (1.0, 0.8, 0.65, 0.5)
ARM_NOISE = 0.01


class _Progress:
    """Prints timestamped progress lines."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, message):
        print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", flush=True)


def _timed(fit):
    tic = time.perf_counter()
    out = fit()
    return out, time.perf_counter() - tic


# --------------------------------------------------------------------------
# Part 1: super-resolution


def superres_models(n_anchors, epochs, X, random_state=0):
    """The three learned methods, as ``(label, make_regressor)`` in fit order.

    A+ and both ARNs share the same anchors (sign-invariant spherical
    clustering of the unit-norm features, A+'s K-SVD with one non-zero); ARN
    uses the settings of ``benchmarks/superres_table5.py`` (``absdot``
    similarity, A+'s ridge ``alpha=0.1``). The learned ARN starts from the
    closed form and trains anchors, regressors and softness together.
    """

    anchors = aplus_anchors(
        X / np.linalg.norm(X, axis=1, keepdims=True), n_anchors, random_state=random_state
    )
    common = {"similarity": "absdot", "alpha": 0.1, "random_state": random_state}
    return [
        (f"A+ ({n_anchors})", lambda: APlusRegressor(n_anchors, anchors=anchors)),
        (f"ARN ({n_anchors})", lambda: ARNRegressor(n_anchors, anchors=anchors, **common)),
        (
            f"learned ARN ({n_anchors}, {LEARNED_SOLVER})",
            lambda closed: ARNRegressor(
                n_anchors,
                anchors=closed.anchors_,
                softness=closed.softness_,
                solver=LEARNED_SOLVER,
                max_iter=epochs,
                n_iter_no_change=epochs,
                **LEARNED_PARAMS,
                **common,
            ),
        ),
    ]


def run_superres(settings, progress, scale=3, random_state=0):
    """Train bicubic / A+ / ARN / learned ARN and upscale the held-out image.

    Returns the table rows ``(method, PSNR dB, fit s)``, the ground truth and
    the upscaled images (label -> RGB array).
    """

    assert TEST_IMAGE in TEST_IMAGES  # held out: never a training image
    train = load_skimage_images(TRAIN_IMAGES)
    hr = load_skimage_images([TEST_IMAGE])[TEST_IMAGE]
    if settings["image_crop"]:  # quick mode: small corners of the training images
        size = settings["image_crop"]
        train = {name: image[:size, :size] for name, image in train.items()}
        # and the test image up to a margin past the crop of the figure.
        r0, c0, size = CROP
        hr = hr[: r0 + size + 30, : c0 + size + 30]
    hr = modcrop(hr, scale)
    lr = np.clip(imresize(hr, 1.0 / scale), 0, 1)
    progress(f"super-resolution x{scale}: training on {', '.join(train)}")
    (features, X, Y), seconds = _timed(
        lambda: build_training_set(
            train.values(),
            scale,
            max_patches_per_image=settings["patches_per_image"],
            random_state=random_state,
        )
    )
    progress(
        f"{X.shape[0]} training patches, {X.shape[1]} PCA features -> {Y.shape[1]} "
        f"residual pixels each ({seconds:.1f} s)"
    )
    hr_y = luminance(hr)
    outputs = {"bicubic": np.clip(imresize(lr, scale), 0, 1)}
    rows = [("bicubic", psnr(hr_y, luminance(outputs["bicubic"]), border=scale), 0.0)]
    closed = None
    for label, make in superres_models(
        settings["sr_anchors"], settings["learned_epochs"], X, random_state
    ):
        regressor = make(closed.regressor_) if label.startswith("learned") else make()
        model = SuperResolver(regressor, scale=scale)
        progress(f"fitting {label} ...")
        with warnings.catch_warnings():
            # The learned ARN stops after a fixed number of epochs on purpose.
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, seconds = _timed(lambda model=model: model.fit_patches(features, X, Y))
        if label.startswith("ARN"):
            closed = model
        outputs[label] = np.clip(model.upscale(lr), 0, 1)
        value = psnr(hr_y, luminance(outputs[label]), border=scale)
        extra = f", {model.regressor_.n_iter_} epochs" if label.startswith("learned") else ""
        progress(f"{label}: {value:.2f} dB, fit {seconds:.1f} s{extra}")
        rows.append((label, value, seconds))
    return rows, hr, outputs


def gain_region(truth, ours, theirs, size, border=0):
    """The ``size``-square window where ``ours`` beats ``theirs`` most.

    The gain is the squared error of ``theirs`` minus that of ``ours`` against
    ``truth`` (2-D, e.g. the Y channel), summed over the window; windows
    within ``border`` pixels of the edge are skipped (PSNR shaves them too).

    Returns
    -------
    box : tuple of int
        ``(row, column, size)`` of the window's top-left corner.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.demo import gain_region
    >>> truth = np.zeros((40, 40))
    >>> theirs = np.full((40, 40), 0.1)
    >>> ours = theirs.copy()
    >>> ours[20:30, 5:15] = 0.0  # ours is exact there only
    >>> gain_region(truth, ours, theirs, 10)
    (20, 5, 10)
    """
    gain = (theirs - truth) ** 2 - (ours - truth) ** 2
    # Sum over every size x size window (indexed by its top-left corner), from
    # the summed-area table.
    table = np.pad(gain.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    limit = (truth.shape[0] - size - border, truth.shape[1] - size - border)
    if min(limit) < border:
        raise ValueError(f"A {size}-pixel window does not fit in a {truth.shape} image.")
    valid = sums[border : limit[0] + 1, border : limit[1] + 1]
    r, c = np.unravel_index(np.argmax(valid), valid.shape)
    return int(r + border), int(c + border), int(size)


def save_comparison(path, hr, outputs, psnrs, box=CROP, reference=None, challenger=None):
    """Zoomed crops and error maps of each method against the ground truth, as a PNG.

    With matplotlib: the top row shows the crop ``box`` of each method and of
    the ground truth, the bottom row each method's absolute error on Y (one
    colour scale) and, with ``reference`` and ``challenger`` (two labels of
    ``outputs``), the map of where the challenger's squared error is below the
    reference's (blue) or above it (red). Without matplotlib the crops are
    tiled with scikit-image, method order as in the table.
    """
    r0, c0, size = box
    window = (slice(r0, r0 + size), slice(c0, c0 + size))
    crops = [(label, out[window]) for label, out in outputs.items()]
    crops.append(("ground truth", hr[window]))
    try:
        import matplotlib
    except ImportError:
        import skimage.io

        gap = np.ones((size, 4, 3))
        strip = np.concatenate(sum(([crop, gap] for _, crop in crops), [])[:-1], axis=1)
        skimage.io.imsave(path, (255 * strip).round().astype(np.uint8), check_contrast=False)
        return path
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = luminance(hr[window])
    errors = {label: np.abs(luminance(out[window]) - truth) for label, out in outputs.items()}
    vmax = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
    n = len(crops)
    fig, axes = plt.subplots(2, n, figsize=(2.5 * n, 5.6))
    for ax, (label, crop) in zip(axes[0], crops, strict=True):
        ax.imshow(crop, interpolation="nearest")
        if label in errors:
            local = 10 * np.log10(1.0 / max(float(np.mean(errors[label] ** 2)), 1e-20))
            title = f"{label}\nzoom {local:.2f} dB"
            if label in psnrs:
                title += f" (image {psnrs[label]:.2f})"
        else:
            title = f"{label}\nrows {r0}-{r0 + size}, cols {c0}-{c0 + size}"
        ax.set_title(title, fontsize=8)
    for ax, (label, error) in zip(axes[1], errors.items(), strict=False):
        image = ax.imshow(error, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"|error| of {label}", fontsize=8)
    fig.colorbar(
        image,
        ax=list(axes[1, : len(errors)]),
        orientation="horizontal",
        fraction=0.05,
        pad=0.04,
        label="absolute error on Y (ground truth in [0, 1])",
    )
    last = axes[1, -1]
    if reference in errors and challenger in errors:
        diff = errors[reference] ** 2 - errors[challenger] ** 2
        bound = float(np.percentile(np.abs(diff), 99.5)) or 1.0
        last.imshow(diff, cmap="RdBu", vmin=-bound, vmax=bound, interpolation="nearest")
        last.set_title(f"blue: {challenger}\nbetter than {reference}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(
        f"x3 super-resolution of '{TEST_IMAGE}' (held out): the {size}x{size} region where "
        f"{challenger or 'ARN'} gains most over {reference or 'A+'} (found automatically); "
        "PSNR on Y",
        fontsize=9,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# Part 2: smooth multi-output regression


def make_arm(n_samples, random_state=0, noise=ARM_NOISE):
    """Forward kinematics of a planar arm with four revolute joints.

    Joint angles uniform in ``[-pi/2, pi/2]``, each relative to the previous
    link; link lengths ``ARM_LINKS``; targets: the ``(x, y)`` of each joint
    (8 smooth outputs), plus Gaussian noise of standard deviation ``noise``,
    so the best achievable test RMSE is ``noise``.

    Parameters
    ----------
    n_samples : int
    random_state : int or None, default=0
        Seed of ``numpy.random.default_rng``.
    noise : float, default=0.01

    Returns
    -------
    X : ndarray of shape (n_samples, 4)
        Joint angles in radians.
    Y : ndarray of shape (n_samples, 8)
        ``x`` of joints 1-4, then ``y`` of joints 1-4.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.demo import ARM_LINKS, make_arm
    >>> X, Y = make_arm(3, noise=0.0)
    >>> X.shape, Y.shape
    ((3, 4), (3, 8))
    >>> bool(np.allclose(np.hypot(Y[:, 0], Y[:, 4]), ARM_LINKS[0]))  # the first link
    True
    """
    rng = np.random.default_rng(random_state)
    q = rng.uniform(-np.pi / 2, np.pi / 2, size=(n_samples, len(ARM_LINKS)))
    angle = np.cumsum(q, axis=1)
    x = np.cumsum(np.asarray(ARM_LINKS) * np.cos(angle), axis=1)
    y = np.cumsum(np.asarray(ARM_LINKS) * np.sin(angle), axis=1)
    Y = np.hstack([x, y])
    return q, Y + noise * rng.standard_normal(Y.shape)


def regression_models(n_anchors, random_state=0, mlp_max_iter=300):
    """The peers and ARN, each behind a StandardScaler."""
    mlp = MLPRegressor(
        hidden_layer_sizes=(100,),
        max_iter=mlp_max_iter,
        early_stopping=True,
        random_state=random_state,
    )
    models = {
        "Ridge (CV alpha)": RidgeCV(alphas=np.logspace(-3, 3, 7)),
        "k-NN (k=10)": KNeighborsRegressor(10),
        "MLP (100 hidden)": mlp,
        f"ARN ({n_anchors} anchors)": ARNRegressor(
            n_anchors, alpha=1e-3, random_state=random_state
        ),
    }
    return {label: make_pipeline(StandardScaler(), est) for label, est in models.items()}


def run_regression(settings, progress, random_state=0, n_test=5_000):
    """Fit every model on the arm task; rows ``(model, test RMSE, fit s)``."""
    n_train = settings["arm_train"]
    X, Y = make_arm(n_train + n_test, random_state)
    X_train, X_test, Y_train, Y_test = X[:n_train], X[n_train:], Y[:n_train], Y[n_train:]
    progress(
        f"robot arm: {n_train} training / {n_test} test samples, "
        f"{X.shape[1]} joint angles -> {Y.shape[1]} coordinates (noise {ARM_NOISE})"
    )
    rows = []
    for label, model in regression_models(
        settings["arm_anchors"], random_state, settings["mlp_max_iter"]
    ).items():
        _, seconds = _timed(lambda model=model: model.fit(X_train, Y_train))
        rmse = mean_squared_error(Y_test, model.predict(X_test)) ** 0.5
        progress(f"{label}: test RMSE {rmse:.4f}, fit {seconds:.2f} s")
        rows.append((label, rmse, seconds))
    return rows


def format_table(header, rows):
    """A Markdown table (also readable as plain text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    """Run the demo: the command ``python -m arn_sklearn.demo`` (``arn-demo``).

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments (``sys.argv[1:]`` when None): ``--quick`` (tiny
        sizes, a few seconds), ``--output DIR`` (folder of
        ``arn_superres_demo.png``, default ``.``), ``--seed N`` and
        ``--skip-superres``.

    Examples
    --------
    >>> from arn_sklearn.demo import main
    >>> main(["--quick", "--output", "/tmp"])  # doctest: +SKIP
    [   0.5 s] super-resolution x3: training on coins, moon, rocket, ...
    """
    parser = argparse.ArgumentParser(
        prog="python -m arn_sklearn.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a few seconds)")
    parser.add_argument(
        "--output", default=".", help="folder for arn_superres_demo.png (default: .)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--skip-superres", action="store_true", help="only the regression part")
    args = parser.parse_args(argv)
    settings = SETTINGS["quick" if args.quick else "full"]
    progress = _Progress()

    if not args.skip_superres:
        try:
            sr_rows, hr, outputs = run_superres(settings, progress, random_state=args.seed)
        except ImportError as exc:
            print(f"{exc}\nSkipping super-resolution.")
        else:
            os.makedirs(args.output, exist_ok=True)
            reference, challenger = sr_rows[1][0], sr_rows[2][0]  # A+ and ARN
            box = gain_region(
                luminance(hr),
                luminance(outputs[challenger]),
                luminance(outputs[reference]),
                ZOOM,
                border=3,
            )
            path = save_comparison(
                os.path.join(args.output, "arn_superres_demo.png"),
                hr,
                outputs,
                {label: value for label, value, _ in sr_rows},
                box,
                reference=reference,
                challenger=challenger,
            )
            print(f"\nx3 super-resolution of '{TEST_IMAGE}' (held out), PSNR on Y:\n")
            print(
                format_table(
                    ["method", "PSNR (dB)", "fit (s)"],
                    [(label, f"{v:.2f}", f"{s:.1f}") for label, v, s in sr_rows],
                )
            )
            print(f"\nsaved {os.path.abspath(path)}\n")

    rows = run_regression(settings, progress, random_state=args.seed)
    mlp_seconds = next(s for label, _, s in rows if label.startswith("MLP"))
    print("\nrobot-arm kinematics (4 angles -> 8 coordinates), noise floor RMSE 0.01:\n")
    print(
        format_table(
            ["model", "test RMSE", "fit (s)", "fit / MLP fit"],
            [(label, f"{r:.4f}", f"{s:.2f}", f"{s / mlp_seconds:.2f}") for label, r, s in rows],
        )
    )
    progress("done")


if __name__ == "__main__":
    main()
