"""Warnings attributed to the user's line, however deep inside the package they start."""

import os
import sys
import warnings

import sklearn

# Frames in these folders are skipped by warn_user: the warning points at the
# first line of the user's code (or of their library), however deep the call.
_INTERNAL_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # arn_sklearn/
    os.path.dirname(os.path.abspath(sklearn.__file__)) + os.sep,
)


def warn_user(message, category=UserWarning):
    """``warnings.warn`` attributed to the caller's code, not to a line of ours.

    A fixed ``stacklevel`` breaks whenever a call chain gets one frame
    longer or shorter (a refactoring, sklearn's ``_fit_context`` wrapper, a
    ``Pipeline``); this walks the stack past arn_sklearn's and scikit-learn's
    own frames instead.

    Examples
    --------
    >>> import warnings
    >>> from arn_sklearn._utils._warnings import warn_user
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("look here")
    >>> caught[0].filename.endswith("_base.py")
    False
    """
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _INTERNAL_DIRS
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
