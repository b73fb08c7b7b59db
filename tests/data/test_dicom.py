"""read_ct_series: round trips, real files, and every bad input it must refuse."""

import os
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, JPEG2000Lossless, RLELossless, generate_uid

from covid_keras import errors
from covid_keras.data import read_ct_series, synthetic

from damage_helpers import set_tags


def stored_hu(hu):
    """What a 12-bit, intercept -1024 series stores for ``hu``, back in HU."""
    return np.clip(np.rint(hu + 1024.0), 0, 4095) - 1024.0


def _edit(path, **tags):
    ds = pydicom.dcmread(path)
    set_tags(ds, tags)
    ds.save_as(path)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def test_round_trip_shuffled_names_sorted_by_position(phantom_series):
    folder, hu, spacing, paths = phantom_series
    # The file names are random, so name order is not slice order.
    assert sorted(os.path.basename(p) for p in paths) != [os.path.basename(p) for p in paths]
    ct = read_ct_series(folder)
    assert ct.hu.dtype == np.float32
    assert ct.hu.shape == hu.shape
    np.testing.assert_array_equal(ct.hu, stored_hu(hu))
    np.testing.assert_allclose(ct.spacing, spacing, atol=1e-4)
    assert ct.source_files == tuple(paths)


def test_instance_number_opposite_to_position_and_missing(phantom_series):
    folder, hu, _, paths = phantom_series
    n = len(paths)
    for k, p in enumerate(paths):
        _edit(p, InstanceNumber=n - k)
    _edit(paths[3], InstanceNumber=None)
    ct = read_ct_series(folder)
    np.testing.assert_array_equal(ct.hu, stored_hu(hu))


def test_patient_id_is_pseudonymous_and_no_phi_anywhere(phantom_series, recwarn):
    folder, *_ = phantom_series
    ct = read_ct_series(folder)
    assert ct.patient_id.startswith("pt-")
    text = repr(ct.meta) + ct.patient_id + " ".join(str(w.message) for w in recwarn)
    for secret in ("SECRET-ID-123", "DOE", "JANE", "19450203"):
        assert secret not in text
    # Same patient, same id; the id does not depend on the folder.
    other = os.path.join(os.path.dirname(folder), "copy")
    shutil.copytree(folder, other)
    assert read_ct_series(other).patient_id == ct.patient_id


