"""Paper 000's Volume3D pipeline on phantoms with known geometry."""

import os
import shutil

import numpy as np
import pytest
from scipy import ndimage
from skimage import segmentation

from covid_keras import errors
from covid_keras.data import read_ct_series, synthetic
from covid_keras.preprocess import lung_mask, resample
from covid_keras.preprocess import lung_volume as v3d

SMALL = (32, 32, 32)


def _ct(pathology="covid", n=60, size=128, seed=1, noise=15.0, geometry=None):
    hu, labels, spacing = synthetic.phantom_volume(pathology, n_slices=n, size=size, seed=seed,
                                                   noise_hu=noise, geometry=geometry)
    return synthetic.as_ct_series(hu, spacing), hu, labels


def test_output_shape_dtype_and_range_exact():
    ct, _, _ = _ct()
    out = v3d.volume3d(ct)
    assert out.shape == (224, 224, 224) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.2
    small = v3d.volume3d(ct, output_shape=SMALL)
    assert small.shape == SMALL


def test_resampling_factors_give_paper_shapes():
    ct, _, _ = _ct(n=60, size=128)
    _, steps = v3d.volume3d(ct, output_shape=SMALL, return_steps=True)
    # slice thickness x 0.5 -> 2N slices; pixel spacing x 2.3 -> 128 / 2.3 = 56
    assert steps.resampled.shape == (120, 56, 56)
    assert resample.zoom_shape((300, 512, 512), (0.5, 2.3, 2.3)) == (600, 223, 223)


def test_lung_mask_covers_phantom_lungs():
    ct, hu, _ = _ct("normal", noise=0.0)
    _, steps = v3d.volume3d(ct, output_shape=SMALL, return_steps=True)
    truth = resample.resize_volume((hu == -850).astype(np.float32), steps.mask.shape, "linear") > 0.5
    assert lung_mask.dice(steps.mask, truth) >= 0.95


def test_lung_mask_with_noise_and_lesions_still_covers_lungs():
    ct, hu, _ = _ct("covid", noise=15.0, seed=4)
    clean, _, _ = synthetic.phantom_volume("normal", n_slices=60, size=128, seed=4, noise_hu=0)
    _, steps = v3d.volume3d(ct, output_shape=SMALL, return_steps=True)
    truth = resample.resize_volume((clean == -850).astype(np.float32), steps.mask.shape, "linear") > 0.5
    assert lung_mask.dice(steps.mask, truth) >= 0.95


def test_range_selection_keeps_the_lesions():
    ct, hu, labels = _ct("covid", noise=0.0, seed=2)
    _, steps = v3d.volume3d(ct, output_shape=SMALL, return_steps=True)
    lesion = ((hu > -680) & (hu < -520)).sum(axis=(1, 2)).astype(float)
    assert lesion.sum() > 0
    # Lesion voxels per resampled slice (slice thickness x 0.5: index 2k, 2k+1).
    per_resampled = np.repeat(lesion, 2)
    start, stop = steps.kept
    assert per_resampled[start:stop].sum() >= 0.9 * per_resampled.sum()
    assert 0 < start < stop < steps.mask.shape[0]  # the lung ends are cut away
    ratio = steps.area_ratio
    assert ratio[start:stop].min() >= 0.0 and ratio[start] >= 0.7 and ratio[stop - 1] >= 0.7


