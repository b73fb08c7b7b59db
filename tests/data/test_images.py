"""Tests for covid_keras.data.images.read_xray.

Fixtures are pydicom's and pydicom-data's files (found locally with
``get_testdata_file``) or DICOM/PNG/JPEG files generated here with known
values; nothing is downloaded.
"""

import shutil
import warnings

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from covid_keras import errors
from covid_keras.data import dicom_files
from covid_keras.data.images import LUMA_WEIGHTS, read_xray

import damage_helpers

PATIENT_NAME = "Secretname^Jane"
PATIENT_ID = "PID-SECRET-4711"


def data_file(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"{name} is missing: install pydicom-data (requirements-dev.txt)")
    return path


def read_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_xray(path, **kwargs)


def write_dicom(path, pixels, **kwargs):
    """Writes ``pixels`` as a Part 10 DX file carrying this module's made-up identifiers."""
    return damage_helpers.write_dicom(path, pixels, PatientName=PATIENT_NAME, PatientID=PATIENT_ID, **kwargs)


def write_picture(path, image, suffix=".png", params=()):
    """cv2.imwrite that also works for non-ASCII paths."""
    ok, encoded = cv2.imencode(suffix, image, list(params))
    assert ok
    encoded.tofile(str(path))
    return path


def lung_and_mediastinum(image):
    """Means of two lateral lung boxes and of a central mediastinal strip.

    Chosen by looking at RG1_UNCR (a PA chest radiograph): the boxes sit in
    the upper-middle lung fields, clear of ribs' brightest crossings and of
    the heart; the strip runs down the spine and mediastinum.
    """
    h, w = image.shape

    def box(r0, r1, c0, c1):
        return float(image[int(r0 * h): int(r1 * h), int(c0 * w): int(c1 * w)].mean())

    lungs = (box(0.20, 0.45, 0.20, 0.35) + box(0.20, 0.45, 0.62, 0.77)) / 2
    mediastinum = box(0.20, 0.60, 0.46, 0.54)
    return lungs, mediastinum


# ---------------------------------------------------------------------------
# Real radiographs


def test_monochrome1_radiograph_shows_dark_lungs_and_bright_mediastinum():
    image = read_xray(data_file("RG1_UNCR.dcm"))
    assert image.dtype == np.float32
    assert image.shape == (1955, 1841)
    assert 0.0 <= image.min() and image.max() <= 1.0
    lungs, mediastinum = lung_and_mediastinum(image)
    # Measured: lungs ~0.55, mediastinum ~0.87. Without MONOCHROME1
    # inversion the order flips.
    assert mediastinum - lungs > 0.15


def test_lossless_jpeg2000_is_pixel_identical_to_uncompressed():
    unc, j2k = data_file("RG1_UNCR.dcm"), data_file("RG1_J2KR.dcm")
    stored_unc = dicom_files.decode_pixels(dicom_files.read_dataset(unc), unc)
    stored_j2k = dicom_files.decode_pixels(dicom_files.read_dataset(j2k), j2k)
    np.testing.assert_array_equal(stored_j2k, stored_unc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lossless: no lossy warning
        np.testing.assert_array_equal(read_xray(j2k), read_xray(unc))


def test_lossy_jpeg2000_warns_and_is_close_but_not_identical():
    path = data_file("RG1_J2KI.dcm")
    with pytest.warns(UserWarning, match="lossy-compressed") as caught:
        lossy = read_xray(path)
    assert any(path in str(w.message) for w in caught)
    reference = read_xray(data_file("RG1_UNCR.dcm"))
    assert lossy.shape == reference.shape
    assert not np.array_equal(lossy, reference)
    difference = np.abs(lossy - reference)
    assert difference.max() < 0.03  # measured 0.013 (403 of a 30000 window)
    assert difference.mean() < 0.005


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    ],
)
def test_encodings_decode_to_the_uncompressed_reference(name):
    reference_path = data_file("MR_small.dcm")
    path = data_file(name)
    stored = dicom_files.decode_pixels(dicom_files.read_dataset(path), path)
    reference = dicom_files.decode_pixels(
        dicom_files.read_dataset(reference_path), reference_path
    )
    np.testing.assert_array_equal(stored, reference)
    image = read_xray(path)
    assert image.dtype == np.float32 and image.shape == (64, 64)
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(image, read_xray(reference_path))


