"""Rules shared by every public estimator: rollback, target and anchor checks.

Each rule lives here once, so that ARNRegressor, ARNRegressorCV,
DeepARNRegressor, APlusRegressor and SuperResolver cannot drift apart.
"""

import functools
from numbers import Integral

import numpy as np
from array_api_compat import array_namespace
from sklearn.base import _fit_context
from sklearn.utils import assert_all_finite
from sklearn.utils._array_api import get_namespace
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._arrays import to_numpy
from ._warnings import warn_user


def validate_fit_data(estimator, X, y, sample_weight=None, reset=True):
    """``fit``'s input checked and converted once for every estimator.

    Returns
    -------
    X : array of shape (n_samples, n_features), float64 or float32
    Y : array of shape (n_samples, n_targets), float64
    w : array of shape (n_samples,), float64, non-negative
    y_ndim : int
        1 for a 1-D ``y`` (predictions then drop the target axis).
    """
    xp, _ = get_namespace(X)
    X, y = validate_data(
        estimator,
        X,
        y,
        reset=reset,
        multi_output=True,
        y_numeric=True,
        dtype=[xp.float64, xp.float32],
    )
    Y = xp.astype(validate_targets(y), xp.float64, copy=False)  # no copy of a large y
    Y = Y[:, None] if Y.ndim == 1 else Y
    # Before any work: magnitudes whose squares overflow float64 (issue 20).
    check_feature_magnitude(X)
    check_target_magnitude(Y, getattr(estimator, "solver", "closed_form"))
    w = _check_sample_weight(sample_weight, X, dtype=xp.float64, ensure_non_negative=True)
    return X, Y, w, y.ndim


def check_target_count(Y, n_targets, earlier="the model being warm-started has"):
    """Refuse a 2-D ``Y`` whose targets differ from those of the model it continues.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import check_target_count
    >>> check_target_count(np.zeros((3, 2)), 1)
    Traceback (most recent call last):
    ...
    ValueError: y has 2 targets but the model being warm-started has 1.
    """
    if Y.shape[1] != n_targets:
        raise ValueError(f"y has {Y.shape[1]} targets but {earlier} {n_targets}.")


def validate_predict_data(estimator, X):
    """``predict``'s input: a fitted estimator, and ``X`` float64 or float32 of its width."""
    check_is_fitted(estimator)
    xp, _ = get_namespace(X)
    return validate_data(estimator, X, reset=False, dtype=[xp.float64, xp.float32])


