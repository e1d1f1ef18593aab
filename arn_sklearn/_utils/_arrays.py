"""Which namespace and device an array lives on, and its host copy.

One definition for every module: kernels take a numpy fast path when their
input is a numpy array and the namespace path otherwise.
"""

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array


def is_numpy(a):
    """True for a numpy array (the kernels' fast path)."""
    return isinstance(a, np.ndarray)


def device_of(a):
    """The device of ``a`` for ``xp.asarray(..., device=...)``; None for numpy."""
    return None if is_numpy(a) else getattr(a, "device", None)


def to_numpy(a):
    """Host numpy copy (or view) of an array from any namespace."""
    if is_numpy_array(a):
        return a
    if is_cupy_array(a):
        return a.get()
    return np.from_dlpack(a) if hasattr(a, "__dlpack__") else np.asarray(a)
