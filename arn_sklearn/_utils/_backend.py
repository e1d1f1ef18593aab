"""Where a fit runs: the array namespace of the computation and the moves to and from it.

One code path serves every backend: the kernels take ``xp``; this module only
picks it (``device="cpu" | "cuda" | "auto"``) and converts arrays between the
caller's namespace and the compute namespace. CuPy is imported lazily.
"""

import numpy as np
from array_api_compat import array_namespace, is_cupy_array

from ._arrays import to_numpy
from ._optional import import_optional

DEVICES = ("auto", "cpu", "cuda")


def import_cupy():
    """CuPy, or an ImportError that names the extra to install."""
    return import_optional("cupy", "gpu", "device='cuda' (on a machine with an NVIDIA GPU)")


def cupy_namespace():
    """The array-API-compatible CuPy namespace."""
    import_cupy()
    import array_api_compat.cupy as xp

    return xp


class Backend:
    """The compute namespace of one call and the conversions around it.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` computes where the input lives; ``"cpu"`` moves GPU input to
        numpy; ``"cuda"`` moves host input to CuPy.
    X : array
        The validated input, whose namespace the outputs are returned in.

    Examples
    --------
    >>> import numpy as np
    >>> backend = Backend("auto", np.ones((2, 2)))
    >>> backend.xp.__name__
    'array_api_compat.numpy'
    """

    def __init__(self, device, X):
        self.input_xp = array_namespace(X)
        self.input_is_cupy = is_cupy_array(X)
        if device == "cuda" or (device == "auto" and self.input_is_cupy):
            self.xp = cupy_namespace()
            self.on_gpu = True
        elif device == "cpu" and self.input_is_cupy:
            self.xp = array_namespace(np.empty(0))
            self.on_gpu = False
        elif device in DEVICES:
            self.xp = self.input_xp
            self.on_gpu = self.input_is_cupy
        else:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}.")

    def to_compute(self, a):
        """``a`` (numpy, or the caller's namespace) in the compute namespace."""
        if not self.on_gpu and is_cupy_array(a):
            a = a.get()
        return self.xp.asarray(a)

    def to_output(self, a):
        """``a`` from the compute namespace (or numpy) in the caller's namespace."""
        if self.input_is_cupy:
            return import_cupy().asarray(a)
        if is_cupy_array(a):
            a = a.get()
        return self.input_xp.asarray(a)

    def to_host(self, a):
        """``a`` as a numpy array, e.g. for KMeans."""
        return to_numpy(a)