def test_masked_image_is_zero_outside_lungs():
    ct, _, _ = _ct()
    out, steps = v3d.volume3d(ct, output_shape=SMALL, return_steps=True)
    # The body wall and spine are masked away: corners and centre-bottom are 0.
    assert out[:, 0, 0].max() == 0.0 and out[:, -1, out.shape[2] // 2].max() == 0.0


def test_window_normalization_alternative():
    ct, _, _ = _ct()
    a = v3d.volume3d(ct, output_shape=SMALL)
    b = v3d.volume3d(ct, output_shape=SMALL, normalization="window", window=(-1024, 400))
    assert b.shape == SMALL and not np.allclose(a, b)
    with pytest.raises(errors.ConfigurationError, match="`normalization` must be one of"):
        v3d.volume3d(ct, normalization="zscore")


def test_normalize_steps():
    hu = np.array([[-1000.0, 0.0, 1000.0]])
    np.testing.assert_allclose(v3d.normalize(hu), [[0, 0.5, 1]])
    np.testing.assert_allclose(v3d.normalize(hu, "window", (-1000, 0)), [[0, 1, 1]])


def test_minority_augmentation_changes_volume_but_keeps_range():
    ct, _, _ = _ct("cap")
    base = v3d.volume3d(ct, output_shape=SMALL)
    second, cropped = v3d.augment_minority(ct, seed=3, output_shape=SMALL)
    for aug in (second, cropped):
        assert aug.shape == SMALL and aug.dtype == np.float32
        assert aug.min() >= 0.0 and aug.max() <= 1.0
        assert np.abs(aug - base).mean() > 1e-3
    again = v3d.augment_minority(ct, seed=3, output_shape=SMALL)[1]
    np.testing.assert_array_equal(again, cropped)  # deterministic for a seed


def test_center_crop_fractions_follow_the_window():
    vol = np.zeros((3, 40, 40), np.float32)
    vol[:, 10:30, 10:30] = 1.0
    out = v3d.center_crop(vol, [1.0, 0.5, 0.75])
    np.testing.assert_allclose(out[0], vol[0], atol=1e-6)
    # A 0.5 crop doubles the square: it now fills the whole slice.
    assert out[1].mean() > 0.95
    assert vol[2].mean() < out[2].mean() < out[1].mean()


def test_lungless_phantom_raises_no_lung_error():
    geom = synthetic.PhantomGeometry(lung_start=2.0, lung_end=3.0)  # lungs never appear
    ct, _, _ = _ct("normal", geometry=geom)
    with pytest.raises(errors.NoLungError, match="series se-phantom of patient pt-phantom: no lungs found"):
        v3d.volume3d(ct, output_shape=SMALL)


def test_head_ct_raises_no_lung_error(tmp_path, testdata):
    os.makedirs(tmp_path / "head")
    shutil.copy(testdata("693_UNCI.dcm"), tmp_path / "head" / "693_UNCI.dcm")
    with pytest.warns(UserWarning, match="lossy"):
        ct = read_ct_series(str(tmp_path / "head"))
    with pytest.raises(errors.NoLungError, match=f"series {ct.meta['series']} of patient pt-.*: no lungs found"):
        v3d.volume3d(ct, output_shape=SMALL)
    # ... for the right reason: not only because one slice is too short.
    with pytest.raises(errors.NoLungError, match="no lungs found"):
        v3d.volume3d(ct, output_shape=SMALL, min_slices=1)


def test_too_few_lung_slices_raise():
    ct, _, _ = _ct(n=60)
    with pytest.raises(errors.NoLungError, match="slices have a lung area"):
        v3d.volume3d(ct, output_shape=SMALL, min_slices=500)


# --------------------------------------------------------------------------
# The building blocks against the libraries they replace
# --------------------------------------------------------------------------


def test_stretch_limits_follow_matlab_stretchlim():
    ramp = np.linspace(0, 1, 10001, dtype=np.float32).reshape(1, -1)
    lo, hi = lung_mask.stretch_limits(ramp)
    assert lo == pytest.approx(3 / 255) and hi == pytest.approx(252 / 255)
    assert lung_mask.stretch_limits(np.full((8, 8), 0.3, np.float32)) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_clear_border_and_fill_holes_match_skimage_and_scipy(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((64, 64)) > 0.55)
    ours = lung_mask.clear_border(mask)
    np.testing.assert_array_equal(ours, segmentation.clear_border(mask))
    np.testing.assert_array_equal(lung_mask.fill_holes(ours), ndimage.binary_fill_holes(ours))


def test_resize_depth_is_a_1d_cubic_along_z():
    import cv2

    vol = np.random.default_rng(0).random((20, 7, 9)).astype(np.float32)
    out = resample.resize_depth(vol, 35)
    for y in range(7):
        np.testing.assert_allclose(out[:, y, :], cv2.resize(vol[:, y, :], (9, 35), interpolation=cv2.INTER_CUBIC),
                                   atol=1e-6)


def test_volume3d_never_edits_the_callers_hu():
    ct, hu, _ = _ct()
    before = ct.hu.copy()
    v3d.volume3d(ct, output_shape=SMALL, spacing_factors=(1.0, 1.0))
    np.testing.assert_array_equal(ct.hu, before)
