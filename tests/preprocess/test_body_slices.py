"""Paper 001's slice pipeline on phantoms whose geometry is known."""

import cv2
import numpy as np
import pytest
from scipy import ndimage

from covid_keras import errors
from covid_keras.data import read_xray, synthetic
from covid_keras.preprocess.body_slices import (
    apply_body_roi,
    body_mask,
    brighten,
    covidx_slice,
    ct_slices,
    interpolate_slices,
    resize_slice,
    to_uint8,
)


@pytest.fixture(scope="module")
def phantom():
    """A 10-slice 128 x 128 COVID phantom (noise 15 HU): (hu, labels, spacing)."""
    return synthetic.phantom_volume("covid", n_slices=10, size=128, slice_spacing=5.0, seed=4)


def _truth(hu_slice):
    """(body, table) of one phantom slice, from its HU.

    The table is the slab of rows below the body whose pixels are ~100 HU
    across the whole width; the body is everything denser than -500 HU
    that is not table, with its holes (the lungs) filled.
    """
    table_rows = np.flatnonzero(np.abs(np.median(hu_slice, axis=1) - 100.0) < 50.0)
    table = np.zeros(hu_slice.shape, dtype=bool)
    table[table_rows] = np.abs(hu_slice[table_rows] - 100.0) < 80.0
    body = ndimage.binary_fill_holes((hu_slice > -500) & ~table)
    return body, table


# --------------------------------------------------------------------------
# The whole COVID-CT-MD pipeline
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size,out", [(64, 224), (128, 224), (128, 64)])
def test_ct_slices_shape_dtype_range(size, out):
    hu, _, spacing = synthetic.phantom_volume("cap", n_slices=6, size=size, seed=1)
    x = ct_slices(synthetic.as_ct_series(hu, spacing, patient_id="pt-a"), size=out)
    assert x.shape == (6, out, out) and x.dtype == np.uint8
    assert x.min() == 0  # background and table
    assert x.max() == 255  # soft tissue saturates after brightness x 2


def test_ct_slices_chains_the_steps_in_order(phantom):
    hu, _, spacing = phantom
    got = ct_slices(synthetic.as_ct_series(hu, spacing), size=96, brightness=1.5, normalization="window",
                    window=(-1200.0, 800.0), sigma=1.0)
    grey = to_uint8(hu, "window", (-1200.0, 800.0))
    for k in (0, 5, 9):
        roi = apply_body_roi(grey[k], body_mask(grey[k], sigma=1.0))
        np.testing.assert_array_equal(got[k], resize_slice(brighten(roi, 1.5), 96))


def test_ct_slices_output_has_no_table(phantom):
    hu, _, spacing = phantom
    x = ct_slices(synthetic.as_ct_series(hu, spacing), size=128)  # same size: no resampling
    for k in range(len(hu)):
        body, table = _truth(hu[k])
        assert table.any() and (x[k][table] == 0).all()
        assert (x[k][ndimage.binary_erosion(body, iterations=2)] > 0).all()


def test_ct_slices_errors_name_the_value(phantom):
    hu, _, spacing = phantom
    ct = synthetic.as_ct_series(hu[:2], spacing, patient_id="pt-xyz")
    with pytest.raises(errors.ConfigurationError, match="normalization='zscore'"):
        ct_slices(ct, normalization="zscore")
    for size in (0, -3, 2.5, True):
        with pytest.raises(errors.ConfigurationError, match="size="):
            ct_slices(ct, size=size)
    for factor in (0, -1.0, float("nan"), "2"):
        with pytest.raises(errors.ConfigurationError, match="brightness="):
            ct_slices(ct, brightness=factor)
    with pytest.raises(errors.ConfigurationError, match="window="):
        ct_slices(ct, window=(400.0, -1000.0))
    with pytest.raises(errors.ConfigurationError, match="threshold="):
        ct_slices(ct, threshold=300)
    empty = synthetic.as_ct_series(np.zeros((0, 32, 32), np.float32), spacing, patient_id="pt-xyz")
    with pytest.raises(errors.PreprocessingError, match="pt-xyz.*empty"):
        ct_slices(empty)
    bad = hu[:2].copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(errors.PreprocessingError, match="pt-xyz.*NaN"):
        ct_slices(synthetic.as_ct_series(bad, spacing, patient_id="pt-xyz"))
    with pytest.raises(errors.CovidKerasError):
        ct_slices(hu[0])  # a slice, not a volume


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------