def test_no_preamble_files_and_non_dicom_skipped_with_one_warning(phantom_series):
    folder, hu, _, paths = phantom_series
    # Re-write one slice without preamble and file meta (ACR-NEMA style).
    ds = pydicom.dcmread(paths[4])
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    os.remove(paths[4])
    ds.save_as(os.path.join(folder, "noext"), enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert pydicom.dcmread(os.path.join(folder, "noext"), force=True).preamble is None
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("scanned on tuesday")
    open(os.path.join(folder, ".DS_Store"), "wb").write(b"\x00\x00\x00\x01Bud1")
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    dicomdir.FileSetID = "EXPORT"
    dicomdir.save_as(os.path.join(folder, "DICOMDIR"), enforce_file_format=True)
    with pytest.warns(UserWarning, match="skipped 3 file"):
        ct = read_ct_series(folder)
    np.testing.assert_array_equal(ct.hu, stored_hu(hu))


def test_several_series_takes_largest_axial_and_ignores_localizer(tmp_path, small_volume):
    hu, _, spacing = small_volume
    synthetic.write_ct_series(hu, spacing, str(tmp_path / "s"), seed=1, patient_id="P")
    small = synthetic.write_ct_series(hu[:5], spacing, str(tmp_path / "s"), seed=2, patient_id="P",
                                      file_prefix="b")
    # A localizer in the main series' folder, with a coronal orientation.
    scout = synthetic.write_ct_series(hu[:1], spacing, str(tmp_path / "s"), seed=3, patient_id="P",
                                      file_prefix="scout")
    main_uid = pydicom.dcmread(next(p for p in (tmp_path / "s").iterdir() if not p.name.startswith(("b", "scout")))).SeriesInstanceUID
    _edit(scout[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
          ImageOrientationPatient=[1, 0, 0, 0, 0, -1], SeriesInstanceUID=main_uid)
    with pytest.warns(UserWarning, match=r"holds 2 series.*skipping series \.\.\.\w+ \(5 CT images\)"):
        ct = read_ct_series(str(tmp_path / "s"))
    assert ct.hu.shape[0] == hu.shape[0]
    small_uid = pydicom.dcmread(small[0]).SeriesInstanceUID
    with pytest.warns(UserWarning):
        picked = read_ct_series(str(tmp_path / "s"), series_uid=small_uid)
    assert picked.hu.shape[0] == 5
    with pytest.raises(errors.ConfigurationError, match=r"no series with series_uid=\.\.\.1\.2\.3; the series there are: series \.\.\."):
        read_ct_series(str(tmp_path / "s"), series_uid="1.2.3")


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_lossless_series_decode_identically(phantom_series, syntax):
    folder, hu, _, paths = phantom_series
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(syntax)
        ds.save_as(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lossless: no lossy warning
        ct = read_ct_series(folder)
    np.testing.assert_array_equal(ct.hu, stored_hu(hu))
    assert ct.meta["TransferSyntax"] == syntax.name


def test_lossy_compressed_slice_warns(phantom_series):
    folder, hu, _, paths = phantom_series
    ds = pydicom.dcmread(paths[2])
    ds.compress(JPEG2000, j2k_cr=[20])
    ds.save_as(paths[2])
    with pytest.warns(UserWarning, match="lossy-compressed"):
        ct = read_ct_series(folder)
    assert ct.meta["lossy"] is True
    assert np.abs(ct.hu[2] - stored_hu(hu)[2]).max() > 0  # really lossy


def test_rescale_slope_and_intercept_per_slice(phantom_series):
    folder, hu, _, paths = phantom_series
    ds = pydicom.dcmread(paths[0])
    raw = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-512"
    ds.save_as(paths[0])
    ct = read_ct_series(folder)
    np.testing.assert_allclose(ct.hu[0], raw * 0.5 - 512, atol=1e-3)
    np.testing.assert_array_equal(ct.hu[1:], stored_hu(hu)[1:])


def test_missing_rescale_warns_and_uses_stored_values(phantom_series):
    folder, _, _, paths = phantom_series
    for p in paths:
        _edit(p, RescaleSlope=None, RescaleIntercept=None)
    with pytest.warns(UserWarning, match="lack RescaleSlope/RescaleIntercept"):
        ct = read_ct_series(folder)
    assert ct.hu.min() >= 0


def test_pixel_padding_masked_on_stored_values(phantom_series):
    folder, hu, _, paths = phantom_series
    for p in paths:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.copy()
        arr[:2, :] = 4000  # stored padding value, would be 2976 "HU"
        ds.PixelData = arr.tobytes()
        ds.add_new(0x00280120, "US", 4000)  # PixelPaddingValue
        ds.save_as(p)
    ct = read_ct_series(folder)
    assert np.all(ct.hu[:, :2, :] == -1024.0)
    np.testing.assert_array_equal(ct.hu[:, 2:, :], stored_hu(hu)[:, 2:, :])


def test_variable_spacing_within_tolerance_warns(phantom_series):
    folder, _, spacing, paths = phantom_series
    ds = pydicom.dcmread(paths[5])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 0.3 * spacing[0]]
    ds.save_as(paths[5])
    with pytest.warns(UserWarning, match="slice spacing varies"):
        ct = read_ct_series(folder)
    assert ct.spacing[0] == pytest.approx(spacing[0])


# --------------------------------------------------------------------------
# Enhanced multi-frame CT
# --------------------------------------------------------------------------


def _write_enhanced(path, hu, spacing, intercepts, order):
    """An Enhanced CT Image Storage file; frames stored in ``order``."""
    n, rows, cols = hu.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "ENH-1"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[2]]
    measures.SliceThickness = spacing[0]
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per_frame = [], []
    for k in order:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 100.0 + k * spacing[0]]
        item.PlanePositionSequence = Sequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, intercepts[k], "HU"
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
        frames.append(np.rint(hu[k] - intercepts[k]).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe_uses_functional_groups(tmp_path, small_volume):
    hu, _, spacing = small_volume
    hu = np.rint(hu)
    n = hu.shape[0]
    intercepts = [-1024 if k % 2 else -2048 for k in range(n)]
    order = list(np.random.default_rng(0).permutation(n))
    os.makedirs(tmp_path / "enh")
    _write_enhanced(str(tmp_path / "enh" / "volume"), hu, spacing, intercepts, order)
    ct = read_ct_series(str(tmp_path / "enh"))
    np.testing.assert_array_equal(ct.hu, hu.astype(np.float32))
    assert ct.meta["multiframe"] is True
    np.testing.assert_allclose(ct.spacing, spacing, atol=1e-4)
    # pydicom's own modality LUT ignores the per-frame intercepts:
    raw = pydicom.dcmread(str(tmp_path / "enh" / "volume")).pixel_array
    assert not np.allclose(raw, hu[order])


# --------------------------------------------------------------------------
# Real files shipped by pydicom / pydicom-data
# --------------------------------------------------------------------------


def test_ct_small_hu(tmp_path, testdata):
    src = testdata("CT_small.dcm")
    os.makedirs(tmp_path / "ct")
    shutil.copy(src, tmp_path / "ct" / "slice")
    ct = read_ct_series(str(tmp_path / "ct"))
    ds = pydicom.dcmread(src)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(ct.hu[0], expected.astype(np.float32))
    assert ct.hu.shape == (1, 128, 128)
    # This crop of a real chest CT spans lung (about -850 HU) to soft tissue.
    assert ct.hu.min() < -800 and ct.hu.max() > 0
    assert ct.spacing[1:] == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))


