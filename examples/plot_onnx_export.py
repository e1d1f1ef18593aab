"""
=======================================
Exporting a fitted model to ONNX
=======================================

``import arn_sklearn.onnx`` registers converters with skl2onnx (extra
``onnx``), so ``skl2onnx.to_onnx`` converts an ``ARNRegressor`` alone or inside
a pipeline. The graph computes the prediction (similarities, softmax, the
blended linear regressors); ``return_std``, ``local_linear`` and the training
statistics are not exported.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import arn_sklearn.onnx  # noqa: F401  (registers the converters)
from arn_sklearn import ARNRegressor

rng = np.random.default_rng(0)
X = rng.normal(size=(2_000, 5)).astype(np.float32)
Y = np.stack([np.sin(X[:, 0]) * X[:, 1], np.abs(X[:, 2]) + X[:, 3]], axis=1)
model = make_pipeline(StandardScaler(), ARNRegressor(16, top_k=4, random_state=0)).fit(X, Y)

onx = to_onnx(model, X[:1])
session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
Y_onnx = session.run(None, {session.get_inputs()[0].name: X})[0]
Y_skl = model.predict(X)
print("ONNX graph:", len(onx.SerializeToString()) // 1024, "KiB,", len(onx.graph.node), "nodes")
print("max |ONNX - predict|:", float(np.max(np.abs(Y_onnx - Y_skl))))
print("equal to 1e-5 (float32):", np.allclose(Y_onnx, Y_skl, rtol=1e-5, atol=1e-5))

# %%
# ONNX against ``predict``, also far from the training data
# ---------------------------------------------------------
# The graph computes in float64 like ``predict`` and keeps the shift-invariant
# form of the euclidean similarity, so float32 inputs far outside the training
# range (here up to 1e8 times it) still give ``predict``'s answer.
scales = np.logspace(0, 8, 9)
worst = []
for scale in scales:
    X_far = (X[:200] * scale).astype(np.float32)
    y_far = model.predict(X_far)
    y_far_onnx = session.run(None, {session.get_inputs()[0].name: X_far})[0]
    worst.append(np.max(np.abs(y_far_onnx - y_far)) / np.max(np.abs(y_far)))

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
axes[0].scatter(Y_skl[:, 0], Y_onnx[:, 0], s=3, label="output 0")
axes[0].scatter(Y_skl[:, 1], Y_onnx[:, 1], s=3, label="output 1")
axes[0].set_xlabel("model.predict")
axes[0].set_ylabel("onnxruntime")
axes[0].legend(fontsize=8)
axes[1].loglog(scales, np.maximum(worst, 1e-12), "o-")
axes[1].axhline(1e-5, color="grey", ls=":", label="1e-5")
axes[1].set_xlabel("input scale (times the training data)")
axes[1].set_ylabel("max |ONNX - predict| / max |predict|")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()