def test_minmax_maps_the_clipped_range_to_0_255(phantom):
    hu = phantom[0]
    grey = to_uint8(hu)
    assert grey.dtype == np.uint8 and grey.shape == hu.shape
    assert grey.min() == 0 and grey.max() == 255
    lo, hi = max(hu.min(), -1024.0), min(hu.max(), 3071.0)
    expected = np.rint((np.clip(hu, -1024, 3071) - lo) / (hi - lo) * 255)
    assert np.abs(grey.astype(float) - expected).max() <= 1


def test_minmax_ignores_padding_at_minus_3024(phantom):
    hu = phantom[0]
    assert hu.min() < -1024  # noisy air reaches below the clip, as real air does
    padded = hu.copy()
    yy, xx = np.mgrid[:128, :128]
    outside_fov = (yy - 63.5) ** 2 + (xx - 63.5) ** 2 > 66**2  # circular reconstruction field
    padded[:, outside_fov] = -3024.0
    a, b = to_uint8(hu), to_uint8(padded)
    np.testing.assert_array_equal(a[:, ~outside_fov], b[:, ~outside_fov])
    assert (b[:, outside_fov] == 0).all()
    # Without the clip the padding would have stretched the range.
    unclipped = to_uint8(padded, window=(-4000.0, 4000.0))
    assert not np.array_equal(unclipped[:, ~outside_fov], a[:, ~outside_fov])


def test_window_is_linear_and_the_same_for_every_volume():
    hu = np.array([[-3024.0, -1024.0, 1023.5, 3071.0, 5000.0]])
    np.testing.assert_array_equal(to_uint8(hu, "window"), [[0, 0, 128, 255, 255]])
    np.testing.assert_array_equal(to_uint8(hu, "window", (-1000.0, 0.0)), [[0, 0, 255, 255, 255]])
    # Same HU, same grey, whatever else the volume holds (unlike min-max).
    assert to_uint8(np.array([0.0, 100.0]), "window")[0] == to_uint8(np.array([0.0, 2000.0]), "window")[0]
    assert to_uint8(np.array([0.0, 100.0]))[0] == 0 and to_uint8(np.array([0.0, -100.0, 100.0]))[0] == 128
    # A uniform volume under min-max is all 0, not a division by zero.
    assert (to_uint8(np.full((2, 3, 3), 40.0)) == 0).all()


# --------------------------------------------------------------------------
# Body RoI
# --------------------------------------------------------------------------


def test_body_mask_matches_the_phantom_body_and_drops_the_table(phantom):
    hu = phantom[0]
    grey = to_uint8(hu)
    for k in range(len(hu)):
        body, table = _truth(hu[k])
        mask = body_mask(grey[k])
        assert mask.dtype == bool and mask.shape == hu[k].shape
        dice = 2.0 * (mask & body).sum() / (mask.sum() + body.sum())
        assert dice >= 0.95, (k, dice)
        roi = apply_body_roi(grey[k], mask)
        assert roi.dtype == np.uint8
        assert table.sum() > 100 and (roi[table] == 0).all()  # table removed
        far = ~ndimage.binary_dilation(body, iterations=2)
        assert (roi[far] == 0).all()  # background removed
        inner = ndimage.binary_erosion(body, iterations=2)
        np.testing.assert_array_equal(roi[inner], grey[k][inner])  # body kept...
        assert (roi[inner] > 0).all()  # ...and non-zero, lungs included


def test_body_mask_fixed_threshold_and_no_smoothing():
    img = np.zeros((20, 30), np.uint8)
    img[2:12, 3:25] = 150  # body
    img[5:8, 8:14] = 20  # a dark lung inside it
    img[15:17, :] = 90  # table below, not touching
    mask = body_mask(img, sigma=0, threshold=50)
    expected = np.zeros_like(mask)
    expected[2:12, 3:25] = True
    np.testing.assert_array_equal(mask, expected)
    # A threshold above the table leaves the table out either way; Otsu too.
    np.testing.assert_array_equal(body_mask(img, sigma=0), expected)


@pytest.mark.parametrize("value", [0, 100, 255])
def test_blank_or_uniform_slice_gives_an_empty_mask(value):
    mask = body_mask(np.full((32, 32), value, np.uint8))
    assert mask.dtype == bool and not mask.any()
    assert not body_mask(np.zeros((32, 32), np.uint8), threshold=10).any()


def test_body_mask_rejects_bad_input():
    with pytest.raises(errors.ConfigurationError, match="uint8"):
        body_mask(np.zeros((8, 8), np.float32))
    with pytest.raises(errors.ConfigurationError, match="uint8"):
        body_mask(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(errors.ConfigurationError, match="sigma=-1"):
        body_mask(np.zeros((8, 8), np.uint8), sigma=-1)
    with pytest.raises(errors.ConfigurationError, match="mask.shape"):
        apply_body_roi(np.zeros((8, 8), np.uint8), np.zeros((8, 9), bool))


# --------------------------------------------------------------------------
# Brightness and resizing
# --------------------------------------------------------------------------


def test_brighten_doubles_and_saturates():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = brighten(img)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.minimum(2 * img.astype(int), 255))
    assert (out[img >= 128] == 255).all()
    np.testing.assert_array_equal(brighten(img, 1), img)
    np.testing.assert_array_equal(brighten(img, 0.5), np.rint(img / 2.0).astype(np.uint8))
    with pytest.raises(errors.ConfigurationError, match="brightness=0"):
        brighten(img, 0)


