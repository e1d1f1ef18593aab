"""Save and load fitted models without running code from the file.

A pickle (or joblib) file can run any code when it is loaded, so a model
received from someone else must not be unpickled. :func:`save_model` writes
the `skops <https://skops.readthedocs.io>`_ format, and :func:`load_model`
trusts only arn_sklearn's own classes on top of the numpy / scikit-learn
types that skops trusts by default; a file that needs anything else is
refused with the list of those types. Pickle files are refused unless the
caller says it trusts them.
"""

import importlib
import io
import json
import zipfile
from pathlib import Path

from ._utils._optional import import_optional

_PACKAGE = "arn_sklearn"
_SUFFIX = ".skops"
_ZIP_MAGIC = b"PK"

# Modules whose classes moved when the package was split into layer subpackages:
# files saved before record the old paths, which are read as the new ones.
_MOVED_MODULES = {
    "arn_sklearn._estimator": "arn_sklearn._estimators._arn",
    "arn_sklearn._cv": "arn_sklearn._estimators._cv",
    "arn_sklearn._deep": "arn_sklearn._estimators._deep",
    "arn_sklearn._lifting": "arn_sklearn._model._statistics",
    "arn_sklearn._blocksparse": "arn_sklearn._model._blocksparse",
}


class UntrustedModelError(ValueError):
    """A model file that cannot be loaded without trusting code it names."""


def _skops_io(purpose):
    return import_optional("skops.io", "skops", purpose)


def save_model(model, path):
    """Save a fitted model in the skops format (no code runs when it is loaded).

    Parameters
    ----------
    model : estimator
        Any arn_sklearn estimator (or a scikit-learn object made of them).
    path : str or path-like
        Destination file, ending in ``.skops``.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.skops``: a skops file under a pickle
        name (``.joblib``, ``.pkl``) would fail in ``joblib.load``.

    See Also
    --------
    load_model : The safe counterpart.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from arn_sklearn import ARNRegressor, load_model, save_model
    >>> X = np.random.RandomState(0).normal(size=(50, 2))
    >>> model = ARNRegressor(2, random_state=0).fit(X, X[:, 0] ** 2)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.skops"
    >>> loaded = load_model(save_model(model, path))
    >>> bool(np.array_equal(loaded.predict(X), model.predict(X)))
    True
    """
    path = Path(path)
    if path.suffix.lower() != _SUFFIX:
        raise ValueError(
            f"save_model writes the skops format; {path.name!r} should end in "
            f"{_SUFFIX!r} (e.g. {path.with_suffix(_SUFFIX).name!r}). For a pickle, "
            "use joblib.dump, which runs code when loaded."
        )
    _skops_io("Saving models").dump(model, path)
    return path


def load_model(path, *, trust_pickle=False):
    """Load a model saved by :func:`save_model`, trusting only arn_sklearn's classes.

    Parameters
    ----------
    path : str or path-like
        A skops file; or a pickle/joblib file with ``trust_pickle=True``.
    trust_pickle : bool, default=False
        Load a pickle/joblib file. Unpickling runs whatever code the file
        names: only for files you created yourself.

    Returns
    -------
    model : object

    Notes
    -----
    Files saved by earlier versions load too: skops records where each class
    was defined, and the classes that have moved since are looked up at their
    new place.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    UntrustedModelError
        (a ``ValueError``) If the skops file needs types other than
        arn_sklearn's own classes and skops' default trusted types (the message
        lists them), or if the file is a pickle and ``trust_pickle`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    if not zipfile.is_zipfile(path):  # a skops file is a zip archive; pickles are not
        _check_not_truncated(path)
        if not trust_pickle:
            raise UntrustedModelError(
                f"{path} is a pickle/joblib file, and loading one runs any code it "
                "contains. Re-save the model in the skops format (save_model, or "
                "`arn-superres train`), or, only for a file you created yourself, "
                "pass trust_pickle=True (--trust-pickle on the command line)."
            )
        import joblib  # a scikit-learn dependency; reads plain pickles too

        try:
            return joblib.load(path)
        except Exception as exc:  # unpickling raises many types for a damaged file
            raise ValueError(f"{path} cannot be unpickled (corrupt?): {exc!r}") from exc
    sio = _skops_io("Loading models")
    try:
        data = _with_moved_modules(path)
        source = {"file": path} if data is None else {"data": data}
        untrusted = sio.get_untrusted_types(**source)
    except Exception as exc:  # a zip that is not a skops file, or a corrupt one
        raise ValueError(f"{path} is not a readable skops model file: {exc}") from exc
    refused = [name for name in untrusted if not _is_own_class(name)]
    if refused:
        raise UntrustedModelError(
            f"{path} needs types that are neither arn_sklearn's own classes nor "
            f"trusted by skops by default: {', '.join(refused)}. Refusing to load it; "
            "if you trust its source, inspect them and call skops.io.load(path, "
            "trusted=[...]) yourself."
        )
    return sio.load(path, trusted=untrusted) if data is None else sio.loads(data, trusted=untrusted)


def _check_not_truncated(path):
    """Refuse an empty file, or a damaged zip, before it is taken for a pickle.

    A zip archive (skops) starts with ``PK`` and ends with its directory, so a
    truncated one starts with ``PK`` but is not a zip; a file named ``.skops``
    that is not a zip is damaged too.
    """
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise ValueError(f"{path} is empty (0 bytes): not a model file; save the model again.")
    if head == _ZIP_MAGIC or path.suffix.lower() == _SUFFIX:
        raise ValueError(
            f"{path} is a truncated or corrupt skops file (not a complete zip archive); "
            "save the model again or copy the file again."
        )


def _is_own_class(name):
    """True if ``name`` ("module.Class") is a class defined in arn_sklearn itself.

    Resolved rather than matched by prefix: ``arn_sklearn._kernels._solve.os`` (a module
    imported by ours) or a function would pass a prefix test, and skops calls
    some of the objects it loads.
    """
    module_name, _, qualname = name.rpartition(".")
    if module_name != _PACKAGE and not module_name.startswith(_PACKAGE + "."):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    obj = getattr(module, qualname, None)
    return isinstance(obj, type) and obj.__module__ == module_name and obj.__qualname__ == qualname


def _with_moved_modules(path):
    """The skops file's bytes with old module paths renamed, or None if it names none.

    Only the schema (``schema.json``) changes; the trust check then sees the
    classes where they live now.
    """
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        if not _rename_modules(schema):
            return None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as out:
            for item in archive.infolist():
                content = archive.read(item.filename)
                if item.filename == "schema.json":
                    content = json.dumps(schema).encode()
                out.writestr(item, content)
    return buffer.getvalue()


def _rename_modules(node):
    """Rename the moved ``__module__`` entries of a skops schema in place; True if any."""
    renamed = False
    if isinstance(node, dict):
        if node.get("__module__") in _MOVED_MODULES:
            node["__module__"] = _MOVED_MODULES[node["__module__"]]
            renamed = True
        for value in node.values():
            renamed = _rename_modules(value) or renamed
    elif isinstance(node, list):
        for value in node:
            renamed = _rename_modules(value) or renamed
    return renamed
