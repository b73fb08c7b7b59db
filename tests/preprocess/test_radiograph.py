"""Papers 002-004's X-ray input: grey -> float32 [size, size, 3] in [0, 255]."""

import cv2
import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data import synthetic
from covid_keras.preprocess.radiograph import (
    DETL_SIZE,
    INCEPTION_SIZE,
    TRANSFER_SIZE,
    XRAYCNN_SIZE,
    xray,
)


@pytest.fixture(scope="module")
def film():
    """A phantom radiograph (DRR) as read_xray returns it: float32 [128, 128] in [0, 1]."""
    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=48, size=64, slice_spacing=8.0,
                                              seed=2, noise_hu=0.0)
    img = synthetic.drr(hu, spacing, size=128)
    assert img.dtype == np.float32 and img.shape == (128, 128)
    return img


def _check(x, size):
    assert x.shape == (size, size, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 255.0
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_paper_sizes():
    assert (TRANSFER_SIZE, DETL_SIZE, XRAYCNN_SIZE, INCEPTION_SIZE) == (224, 224, 64, 299)


@pytest.mark.parametrize("size", [XRAYCNN_SIZE, TRANSFER_SIZE, INCEPTION_SIZE])
def test_float_phantom_film(film, size):
    x = xray(film, size=size)
    _check(x, size)
    assert x.max() > 200  # the [0, 1] film is scaled to 0-255


def test_default_size_is_224(film):
    _check(xray(film), 224)


def test_downsizing_uses_area(film):
    x = xray(film, size=64)
    area = cv2.resize(film * np.float32(255), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x[..., 0], area, atol=1e-3)


def test_upsizing_uses_cubic_clipped():
    rng = np.random.default_rng(0)
    img = (rng.random((40, 50)) > 0.5).astype(np.uint8) * 255  # sharp edges: cubic overshoots
    x = xray(img, size=224)
    cubic = cv2.resize(img.astype(np.float32), (224, 224), interpolation=cv2.INTER_CUBIC)
    assert cubic.min() < 0 and cubic.max() > 255
    _check(x, 224)
    np.testing.assert_allclose(x[..., 0], np.clip(cubic, 0, 255), atol=1e-3)
    assert x.min() == 0 and x.max() == 255


@pytest.mark.parametrize("size", [64, 224])
def test_uint8_and_float_inputs_agree(film, size):
    u8 = np.rint(film * 255).astype(np.uint8)
    a, b = xray(u8, size=size), xray(u8.astype(np.float32) / 255, size=size)
    _check(a, size)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_mixed_aspect_and_same_size():
    x = xray(np.full((300, 150), 0.5, np.float32), size=224)  # rows shrink, columns grow
    _check(x, 224)
    np.testing.assert_allclose(x, 127.5, atol=1e-3)
    img = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / (64 * 64)
    np.testing.assert_allclose(xray(img, size=64)[..., 0], img * 255, rtol=1e-6)


@pytest.mark.parametrize("size", [0, -64, 2.5, True, "224", None])
def test_bad_size(film, size):
    with pytest.raises(errors.ConfigurationError, match="size="):
        xray(film, size=size)


def test_bad_images(film):
    with pytest.raises(errors.ConfigurationError, match="grey"):
        xray(np.stack([film] * 3, axis=-1))  # colour
    with pytest.raises(errors.ConfigurationError, match="grey"):
        xray(np.zeros((4, 32, 32), np.float32))  # a volume
    with pytest.raises(errors.ConfigurationError, match="grey"):
        xray(np.zeros(32, np.float32))
    with pytest.raises(errors.ConfigurationError, match=r"\[0, 1\]"):
        xray(film * 255)  # floats already in 0-255
    with pytest.raises(errors.ConfigurationError, match="dtype"):
        xray((film * 4095).astype(np.uint16))
    with pytest.raises(errors.PreprocessingError, match="empty"):
        xray(np.zeros((0, 10), np.float32))
    bad = film.copy()
    bad[3, 4] = np.nan
    with pytest.raises(errors.PreprocessingError, match="NaN"):
        xray(bad)
    assert issubclass(errors.PreprocessingError, errors.CovidKerasError)
