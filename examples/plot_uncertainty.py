"""
=======================================
Predictive uncertainty bands
=======================================

With the anchors and the softness fixed, ARN is a ridge regression on lifted
features ``z(x)``, so it has the Gaussian posterior of one:
``predict(X, return_std=True)`` returns
``sigma * sqrt(1 + z(x)^T (G + alpha I)^{-1} z(x))``, with the noise level
``sigma`` estimated from the training residuals, as ``BayesianRidge`` and
``GaussianProcessRegressor`` do. It comes from the statistics the fit already
accumulated, so it also works after ``partial_fit`` or a Dask fit.
"""

# %%
# A noisy 1-D function with a gap in the data
# -------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel

from arn_sklearn import ARNRegressor

rng = np.random.default_rng(0)
noise = 0.2


def f(x):
    return np.sin(2 * x) + 0.3 * x


x_train = np.concatenate([rng.uniform(-4, -0.5, 300), rng.uniform(1.5, 4, 300)])
y_train = f(x_train) + noise * rng.standard_normal(x_train.size)
X_train = x_train[:, None]

model = ARNRegressor(12, alpha=1e-2, random_state=0).fit(X_train, y_train)
gp = GaussianProcessRegressor(RBF() + WhiteKernel(), random_state=0).fit(X_train, y_train)

# %%
# 90% prediction intervals
# ------------------------
# ARN's band widens in the gap, where the lifted features are far from the
# training data, and outside the training range.
grid = np.linspace(-5, 5, 400)[:, None]
z90 = norm.ppf(0.95)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (label, est) in zip(
    axes, (("ARN (12 anchors)", model), ("Gaussian process", gp)), strict=True
):
    mean, std = est.predict(grid, return_std=True)
    ax.fill_between(grid[:, 0], mean - z90 * std, mean + z90 * std, alpha=0.3, label="90% interval")
    ax.plot(grid[:, 0], mean, label="prediction")
    ax.plot(grid[:, 0], f(grid[:, 0]), "k--", lw=0.8, label="true function")
    ax.scatter(x_train, y_train, s=3, c="0.5")
    ax.set_title(label)
    ax.set_xlabel("x")
axes[0].legend(loc="upper left", fontsize="small")
fig.tight_layout()

# %%
# Calibration on held-out data
# ----------------------------
# On fresh samples from the training range the nominal intervals should cover
# their nominal share of the points.
x_test = np.concatenate([rng.uniform(-4, -0.5, 2000), rng.uniform(1.5, 4, 2000)])
y_test = f(x_test) + noise * rng.standard_normal(x_test.size)
mean, std = model.predict(x_test[:, None], return_std=True)
for level in (0.5, 0.8, 0.9, 0.95):
    z = norm.ppf(0.5 + level / 2)
    covered = np.mean(np.abs(y_test - mean) <= z * std)
    print(f"nominal {level:.0%}: covered {covered:.1%}")
print(f"estimated noise std {np.median(std):.3f} (true {noise})")
plt.show()
