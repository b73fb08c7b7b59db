"""Damaged and unusual files, one case each: a named CovidKerasError or a
correct read, never another exception, and no tag value in any message.

Each test names the exception the case used to end in; the fuzz tests
(``test_fuzz_readers.py``) cover the same ground at random.
"""

import json
import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from covid_keras import cli, errors
from covid_keras.data import read_ct_series, read_xray, synthetic

from damage_helpers import (
    IDENTITY,
    element_offset,
    leaked,
    patched,
    recorded,
    write_xray_dicom,
)

N, SIZE = 5, 16
PRIVATE_TS = "1.2.826.0.1.3680043.9.9999.1"  # a made-up vendor-private transfer syntax UID
GE_PRIVATE_TS = "1.2.840.113619.5.2"  # GE: Implicit VR Little Endian header, big-endian pixel data


@pytest.fixture
def series(tmp_path):
    """A 5-slice 16 x 16 series with made-up identifiers: (folder, paths in slice order, HU)."""
    hu = np.random.default_rng(3).uniform(-1000, 400, (N, SIZE, SIZE))
    folder = str(tmp_path / "series")
    paths = synthetic.write_ct_series(hu, (2.0, 0.7, 0.7), folder, seed=3, shuffle=False, **IDENTITY)
    return folder, paths, (np.clip(np.rint(hu + 1024.0), 0, 4095) - 1024.0).astype(np.float32)


@pytest.fixture
def xray(tmp_path):
    path = write_xray_dicom(tmp_path / "chest.dcm", size=SIZE)
    return path, read_xray(path)


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _refused(read, error, *fragments, where):
    """Runs ``read``; asserts ``error`` naming ``where`` and ``fragments``, no leak; returns texts."""
    with recorded() as texts:
        with pytest.raises(error) as info:
            read()
    message = str(info.value)
    assert where in message
    for fragment in fragments:
        assert fragment in message, message
    texts.append(message)
    assert not leaked(texts, where), texts
    return message, texts


def _read(read, where):
    """Runs ``read``; asserts it succeeds without a leak; returns (result, texts)."""
    with recorded() as texts:
        result = read()
    assert not leaked(texts, where), texts
    return result, texts


# --------------------------------------------------------------------------
# Cut just after the DICM prefix: was struct.error / BytesLengthException
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(132, 161, 3))
def test_cut_after_the_dicm_prefix_is_a_truncated_file(series, xray, tmp_path, cut):
    folder, paths, _ = series
    _write(paths[2], _bytes(paths[2])[:cut])
    _refused(lambda: read_ct_series(folder), errors.DicomReadError, os.path.basename(paths[2]), where=folder)
    cut_xray = str(tmp_path / "cut.dcm")
    _write(cut_xray, _bytes(xray[0])[:cut])
    _refused(lambda: read_xray(cut_xray), errors.ImageReadError, "truncated", where=cut_xray)


# --------------------------------------------------------------------------
# Damaged header values
# --------------------------------------------------------------------------


def test_unknown_vr_in_an_essential_element_names_the_element(series, xray):
    """Was NotImplementedError ("Unknown Value Representation") at the first tag access."""
    folder, paths, _ = series
    data = _bytes(paths[2])
    _write(paths[2], patched(data, element_offset(data, 0x0028, 0x1052, "DS") + 4, b"QQ"))
    _refused(lambda: read_ct_series(folder), errors.DicomReadError, "(0028,1052) RescaleIntercept",
             os.path.basename(paths[2]), where=folder)
    path, _ = xray
    data = _bytes(path)
    _write(path, patched(data, element_offset(data, 0x0028, 0x1052, "DS") + 4, b"QQ"))
    _refused(lambda: read_xray(path), errors.ImageReadError, "(0028,1052) RescaleIntercept", where=path)


def test_unknown_vr_in_an_unused_element_is_dropped_with_a_warning(series):
    folder, paths, hu = series
    data = _bytes(paths[2])
    _write(paths[2], patched(data, element_offset(data, 0x0008, 0x1090, "LO") + 4, b"QQ"))
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, hu)
    assert any(os.path.basename(paths[2]) in t and "(0008,1090) ManufacturerModelName" in t for t in texts)


