"""Lazy imports of optional dependencies, with an error that names the extra."""

import importlib
import os


def import_optional(module, extra, purpose):
    """Import ``module``, or raise an ImportError that says which extra installs it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"dask.array"``.
    extra : str
        The ``arn-sklearn`` extra that provides it, e.g. ``"dask"``.
    purpose : str
        What needs it, for the message, e.g. ``"Fitting on Dask collections"``.

    Examples
    --------
    >>> import_optional("numpy", "test", "Nothing").__name__
    'numpy'
    >>> import_optional("not_a_module_xyz", "gpu", "This demo")
    Traceback (most recent call last):
    ...
    ImportError: This demo needs not_a_module_xyz: pip install "arn-sklearn[gpu]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f'{purpose} needs {module.split(".")[0]}: pip install "arn-sklearn[{extra}]"'
        ) from exc


def compiled_kernels_enabled():
    """False when ``ARN_SKLEARN_NUMPY_KERNELS`` is set (to anything but ``0``).

    The optional compiled kernels (``arn_sklearn/_kernels/*.pyx``) are used
    wherever they are built; this environment variable, read once at import,
    makes every kernel take its numpy path instead (to compare the two, or to
    rule a build out when something looks wrong).

    Examples
    --------
    >>> import os
    >>> compiled_kernels_enabled() == (os.environ.get("ARN_SKLEARN_NUMPY_KERNELS", "0") == "0")
    True
    """
    return os.environ.get("ARN_SKLEARN_NUMPY_KERNELS", "0") == "0"
