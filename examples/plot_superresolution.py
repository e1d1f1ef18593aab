"""
=========================================================
Super-resolution: ARN against A+ (the paper's Figure 5)
=========================================================

The A+ patch pipeline with two regressors on the same features and the same
anchors: A+ (one ridge regressor per anchor, hard assignment) and ARN (soft
assignments, all regressors solved jointly in closed form). Trained at x3 on
patches of natural images that ship with scikit-image, tested on held-out ones,
as in ``benchmarks/superres_table5.py`` but with fewer patches and anchors so
that it runs in well under a minute.
"""

# %%
# Training material
# -----------------
# 1,500 random 9x9 patches from each of the eight training images: gradient
# features reduced by PCA, and the residual pixels (HR minus bicubic) to predict.
import matplotlib.pyplot as plt
import numpy as np

from arn_sklearn import ARNRegressor
from arn_sklearn.superres import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    APlusRegressor,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    degrade,
    imresize,
    load_skimage_images,
    luminance,
    modcrop,
    psnr,
)

scale = 3
train = load_skimage_images(TRAIN_IMAGES)
tests = load_skimage_images(TEST_IMAGES)
features, X, Y = build_training_set(
    train.values(), scale, max_patches_per_image=1_500, random_state=0
)
print(f"{X.shape[0]} patches, {X.shape[1]} PCA features, {Y.shape[1]} targets")


def mean_psnr(model):
    """Mean PSNR (Y channel, border shaved) over the held-out images; bicubic if None."""
    values = []
    for image in tests.values():
        hr = modcrop(luminance(image), scale)
        lr, mid = degrade(hr, scale)
        est = mid if model is None else model.upscale_y(lr)
        values.append(psnr(hr, np.clip(est, 0, 1), border=scale))
    return np.mean(values)


# %%
# PSNR against the number of anchors
# ----------------------------------
# Both methods share the anchors (sign-invariant spherical clustering of the
# unit-norm features, A+'s K-SVD with one non-zero). ARN uses the ``absdot``
# similarity and A+'s ridge penalty 0.1.
anchor_counts = [4, 8, 16, 32]
curves = {"A+": [], "ARN": []}
models = {}
for m in anchor_counts:
    anchors = aplus_anchors(X / np.linalg.norm(X, axis=1, keepdims=True), m, random_state=0)
    aplus = SuperResolver(APlusRegressor(m, anchors=anchors), scale=scale)
    arn = SuperResolver(
        ARNRegressor(m, similarity="absdot", alpha=0.1, anchors=anchors, random_state=0),
        scale=scale,
    )
    for label, model in (("A+", aplus), ("ARN", arn)):
        model.fit_patches(features, X, Y)
        curves[label].append(mean_psnr(model))
        models[label, m] = model
    print(f"m={m:3d}  A+ {curves['A+'][-1]:.2f} dB   ARN {curves['ARN'][-1]:.2f} dB")
bicubic = mean_psnr(None)

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot(anchor_counts, curves["A+"], "s--", label="A+")
ax.plot(anchor_counts, curves["ARN"], "o-", label="ARN (closed form)")
ax.axhline(bicubic, color="grey", lw=1, ls=":", label="bicubic")
ax.set_xscale("log", base=2)
ax.set_xlabel("number of anchors / regressors")
ax.set_ylabel(f"mean PSNR (dB), x{scale}")
ax.set_title("Figure 5 on held-out scikit-image photos")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()

# %%
# A crop
# ------
# The face of ``astronaut`` (held out) upscaled x3 by each method.
hr = modcrop(tests["astronaut"], scale)
lr = np.clip(imresize(hr, 1.0 / scale), 0, 1)
m = anchor_counts[-1]
panels = [
    ("bicubic", np.clip(imresize(lr, scale), 0, 1)),
    (f"A+ ({m})", np.clip(models["A+", m].upscale(lr), 0, 1)),
    (f"ARN ({m})", np.clip(models["ARN", m].upscale(lr), 0, 1)),
    ("ground truth", hr),
]
fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
for ax, (label, image) in zip(axes, panels, strict=True):
    ax.imshow(image[60:180, 160:280])
    ax.set_title(label, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
