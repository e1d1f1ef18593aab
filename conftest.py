"""Doctest collection: modules of optional extras are skipped where the extra is missing."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("skl2onnx") is None or importlib.util.find_spec("onnxruntime") is None:
    collect_ignore.append("arn_sklearn/onnx.py")
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("arn_sklearn/inspection.py")
