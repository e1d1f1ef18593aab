"""The paper's Table 5 and Figure 5 (section 4.2) on held-out natural images.

Trains A+ and ARN (closed form) on the same A+ features and training patches
and reports mean PSNR (Y channel, ``scale`` pixels shaved) on held-out
images, PSNR against the number of anchors (Figure 5), and a side-by-side
crop. By default the images are the natural photographs that ship with
scikit-image (``TRAIN_IMAGES`` / ``TEST_IMAGES`` of ``arn_sklearn.superres``);
``--train-dir`` / ``--test-dir`` take folders instead (e.g. the 91 images of
Yang et al. and Set5 / Set14 / B100).

ARN settings (chosen with a sweep on the training setup, see the README):
similarity ``"absdot"`` on unit-norm features, the same anchors as A+
(``aplus_anchors``), ``softness="auto"``, ``alpha=0.1`` (A+'s lambda).
With ``--learned M [M ...]`` (among ``--anchors``), three columns per M start
from that closed-form ARN's anchors: ``solver="lbfgs"`` with
``early_stopping=True`` (variable projection, as ``arn-superres --solver lbfgs``
configures it), Adam for ``--epochs`` epochs (batch 1000) and a 2-layer Deep
ARN, keeping the best iterate; their iterations and wall time are printed.
``--mlp`` adds the peer of issue 13, ``MLPRegressor(hidden_layer_sizes=(256,
256), early_stopping=True)``, on the same patches, and lists every ARN
column's PSNR margin over it and its fit time as a fraction of the MLP's.

    python benchmarks/superres_table5.py --out-dir benchmarks/results

takes about three minutes on a 2-core machine (ARN with 256 anchors is
most of it: its normal equations are ``256 * 25`` square). With a GPU,
``--device cuda --anchors 8 16 32 64 128 256 512 1024 --aplus-only-anchors``
runs ARN up to 1024 anchors too.
"""

import argparse
import os
import time

import numpy as np

from arn_sklearn import ARNRegressor, DeepARNRegressor
from arn_sklearn.superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    APlusRegressor,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    degrade,
    imresize,
    load_folder,
    load_skimage_images,
    luminance,
    modcrop,
    psnr,
)


def evaluate(model, tests, scale):
    """Per-image PSNR of ``model`` (bicubic when None) on HR test images."""
    out = {}
    for name, image in tests.items():
        hr = modcrop(luminance(image), scale)
        lr, mid = degrade(hr, scale)
        est = mid if model is None else model.upscale_y(lr)
        out[name] = psnr(hr, np.clip(est, 0, 1), border=scale)
    return out


def fit_pair(n_anchors, features, X, Y, scale, seed, device="auto"):
    """A+ and ARN (closed form) on the same anchors; returns models and fit times."""
    tic = time.perf_counter()
    anchors = aplus_anchors(
        X / np.linalg.norm(X, axis=1, keepdims=True), n_anchors, random_state=seed
    )
    t_anchors = time.perf_counter() - tic
    tic = time.perf_counter()
    aplus = SuperResolver(APlusRegressor(n_anchors, anchors=anchors), scale=scale)
    aplus.fit_patches(features, X, Y)
    t_aplus = time.perf_counter() - tic + t_anchors
    tic = time.perf_counter()
    arn = SuperResolver(
        ARNRegressor(
            n_anchors,
            similarity="absdot",
            alpha=0.1,
            anchors=anchors,
            device=device,
            random_state=seed,
        ),
        scale=scale,
    )
    arn.fit_patches(features, X, Y)
    t_arn = time.perf_counter() - tic + t_anchors
    return aplus, arn, t_aplus, t_arn


def fit_learned(args, m, features, X, Y, closed_form, tests):
    """ARN with learned anchors (L-BFGS with early stopping, Adam) and a 2-layer
    Deep ARN, all from the closed-form model's anchors, as the CLI configures ARN."""
    common = dict(
        similarity="absdot",
        alpha=0.1,
        anchors=closed_form.regressor_.anchors_,
        device=args.device,
        random_state=args.seed,
    )
    adam = dict(
        softness=closed_form.regressor_.softness_,
        solver="adam",
        learning_rate_init=args.learning_rate,
        max_iter=args.epochs,
        n_iter_no_change=args.epochs,
    )
    out = {}
    for label, regressor in (
        (
            f"ARN lbfgs, early stopping ({m})",
            ARNRegressor(m, solver="lbfgs", early_stopping=True, **common),
        ),
        (f"ARN adam, {args.epochs} epochs ({m})", ARNRegressor(m, **adam, **common)),
        (
            f"Deep ARN, 2 layers, {args.epochs} epochs ({m})",
            DeepARNRegressor(2, m, **adam, **common),
        ),
    ):
        tic = time.perf_counter()
        model = SuperResolver(regressor, scale=args.scale).fit_patches(features, X, Y)
        seconds = time.perf_counter() - tic
        values = evaluate(model, tests, args.scale)
        out[label] = (values, model.regressor_.n_iter_, seconds)
        print(
            f"{label}: {np.mean(list(values.values())):.3f} dB, "
            f"{model.regressor_.n_iter_} iterations, {seconds:.0f} s",
            flush=True,
        )
    return out


