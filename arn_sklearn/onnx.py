"""ONNX export of fitted ARN models through skl2onnx (extra ``onnx``).

Importing this module registers a shape calculator and a converter with
skl2onnx for :class:`~arn_sklearn.ARNRegressor` (closed-form or learned
anchors, dense or ``top_k``, every similarity, one or several targets),
:class:`~arn_sklearn.ARNRegressorCV` (its refitted model) and
:class:`~arn_sklearn.DeepARNRegressor`, so that ``skl2onnx.to_onnx`` converts
them alone or inside a :class:`~sklearn.pipeline.Pipeline`. The graph computes
the prediction: the similarity
to every anchor, the softmax (over the ``top_k`` largest logits, through
``TopK``, with ``top_k``) and the assignment-weighted sum of the anchors'
linear regressors. Like ``predict``, it computes in float64 whatever the
input's type and returns the input's type: float32 inputs of large magnitude
(``|x|`` of 1e8, or 1e20 whose squared distances overflow float32) get the
same predictions as ``predict``. The output has shape ``(n_samples, n_targets)``
(``n_targets = 1`` for a 1-D ``y``, as skl2onnx's regressors do).

Only the prediction is exported: not ``return_std``, ``local_linear``,
``jacobian``, ``soft_assignments`` nor anything needed to continue training
(``partial_fit`` statistics).

Examples
--------
>>> import numpy as np
>>> import onnxruntime as ort
>>> from skl2onnx import to_onnx
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> import arn_sklearn.onnx  # registers the converters
>>> from arn_sklearn import ARNRegressor
>>> rng = np.random.RandomState(0)
>>> X = rng.normal(size=(200, 3)).astype(np.float32)
>>> y = np.abs(X[:, 0]) + X[:, 1]
>>> model = make_pipeline(StandardScaler(), ARNRegressor(8, random_state=0)).fit(X, y)
>>> onx = to_onnx(model, X[:1])
>>> session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
>>> y_onnx = session.run(None, {session.get_inputs()[0].name: X})[0]
>>> y_onnx.shape
(200, 1)
>>> bool(np.allclose(y_onnx[:, 0], model.predict(X), rtol=1e-5, atol=1e-5))
True
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._estimators._arn import ARNRegressor
from ._estimators._cv import ARNRegressorCV
from ._estimators._deep import DeepARNRegressor
from ._model._layer import as_2d, as_3d
from ._utils._backend import to_numpy
from ._utils._optional import import_optional

_PURPOSE = "ONNX export (arn_sklearn.onnx)"
_skl2onnx = import_optional("skl2onnx", "onnx", _PURPOSE)

from onnx import onnx_pb as onnx_proto  # noqa: E402
from skl2onnx import update_registered_converter  # noqa: E402
from skl2onnx.algebra import onnx_ops as ops  # noqa: E402
from skl2onnx.common.data_types import guess_numpy_type  # noqa: E402

__all__ = ["register"]

# Guards the cosine similarity against zero norms, as in the estimator.
_NORM_EPS = 1e-12


def _layers(model):
    """``(anchors, coef (m, t, d), intercept (m, t), softness)`` per layer, and top_k."""
    check_is_fitted(model)
    if isinstance(model, ARNRegressorCV):
        model = model.estimator_
    if isinstance(model, DeepARNRegressor):
        layers = [
            tuple(to_numpy(a) for a in (anchors, coef, intercept)) + (float(softness),)
            for anchors, coef, intercept, softness in zip(
                model.anchors_, model.coefs_, model.intercepts_, model.softness_, strict=True
            )
        ]
        return layers, model.similarity, None
    kind, softness, top_k = model.similarity_, model.softness_, model.top_k_
    arrays = (model.anchors_, as_3d(model.coef_), as_2d(model.intercept_))
    return [tuple(to_numpy(a) for a in arrays) + (float(softness),)], kind, top_k


def _similarity(X, anchors, kind, dtype, opv):
    """``s(x, c_k)`` for every anchor: shape (n, m)."""
    m, d = anchors.shape
    if kind == "euclidean":
        # -||x - c||^2 without its -||x||^2, the same for every anchor (the
        # softmax and top-k ignore it), as predict does: 2 x.c - ||c||^2 has
        # nothing to cancel, so rows far from every anchor still get the nearest.
        two_c = (2.0 * anchors.T).astype(dtype)
        c_sq = np.einsum("ij,ij->i", anchors, anchors)[None, :].astype(dtype)
        return ops.OnnxSub(ops.OnnxMatMul(X, two_c, op_version=opv), c_sq, op_version=opv)
    dot = ops.OnnxMatMul(X, anchors.T.astype(dtype), op_version=opv)
    if kind == "dot":
        return dot
    if kind == "absdot":
        return ops.OnnxAbs(dot, op_version=opv)
    if kind == "cosine":
        x_norm = ops.OnnxReduceL2Api18(X, axes=[1], keepdims=1, op_version=opv)
        c_norm = np.linalg.norm(anchors, axis=1)[None, :].astype(dtype)
        denominator = ops.OnnxMax(
            ops.OnnxMul(x_norm, c_norm, op_version=opv),
            np.array([_NORM_EPS], dtype=dtype),
            op_version=opv,
        )
        return ops.OnnxDiv(dot, denominator, op_version=opv)
    raise ValueError(f"Unknown similarity {kind!r}.")


def _layer(X, layer, kind, top_k, dtype, opv):
    """One ARN layer, ``sum_k pi_k(x) (W_k x + b_k)``: shape (n, t)."""
    anchors, coef, intercept, softness = layer
    m, t, d = coef.shape
    logits = ops.OnnxMul(
        _similarity(X, anchors, kind, dtype, opv),
        np.array([softness], dtype=dtype),
        op_version=opv,
    )
    if top_k is None or top_k >= m:
        A = ops.OnnxSoftmax(logits, axis=1, op_version=opv)
    else:
        top = ops.OnnxTopK(
            logits, np.array([top_k], dtype=np.int64), axis=1, largest=1, op_version=opv
        )
        vals = ops.OnnxSoftmax(top[0], axis=1, op_version=opv)
        zeros = ops.OnnxConstantOfShape(
            ops.OnnxShape(logits, op_version=opv), value=np.zeros(1, dtype=dtype), op_version=opv
        )
        A = ops.OnnxScatterElements(zeros, top[1], vals, axis=1, op_version=opv)
    # Every anchor's regressor at x, (n, m t), then the assignment-weighted sum.
    W = np.transpose(coef, (2, 0, 1)).reshape(d, m * t).astype(dtype)
    F = ops.OnnxAdd(
        ops.OnnxMatMul(X, W, op_version=opv),
        intercept.reshape(1, m * t).astype(dtype),
        op_version=opv,
    )
    F3 = ops.OnnxReshape(F, np.array([-1, m, t], dtype=np.int64), op_version=opv)
    A3 = ops.OnnxReshape(A, np.array([-1, m, 1], dtype=np.int64), op_version=opv)
    return ops.OnnxReduceSumApi11(
        ops.OnnxMul(F3, A3, op_version=opv), axes=[1], keepdims=0, op_version=opv
    )


def _n_targets(model):
    layers, _, _ = _layers(model)
    return layers[-1][1].shape[1]


def shape_calculator(operator):
    """Output: the input's element type, shape ``(n_samples, n_targets)``."""
    input_type = operator.inputs[0].type
    n_rows = input_type.shape[0] if input_type.shape else None
    operator.outputs[0].type = input_type.__class__([n_rows, _n_targets(operator.raw_operator)])