def test_jpeg_lossless_process14_decodes():
    image = read_xray(data_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert image.dtype == np.float32 and image.shape == (768, 1024)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.01  # a real picture, not a blank


def test_one_bit_image_reads_as_zero_and_one():
    image = read_xray(data_file("liver_1frame.dcm"))
    assert image.shape == (512, 512)
    assert set(np.unique(image).tolist()) == {0.0, 1.0}


def test_voi_lut_sequence_is_applied():
    path = data_file("vlut_04.dcm")
    ds = dicom_files.read_dataset(path)
    stored = dicom_files.decode_pixels(ds, path)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    expected = lut[np.clip(stored, 0, len(lut) - 1)] / 65535.0  # 16 bits per entry
    np.testing.assert_allclose(read_xray(path), expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Generated DICOM with known values


def test_generated_monochrome1_ramp_is_inverted(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # 0 .. 4032
    path = write_dicom(tmp_path / "mono1.dcm", ramp, photometric="MONOCHROME1", bits_stored=12)
    image = read_xray(path)
    expected = 1.0 - ramp / 4032.0  # min-max, then inverted: 0 is white
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image[0, 0] == pytest.approx(1.0) and image[0, -1] == pytest.approx(0.0)


def test_monochrome1_with_inverse_shape_is_inverted_once(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
    plain = write_dicom(tmp_path / "a.dcm", ramp, photometric="MONOCHROME1", bits_stored=12)
    shaped = write_dicom(
        tmp_path / "b.dcm", ramp, photometric="MONOCHROME1", bits_stored=12,
        PresentationLUTShape="INVERSE",
    )
    np.testing.assert_array_equal(read_xray(shaped), read_xray(plain))


def test_presentation_lut_shape_inverse_inverts_monochrome2(tmp_path):
    ramp = np.tile(np.arange(0, 256, 5, dtype=np.uint8), (4, 1))
    identity = write_dicom(tmp_path / "id.dcm", ramp, PresentationLUTShape="IDENTITY")
    inverse = write_dicom(tmp_path / "inv.dcm", ramp, PresentationLUTShape="INVERSE")
    np.testing.assert_allclose(read_xray(identity), ramp / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_xray(inverse), 1.0 - ramp / 255.0, atol=1e-6)


def test_rescale_then_first_window_is_applied(tmp_path):
    stored = np.array([[0, 25, 50, 75, 100, 125, 150, 175, 200]], dtype=np.int16)
    path = write_dicom(
        tmp_path / "window.dcm", stored, bits_stored=16,
        RescaleSlope=2, RescaleIntercept=-100,  # values -100 .. 300
        WindowCenter=[100, 5000], WindowWidth=[201, 10],  # the first pair is used
    )
    values = stored * 2.0 - 100.0
    # PS3.3 C.11.2.1.2.1 LINEAR: (x - (c - 0.5)) / (w - 1) + 0.5, clipped.
    expected = np.clip((values - 99.5) / 200.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(read_xray(path), expected, atol=1e-6)


def test_window_applies_to_monochrome1_before_inversion(tmp_path):
    stored = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "w1.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
        WindowCenter=2000, WindowWidth=2001,
    )
    expected = 1.0 - np.clip((stored - 1999.5) / 2000.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(read_xray(path), expected, atol=1e-6)


def test_invalid_window_warns_and_falls_back_to_min_max(tmp_path):
    stored = np.array([[10, 20, 30]], dtype=np.uint16)
    path = write_dicom(tmp_path / "badwin.dcm", stored, WindowCenter=20, WindowWidth=0)
    with pytest.warns(UserWarning, match="window"):
        image = read_xray(path)
    np.testing.assert_allclose(image, [[0.0, 0.5, 1.0]], atol=1e-6)


def test_padding_pixels_are_black_and_ignored_by_min_max(tmp_path):
    stored = np.array([[0, 0, 100, 200, 300]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "pad.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
        PixelPaddingValue=0,
    )
    image = read_xray(path)
    np.testing.assert_allclose(image, [[0.0, 0.0, 1.0, 0.5, 0.0]], atol=1e-6)


def test_enhanced_functional_groups_give_rescale_and_window(tmp_path):
    frames = np.array([[[0, 50, 100]], [[0, 50, 100]]], dtype=np.uint16)

    def item(**values):
        ds = Dataset()
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        return ds

    shared = item(PixelValueTransformationSequence=Sequence(
        [item(RescaleSlope=2, RescaleIntercept=0, RescaleType="US")]
    ))
    per_frame = [
        item(FrameVOILUTSequence=Sequence([item(WindowCenter=100, WindowWidth=201)])),
        item(FrameVOILUTSequence=Sequence([item(WindowCenter=50, WindowWidth=2)])),
    ]
    path = write_dicom(
        tmp_path / "enhanced.dcm", frames,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    values = np.array([[0.0, 100.0, 200.0]])  # after the shared rescale
    np.testing.assert_allclose(
        read_xray(path, frame=0), np.clip((values - 99.5) / 200 + 0.5, 0, 1), atol=1e-6
    )
    np.testing.assert_allclose(read_xray(path, frame=1), [[0.0, 1.0, 1.0]], atol=1e-6)


def test_dicom_is_recognised_by_content_whatever_its_name(tmp_path):
    source = data_file("MR_small.dcm")
    renamed = tmp_path / "looks_like_a.png"
    bare = tmp_path / "IM0001"
    shutil.copyfile(source, renamed)
    shutil.copyfile(source, bare)
    reference = read_xray(source)
    np.testing.assert_array_equal(read_xray(renamed), reference)
    np.testing.assert_array_equal(read_xray(bare), reference)


def test_dicom_without_preamble_or_group_8_is_read_when_named_dcm(tmp_path):
    # An ACR-NEMA style file: no preamble, no meta header, first element in
    # group 0x0018, so only the .dcm name says it is DICOM.
    ds = Dataset()
    ds.KVP = "120"
    ds.Rows, ds.Columns = 2, 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(6, dtype="<u2").tobytes()
    path = tmp_path / "old.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert open(path, "rb").read(2) == b"\x18\x00"
    np.testing.assert_allclose(read_xray(path), np.arange(6).reshape(2, 3) / 5.0, atol=1e-6)


# ---------------------------------------------------------------------------
# Colour DICOM


def test_palette_colour_without_meta_header_goes_through_its_palette():
    path = data_file("OT-PAL-8-face.dcm")  # no preamble, no meta header
    image = read_xray(path)
    assert image.dtype == np.float32 and image.shape == (480, 640)
    ds = pydicom.dcmread(path, force=True)
    stored = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(480, 640)
    entries, first, _ = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    channels = [
        np.frombuffer(getattr(ds, f"{c}PaletteColorLookupTableData"), dtype="<u2")
        for c in ("Red", "Green", "Blue")
    ]
    index = np.clip(stored.astype(int) - first, 0, entries - 1)
    expected = sum(w * ch[index].astype(float) for w, ch in zip(LUMA_WEIGHTS, channels)) / 65535
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert not np.allclose(image, stored / 255.0, atol=0.05)  # the palette mattered


def test_rgb_dicom_becomes_luma_grey():
    path = data_file("SC_rgb.dcm")
    rgb = pydicom.dcmread(path).pixel_array.astype(float)
    expected = rgb @ np.asarray(LUMA_WEIGHTS) / 255.0
    image = read_xray(path)
    assert image.shape == (100, 100)
    np.testing.assert_allclose(image, expected, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["SC_rgb_16bit.dcm", "SC_rgb_rle.dcm", "SC_ybr_full_uncompressed.dcm"]
)
def test_other_colour_encodings_match_rgb(name):
    reference = read_xray(data_file("SC_rgb.dcm"))
    # SC_ybr_full_uncompressed says Lossy Image Compression 01 and warns.
    np.testing.assert_allclose(read_quietly(data_file(name)), reference, atol=0.01)


def test_ybr_jpeg_baseline_warns_lossy_and_is_close_to_rgb():
    with pytest.warns(UserWarning, match="lossy"):
        image = read_xray(data_file("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    np.testing.assert_allclose(image, read_xray(data_file("SC_rgb.dcm")), atol=0.05)


# ---------------------------------------------------------------------------
# PNG and JPEG


def test_png_8bit_with_non_ascii_name(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    path = write_picture(tmp_path / "röntgen_胸部.png", ramp)
    image = read_xray(path)
    assert image.dtype == np.float32 and image.shape == (3, 256)
    np.testing.assert_allclose(image, ramp / 255.0, atol=1e-7)


def test_png_16bit_divides_by_65535(tmp_path):
    values = np.array([[0, 1, 4095, 32768, 65535]], dtype=np.uint16)
    path = write_picture(tmp_path / "deep.png", values)
    np.testing.assert_allclose(read_xray(path), values / 65535.0, atol=1e-7)


def test_jpeg_reads_close_to_its_source(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    path = write_picture(tmp_path / "chest.jpg", ramp, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 100))
    image = read_xray(path)
    assert image.shape == (64, 64)
    np.testing.assert_allclose(image, ramp / 255.0, atol=3 / 255)


def test_rgb_png_becomes_luma_grey(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]]], dtype=np.uint8)
    path = write_picture(tmp_path / "colour.png", rgb[..., ::-1])  # OpenCV writes BGR
    expected = rgb.astype(float) @ np.asarray(LUMA_WEIGHTS) / 255.0
    image = read_xray(path)
    assert image.shape == (1, 4)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_rgba_png_drops_alpha(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]]], dtype=np.uint8)
    alpha = np.array([[[0], [64], [128], [255]]], dtype=np.uint8)
    bgra = np.concatenate([rgb[..., ::-1], alpha], axis=-1)
    path = write_picture(tmp_path / "alpha.png", bgra)
    expected = rgb.astype(float) @ np.asarray(LUMA_WEIGHTS) / 255.0
    np.testing.assert_allclose(read_xray(path), expected, atol=1e-5)


# ---------------------------------------------------------------------------
# Multi-frame


def test_multi_frame_needs_a_frame_index():
    path = data_file("emri_small.dcm")  # 10 frames of 64 x 64
    with pytest.raises(errors.ImageReadError, match="10 frames") as info:
        read_xray(path)
    assert path in str(info.value) and "frame=" in str(info.value)
    image = read_xray(path, frame=3)
    stored = pydicom.dcmread(path).pixel_array[3].astype(float)
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(image, expected, atol=1e-6)
    with pytest.raises(errors.ImageReadError, match="frame=10") as info:
        read_xray(path, frame=10)
    assert path in str(info.value)


def test_frame_must_be_a_non_negative_integer(tmp_path):
    with pytest.raises(errors.ConfigurationError, match="Received: frame='1'"):
        read_xray(data_file("emri_small.dcm"), frame="1")
    with pytest.raises(errors.ConfigurationError):
        read_xray(data_file("emri_small.dcm"), frame=-1)


def test_single_frame_accepts_frame_zero_only(tmp_path):
    path = data_file("MR_small.dcm")
    np.testing.assert_array_equal(read_xray(path, frame=0), read_xray(path))
    with pytest.raises(errors.ImageReadError, match="frame=1"):
        read_xray(path, frame=1)
    png = write_picture(tmp_path / "one.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(errors.ImageReadError, match="no frame 2"):
        read_xray(png, frame=2)


# ---------------------------------------------------------------------------
# Bad inputs


def assert_read_error(path, match):
    with pytest.raises(errors.ImageReadError, match=match) as info:
        read_quietly(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file(tmp_path):
    assert_read_error(tmp_path / "absent.png", "does not exist")


def test_folder_instead_of_file(tmp_path):
    assert_read_error(tmp_path, "is a folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert_read_error(path, "empty")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "note.png"
    path.write_text("this is not an image\n")
    assert_read_error(path, "neither DICOM nor a picture")


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "note.dcm"
    path.write_text("this is not an image either\n")
    assert_read_error(path, "neither DICOM nor a picture")


def test_corrupt_png(tmp_path):
    good = cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes()
    path = tmp_path / "broken.png"
    path.write_bytes(good[:40] + b"\x00" * 40)
    assert_read_error(path, "corrupt or truncated")


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 3 // 4])
    assert_read_error(path, "corrupt or truncated")


def test_truncated_dicom_cut_in_half(tmp_path):
    data = open(data_file("RG1_UNCR.dcm"), "rb").read()
    path = tmp_path / "half.dcm"
    path.write_bytes(data[: len(data) // 2])
    assert_read_error(path, "truncated")


def test_real_truncated_jpeg2000_dicom():
    assert_read_error(data_file("emri_small_jpeg_2k_lossless_too_short.dcm"), "truncated")


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(data_file("MR_small.dcm"))
    del ds.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    assert_read_error(path, "without pixel data")


def test_truncated_header_only_dicom(tmp_path):
    data = open(data_file("RG1_UNCR.dcm"), "rb").read()
    path = tmp_path / "header_only.dcm"
    path.write_bytes(data[:1000])
    assert_read_error(path, "truncated")


# ---------------------------------------------------------------------------
# Privacy


def test_warnings_and_errors_carry_no_patient_identifiers(tmp_path):
    single = write_dicom(
        tmp_path / "lossy.dcm", np.array([[1, 2], [3, 4]], np.uint16),
        LossyImageCompression="01", WindowCenter=2, WindowWidth=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_xray(single)
    messages = [str(w.message) for w in caught]
    assert any("lossy" in m for m in messages) and any("window" in m for m in messages)
    multi = write_dicom(tmp_path / "multi.dcm", np.zeros((3, 2, 2), np.uint16))
    with pytest.raises(errors.ImageReadError) as info:
        read_xray(multi)
    messages.append(str(info.value))
    for message in messages:
        assert "Secretname" not in message and PATIENT_ID not in message


# ---------------------------------------------------------------------------
# dicom_files._fast_native


@pytest.mark.parametrize("bits_stored, dtype", [(12, np.int16), (12, np.uint16), (16, np.int16)])
def test_fast_native_matches_pixel_array(tmp_path, bits_stored, dtype):
    rng = np.random.default_rng(bits_stored)
    # Random 16-bit words: the bits above BitsStored are garbage that both
    # paths must mask (unsigned) or sign-extend (signed) the same way.
    raw = rng.integers(0, 2**16, size=(7, 9), dtype=np.uint16).view(dtype)
    path = write_dicom(tmp_path / "fast.dcm", raw, bits_stored=bits_stored)
    ds = dicom_files.read_dataset(path)
    fast = dicom_files._fast_native(ds, path)
    assert fast is not None
    reference = ds.pixel_array
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)
