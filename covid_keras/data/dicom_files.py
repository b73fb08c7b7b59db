"""Low-level DICOM file access shared by the CT and X-ray readers.

Recognises DICOM files whatever their name, reads them with pydicom, and
decodes pixel data with whatever decoder plugin is installed, turning every
failure into a :mod:`covid_keras.errors` type that names the file.
"""

import os
import warnings

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from covid_keras import errors

# Media Storage Directory Storage: a DICOMDIR index, never an image.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# SOP classes that never carry an image (prefix match): DICOMDIR, structured
# reports and key objects, presentation states, encapsulated documents, RT
# plans/structures, raw data, waveforms.
NON_IMAGE_SOP_PREFIXES = (
    DICOMDIR_SOP_CLASS,
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.481.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.9.",
)

# Transfer syntaxes whose compression loses information.
LOSSY_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 (may be lossy)
        "1.2.840.10008.1.2.4.203",  # HTJ2K (may be lossy)
    }
)

# Uncompressed little-endian syntaxes whose pixels we can view directly.
_NATIVE_LITTLE_ENDIAN = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
)

_INSTALL_HINT = (
    "install a decoder for it (pip install python-gdcm pylibjpeg "
    "pylibjpeg-openjpeg, as in requirements.txt) or convert the file to an "
    "uncompressed transfer syntax"
)


