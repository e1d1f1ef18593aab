"""Natural images that ship with scikit-image, and the train/test split we use."""

import numpy as np

from .._utils._optional import import_optional
from ._color import as_float_image

# Natural photographs and textures shipped with scikit-image (no download).
# The test images are the classic portrait / object photographs; the
# training set is the rest ("motorcycle" is the left view of
# ``stereo_motorcycle``; the right view is left out as a near duplicate).
TRAIN_IMAGES = (
    "coins",
    "moon",
    "rocket",
    "motorcycle",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
)
TEST_IMAGES = ("astronaut", "camera", "chelsea", "coffee")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _skimage():
    """scikit-image with its ``data`` and ``io`` submodules loaded."""
    import_optional("skimage.io", "examples", "arn_sklearn.superres")
    import_optional("skimage.data", "examples", "arn_sklearn.superres")
    return import_optional("skimage", "examples", "arn_sklearn.superres")


def load_skimage_images(names):
    """Float images in [0, 1] of the named ``skimage.data`` images.

    Examples
    --------
    >>> from arn_sklearn.superres import TEST_IMAGES, load_skimage_images
    >>> images = load_skimage_images(TEST_IMAGES[:1])
    >>> images["astronaut"].shape
    (512, 512, 3)
    """
    skimage = _skimage()
    special = {"motorcycle": lambda: skimage.data.stereo_motorcycle()[0]}
    return {
        name: as_float_image(special.get(name, getattr(skimage.data, name, None))())
        for name in names
    }


def load_folder(path):
    """Float images of every image file in a folder, sorted by name."""
    from pathlib import Path

    if not Path(path).is_dir():
        raise FileNotFoundError(f"Image folder not found: {path}")
    files = sorted(
        p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {path}.")
    return {p.name: as_float_image(read_image(p)) for p in files}


def read_image(path):
    """The pixels of an image file, with a one-line error for a missing or unreadable file.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If the file cannot be decoded as an image.
    """
    from pathlib import Path

    skimage = _skimage()
    if not Path(path).is_file():
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        return np.asarray(skimage.io.imread(path))
    except Exception as exc:  # each image plugin raises its own types
        raise ValueError(f"Cannot read {path} as an image: {exc}") from exc
