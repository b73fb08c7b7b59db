"""Papers 002-004 (Transfer, DETL, XrayCNN): a grey X-ray -> float32 [size, size, 3].

All three papers only resize the radiograph to the network's input: 224 x
224 for Transfer's DenseNet and DETL's CNN, 64 x 64 for XrayCNN, and 299 x
299 for Transfer's InceptionV3 (its ImageNet input size). The grey image is
repeated over three channels because the ImageNet backbones (and XrayCNN's
Table 1, input 64 x 64 x 3) take three. Values stay in [0, 255]: each
model's own ``preprocess_input`` (or rescaling) layer does the rest.

Steps, in order: :func:`to_grey_255` (uint8 or float [0, 1] -> float32
0-255) -> :func:`resize_xray` (``cv2.INTER_AREA`` along an axis that
shrinks, ``cv2.INTER_CUBIC`` along one that grows, clipped to [0, 255]) ->
:func:`to_rgb` (three identical channels). :func:`xray` chains them.
"""

import numpy as np

from covid_keras import errors
from covid_keras.preprocess.body_slices import resize_grey

#: Transfer (002): DenseNet input side.
TRANSFER_SIZE = 224
#: Transfer (002): InceptionV3's ImageNet input side.
INCEPTION_SIZE = 299
#: DETL (003) input side.
DETL_SIZE = 224
#: XrayCNN (004) input side (Table 1: 64 x 64 x 3).
XRAYCNN_SIZE = 64
#: Float inputs may exceed [0, 1] by this much (rounding), then are clipped.
_FLOAT_TOLERANCE = 1e-6


def to_grey_255(img):
    """A grey X-ray as float32 [H, W] in [0, 255].

    Args:
        img: [H, W] uint8, or float in [0, 1] (what
            :func:`covid_keras.data.read_xray` returns).

    Returns:
        float32 [H, W]: uint8 values as they are, floats x 255.

    Raises:
        ConfigurationError: ``img`` is colour or 3-D, or not uint8 / float,
            or a float outside [0, 1].
        PreprocessingError: ``img`` is empty or holds NaN / infinite values.

    Example:
        >>> to_grey_255(np.array([[0.0, 0.5, 1.0]], np.float32))
        array([[  0. , 127.5, 255. ]], dtype=float32)
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise errors.ConfigurationError(
            f"`img` must be a grey [H, W] X-ray (read_xray converts colour to grey). "
            f"Received: shape={img.shape}"
        )
    if img.size == 0:
        raise errors.PreprocessingError(f"The X-ray is empty (shape {img.shape}); check the image file.")
    if img.dtype == np.uint8:
        return img.astype(np.float32)
    if not np.issubdtype(img.dtype, np.floating):
        raise errors.ConfigurationError(
            f"`img` must be uint8 or float in [0, 1] (read_xray's output). Received: dtype={img.dtype}"
        )
    if not np.all(np.isfinite(img)):
        raise errors.PreprocessingError(
            "The X-ray holds NaN or infinite values; check the image file or the step that made it."
        )
    lo, hi = float(img.min()), float(img.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
        raise errors.ConfigurationError(
            f"A float `img` must lie in [0, 1] (read_xray's output); scale it or pass uint8. "
            f"Received: values in [{lo:g}, {hi:g}]"
        )
    return np.clip(img.astype(np.float32) * np.float32(255.0), 0.0, 255.0)


def resize_xray(grey, size=TRANSFER_SIZE):
    """Resizes a float [H, W] image in [0, 255] to float32 [size, size] in [0, 255].

    ``cv2.INTER_AREA`` along an axis that shrinks, ``cv2.INTER_CUBIC``
    along one that grows; the cubic overshoot is clipped to [0, 255].

    Raises:
        ConfigurationError: ``size`` is not a positive integer.

    Example:
        >>> resize_xray(np.full((100, 80), 255.0, np.float32), 64).shape
        (64, 64)
    """
    return np.clip(resize_grey(grey, size), 0.0, 255.0)


def to_rgb(grey):
    """[H, W] -> [H, W, 3] with three identical channels (float32).

    Example:
        >>> to_rgb(np.zeros((2, 2), np.float32)).shape
        (2, 2, 3)
    """
    grey = np.asarray(grey, dtype=np.float32)
    return np.repeat(grey[..., None], 3, axis=-1)


def xray(img, size=TRANSFER_SIZE):
    """A grey X-ray -> float32 [size, size, 3] in [0, 255] (papers 002-004).

    :func:`to_grey_255` -> :func:`resize_xray` -> :func:`to_rgb`. Use
    ``size=``:data:`TRANSFER_SIZE` / :data:`DETL_SIZE` (224),
    :data:`INCEPTION_SIZE` (299) or :data:`XRAYCNN_SIZE` (64).

    Args:
        img: grey [H, W], uint8 or float in [0, 1] (what
            :func:`covid_keras.data.read_xray` returns).
        size: output side.

    Returns:
        float32 [size, size, 3] in [0, 255], three identical channels.

    Raises:
        ConfigurationError: ``size`` is not a positive integer; ``img`` is
            colour / 3-D, not uint8 or float, or a float outside [0, 1].
        PreprocessingError: ``img`` is empty or holds NaN / infinite values.

    Example:
        >>> x = xray(np.random.default_rng(0).random((128, 100)), size=XRAYCNN_SIZE)
        >>> x.shape, x.dtype, bool(x.min() >= 0), bool(x.max() <= 255)
        ((64, 64, 3), dtype('float32'), True, True)
    """
    grey = to_grey_255(img)
    return to_rgb(resize_xray(grey, size))
