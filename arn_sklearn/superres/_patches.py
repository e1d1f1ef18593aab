"""Overlapping patches, gradient responses and reconstruction by averaging.

Patches are ``3 * scale`` pixels square on the high-resolution grid (3x3
low-resolution pixels, 9x9 at x3) and start every ``scale`` pixels, as in A+;
the last row and column of patches are moved flush with the image border so
that every pixel is covered.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import correlate1d

# A+'s features: first and second order derivatives along rows and columns.
GRADIENT_FILTERS = (np.array([-1.0, 0.0, 1.0]), np.array([1.0, 0.0, -2.0, 0.0, 1.0]) / 2.0)
LR_PATCH_SIZE = 3


def patch_size(scale):
    """Side of a high-resolution patch: ``3 * scale``."""
    return LR_PATCH_SIZE * scale


def grid_positions(length, size, step):
    """Start offsets of patches of ``size`` every ``step``, covering ``length``."""
    if length < size:
        raise ValueError(f"Image side {length} is smaller than the patch size {size}.")
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return np.asarray(starts)


def extract_patches(image, scale, index=None):
    """Overlapping ``p x p`` patches (``p = 3 * scale``) of a 2-D image, flattened.

    Parameters
    ----------
    image : ndarray of shape (H, W)
    scale : int
    index : ndarray of int, default=None
        Keep only these patches (positions in the row-major grid order).

    Returns
    -------
    patches : ndarray of shape (n_patches, p * p)
    """
    p = patch_size(scale)
    rows = grid_positions(image.shape[0], p, scale)
    cols = grid_positions(image.shape[1], p, scale)
    windows = sliding_window_view(image, (p, p))
    if index is None:
        return windows[rows][:, cols].reshape(-1, p * p)
    r, c = np.divmod(np.asarray(index), cols.size)
    return windows[rows[r], cols[c]].reshape(-1, p * p)


def n_patches(shape, scale):
    """Number of patches :func:`extract_patches` returns for an image shape."""
    p = patch_size(scale)
    return grid_positions(shape[0], p, scale).size * grid_positions(shape[1], p, scale).size


def gradient_images(image):
    """The four A+ filter responses: d/dx, d/dy, d2/dx2, d2/dy2."""
    out = []
    for kernel in GRADIENT_FILTERS:
        out.append(correlate1d(image, kernel, axis=1, mode="nearest"))
        out.append(correlate1d(image, kernel, axis=0, mode="nearest"))
    return out


def gradient_patch_features(mid, scale, index=None):
    """Raw A+ features of a mid-resolution image: four gradient patches concatenated.

    Returns
    -------
    features : ndarray of shape (n_patches, 4 * p * p)
    """
    return np.hstack([extract_patches(g, scale, index) for g in gradient_images(mid)])


def reconstruct_from_patches(patches, shape, scale):
    """Average overlapping flattened patches back into an image.

    The inverse of :func:`extract_patches` for consistent patches: each pixel
    is the mean of the patch values that cover it.

    Parameters
    ----------
    patches : ndarray of shape (n_patches, p * p)
    shape : tuple of int
        ``(H, W)`` of the image.
    scale : int

    Returns
    -------
    image : ndarray of shape (H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import extract_patches, reconstruct_from_patches
    >>> image = np.arange(100.0).reshape(10, 10)
    >>> patches = extract_patches(image, scale=2)
    >>> patches.shape
    (9, 36)
    >>> bool(np.allclose(reconstruct_from_patches(patches, image.shape, 2), image))
    True
    """
    p = patch_size(scale)
    rows = grid_positions(shape[0], p, scale)
    cols = grid_positions(shape[1], p, scale)
    if patches.shape != (rows.size * cols.size, p * p):
        raise ValueError(
            f"patches has shape {patches.shape}; a {shape} image at scale {scale} "
            f"needs ({rows.size * cols.size}, {p * p})."
        )
    total = np.zeros(shape)
    count = np.zeros(shape)
    blocks = patches.reshape(rows.size, cols.size, p, p)
    # Loop over the p*p offsets (81 at x3), not over the patches.
    for i in range(p):
        for j in range(p):
            rr = (rows + i)[:, None]
            cc = (cols + j)[None, :]
            np.add.at(total, (rr, cc), blocks[:, :, i, j])
            np.add.at(count, (rr, cc), 1.0)
    return total / count