def looks_like_dicom(path):
    """True when ``path`` starts like a DICOM file, with or without preamble.

    A Part 10 file has ``DICM`` at byte 128. Files written without preamble
    and meta header (old ACR-NEMA style exports) start directly with a data
    element of group 0x0008 (or 0x0002 for a bare meta group), little endian.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00"):
        # An element tag of group 8 or 2 followed by a plausible element
        # number (small) is how a preamble-less dataset begins.
        return head[3] == 0x00
    return False


def read_dataset(path, stop_before_pixels=False, defer_size=None):
    """Reads one DICOM file, raising :class:`DicomReadError` naming it.

    Args:
        path: the file.
        stop_before_pixels: read the header only.
        defer_size: pydicom's ``defer_size``: large values (pixel data) are
            read from the file only when accessed.

    Returns:
        A :class:`pydicom.Dataset`.

    Raises:
        DicomReadError: the file is empty, truncated or not DICOM.
    """
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
    except OSError as e:
        raise errors.DicomReadError(
            f"{name}: cannot be opened ({e.strerror}); check the path and "
            "its permissions."
        ) from None
    if size == 0:
        raise errors.DicomReadError(
            f"{name}: the file is empty (0 bytes); re-export or remove it."
        )
    try:
        # pydicom reports a file cut inside an element only as a warning
        # (whose text carries the full path); catch it and refuse the file.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(
                name,
                force=True,
                stop_before_pixels=stop_before_pixels,
                defer_size=defer_size,
            )
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError,
            TypeError, NotImplementedError, OverflowError) as e:
        raise errors.DicomReadError(
            f"{name}: is not a readable DICOM file ({type(e).__name__}); it "
            "may be truncated or corrupt, re-export or remove it."
        ) from None
    truncated = any("end of file" in str(w.message).lower() for w in caught)
    if truncated or len(ds) == 0:
        raise errors.DicomReadError(
            f"{name}: the file ends in the middle of a DICOM element, so it "
            "is truncated; re-export or remove it."
        )
    _fill_transfer_syntax(ds)
    return ds


def _fill_transfer_syntax(ds):
    """Records the syntax a file without meta header was actually read with.

    Files written without preamble and meta header (ACR-NEMA style exports
    such as pydicom-data's OT-PAL-8-face) have no (0002,0010); pydicom 3 then
    refuses to decode their pixels, and :func:`transfer_syntax` would guess
    implicit little endian even when pydicom detected another encoding.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    uid = {
        (True, True): pydicom.uid.ImplicitVRLittleEndian,
        (False, True): pydicom.uid.ExplicitVRLittleEndian,
        (False, False): pydicom.uid.ExplicitVRBigEndian,
    }.get((implicit, little))
    if uid is not None:
        meta.TransferSyntaxUID = uid


def transfer_syntax(ds):
    """Returns the dataset's transfer syntax UID (implicit LE if unknown)."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return UID(uid) if uid else UID("1.2.840.10008.1.2")


def is_lossy(ds):
    """True when the image was lossy-compressed, now or at some earlier time."""
    if str(getattr(ds, "LossyImageCompression", "")).strip() == "01":
        return True
    return str(transfer_syntax(ds)) in LOSSY_TRANSFER_SYNTAXES


def sop_class(ds):
    """The SOP Class UID from the dataset, or from its file meta, or ''."""
    uid = str(getattr(ds, "SOPClassUID", "") or "")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    return uid


def is_non_image(ds):
    """True for DICOM objects that never hold pixels (DICOMDIR, reports, ...)."""
    uid = sop_class(ds)
    return any(uid.startswith(prefix) for prefix in NON_IMAGE_SOP_PREFIXES)


def _expected_native_bytes(ds):
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * frames * samples
    return (n * bits + 7) // 8


def _fast_native(ds, path):
    """Stored values of an uncompressed 16-bit single-sample image, or None.

    Viewing the PixelData bytes directly is several times faster than
    ``Dataset.pixel_array`` for the common CT case and gives the same
    values (sign extension for BitsStored < 16 included); every other case
    goes through pydicom's decoders.
    """
    ts = str(transfer_syntax(ds))
    if ts not in _NATIVE_LITTLE_ENDIAN:
        return None
    if int(getattr(ds, "BitsAllocated", 0)) != 16:
        return None
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        return None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        return None
    raw = ds.PixelData
    expected = _expected_native_bytes(ds)
    if len(raw) < expected:
        raise errors.DicomReadError(
            f"{path}: pixel data is truncated ({len(raw)} of {expected} "
            "bytes); the file is incomplete, re-export or remove it."
        )
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    arr = np.frombuffer(raw, dtype="<i2" if signed else "<u2", count=expected // 2)
    arr = arr.reshape(int(ds.Rows), int(ds.Columns))
    stored = int(getattr(ds, "BitsStored", 16) or 16)
    if stored < 16:
        shift = 16 - stored
        if signed:
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.uint16((1 << stored) - 1)
    return arr


def decode_pixels(ds, path):
    """Returns the stored pixel values of ``ds`` as a NumPy array.

    Compressed transfer syntaxes are decoded by whichever pydicom plugin is
    installed (python-gdcm, pylibjpeg-openjpeg, pylibjpeg-libjpeg; RLE is
    built in). Multi-frame data comes back as [frames, rows, cols(, 3)].

    Raises:
        DicomReadError: no pixel data, truncated data, or no decoder.
    """
    if "PixelData" not in ds:
        raise errors.DicomReadError(
            f"{path}: has no pixel data (it is not an image); remove it from "
            "the folder or point to the image files."
        )
    fast = _fast_native(ds, path)
    if fast is not None:
        return fast
    ts = transfer_syntax(ds)
    if not ts.is_compressed and "BitsAllocated" in ds and "Rows" in ds:
        expected = _expected_native_bytes(ds)
        if len(ds.PixelData) < expected:
            raise errors.DicomReadError(
                f"{path}: pixel data is truncated ({len(ds.PixelData)} of "
                f"{expected} bytes); the file is incomplete, re-export or "
                "remove it."
            )
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as e:
        message = str(e)
        if "Unable to decode" in message or "plugin" in message or "handler" in message:
            name = getattr(ts, "name", str(ts))
            raise errors.DicomReadError(
                f"{path}: its pixel data is compressed as {name} and no "
                f"installed decoder can read it; {_INSTALL_HINT}."
            ) from None
        raise errors.DicomReadError(
            f"{path}: pixel data cannot be decoded ({message.splitlines()[0]}); "
            "the file may be corrupt, re-export or remove it."
        ) from None
    except (ValueError, EOFError, AttributeError, KeyError, TypeError) as e:
        raise errors.DicomReadError(
            f"{path}: pixel data cannot be decoded ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the file may be "
            "truncated or corrupt, re-export or remove it."
        ) from None


def padding_mask(stored, header):
    """Pixels whose stored value PixelPaddingValue (and its range limit) marks
    as padding (outside the scanned field), or None when there are none.

    Compared on the stored values, before any rescale (PS3.3 C.7.5.1.1.2).
    """
    if "PixelPaddingValue" not in header:
        return None
    try:
        value = int(header.PixelPaddingValue)
        limit = header.get("PixelPaddingRangeLimit")
        if limit is None:
            mask = stored == value
        else:
            low, high = sorted((value, int(limit)))
            mask = (stored >= low) & (stored <= high)
    except (TypeError, ValueError):
        return None
    return mask if mask.any() else None