def test_rescale_intercept_stored_as_text_is_refused(xray):
    """A VR byte damaged from DS to SH: was numpy's UFuncTypeError in images.py."""
    path, _ = xray
    data = _bytes(path)
    _write(path, patched(data, element_offset(data, 0x0028, 0x1052, "DS") + 4, b"SH"))
    _refused(lambda: read_xray(path), errors.ImageReadError, "(0028,1052) RescaleIntercept", where=path)


def test_number_of_frames_that_is_no_number(tmp_path):
    """NumberOfFrames = "x1": was ValueError."""
    path = write_xray_dicom(tmp_path / "frames.dcm", size=SIZE, NumberOfFrames=1)
    data = _bytes(path)
    at = element_offset(data, 0x0028, 0x0008, "IS")
    assert data[at + 8:at + 10] == b"1 "
    _write(path, patched(data, at + 8, b"x1"))
    _refused(lambda: read_xray(path), errors.ImageReadError, "(0028,0008) NumberOfFrames", where=path)


def test_xray_without_rows(tmp_path):
    """Was AttributeError."""
    path = write_xray_dicom(tmp_path / "norows.dcm", size=SIZE, Rows=None)
    _refused(lambda: read_xray(path), errors.ImageReadError, "lacks Rows", where=path)


# --------------------------------------------------------------------------
# Privacy: a damaged length field makes an element swallow the patient's
# --------------------------------------------------------------------------


def _swallow(data, group, element, vr, until):
    """``data`` with the length of one element stretched up to tag ``until``."""
    at = element_offset(data, group, element, vr)
    end = data.find(until, at)
    assert end > at and (end - at - 8) % 2 == 0
    return patched(data, at + 6, (end - at - 8).to_bytes(2, "little"))


def test_stretched_length_field_leaks_nothing(series, capsys):
    """ManufacturerModelName swallowing PatientName/ID/BirthDate: pydicom's
    warning quoted them, and so did ``python -m covid_keras.data info``."""
    from covid_keras.data import __main__ as data_cli

    folder, paths, hu = series
    data = _bytes(paths[2])
    damaged = _swallow(data, 0x0008, 0x1090, "LO", b"\x18\x00\x15\x00CS")  # up to BodyPartExamined
    assert all(v.encode() in damaged for v in IDENTITY.values())
    _write(paths[2], damaged)
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, hu)
    assert not leaked([repr(ct.meta), ct.patient_id], folder)
    assert any("(0008,1090) ManufacturerModelName" in t for t in texts)
    with recorded() as texts:
        assert cli.run(data_cli.main, ["info", folder]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["shape_zyx"] == [N, SIZE, SIZE]
    assert not leaked(texts + [out, err], folder), texts + [out, err]


def test_stretched_length_in_an_xray_leaks_nothing(xray):
    path, _ = xray
    damaged = _swallow(_bytes(path), 0x0008, 0x0060, "CS", b"\x28\x00\x02\x00US")  # Modality to SamplesPerPixel
    _write(path, damaged)
    _refused(lambda: read_xray(path), errors.ImageReadError, "(0008,0060) Modality", where=path)


def test_pydicom_debug_log_is_withheld(series):
    """With pydicom's debug log on, every element read is logged with its bytes."""
    folder, paths, hu = series
    pydicom.config.debug(True, default_handler=False)
    try:
        ct, texts = _read(lambda: read_ct_series(folder), folder)
    finally:
        pydicom.config.debug(False, default_handler=False)
    np.testing.assert_array_equal(ct.hu, hu)


def test_covid_ct_md_location_order_reads_through_the_guard(tmp_path):
    """A damaged SliceLocation: was NotImplementedError from covid_ct_md's own dcmread."""
    from covid_keras.data import datasets

    from fixtures_layouts import build_covid_ct_md

    root = build_covid_ct_md(tmp_path / "COVID-CT-MD")
    for class_folder in ("COVID-19 Cases", "Cap Cases", "Normal Cases"):
        for pid in os.listdir(os.path.join(root, class_folder)):
            if pid != "P001":
                shutil.rmtree(os.path.join(root, class_folder, pid))
    folder = os.path.join(root, "COVID-19 Cases", "P001")
    hu = np.zeros((3, SIZE, SIZE))
    # File names run opposite to position: IM0001 is the highest slice.
    written = synthetic.write_ct_series(hu, (2.0, 1.0, 1.0), str(tmp_path / "w"), shuffle=False, **IDENTITY)
    for k, source in enumerate(written):
        shutil.copy(source, os.path.join(folder, f"IM{3 - k:04d}.dcm"))
    damaged = os.path.join(folder, "IM0002.dcm")
    data = _bytes(damaged)
    _write(damaged, patched(data, element_offset(data, 0x0020, 0x1041, "DS") + 4, b"QQ"))
    (p001,), texts = _read(lambda: datasets.covid_ct_md(root, slice_order="location"), root)
    assert [n for n, _ in p001.slice_labels] == ["IM0003.dcm", "IM0002.dcm", "IM0001.dcm"]
    assert any("IM0002.dcm" in t and "(0020,1041) SliceLocation" in t for t in texts)


# --------------------------------------------------------------------------
# Unknown transfer syntax: was ValueError "UID is not a transfer syntax"
# --------------------------------------------------------------------------


def _private_syntax(path):
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = PRIVATE_TS
    ds.save_as(path, enforce_file_format=True)


def test_private_transfer_syntax_over_native_pixels_is_read_with_a_warning(series, xray):
    folder, paths, hu = series
    _private_syntax(paths[0])
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, hu)
    assert any(os.path.basename(paths[0]) in t and PRIVATE_TS in t and "Explicit VR Little Endian" in t
               for t in texts)
    path, intact = xray
    _private_syntax(path)
    image, texts = _read(lambda: read_xray(path), path)
    np.testing.assert_array_equal(image, intact)
    assert any(PRIVATE_TS in t for t in texts)


