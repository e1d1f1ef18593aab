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
