"""Helpers for the damaged-file tests: files with known identifying values,
byte-level damage, and a recorder of every warning and log line.

A plain module (not a test file): ``test_fuzz_readers.py`` and
``test_damaged_files.py`` import it.
"""

import contextlib
import io
import logging
import os
import struct
import warnings

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "SECRET-ID-123"
BIRTH_DATE = "19450203"
IDENTITY = {"patient_name": PATIENT_NAME, "patient_id": PATIENT_ID, "birth_date": BIRTH_DATE}
# Each identifying value, its halves (a damaged byte may hit the other half)
# and its bytes as hex (pydicom's debug log shows bytes that way).
SECRETS = tuple(
    {PATIENT_NAME, "DOE^", "JANE", PATIENT_ID, "SECRET", "ID-123", BIRTH_DATE}
    | {v.encode().hex() for v in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE)}
    | {" ".join(f"{b:02x}" for b in v.encode()) for v in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE)}
)


def set_tags(ds, tags):
    """Sets each keyword of ``tags`` on the dataset ``ds``; a None value deletes the element."""
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def write_dicom(path, pixels, *, photometric="MONOCHROME2", bits_stored=None, sop_instance_uid=None, **attrs):
    """Writes ``pixels`` ([R, C] or [F, R, C] integers) as a Part 10 DX file.

    ``attrs`` are set last (keyword=value); a value of None removes the
    element. ``sop_instance_uid`` fixes the instance UID (else a random one).
    """
    pixels = np.ascontiguousarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    set_tags(ds, attrs)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def write_xray_dicom(path, size=16, **attrs):
    """A small MONOCHROME1 DX file (12 of 16 bits, a window) with made-up identifiers."""
    ramp = (np.arange(size * size, dtype=np.uint16) * (4095 // (size * size - 1))).reshape(size, size)
    header = {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID, "PatientBirthDate": BIRTH_DATE,
              "PatientSex": "F", "RescaleSlope": "1", "RescaleIntercept": "0", "WindowCenter": "2048",
              "WindowWidth": "4096"}
    return write_dicom(path, ramp, photometric="MONOCHROME1", bits_stored=12,
                       sop_instance_uid=generate_uid(entropy_srcs=["xray", str(size)]), **{**header, **attrs})


def pixel_value_offset(data):
    """Offset of the first pixel byte of an explicit-VR little-endian file."""
    at = data.rfind(b"\xe0\x7f\x10\x00")
    assert at > 0 and data[at + 4:at + 6] in (b"OW", b"OB")
    return at + 12  # tag, VR, 2 reserved bytes, 4-byte length


def element_offset(data, group, element, vr):
    """Offset of an explicit-VR little-endian element's tag in ``data``."""
    at = data.find(struct.pack("<HH", group, element) + vr.encode())
    assert at > 0, f"({group:04X},{element:04X}) {vr} not found"
    return at


def patched(data, offset, new):
    """``data`` with ``new`` written over the bytes at ``offset``."""
    return data[:offset] + new + data[offset + len(new):]


@contextlib.contextmanager
def recorded():
    """Yields a list that receives the text of every warning and log record.

    Warnings are recorded with the "always" filter; log records of every
    logger (pydicom's included) at DEBUG and above go to a handler on the
    root logger.
    """
    texts = []
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield texts
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        texts.extend(str(w.message) for w in caught)
        texts.append(stream.getvalue())


def leaked(texts, *paths):
    """The identifying strings found in ``texts`` (the given paths blanked
    first: pytest's numbered folders could hold a date by chance)."""
    found = []
    for text in texts:
        for path in paths:
            text = text.replace(os.fspath(path), "<path>")
        lowered = text.lower()
        found += [s for s in SECRETS if s in text or s.lower() in lowered]
    return sorted(set(found))