def _single(tmp_path, testdata, name):
    os.makedirs(tmp_path / "one")
    shutil.copy(testdata(name), tmp_path / "one" / name)
    return str(tmp_path / "one"), pydicom.dcmread(testdata(name))


def test_693_unci_head_ct_hu(tmp_path, testdata):
    # 693_UNCI is a real head CT, signed 14-bit, intercept -1024, that was
    # lossy-compressed once (LossyImageCompression 01): the reader warns.
    folder, ds = _single(tmp_path, testdata, "693_UNCI.dcm")
    with pytest.warns(UserWarning, match="lossy-compressed"):
        ct = read_ct_series(folder)
    stored = ds.pixel_array
    assert stored.dtype == np.int16 and stored.min() < 0  # sign-extended 14 bits
    expected = np.where(stored == int(ds.PixelPaddingValue), -1024.0, stored - 1024.0)
    np.testing.assert_array_equal(ct.hu[0], expected.astype(np.float32))
    # Brain and skull: soft tissue around 0-80 HU, bone above 1000 HU.
    centre = ct.hu[0][192:320, 192:320]
    assert np.mean((centre > 0) & (centre < 80)) > 0.5
    assert ct.hu.max() > 1000
    assert ct.meta["lossy"] is True


def test_693_uncr_padding_masked_before_rescale(tmp_path, testdata):
    folder, ds = _single(tmp_path, testdata, "693_UNCR.dcm")
    ct = read_ct_series(folder)
    stored = ds.pixel_array
    pad = int(ds.PixelPaddingValue)
    assert pad == -2000 and (stored == pad).sum() > 1000
    naive = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert naive.min() == -3024  # what a reader that ignores padding shows
    assert ct.hu.min() == -1024.0
    assert np.all(ct.hu[0][stored == pad] == -1024.0)
    np.testing.assert_array_equal(ct.hu[0][stored != pad], naive[stored != pad].astype(np.float32))


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------


