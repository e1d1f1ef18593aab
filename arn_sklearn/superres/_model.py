"""Patch-based super-resolution around any multi-output regressor."""

import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_X_y, has_fit_parameter

from .._utils._validation import rollback_on_error, validate_targets
from ._aplus import APlusRegressor, normalise_rows, target_scales
from ._color import as_float_image, rgb_to_ycbcr, ycbcr_to_rgb
from ._features import build_training_set
from ._patches import gradient_patch_features, reconstruct_from_patches
from ._resize import imresize


class SuperResolver(BaseEstimator):
    """Single-image super-resolution with the A+ patch pipeline and any regressor.

    Training: each HR image's Y channel is shrunk by ``scale`` (bicubic) and
    upscaled back (the mid-resolution image); the regressor learns, per
    overlapping patch, the HR residual (HR minus mid-res, ``(3 scale)^2``
    values) from the PCA-reduced gradient features of the mid-res patch
    (:class:`PatchFeatures`). Upscaling: the LR image is upscaled
    bicubically, the predicted residual patches are averaged where they
    overlap and added; colour images get their chroma bicubically.

    Parameters
    ----------
    regressor : estimator, default=None
        Multi-output regressor with ``fit(X, Y)`` and ``predict(X)``; ``None``
        means :class:`APlusRegressor` with its defaults.
    scale : int, default=3
        Upscaling factor.
    energy : float, default=0.999
        Energy kept by the PCA of the features (A+: 99.9%).
    normalize : bool, default=True
        Divide each feature vector by its norm, and its target by the same
        norm (or by 1 for nearly flat patches), as A+ does; predictions are
        multiplied by the feature norm, so that a patch's predicted residual
        scales with its contrast (for A+'s bias-free regressors this is A+'s
        own ``P_k x`` on the raw features). Flat and 8-bit quantised areas,
        whose tiny features normalise to arbitrary unit vectors, thus get
        tiny residuals rather than edge-sized ones.
    patch_weights : {"uniform", "contrast"}, default="uniform"
        Weights of the training patches in the regressor's least squares.
        ``"uniform"`` (A+) weighs every normalised patch alike. ``"contrast"``
        weighs each by its feature norm: a patch's predicted residual is
        multiplied by that norm, so its error in the image grows with it, and
        uniform weights spend the fit on low-contrast patches that barely
        change the output (+0.11 dB mean PSNR with 256 top-4 ARN anchors on the
        held-out photographs, ``benchmarks/superres_topk.py``). Needs a
        regressor whose ``fit`` takes ``sample_weight`` (not A+). With
        ``normalize=False`` the features are still weighted by their norm.
    max_patches_per_image : int, default=None
        Random patches kept per training image (all if None).
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
        1 prints progress of feature extraction and timings.

    Attributes
    ----------
    features_ : PatchFeatures
    regressor_ : estimator
        The fitted clone of ``regressor``.
    n_train_patches_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import APlusRegressor, SuperResolver
    >>> rng = np.random.RandomState(0)
    >>> images = [rng.uniform(size=(36, 36)) for _ in range(3)]
    >>> sr = SuperResolver(APlusRegressor(n_anchors=4, neighborhood_size=64,
    ...                                   random_state=0), scale=3).fit(images)
    >>> sr.upscale(rng.uniform(size=(10, 12))).shape
    (30, 36)
    """

    _parameter_constraints: dict = {
        "regressor": [None, HasMethods(["fit", "predict"])],
        "scale": [Interval(numbers.Integral, 1, None, closed="left")],
        "energy": [Interval(numbers.Real, 0, 1, closed="right")],
        "normalize": ["boolean"],
        "patch_weights": [StrOptions({"uniform", "contrast"})],
        "max_patches_per_image": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        regressor=None,
        *,
        scale=3,
        energy=0.999,
        normalize=True,
        patch_weights="uniform",
        max_patches_per_image=None,
        random_state=None,
        verbose=0,
    ):
        self.regressor = regressor
        self.scale = scale
        self.energy = energy
        self.normalize = normalize
        self.patch_weights = patch_weights
        self.max_patches_per_image = max_patches_per_image
        self.random_state = random_state
        self.verbose = verbose

    @rollback_on_error
    def fit(self, images, y=None):
        """Extract the training patches of HR images and fit the regressor.

        Parameters
        ----------
        images : iterable of ndarray
            High-resolution grey or RGB training images.
        y : None
            Ignored.

        Returns
        -------
        self : SuperResolver
        """
        self._validate_params()
        tic = time.perf_counter()
        features, X, Y = build_training_set(
            images,
            self.scale,
            self.energy,
            self.max_patches_per_image,
            self.random_state,
            self.verbose,
        )
        if self.verbose:
            print(f"[superres] features in {time.perf_counter() - tic:.1f} s")
        return self.fit_patches(features, X, Y)

    @rollback_on_error
    def fit_patches(self, features, X, Y):
        """Fit the regressor on a prepared training set (see :func:`build_training_set`).

        Lets several regressors share one feature extraction.
        """
        self._validate_params()
        if features.scale != self.scale:
            raise ValueError(f"features were built at scale {features.scale}, not {self.scale}.")
        X, Y = check_X_y(X, Y, multi_output=True, y_numeric=True, dtype=np.float64)
        validate_targets(Y)
        tic = time.perf_counter()
        regressor = self._make_regressor()
        fit_params = {}
        if self.patch_weights == "contrast":
            if not has_fit_parameter(regressor, "sample_weight"):
                raise ValueError(
                    f"patch_weights='contrast' needs a regressor whose fit takes "
                    f"sample_weight; {type(regressor).__name__} does not. "
                    "Use patch_weights='uniform'."
                )
            fit_params["sample_weight"] = np.linalg.norm(X, axis=1)
        if self.normalize:
            X, norms = normalise_rows(X)
            Y = Y / target_scales(norms)[:, None]
        regressor.fit(X, Y, **fit_params)
        if self.verbose:
            print(
                f"[superres] {type(regressor).__name__} fitted on {X.shape[0]} patches "
                f"in {time.perf_counter() - tic:.1f} s"
            )
        self.features_ = features
        self.regressor_ = regressor
        self.n_train_patches_ = X.shape[0]
        return self

    def _make_regressor(self):
        if self.regressor is None:
            return APlusRegressor()
        return clone(self.regressor)

    def predict_residual(self, mid):
        """Predicted HR residual image for a 2-D mid-resolution image."""
        check_is_fitted(self)
        X = self.features_.transform_raw(gradient_patch_features(mid, self.scale))
        if self.normalize:
            X, norms = normalise_rows(X)
        patches = np.asarray(self.regressor_.predict(X))
        if self.normalize:
            # Scale back by the norm itself, not by target_scales(norms): the
            # unit vector of a flat patch's features is noise (quantisation or
            # rounding), and answering it at full contrast drew maze patterns
            # over skies (issue 20).
            patches = patches * norms[:, None]
        return reconstruct_from_patches(patches, mid.shape, self.scale)

    def upscale_y(self, lr):
        """Super-resolve a 2-D (Y or grey) image in [0, 1]; not clipped."""
        lr = np.asarray(lr, dtype=np.float64)
        if lr.ndim != 2:
            raise ValueError(
                f"upscale_y expects a 2-D (Y or grey) image; got shape {lr.shape}. "
                "Use upscale() for colour images."
            )
        mid = imresize(lr, self.scale)
        return mid + self.predict_residual(mid)

    def upscale(self, image):
        """Super-resolve a grey or RGB image; returns floats clipped to [0, 1].

        Parameters
        ----------
        image : ndarray of shape (h, w) or (h, w, 3)
            uint8 (/255), uint16 (/65535) or float in [0, 1]; other integer dtypes are refused.

        Returns
        -------
        upscaled : ndarray of shape (scale * h, scale * w[, 3])
        """
        check_is_fitted(self)
        image = as_float_image(image)
        if image.ndim == 2:
            return np.clip(self.upscale_y(image), 0, 1)
        ycbcr = rgb_to_ycbcr(image)
        up = imresize(ycbcr, self.scale)
        up[..., 0] = self.upscale_y(ycbcr[..., 0])
        return np.clip(ycbcr_to_rgb(up), 0, 1)