def rollback_on_error(method):
    """Decorate ``fit``/``partial_fit`` so that a failure leaves the estimator as it was.

    Validation sets ``n_features_in_`` (and a fit sets attributes one by one)
    before a later step can fail; a failed fit must leave neither a
    half-fitted model nor a corrupted earlier fit. The attribute dict is
    restored (the same objects, so an earlier model predicts exactly as
    before); fits never mutate stored arrays in place.

    Examples
    --------
    >>> from arn_sklearn._utils._validation import rollback_on_error
    >>> class Model:
    ...     @rollback_on_error
    ...     def fit(self, fail):
    ...         self.coef_ = 1
    ...         if fail:
    ...             raise ValueError("failed")
    ...         return self
    >>> model = Model()
    >>> try:
    ...     model.fit(fail=True)
    ... except ValueError:
    ...     pass
    >>> hasattr(model, "coef_")
    False
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper


def fit_method(method):
    """Decorate an estimator's ``fit``/``partial_fit``: parameters checked, failures rolled back.

    scikit-learn's ``_fit_context`` validates ``_parameter_constraints`` (and
    skips that check in nested estimators); :func:`rollback_on_error` then
    restores the estimator if the fit fails.
    """
    return _fit_context(prefer_skip_nested_validation=True)(rollback_on_error(method))


def validate_targets(y):
    """Refuse targets with NaN or infinity, as scikit-learn's ``Ridge`` does.

    ``validate_data(..., y_numeric=True)`` converts an object ``y`` to floats
    after its finiteness check, so ``None`` (common from pandas) becomes NaN
    unseen; call this on the converted ``y``.

    Parameters
    ----------
    y : array of shape (n_samples,) or (n_samples, n_targets)
        Numeric targets, in any array namespace.

    Returns
    -------
    y : array
        The same array.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import validate_targets
    >>> validate_targets(np.array([1.0, np.nan]))
    Traceback (most recent call last):
    ...
    ValueError: Input y contains NaN.
    """
    assert_all_finite(y, input_name="y")
    return y


# Features are squared in float64 (similarities, the Gram matrix of the lifted
# features), which overflows near 1e154; this bound leaves room for sums over
# up to 1e100 rows.
MAX_FEATURE_MAGNITUDE = 1e100
# Targets are squared once (the training objective of the learned solvers):
# room for sums over up to 1e20 rows below the float64 maximum.
MAX_TARGET_MAGNITUDE = 1e140


def _largest_magnitude(A):
    """The largest absolute entry of ``A`` (any namespace) as a float, 0 when empty."""
    if 0 in A.shape:
        return 0.0
    xp = array_namespace(A)
    return float(xp.max(xp.abs(A)))


def check_feature_magnitude(X):
    """Refuse features so large that squaring them overflows float64, before any work.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Finite features, in any array namespace.

    Raises
    ------
    ValueError
        If some ``|X|`` exceeds :data:`MAX_FEATURE_MAGNITUDE`; the message
        names the largest value and the fix (scale the features).

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import check_feature_magnitude
    >>> check_feature_magnitude(np.ones((2, 2)))
    >>> try:
    ...     check_feature_magnitude(np.full((2, 2), 1e300))
    ... except ValueError as exc:
    ...     print(str(exc)[:50])
    X has features as large as 1e+300 in absolute valu
    """
    largest = _largest_magnitude(X)
    if largest > MAX_FEATURE_MAGNITUDE:
        raise ValueError(
            f"X has features as large as {largest:.3g} in absolute value; ARN squares "
            "them in float64 (similarities, normal equations), which overflows beyond "
            f"about 1e150, and it accepts at most {MAX_FEATURE_MAGNITUDE:g}. Scale the "
            "features first, e.g. with sklearn.preprocessing.StandardScaler in a Pipeline."
        )


def check_target_magnitude(Y, solver):
    """Refuse targets whose squares overflow the objective of a learned solver.

    The closed form centres and solves in a way that copes with any finite
    ``y``; the learned solvers evaluate the squared error itself.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import check_target_magnitude
    >>> check_target_magnitude(np.full(3, 1e300), "closed_form")
    >>> try:
    ...     check_target_magnitude(np.full(3, 1e300), "adam")
    ... except ValueError as exc:
    ...     print(str(exc)[:40])
    y has targets as large as 1e+300 in abso
    """
    if solver == "closed_form":
        return
    largest = _largest_magnitude(Y)
    if largest > MAX_TARGET_MAGNITUDE:
        raise ValueError(
            f"y has targets as large as {largest:.3g} in absolute value; solver="
            f"{solver!r} squares the errors in float64, which overflows beyond about "
            f"1e150, and it accepts at most {MAX_TARGET_MAGNITUDE:g}. Scale the targets, "
            "e.g. sklearn.compose.TransformedTargetRegressor(regressor, "
            "transformer=StandardScaler()), or use solver='closed_form'."
        )


def resolve_n_anchors(n_anchors, n_samples, anchors):
    """Anchors a fit can use: at most ``n_samples`` when they are drawn from the rows.

    As scikit-learn's ``Nystroem`` does for ``n_components > n_samples``, a
    default-constructed estimator fits any data: with ``anchors`` a string
    option and fewer rows than anchors, warn and use one anchor per row. Given
    anchors are used as they are (their shape is checked by
    :func:`validate_anchor_array`).

    Examples
    --------
    >>> import warnings
    >>> from arn_sklearn._utils._validation import resolve_n_anchors
    >>> resolve_n_anchors(16, 100, "kmeans")
    16
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     resolve_n_anchors(16, 10, "kmeans")
    10
    """
    if isinstance(anchors, str) and n_samples < n_anchors:
        warn_user(
            f"n_anchors={n_anchors} > n_samples={n_samples}: using n_samples={n_samples} "
            "anchors (n_anchors_). Use fewer anchors or more rows to silence this warning."
        )
        return int(n_samples)
    return int(n_anchors)


def resolve_anchors(n_anchors, anchors, shape):
    """The anchor count a fit on rows of ``shape`` uses, and the given anchors checked.

    Returns
    -------
    n_anchors : int
        See :func:`resolve_n_anchors`.
    anchor_array : ndarray of shape (n_anchors, n_features) or None
        ``anchors`` validated by :func:`validate_anchor_array`; ``None`` for a
        string option.
    """
    n_anchors = resolve_n_anchors(n_anchors, shape[0], anchors)
    if isinstance(anchors, str):
        return n_anchors, None
    return n_anchors, validate_anchor_array(anchors, n_anchors, shape[1])


def check_warm_start(fitted_counts, n_anchors, n_samples, anchors, similarity, fitted_similarity):
    """Refuse a warm start whose parameters no longer describe the fitted model.

    ``warm_start=True`` continues the fitted anchors; had ``set_params``
    changed their number or the similarity since, the model would keep the old
    ones and ``get_params()`` would not describe it.

    Parameters
    ----------
    fitted_counts : list of int
        Anchors of each fitted layer.
    n_anchors : list of int
        The counts the parameters ask for (one per layer).
    n_samples : int
    anchors : str or array-like
        The ``anchors`` parameter: a string option caps the counts at ``n_samples``.
    similarity, fitted_similarity : str

    Examples
    --------
    >>> from arn_sklearn._utils._validation import check_warm_start
    >>> check_warm_start([4], [4], 100, "auto", "dot", "dot")
    >>> try:
    ...     check_warm_start([4], [6], 100, "auto", "dot", "dot")
    ... except ValueError as exc:
    ...     print(str(exc)[:58])
    warm_start=True continues the fitted model's 4 anchors, bu
    """
    if isinstance(anchors, str):
        n_anchors = [min(m, n_samples) for m in n_anchors]
    if list(fitted_counts) != list(n_anchors):
        fitted = fitted_counts[0] if len(fitted_counts) == 1 else fitted_counts
        asked = n_anchors[0] if len(n_anchors) == 1 else n_anchors
        raise ValueError(
            f"warm_start=True continues the fitted model's {fitted} anchors, but "
            f"n_anchors={asked} now. Set warm_start=False to fit {asked} anchors from "
            "a new start, or set n_anchors back."
        )
    if similarity != fitted_similarity:
        raise ValueError(
            f"warm_start=True continues a model fitted with similarity="
            f"{fitted_similarity!r}, but similarity={similarity!r} now. Set "
            "warm_start=False to fit from a new start, or set similarity back."
        )


def check_anchor_counts(n_anchors, n_layers):
    """One positive integer anchor count per layer, from an int or a sequence.

    Examples
    --------
    >>> from arn_sklearn._utils._validation import check_anchor_counts
    >>> check_anchor_counts(4, 2), check_anchor_counts([3, 5], 2)
    ([4, 4], [3, 5])
    >>> check_anchor_counts([2.5, 3], 2)
    Traceback (most recent call last):
    ...
    ValueError: n_anchors must be a positive int or 2 positive ints (one per layer), got [2.5, 3].
    """
    counts = [n_anchors] * n_layers if isinstance(n_anchors, Integral) else list(n_anchors)
    # Integral (numpy ints included), never bool or a float that happens to be whole,
    # as the Interval(Integral) constraint of ARNRegressor.
    valid = len(counts) == n_layers and all(
        isinstance(m, Integral) and not isinstance(m, bool) and m >= 1 for m in counts
    )
    if not valid:
        raise ValueError(
            f"n_anchors must be a positive int or {n_layers} positive ints "
            f"(one per layer), got {n_anchors!r}."
        )
    return [int(m) for m in counts]


def validate_anchor_array(anchors, n_anchors, n_features):
    """A user's ``anchors=`` array as finite float64, with a clear error otherwise.

    Parameters
    ----------
    anchors : array-like of shape (n_anchors, n_features)
        Numpy, CuPy or any array-like; strings, complex values, NaN or
        infinity are refused.
    n_anchors, n_features : int
        The expected shape.

    Returns
    -------
    anchors : ndarray of shape (n_anchors, n_features), float64
        A host array (a view of ``anchors`` where no conversion was needed).

    Examples
    --------
    >>> from arn_sklearn._utils._validation import validate_anchor_array
    >>> validate_anchor_array([[0, 1]], 1, 2)
    array([[0., 1.]])
    >>> validate_anchor_array([["a", "b"]], 1, 2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: anchors must be 'kmeans', 'random' or a numeric array ...; got ... dtype <U1.
    """
    raw = to_numpy(anchors) if hasattr(anchors, "shape") else anchors
    try:
        raw = np.asarray(raw)
        numeric = raw.dtype.kind in "biuf"
        if raw.dtype.kind == "O":  # e.g. a list mixing ints and floats
            raw, numeric = raw.astype(np.float64), True
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        dtype = getattr(raw, "dtype", type(raw).__name__)
        raise ValueError(
            "anchors must be 'kmeans', 'random' or a numeric array of shape "
            f"(n_anchors, n_features); got an array of dtype {dtype}."
        )
    if raw.shape != (n_anchors, n_features):
        raise ValueError(
            f"anchors has shape {raw.shape}; expected (n_anchors, n_features) "
            f"= ({n_anchors}, {n_features})."
        )
    raw = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(raw)):
        raise ValueError("anchors contains NaN or infinity.")
    return raw


def check_array_meta(shape, dtype, input_name, estimator):
    """scikit-learn's ``check_array`` errors from a shape and dtype alone.

    Lazy collections (Dask) cannot be checked value by value up front; their
    shape and dtype can, and should be refused with the messages numpy input
    gets from ``validate_data``.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import check_array_meta
    >>> check_array_meta((10, 0), np.float64, "y", "ARNRegressor")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Found array with 0 feature(s) (shape=(10, 0)) while a minimum of 1 is required...
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported (input {input_name}, dtype {dtype}).")
    # Object blocks are converted to float64 (and checked for NaN) on the workers.
    if dtype.kind not in "biufO":
        raise ValueError(f"Input {input_name} must be numeric; got dtype {dtype}.")
    if len(shape) >= 1 and shape[0] < 1:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={tuple(shape)}) while a "
            f"minimum of 1 is required by {estimator}."
        )
    if len(shape) == 2 and shape[1] < 1:
        raise ValueError(
            f"Found array with {shape[1]} feature(s) (shape={tuple(shape)}) while a "
            f"minimum of 1 is required by {estimator}."
        )