def test_ge_private_syntax_reads_big_endian_pixels(series, xray):
    folder, paths, hu = series
    for path in paths + [xray[0]]:
        ds = pydicom.dcmread(path)
        words = np.frombuffer(ds.PixelData, dtype="<u2")
        ds.PixelData = words.astype(">u2").tobytes()  # the same values, as GE stores them
        ds.file_meta.TransferSyntaxUID = GE_PRIVATE_TS
        ds.save_as(path, enforce_file_format=True)
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, hu)
    # One warning for the whole series, naming the syntax, not one per slice.
    about = [t for t in texts if GE_PRIVATE_TS in t]
    assert len(about) == 1 and f"{N} files" in about[0] and "big-endian" in about[0], texts
    image, texts = _read(lambda: read_xray(xray[0]), xray[0])
    np.testing.assert_array_equal(image, xray[1])
    assert any(GE_PRIVATE_TS in t for t in texts)


def test_private_transfer_syntax_over_compressed_pixels_names_the_uid(series):
    folder, paths, _ = series
    ds = pydicom.dcmread(paths[2])
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = PRIVATE_TS
    ds.save_as(paths[2], enforce_file_format=True)
    _refused(lambda: read_ct_series(folder), errors.DicomReadError, PRIVATE_TS, "not a standard DICOM",
             os.path.basename(paths[2]), where=folder)


# --------------------------------------------------------------------------
# Broken link: was FileNotFoundError from os.path.getsize
# --------------------------------------------------------------------------


