"""YCbCr conversion (MATLAB ``rgb2ycbcr`` convention) and PSNR on the Y channel."""

import numpy as np

# ITU-R BT.601 for RGB in [0, 1], giving Y in [16, 235] / 255 as MATLAB does;
# the super-resolution benchmarks compute PSNR on this Y.
_RGB_TO_YCBCR = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def as_float_image(image):
    """Float64 image in [0, 1] from uint8/uint16/bool/float input; drops alpha.

    uint8 is divided by 255 and uint16 by 65535. Other integer dtypes have no
    conventional range (an int64 image of 0..255 values divided by the int64
    maximum would be black), so they are refused: convert them first.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres._color import as_float_image
    >>> as_float_image(np.array([[0, 255]], dtype=np.uint8))
    array([[0., 1.]])
    >>> as_float_image(np.array([[0, 255]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Integer images must be uint8 (0..255) or uint16 (0..65535); got int64. ...
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"Expected a grey (H, W) or RGB (H, W, 3) image; got shape {image.shape}.")
    if image.dtype == np.bool_:
        return image.astype(np.float64)
    if image.dtype in (np.uint8, np.uint16):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    if np.issubdtype(image.dtype, np.integer):
        raise ValueError(
            "Integer images must be uint8 (0..255) or uint16 (0..65535); got "
            f"{image.dtype}. Convert it, e.g. image.astype(np.uint8) for values in "
            "0..255, or pass floats in [0, 1]."
        )
    return image.astype(np.float64)


def rgb_to_ycbcr(rgb):
    """``(H, W, 3)`` RGB in [0, 1] to YCbCr in [0, 1] (MATLAB's scaling / 255)."""
    return (rgb @ _RGB_TO_YCBCR.T + _YCBCR_OFFSET) / 255.0


def ycbcr_to_rgb(ycbcr):
    """Inverse of :func:`rgb_to_ycbcr`."""
    return (ycbcr * 255.0 - _YCBCR_OFFSET) @ np.linalg.inv(_RGB_TO_YCBCR).T


def luminance(image):
    """The Y channel of an RGB image, or a grey image itself, in [0, 1]."""
    image = as_float_image(image)
    return rgb_to_ycbcr(image)[..., 0] if image.ndim == 3 else image


def psnr(reference, estimate, border=0, data_range=1.0):
    """Peak signal-to-noise ratio in dB, shaving ``border`` pixels on each side.

    The benchmarks of A+ and ARN shave ``scale`` pixels and compare Y channels.

    Parameters
    ----------
    reference, estimate : ndarray of shape (H, W)
    border : int, default=0
    data_range : float, default=1.0
        Peak value (1 for images in [0, 1]).

    Returns
    -------
    psnr : float
        ``10 log10(data_range^2 / MSE)``; ``inf`` for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> from arn_sklearn.superres import psnr
    >>> ref = np.zeros((4, 4))
    >>> round(psnr(ref, ref + 0.1), 6)
    20.0
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(
            f"reference and estimate shapes differ: {reference.shape} vs {estimate.shape}."
        )
    if border:
        if 2 * border >= min(reference.shape[:2]):
            raise ValueError(f"border={border} leaves no pixels of a {reference.shape} image.")
        reference = reference[border:-border, border:-border]
        estimate = estimate[border:-border, border:-border]
    mse = float(np.mean((reference - estimate) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))