def fit_mlp(args, features, X, Y, tests):
    """The peer of issue 13: MLPRegressor(hidden_layer_sizes=(256, 256), early_stopping=True)."""
    from sklearn.neural_network import MLPRegressor

    tic = time.perf_counter()
    regressor = MLPRegressor(
        hidden_layer_sizes=(256, 256), early_stopping=True, random_state=args.seed
    )
    model = SuperResolver(regressor, scale=args.scale).fit_patches(features, X, Y)
    seconds = time.perf_counter() - tic
    values = evaluate(model, tests, args.scale)
    print(
        f"MLP (256, 256): {np.mean(list(values.values())):.3f} dB, "
        f"{model.regressor_.n_iter_} epochs, {seconds:.0f} s",
        flush=True,
    )
    return values, seconds


def save_figure5(path, curves, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, (ms, values), style in (
        ("A+", curves["A+"], "s--"),
        ("ARN (closed form)", curves["ARN"], "o-"),
    ):
        ax.plot(ms, values, style, label=label)
    ax.axhline(curves["bicubic"], color="grey", lw=1, ls=":", label="bicubic")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of anchors / regressors")
    ax.set_ylabel(f"mean PSNR (dB), x{scale}")
    ax.set_title("Figure 5 on held-out images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_crop(path, name, image, models, scale, box):
    """Bicubic / A+ / ARN / ground truth crops; titles give the whole image's Y PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hr = modcrop(image, scale)
    lr = np.clip(imresize(hr, 1.0 / scale), 0, 1)
    hr_y = luminance(hr)
    panels = [("bicubic", np.clip(imresize(lr, scale), 0, 1))]
    panels += [(label, model.upscale(lr)) for label, model in models]
    r0, c0, size = box
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3 * (len(panels) + 1), 3.3))
    for ax, (label, out) in zip(axes, panels, strict=False):
        value = psnr(hr_y, luminance(out), border=scale)
        ax.imshow(
            out[r0 : r0 + size, c0 : c0 + size],
            interpolation="nearest",
            cmap=None if out.ndim == 3 else "gray",
        )
        ax.set_title(f"{label} / {value:.2f} dB", fontsize=9)
    axes[-1].imshow(
        hr[r0 : r0 + size, c0 : c0 + size],
        interpolation="nearest",
        cmap=None if hr.ndim == 3 else "gray",
    )
    axes[-1].set_title(f"ground truth ({name})", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"x{scale}, PSNR of the whole image (Y)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument(
        "--max-patches", type=int, default=20_000, help="random training patches per image"
    )
    parser.add_argument(
        "--anchors",
        type=int,
        nargs="+",
        default=[8, 16, 32, 64, 128, 256],
        help="anchor counts for Figure 5 (both methods)",
    )
    parser.add_argument(
        "--aplus-only-anchors",
        type=int,
        nargs="*",
        default=[512, 1024],
        help="further anchor counts for A+ alone (ARN's system grows as m^2)",
    )
    parser.add_argument(
        "--learned",
        type=int,
        nargs="*",
        default=[],
        help="anchor counts (among --anchors) for the learned-anchor and Deep ARN columns",
    )
    parser.add_argument(
        "--mlp", action="store_true", help="also fit the MLP peer (256, 256), early stopping"
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs of --learned")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, --learned")
    parser.add_argument("--train-dir")
    parser.add_argument("--test-dir")
    parser.add_argument("--out-dir", default="superres_results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where ARN's accumulation and solve run (cuda: 512 and 1024 anchors in seconds)",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    scale = args.scale

    train = load_folder(args.train_dir) if args.train_dir else load_skimage_images(TRAIN_IMAGES)
    tests = load_folder(args.test_dir) if args.test_dir else load_skimage_images(TEST_IMAGES)
    tic = time.perf_counter()
    features, X, Y = build_training_set(
        train.values(), scale, max_patches_per_image=args.max_patches, random_state=args.seed
    )
    print(f"train: {', '.join(train)}\ntest:  {', '.join(tests)}")
    print(
        f"{X.shape[0]} training patches, {features.n_components_} PCA dims "
        f"(of {features.n_features_in_}), {Y.shape[1]} targets, "
        f"features in {time.perf_counter() - tic:.1f} s\n"
    )

    bicubic = evaluate(None, tests, scale)
    results = {}  # m -> {"A+": per-image, "ARN": per-image, times}
    models = {}
    for m in args.anchors:
        aplus, arn, t_aplus, t_arn = fit_pair(m, features, X, Y, scale, args.seed, args.device)
        results[m] = {
            "A+": evaluate(aplus, tests, scale),
            "ARN": evaluate(arn, tests, scale),
            "t_A+": t_aplus,
            "t_ARN": t_arn,
            "K": arn.regressor_.softness_,
        }
        models[m] = (aplus, arn)
        r = results[m]
        print(
            f"m={m:5d}  A+ {np.mean(list(r['A+'].values())):.3f} dB ({t_aplus:5.1f} s)   "
            f"ARN {np.mean(list(r['ARN'].values())):.3f} dB ({t_arn:5.1f} s, "
            f"K={r['K']:.2f})",
            flush=True,
        )
    aplus_only = {}
    for m in args.aplus_only_anchors:
        anchors = aplus_anchors(X, m, random_state=args.seed)
        model = SuperResolver(APlusRegressor(m, anchors=anchors), scale=scale)
        aplus_only[m] = evaluate(model.fit_patches(features, X, Y), tests, scale)
        print(f"m={m:5d}  A+ {np.mean(list(aplus_only[m].values())):.3f} dB", flush=True)

    learned = {}
    for m in args.learned:
        learned.update(fit_learned(args, m, features, X, Y, models[m][1], tests))
    mlp = fit_mlp(args, features, X, Y, tests) if args.mlp else None

    # Table 5: at the largest anchor count both methods ran with.
    m = max(args.anchors)
    r = results[m]
    cols = [("bicubic", bicubic), (f"A+ ({m})", r["A+"]), (f"ARN closed form ({m})", r["ARN"])]
    for ml in args.learned:
        if ml != m:
            cols += [
                (f"A+ ({ml})", results[ml]["A+"]),
                (f"ARN closed form ({ml})", results[ml]["ARN"]),
            ]
    cols += [(label, values) for label, (values, _, _) in learned.items()]
    if mlp is not None:
        cols.append(("MLP (256, 256)", mlp[0]))
    lines = [
        f"Mean PSNR (dB), Y channel, x{scale}, {scale}-pixel border shaved",
        "",
        "| image | " + " | ".join(c for c, _ in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name in tests:
        lines.append(f"| {name} | " + " | ".join(f"{v[name]:.2f}" for _, v in cols) + " |")
    means = [np.mean(list(v.values())) for _, v in cols]
    lines.append("| **mean** | " + " | ".join(f"**{v:.2f}**" for v in means) + " |")
    for label, (_, epochs, seconds) in learned.items():
        lines.append(f"\n{label}: {epochs} iterations, {seconds:.0f} s")
    if mlp is not None:
        lines += ["", "Against the MLP peer (same run, same patches):", ""]
        arn = [
            (f"ARN closed form ({ms})", results[ms]["ARN"], results[ms]["t_ARN"])
            for ms in args.anchors
        ]
        arn += [(label, values, seconds) for label, (values, _, seconds) in learned.items()]
        mlp_mean = np.mean(list(mlp[0].values()))
        for label, values, seconds in arn:
            lines.append(
                f"- {label}: {np.mean(list(values.values())) - mlp_mean:+.3f} dB over the MLP "
                f"in {seconds / mlp[1]:.2f} of its fit time ({seconds:.0f} s vs {mlp[1]:.0f} s)"
            )
    table = "\n".join(lines)
    print("\n" + table)
    print(
        f"\nmargins: A+ - bicubic = {means[1] - means[0]:+.2f} dB, ARN - bicubic = "
        f"{means[2] - means[0]:+.2f} dB, ARN - A+ = {means[2] - means[1]:+.3f} dB"
    )
    wins = [
        ms
        for ms in args.anchors
        if np.mean(list(results[ms]["ARN"].values())) > np.mean(list(results[ms]["A+"].values()))
    ]
    print(f"ARN > A+ at {len(wins)} of {len(args.anchors)} anchor counts: {wins}")

    curves = {
        "bicubic": np.mean(list(bicubic.values())),
        "A+": (
            list(args.anchors) + list(args.aplus_only_anchors),
            [np.mean(list(results[ms]["A+"].values())) for ms in args.anchors]
            + [np.mean(list(aplus_only[ms].values())) for ms in args.aplus_only_anchors],
        ),
        "ARN": (
            list(args.anchors),
            [np.mean(list(results[ms]["ARN"].values())) for ms in args.anchors],
        ),
    }
    fig_path = os.path.join(args.out_dir, "superres_figure5.png")
    save_figure5(fig_path, curves, scale)
    colour = [n for n, im in tests.items() if im.ndim == 3] or list(tests)
    name = colour[0]
    image = tests[name]
    size = min(120, min(image.shape[:2]) // 2)
    box = (image.shape[0] // 2 - size // 2, image.shape[1] // 2 - size // 2, size)
    if name == "astronaut":
        box = (60, 160, 120)  # the face
    crop_path = os.path.join(args.out_dir, "superres_crop.png")
    save_crop(
        crop_path,
        name,
        image,
        [(f"A+ ({m})", models[m][0]), (f"ARN ({m})", models[m][1])],
        scale,
        box,
    )
    with open(os.path.join(args.out_dir, "superres_table5.md"), "w") as fh:
        fh.write(table + "\n")
    print(f"\nwrote {fig_path}, {crop_path} and superres_table5.md in {args.out_dir}")


if __name__ == "__main__":
    main()
