"""
=====================================
Learned anchors: from KMeans to Adam
=====================================

The closed form fixes the anchors (KMeans) and the softness, and solves the
regressors exactly. ``solver="adam"`` starts from that model and then moves
anchors, regressors and softness together by gradient descent on the same
objective (the paper's section 3.2). On a target whose pieces do not follow
the density of the inputs, KMeans tiles the square evenly; training moves the
anchors (and sharpens the softness) to fit the pieces instead.
"""

# %%
# A piecewise-linear target on a 2-D square
# -----------------------------------------
# Four linear pieces meeting along two curved boundaries; the inputs are
# uniform, so KMeans spreads the anchors evenly and ignores the boundaries.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mean_squared_error

from arn_sklearn import ARNRegressor

rng = np.random.default_rng(0)


def target(X):
    upper = X[:, 1] > 0.3 * np.sin(3 * X[:, 0])
    right = X[:, 0] > 0.2
    slope = np.where(upper, 2.0, -1.0) + np.where(right, 1.5, 0.0)
    return slope * X[:, 0] + np.where(upper ^ right, 1.0, -0.5) * X[:, 1]


X = rng.uniform(-1, 1, size=(6_000, 2))
y = target(X) + 0.05 * rng.standard_normal(len(X))
X_test = rng.uniform(-1, 1, size=(4_000, 2))
y_test = target(X_test)

# %%
# Closed form, then learned
# -------------------------
# Both use eight anchors; the learned model starts from the closed form's
# anchors and a harder softness (a soft start makes the problem stiff).
closed = ARNRegressor(8, alpha=1e-3, random_state=0).fit(X, y)
# A fixed budget of 60 epochs: stopping before convergence is intended here.
warnings.simplefilter("ignore", ConvergenceWarning)
learned = ARNRegressor(
    8,
    alpha=1e-3,
    anchors=closed.anchors_,
    softness=4 * closed.softness_,
    solver="adam",
    learning_rate_init=0.02,
    max_iter=60,
    random_state=0,
).fit(X, y)
for label, model in (("closed form (KMeans)", closed), ("learned (Adam)", learned)):
    mse = mean_squared_error(y_test, model.predict(X_test))
    print(f"{label:22s} test MSE {mse:.4f}")
print(f"learned: {learned.n_iter_} epochs, softness {learned.softness_:.2f}")

# %%
# Where the anchors went
# ----------------------
# Colour: the anchor each point is most assigned to. Circles: the anchors.
grid = np.stack(np.meshgrid(np.linspace(-1, 1, 200), np.linspace(-1, 1, 200)), -1).reshape(-1, 2)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
axes[0].scatter(grid[:, 0], grid[:, 1], c=target(grid), s=1, cmap="coolwarm")
axes[0].set_title("target")
for ax, (label, model) in zip(
    axes[1:], (("closed form", closed), ("learned", learned)), strict=True
):
    owner = model.soft_assignments(grid).argmax(axis=1)
    ax.scatter(grid[:, 0], grid[:, 1], c=owner, s=1, cmap="tab10")
    ax.scatter(*model.anchors_.T, c="k", s=40, marker="o", edgecolors="w")
    ax.set_title(f"{label}: anchors and regions")
for ax in axes:
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
# Training curve
# --------------
# The objective per epoch; the epoch with the lowest objective is kept, so the
# learned model never ends above the closed form.
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.arange(1, len(learned.loss_curve_) + 1), learned.loss_curve_)
ax.set_xlabel("epoch")
ax.set_ylabel("training objective")
ax.set_yscale("log")
fig.tight_layout()
plt.show()
