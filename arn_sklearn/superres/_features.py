"""The A+ feature transformer and the training-set builder."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._color import luminance
from ._patches import extract_patches, gradient_patch_features, n_patches
from ._resize import imresize


def modcrop(image, scale):
    """Crop an image so that its height and width are multiples of ``scale``."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def degrade(hr, scale):
    """Low-resolution and bicubic mid-resolution versions of a 2-D HR image.

    Parameters
    ----------
    hr : ndarray of shape (H, W)
        Already cropped to multiples of ``scale`` (see :func:`modcrop`).
    scale : int

    Returns
    -------
    lr : ndarray of shape (H / scale, W / scale)
    mid : ndarray of shape (H, W)
        ``lr`` upscaled bicubically back to the size of ``hr``.
    """
    lr = imresize(hr, 1.0 / scale)
    return lr, imresize(lr, scale, output_shape=hr.shape)


class PatchFeatures(TransformerMixin, BaseEstimator):
    """A+ patch features of mid-resolution images, reduced by PCA.

    Each patch of ``3 * scale`` pixels (taken every ``scale`` pixels) of the
    bicubic mid-resolution image is described by its first and second order
    derivatives along both axes (filters ``[-1, 0, 1]`` and
    ``[1, 0, -2, 0, 1] / 2`` and their transposes), i.e. ``4 * (3 scale)^2``
    values, projected onto the leading eigenvectors of their (uncentred)
    second-moment matrix that keep ``energy`` of its trace, as A+ does.

    Parameters
    ----------
    scale : int, default=3
        Upscaling factor (2, 3 or 4 in the benchmarks).
    energy : float in (0, 1], default=0.999
        Fraction of the feature energy kept by the projection (A+: 99.9%,
        about 30 dimensions at x3).

    Attributes
    ----------
    components_ : ndarray of shape (n_raw_features, `n_components_`)
        Orthonormal projection; ``transform`` returns ``raw @ components_``.
    n_components_ : int
    explained_energy_ : float
        Fraction of the energy of the training features kept.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import PatchFeatures
    >>> rng = np.random.RandomState(0)
    >>> mid = rng.uniform(size=(30, 30))
    >>> feats = PatchFeatures(scale=3).fit([mid])
    >>> feats.transform([mid]).shape[0]
    64
    """

    _parameter_constraints: dict = {
        "scale": [Interval(numbers.Integral, 1, None, closed="left")],
        "energy": [Interval(numbers.Real, 0, 1, closed="right")],
    }

    def __init__(self, scale=3, energy=0.999):
        self.scale = scale
        self.energy = energy

    def fit(self, X, y=None):
        """Learn the projection from a list of 2-D mid-resolution images."""
        self._validate_params()
        return self.fit_raw(self.raw_features(X))

    def fit_raw(self, raw):
        """Learn the projection from raw gradient features (rows are patches)."""
        self._validate_params()
        raw = np.asarray(raw, dtype=np.float64)
        moment = raw.T @ raw
        eigval, eigvec = np.linalg.eigh(moment)
        eigval, eigvec = np.clip(eigval[::-1], 0, None), eigvec[:, ::-1]
        total = eigval.sum()
        if total <= 0:
            raise ValueError("The training images have no gradient energy (flat images).")
        cumulative = np.cumsum(eigval) / total
        k = int(np.searchsorted(cumulative, self.energy - 1e-12) + 1)
        k = min(k, eigval.size)
        self.components_ = eigvec[:, :k]
        self.n_components_ = k
        self.explained_energy_ = float(cumulative[k - 1])
        self.n_features_in_ = raw.shape[1]
        return self

    def raw_features(self, X):
        """Stacked raw gradient features of a list of 2-D images."""
        if isinstance(X, np.ndarray) and X.ndim == 2:
            X = [X]
        return np.vstack([gradient_patch_features(np.asarray(m, float), self.scale) for m in X])

    def transform(self, X):
        """Projected features of all patches of a list of 2-D mid-resolution images."""
        check_is_fitted(self)
        return self.transform_raw(self.raw_features(X))

    def transform_raw(self, raw):
        """Project raw gradient features."""
        check_is_fitted(self)
        if raw.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"raw features have {raw.shape[1]} columns; the projection was fitted "
                f"on {self.components_.shape[0]} (a different scale?)."
            )
        return raw @ self.components_


def build_training_set(
    images, scale=3, energy=0.999, max_patches_per_image=None, random_state=None, verbose=0
):
    """A+ training material: PCA features of mid-res patches and HR residual targets.

    Each image is converted to Y, cropped to a multiple of ``scale``, shrunk
    bicubically and upscaled back (the mid-resolution image); the targets
    are the ``(3 scale)^2`` pixels of the HR patch minus the mid-res patch.

    Parameters
    ----------
    images : iterable of ndarray
        High-resolution grey or RGB images (uint8, uint16 or float in [0, 1]).
    scale : int, default=3
    energy : float, default=0.999
    max_patches_per_image : int, default=None
        Keep at most this many random patches per image (all if None).
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
        Print one line per image.

    Returns
    -------
    features : PatchFeatures
        Fitted on the returned patches.
    X : ndarray of shape (n_patches, `features.n_components_`)
    Y : ndarray of shape (n_patches, (3 * scale) ** 2)

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import build_training_set
    >>> image = np.random.RandomState(0).uniform(size=(24, 24))
    >>> features, X, Y = build_training_set([image], scale=2, max_patches_per_image=50)
    >>> X.shape[0], Y.shape
    (50, (50, 36))
    """
    rng = check_random_state(random_state)
    raws, targets = [], []
    for i, image in enumerate(images):
        hr = modcrop(luminance(image), scale)
        _, mid = degrade(hr, scale)
        index = None
        total = n_patches(hr.shape, scale)
        if max_patches_per_image is not None and total > max_patches_per_image:
            index = np.sort(rng.choice(total, size=max_patches_per_image, replace=False))
        raws.append(gradient_patch_features(mid, scale, index))
        targets.append(extract_patches(hr - mid, scale, index))
        if verbose:
            print(f"[superres] image {i + 1}: {hr.shape[1]}x{hr.shape[0]}, {len(raws[-1])} patches")
    if not raws:
        raise ValueError("No training images were given.")
    raw = np.vstack(raws)
    features = PatchFeatures(scale=scale, energy=energy).fit_raw(raw)
    if verbose:
        print(
            f"[superres] {raw.shape[0]} patches, PCA {raw.shape[1]} -> "
            f"{features.n_components_} dims ({100 * features.explained_energy_:.2f}% energy)"
        )
    return features, features.transform_raw(raw), np.vstack(targets)