def test_resize_slice_area_when_shrinking_cubic_when_enlarging():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 96)).astype(np.uint8)
    shrunk = resize_slice(img, 32)
    area = cv2.resize(img.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(shrunk, np.rint(area).astype(np.uint8))
    grown = resize_slice(img, 224)
    cubic = cv2.resize(img.astype(np.float32), (224, 224), interpolation=cv2.INTER_CUBIC)
    assert cubic.min() < 0 and cubic.max() > 255  # random noise overshoots...
    np.testing.assert_array_equal(grown, np.clip(np.rint(cubic), 0, 255).astype(np.uint8))  # ...clipped
    for shape in [(300, 150), (150, 300), (224, 100)]:  # mixed, one axis equal
        out = resize_slice(np.full(shape, 77, np.uint8), 224)
        assert out.shape == (224, 224) and out.dtype == np.uint8 and (out == 77).all()
    np.testing.assert_array_equal(resize_slice(img, 96), img)


# --------------------------------------------------------------------------
# Slice interpolation
# --------------------------------------------------------------------------


def _ramp(n=6, shape=(5, 7), seed=0):
    """An exact linear ramp along z, uint8 [n, H, W]: (base, slope, volume)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(80, 121, shape)
    slope = rng.integers(-15, 26, shape)
    vol = base + slope * np.arange(n)[:, None, None]
    assert vol.min() >= 0 and vol.max() <= 255
    return base, slope, vol.astype(np.uint8)


def test_interpolation_never_crosses_a_label_change():
    _, _, vol = _ramp()
    labels = np.array([0, 0, 0, 1, 1, 0])
    out, new_labels, pos = interpolate_slices(vol, labels, factor=2)
    np.testing.assert_allclose(pos, [0, 0.5, 1, 1.5, 2, 3, 3.5, 4, 5])
    assert out.shape == (9, 5, 7) and out.dtype == np.uint8
    np.testing.assert_array_equal(new_labels, [0, 0, 0, 0, 0, 1, 1, 1, 0])
    assert not ((pos > 2) & (pos < 3)).any() and not ((pos > 4) & (pos < 5)).any()
    # The originals are kept bit for bit, in order.
    originals = pos == np.round(pos)
    np.testing.assert_array_equal(out[originals], vol)
    # Each new label is its run's label: the label of the slices on both sides.
    for p, lab in zip(pos, new_labels):
        assert lab == labels[int(np.floor(p))] == labels[int(np.ceil(p))]


def test_interpolation_counts_for_factor_3():
    _, _, vol = _ramp()
    out, new_labels, pos = interpolate_slices(vol, [0, 0, 0, 1, 1, 0], factor=3)
    assert len(out) == len(new_labels) == len(pos) == 7 + 4 + 1
    np.testing.assert_allclose(pos[:7], np.arange(7) / 3)
    np.testing.assert_allclose(pos[7:11], 3 + np.arange(4) / 3)
    assert pos[-1] == 5


def test_linear_ramp_is_exact_at_midpoints():
    base, slope, vol = _ramp(n=6)
    for labels in ([0, 0, 0, 1, 1, 0], None):  # runs of 3 (quadratic), 2 (linear); 6 (cubic)
        out, _, pos = interpolate_slices(vol, labels, factor=2)
        assert (pos % 1 == 0.5).sum() == (3 if labels else 5)
        exact = base + slope * pos[:, None, None]
        assert np.abs(out - exact).max() <= 0.5  # within rounding


def test_cubic_spline_reproduces_a_quadratic_profile():
    z = np.arange(8, dtype=float)
    vol = np.broadcast_to((3 * z**2)[:, None, None], (8, 2, 3)).astype(np.uint8)
    out, labels, pos = interpolate_slices(vol, None, factor=4)
    assert labels is None and len(out) == 29 and out.shape[1:] == (2, 3)
    assert np.abs(out - 3 * pos[:, None, None] ** 2).max() <= 0.5


def test_interpolation_factor_1_and_single_slice_runs():
    _, _, vol = _ramp()
    labels = np.array([0, 0, 0, 1, 1, 0])
    out, new_labels, pos = interpolate_slices(vol, labels, factor=1)
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_array_equal(new_labels, labels)
    np.testing.assert_array_equal(pos, np.arange(6))
    alternating = np.array([0, 1, 0, 1, 0, 1])
    out, new_labels, pos = interpolate_slices(vol, alternating, factor=4)
    np.testing.assert_array_equal(out, vol)  # no run of 2: nothing to add
    np.testing.assert_array_equal(new_labels, alternating)


def test_interpolation_keeps_string_labels_and_rejects_bad_arguments():
    _, _, vol = _ramp(n=3)
    _, new_labels, _ = interpolate_slices(vol, ["covid", "covid", "clean"], factor=2)
    assert list(new_labels) == ["covid", "covid", "covid", "clean"]
    for factor in (0, -1, 1.5, True, "2"):
        with pytest.raises(errors.ConfigurationError, match="factor="):
            interpolate_slices(vol, None, factor=factor)
    with pytest.raises(errors.ConfigurationError, match="one label per slice"):
        interpolate_slices(vol, [0, 1], factor=2)
    with pytest.raises(errors.ConfigurationError, match="uint8"):
        interpolate_slices(vol.astype(np.float32) / 255, None, factor=2)
    with pytest.raises(errors.PreprocessingError, match="empty"):
        interpolate_slices(np.zeros((0, 4, 4), np.uint8), None)


def test_interpolation_on_pipeline_output(phantom):
    hu, labels, spacing = phantom
    x = ct_slices(synthetic.as_ct_series(hu, spacing), size=64)
    out, new_labels, pos = interpolate_slices(x, labels, factor=2)
    runs = 1 + int((labels[1:] != labels[:-1]).sum())
    assert len(out) == 2 * len(x) - runs
    assert out.shape[1:] == (64, 64) and out.dtype == np.uint8
    assert new_labels.dtype == labels.dtype and new_labels.sum() >= labels.sum()


# --------------------------------------------------------------------------
# COVIDx-CT PNG slices
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def png_slice(phantom, tmp_path_factory):
    """A phantom slice written as an 8-bit PNG and read back with read_xray: (uint8, float [0, 1])."""
    hu = phantom[0]
    u8 = to_uint8(hu)[5]
    path = tmp_path_factory.mktemp("covidx") / "slice.png"
    cv2.imwrite(str(path), u8)
    return u8, read_xray(str(path)), hu[5]


def test_covidx_slice_float_and_uint8_agree_and_drop_the_table(png_slice):
    u8, f01, hu = png_slice
    assert f01.dtype == np.float32 and 0 <= f01.min() and f01.max() <= 1
    a, b = covidx_slice(u8), covidx_slice(f01)
    assert a.shape == (224, 224) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # Same size: nothing but the body RoI, no brightness step.
    same = covidx_slice(f01, size=128)
    mask = body_mask(u8)
    np.testing.assert_array_equal(same, apply_body_roi(u8, mask))
    _, table = _truth(hu)
    assert (same[table] == 0).all()


def test_covidx_slice_crops_to_the_box_first(png_slice):
    u8, f01, _ = png_slice
    box = (10, 4, 120, 118)  # xmin, ymin, xmax, ymax; max exclusive
    crop = u8[4:118, 10:120]
    for img in (u8, f01):
        out = covidx_slice(img, box=box)
        assert out.shape == (224, 224) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, covidx_slice(crop))
    np.testing.assert_array_equal(covidx_slice(u8, box=np.array(box), size=64), covidx_slice(crop, size=64))
    with pytest.warns(UserWarning, match="outside"):
        out = covidx_slice(u8, box=(-5, 4, 120, 140))
    np.testing.assert_array_equal(out, covidx_slice(u8[4:128, 0:120]))


def test_covidx_slice_rejects_bad_input(png_slice):
    u8, f01, _ = png_slice
    with pytest.raises(errors.PreprocessingError, match="box"):
        covidx_slice(u8, box=(200, 0, 300, 50))
    for box in ((1, 2, 3), (0, 0, 10.5, 10), "0 0 10 10"):
        with pytest.raises(errors.ConfigurationError, match="box="):
            covidx_slice(u8, box=box)
    with pytest.raises(errors.ConfigurationError, match=r"\[0, 1\]"):
        covidx_slice(f01 * 255)
    with pytest.raises(errors.ConfigurationError, match="shape"):
        covidx_slice(np.stack([u8] * 3, axis=-1))
    with pytest.raises(errors.ConfigurationError, match="dtype"):
        covidx_slice(u8.astype(np.uint16))
    bad = f01.copy()
    bad[0, 0] = np.nan
    with pytest.raises(errors.PreprocessingError, match="NaN"):
        covidx_slice(bad)