def test_broken_symlink_is_skipped_with_the_other_files(series, tmp_path):
    folder, _, hu = series
    os.symlink(str(tmp_path / "gone.dcm"), os.path.join(folder, "link.dcm"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, hu)
    assert sum("skipped 2 file(s)" in t for t in texts) == 1


# --------------------------------------------------------------------------
# JPEG 2000: a corrupt codestream is not a missing decoder
# --------------------------------------------------------------------------


def _destroyed_j2k(path, keep):
    """The slice compressed as JPEG 2000, its codestream kept for ``keep``
    bytes (the SOC marker, or the main header too) and random after."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    noise = np.random.default_rng(keep).integers(0, 256, len(frame) - keep, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([frame[:keep] + noise])
    ds.save_as(path)


@pytest.mark.parametrize("keep", [2, 40])
def test_destroyed_jpeg2000_codestream_is_called_corrupt(tmp_path, keep):
    """Was "no installed decoder can read it; pip install python-gdcm ..."; and
    with the main header intact, python-gdcm aborted the whole process."""
    hu = np.random.default_rng(4).uniform(-1000, 400, (N, 32, 32))  # OpenJPEG encodes 32 x 32, not 16 x 16
    folder = str(tmp_path / "j2k")
    paths = synthetic.write_ct_series(hu, (2.0, 1.0, 1.0), folder, shuffle=False, **IDENTITY)
    _destroyed_j2k(paths[2], keep)
    message, _ = _refused(lambda: read_ct_series(folder), errors.DicomReadError, "corrupt",
                          os.path.basename(paths[2]), where=folder)
    assert "pip install" not in message


def test_missing_decoder_still_says_what_to_install(series, monkeypatch):
    folder, paths, _ = series
    ds = pydicom.dcmread(paths[2])
    ds.compress(RLELossless)
    ds.save_as(paths[2])

    class NoPlugins:
        available_plugins = ()

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: NoPlugins())
    _refused(lambda: read_ct_series(folder), errors.DicomReadError, "no installed decoder", "pip install",
             where=folder)


# --------------------------------------------------------------------------
# PET/CT: the series is chosen among the allowed modalities
# --------------------------------------------------------------------------


@pytest.fixture
def pet_ct(tmp_path):
    """A study folder: a 6-slice CT series and a 9-slice PT series of the same patient."""
    folder = str(tmp_path / "study")
    ct_hu = np.random.default_rng(5).uniform(-1000, 400, (6, SIZE, SIZE))
    pt = np.random.default_rng(6).uniform(0, 3000, (9, SIZE, SIZE))
    ct_paths = synthetic.write_ct_series(ct_hu, (2.0, 1.0, 1.0), folder, seed=5, file_prefix="ct", **IDENTITY)
    pt_paths = synthetic.write_ct_series(pt, (3.0, 1.0, 1.0), folder, seed=6, file_prefix="pt", **IDENTITY)
    for p in pt_paths:
        ds = pydicom.dcmread(p)
        ds.Modality = "PT"
        ds.save_as(p)
    uid = {m: str(pydicom.dcmread(ps[0]).SeriesInstanceUID) for m, ps in (("CT", ct_paths), ("PT", pt_paths))}
    return folder, uid, (np.clip(np.rint(ct_hu + 1024.0), 0, 4095) - 1024.0).astype(np.float32)


def test_pet_ct_study_reads_the_ct_series(pet_ct):
    """Was: the PT series (more slices) chosen, then refused with a ModalityError."""
    folder, uid, ct_hu = pet_ct
    ct, texts = _read(lambda: read_ct_series(folder), folder)
    np.testing.assert_array_equal(ct.hu, ct_hu)
    assert ct.meta["Modality"] == "CT"
    assert any("skipping series" in t and "(9 PT images)" in t for t in texts)
    assert not any(uid["PT"] in t or uid["CT"] in t for t in texts)  # UIDs only abbreviated
    pet, _ = _read(lambda: read_ct_series(folder, modalities=None), folder)
    assert pet.hu.shape[0] == 9 and pet.meta["Modality"] == "PT"


def test_series_uid_picks_by_whole_uid_by_its_end_and_by_pseudonym(pet_ct):
    folder, uid, ct_hu = pet_ct
    pet, _ = _read(lambda: read_ct_series(folder, series_uid=uid["PT"], modalities=None), folder)
    assert pet.hu.shape[0] == 9
    by_end, _ = _read(lambda: read_ct_series(folder, series_uid="..." + uid["PT"][-8:], modalities=None), folder)
    assert by_end.hu.shape[0] == 9
    by_id, _ = _read(lambda: read_ct_series(folder, series_uid=pet.meta["series"], modalities=None), folder)
    assert by_id.hu.shape[0] == 9
    ct, _ = _read(lambda: read_ct_series(folder, series_uid=uid["CT"][-10:]), folder)
    np.testing.assert_array_equal(ct.hu, ct_hu)
    # The PT series given explicitly is still not CT.
    _refused(lambda: read_ct_series(folder, series_uid=uid["PT"]), errors.ModalityError, "modality PT",
             where=folder)


def test_series_uid_that_matches_nothing_is_not_printed_whole(pet_ct):
    folder, uid, _ = pet_ct
    wanted = uid["CT"][:-3] + "999"
    message, _ = _refused(lambda: read_ct_series(folder, series_uid=wanted), errors.ConfigurationError,
                          "no series with series_uid=...", where=folder)
    assert wanted not in message and uid["CT"] not in message and uid["PT"] not in message
    assert "(6 CT images)" in message and "(9 PT images)" in message


# --------------------------------------------------------------------------
# The guard itself: what pydicom says inside it never comes out
# --------------------------------------------------------------------------


def test_guard_withholds_pydicom_warnings_logs_and_error_texts(tmp_path):
    """Stands in for pydicom (whose own messages quote element bytes) inside
    ``pydicom_guard``: our warning passes, pydicom's are summarised, log
    records are dropped, an error keeps only its type; pydicom's validation
    mode is off inside and restored after."""
    import logging
    import warnings

    from covid_keras.data import dicom_files

    name = str(tmp_path / "x.dcm")
    mode = pydicom.config.settings.reading_validation_mode
    with recorded() as texts:
        with pytest.raises(errors.ImageReadError) as info:
            with dicom_files.pydicom_guard(name, error=errors.ImageReadError, what="its header"):
                assert pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE
                warnings.warn(f"{name}: our own warning")
                warnings.warn("Invalid value for VR PN: 'DOE^JANE' in (0010,0010)")
                logging.getLogger("pydicom").warning("b'SECRET-ID-123'")
                logging.getLogger("pydicom.pixels.decoders.base").error("19450203")
                raise ValueError("could not convert 'DOE^JANE'")
    assert pydicom.config.settings.reading_validation_mode == mode
    texts.append(str(info.value))
    assert not leaked(texts, name), texts
    assert f"{name}: our own warning" in texts
    assert str(info.value) == (f"{name}: its header cannot be read (ValueError); it is damaged or not "
                               "standard DICOM, re-export or remove it.")
    # Without an error, pydicom's warnings become one summary naming the tags.
    with recorded() as texts:
        with dicom_files.pydicom_guard(name):
            warnings.warn("Invalid value for VR PN: 'DOE^JANE' in (0010,0010)")
    assert not leaked(texts, name), texts
    assert any(t.startswith(f"{name}: withheld 1 pydicom warning(s) about (0010,0010) PatientName") for t in texts)


# --------------------------------------------------------------------------
# Review findings: a value in a window error; other libraries' warnings
# --------------------------------------------------------------------------


def test_window_pydicom_cannot_apply_warns_without_the_value(tmp_path):
    import warnings

    with warnings.catch_warnings():  # pydicom checks the value as the test writes it
        warnings.simplefilter("ignore")
        path = write_xray_dicom(tmp_path / "voi.dcm", VOILUTFunction="DOE^JANE")
    image, texts = _read(lambda: read_xray(path), path)
    assert image.shape == (SIZE, SIZE)
    assert any("cannot be applied" in t for t in texts), texts


def test_guard_passes_warnings_that_are_not_pydicoms(tmp_path):
    import warnings

    from covid_keras.data.dicom_files import pydicom_guard

    name = str(tmp_path / "x.dcm")
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        with pydicom_guard(name) as guard:
            np.log(np.zeros(1))
    assert guard.withheld == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pydicom_guard(name) as guard:
            # Raised inside pydicom, or a UserWarning pointing anywhere: withheld.
            warnings.warn_explicit("value DOE^JANE", RuntimeWarning, pydicom.misc.__file__, 83)
            warnings.warn_explicit("value DOE^JANE", UserWarning, __file__, 1)
    assert guard.withheld == 2
    assert not leaked([str(w.message) for w in caught], name)
