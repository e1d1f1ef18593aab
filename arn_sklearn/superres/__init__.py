"""Single-image super-resolution with the A+ patch pipeline (ARN paper, section 4.2).

The pipeline of Timofte et al. (A+, ACCV 2014): the Y channel is shrunk and
re-enlarged bicubically (MATLAB ``imresize``), the gradient features of
overlapping patches of the enlarged image are reduced by PCA, and a
regressor predicts each patch's missing high frequencies; overlapping
predictions are averaged. :class:`SuperResolver` wraps any multi-output
regressor (:class:`arn_sklearn.ARNRegressor`, :class:`APlusRegressor`, ...).
"""

from ._aplus import APlusRegressor, aplus_anchors
from ._color import luminance, psnr, rgb_to_ycbcr, ycbcr_to_rgb
from ._data import TEST_IMAGES, TRAIN_IMAGES, load_folder, load_skimage_images
from ._features import PatchFeatures, build_training_set, degrade, modcrop
from ._model import SuperResolver
from ._patches import extract_patches, gradient_patch_features, reconstruct_from_patches
from ._resize import imresize

__all__ = [
    "APlusRegressor",
    "PatchFeatures",
    "SuperResolver",
    "TEST_IMAGES",
    "TRAIN_IMAGES",
    "aplus_anchors",
    "build_training_set",
    "degrade",
    "extract_patches",
    "gradient_patch_features",
    "imresize",
    "load_folder",
    "load_skimage_images",
    "luminance",
    "modcrop",
    "psnr",
    "reconstruct_from_patches",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]