def test_missing_empty_and_non_dicom_folders(tmp_path):
    with pytest.raises(errors.NoDicomError, match="does not exist"):
        read_ct_series(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(errors.NoDicomError, match="folder is empty"):
        read_ct_series(str(tmp_path / "empty"))
    os.makedirs(tmp_path / "txt")
    (tmp_path / "txt" / "readme.txt").write_text("hello")
    (tmp_path / "txt" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(errors.NoDicomError, match="none of its 2 files is a DICOM image"):
        read_ct_series(str(tmp_path / "txt"))


def test_truncated_file_is_named(phantom_series):
    folder, _, _, paths = phantom_series
    data = open(paths[6], "rb").read()
    open(paths[6], "wb").write(data[: len(data) // 2])
    with pytest.raises(errors.DicomReadError, match=os.path.basename(paths[6]) + ".*truncated"):
        read_ct_series(folder)


def test_truncated_inside_header_is_named(phantom_series):
    folder, _, _, paths = phantom_series
    data = open(paths[6], "rb").read()
    open(paths[6], "wb").write(data[:600])
    with pytest.raises(errors.DicomReadError, match=os.path.basename(paths[6])):
        read_ct_series(folder)


def test_empty_dcm_file_is_named(phantom_series):
    folder, *_ = phantom_series
    open(os.path.join(folder, "IM9999.dcm"), "wb").close()
    with pytest.raises(errors.DicomReadError, match="IM9999.dcm.*empty"):
        read_ct_series(folder)


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_tag(phantom_series, tag):
    folder, _, _, paths = phantom_series
    _edit(paths[3], **{tag: None})
    with pytest.raises(errors.SeriesGeometryError, match=f"{os.path.basename(paths[3])}.*lacks {tag}"):
        read_ct_series(folder)


def test_mixed_slice_sizes(phantom_series):
    folder, _, _, paths = phantom_series
    ds = pydicom.dcmread(paths[1])
    ds.Rows, ds.Columns = 16, 16
    ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()
    ds.save_as(paths[1])
    with pytest.raises(errors.SeriesGeometryError, match="different sizes \\(16x16, 32x32\\)"):
        read_ct_series(folder)


def test_duplicate_positions(phantom_series):
    folder, _, _, paths = phantom_series
    shutil.copy(paths[4], os.path.join(folder, "copy_of_slice.dcm"))
    _edit(os.path.join(folder, "copy_of_slice.dcm"), SOPInstanceUID=generate_uid())
    with pytest.raises(errors.SeriesGeometryError, match="duplicate slice position"):
        read_ct_series(folder)


def test_missing_slice_says_where(phantom_series):
    folder, _, spacing, paths = phantom_series
    z_before = float(pydicom.dcmread(paths[6]).ImagePositionPatient[2])
    os.remove(paths[7])
    with pytest.raises(errors.SeriesGeometryError,
                       match=f"missing between {z_before:.2f} mm and {z_before + 2 * spacing[0]:.2f} mm"):
        read_ct_series(folder)


def test_gantry_tilt(phantom_series):
    folder, _, spacing, paths = phantom_series
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * spacing[0] * np.tan(np.radians(15)), z]
        ds.save_as(p)
    with pytest.raises(errors.SeriesGeometryError, match="gantry-tilted by 15.0 degrees"):
        read_ct_series(folder)


def test_gantry_tilt_tag(phantom_series):
    folder, _, _, paths = phantom_series
    for p in paths:
        _edit(p, GantryDetectorTilt="12")
    with pytest.raises(errors.SeriesGeometryError, match="gantry-tilted"):
        read_ct_series(folder)


def test_non_parallel_slice(phantom_series):
    folder, _, _, paths = phantom_series
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    _edit(paths[5], ImageOrientationPatient=[1, 0, 0, 0, c, s])
    with pytest.raises(errors.SeriesGeometryError, match=f"{os.path.basename(paths[5])}.*non-parallel"):
        read_ct_series(folder)


def test_wrong_modality(phantom_series):
    folder, hu, _, paths = phantom_series
    for p in paths:
        _edit(p, Modality="MR")
    with pytest.raises(errors.ModalityError, match="modality MR, not CT"):
        read_ct_series(folder)
    ct = read_ct_series(folder, modalities=None)
    np.testing.assert_array_equal(ct.hu, stored_hu(hu))


def test_errors_share_the_base_class():
    for name in ("DicomReadError", "NoDicomError", "SeriesGeometryError", "ModalityError"):
        assert issubclass(getattr(errors, name), errors.CovidKerasError)