def cast_predictions(y_pred, dtype, xp):
    """Predictions (computed in float64) in the input's dtype, refusing an overflow.

    Predictions are returned in ``X``'s floating dtype; a float32 ``X`` with
    targets beyond the float32 range (about 3.4e38) would silently give inf.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import cast_predictions
    >>> cast_predictions(np.array([1.0, 2.0]), np.float32, np)
    array([1., 2.], dtype=float32)
    >>> cast_predictions(np.array([1e50]), np.float32, np)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Predictions reach 1e+50, beyond the float32 range of X; ...
    """
    if dtype != xp.float64 and y_pred.shape[0] > 0:
        peak = float(xp.max(xp.abs(y_pred)))
        if peak > float(xp.finfo(dtype).max):
            raise ValueError(
                f"Predictions reach {peak:.3g}, beyond the float32 range of X; pass X as float64."
            )
    return xp.astype(y_pred, dtype)


def check_finite_solution(weights, y_mean, xp):
    """Refuse a solved model that overflowed float64 rather than predict NaN.

    The normal equations hold products such as ``x * y`` and ``x * x``: inputs
    of finite but extreme magnitude (say ``|x| ~ 1e19`` and ``|y| ~ 1e300``)
    overflow them, and the solve then returns inf or NaN weights.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn._utils._validation import check_finite_solution
    >>> check_finite_solution(np.array([[np.nan]]), np.zeros(1), np)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The fit overflowed float64: ...
    """
    if not (bool(xp.all(xp.isfinite(weights))) and bool(xp.all(xp.isfinite(y_mean)))):
        raise ValueError(
            "The fit overflowed float64: products of X and y (or of X with itself) "
            "are beyond 1.8e308. Scale X and y first, e.g. with StandardScaler and "
            "sklearn.compose.TransformedTargetRegressor."
        )
