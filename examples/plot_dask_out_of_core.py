"""
=====================================
Out-of-core fits with Dask
=====================================

``ARNRegressor.fit`` accepts Dask arrays: every block's sufficient statistics
(the Gram matrix of its lifted rows and their products with ``y``) are
accumulated where the block lives, the per-block statistics are added in a
tree, and the small ``m(d+1)``-square system is solved once. Memory then
depends on the block size, not on the number of rows. With the anchors and the
softness fixed, the Dask fit equals the in-memory fit on the same rows.

Here the local threaded scheduler is used; with a ``distributed.Client`` the
same code runs on its workers (see ``benchmarks/dask_out_of_core.py``, which fits
8 million rows on two 400 MiB workers).
"""

# %%
# A lazy dataset
# --------------
# 400,000 rows in 20 blocks; nothing is computed until the fit asks for it.
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np

from arn_sklearn import ARNRegressor

X = da.random.RandomState(0).uniform(-2, 2, size=(400_000, 6), chunks=(20_000, 6))
y = da.sin(X[:, 0]) * X[:, 1] + 0.5 * da.cos(X[:, 2] * X[:, 3]) + 0.1 * X[:, 4]
print(X)

# %%
# Fit on the blocks
# -----------------
# ``batch_size`` bounds the lifted chunk each block is streamed in.
model = ARNRegressor(32, alpha=1e-2, batch_size=8_192, random_state=0).fit(X, y)
y_pred = model.predict(X)  # lazy, like X
print(type(y_pred).__name__, y_pred.chunks[0][:3], "...")
rmse = float(da.sqrt(da.mean((y_pred - y) ** 2)).compute())
print(f"training RMSE {rmse:.4f}, std of y {float(y.std().compute()):.3f}")

# %%
# The same model as in memory
# ---------------------------
# Fixed anchors and softness: the Dask fit and a NumPy fit on the computed
# rows solve the same system, up to the order of floating-point sums.
fixed = {"anchors": model.anchors_, "softness": model.softness_, "alpha": 1e-2}
on_dask = ARNRegressor(32, **fixed).fit(X, y)
X_np, y_np = X.compute(), y.compute()
in_memory = ARNRegressor(32, **fixed).fit(X_np, y_np)
X_new = np.random.default_rng(1).uniform(-2, 2, size=(5, 6))
print(on_dask.predict(X_new))
print(in_memory.predict(X_new))
print("max difference:", np.abs(on_dask.predict(X_new) - in_memory.predict(X_new)).max())

# %%
# What the model learned
# ----------------------
# A slice through the fitted function (x0 varies, x1 = 1, the other features 0),
# predicted by the Dask fit and by the in-memory fit, against the target
# function: the two fits coincide and follow it.
x0 = np.linspace(-2, 2, 200)
X_line = np.zeros((x0.size, 6))
X_line[:, 0], X_line[:, 1] = x0, 1.0
truth = np.sin(x0) + 0.5  # sin(x0) * 1 + 0.5 cos(0) + 0
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.plot(x0, truth, color="black", lw=3, alpha=0.3, label="target function")
ax.plot(x0, on_dask.predict(X_line), label="fit on 20 Dask blocks")
ax.plot(x0, in_memory.predict(X_line), "--", label="fit in memory (same anchors)")
ax.set_xlabel("x0 (x1 = 1, other features 0)")
ax.set_ylabel("prediction")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