def converter(scope, operator, container):
    """Write the ARN prediction graph of ``operator.raw_operator``."""
    model = operator.raw_operator
    opv = container.target_opset
    out_dtype = guess_numpy_type(operator.inputs[0].type)
    if out_dtype not in (np.float32, np.float64):
        out_dtype = np.float32
    layers, kind, top_k = _layers(model)
    # float64 inside, as predict: in float32, x @ W + b cancels at |x| ~ 1e8 and
    # squared distances overflow beyond ~1e19.
    dtype = np.float64
    h = ops.OnnxCast(operator.inputs[0], to=onnx_proto.TensorProto.DOUBLE, op_version=opv)
    for layer in layers[:-1]:  # residual layers of a Deep ARN: h <- h + f(h)
        h = ops.OnnxAdd(h, _layer(h, layer, kind, top_k, dtype, opv), op_version=opv)
    out = _layer(h, layers[-1], kind, top_k, dtype, opv)
    out = ops.OnnxCast(
        out,
        to=onnx_proto.TensorProto.DOUBLE
        if out_dtype == np.float64
        else onnx_proto.TensorProto.FLOAT,
        op_version=opv,
        output_names=operator.outputs[:1],
    )
    out.add_to(scope, container)


def register():
    """Register the converters with skl2onnx (done once, on import).

    Examples
    --------
    >>> from arn_sklearn.onnx import register
    >>> register()
    """
    for estimator, alias in (
        (ARNRegressor, "ArnSklearnARNRegressor"),
        (ARNRegressorCV, "ArnSklearnARNRegressorCV"),
        (DeepARNRegressor, "ArnSklearnDeepARNRegressor"),
    ):
        update_registered_converter(estimator, alias, shape_calculator, converter)


register()
