"""Low-level DICOM file access shared by the CT and X-ray readers.

Recognises DICOM files whatever their name, reads them with pydicom, and
decodes pixel data with whatever decoder plugin is installed, turning every
failure into a :mod:`covid_keras.errors` type that names the file.

Every use of pydicom goes through :func:`pydicom_guard`, the one place where
pydicom's warnings, log records and errors are caught: their text can quote
the raw bytes of a damaged element, and those bytes may hold PatientName,
PatientID or the birth date. :func:`read_dataset` converts, inside the
guard, every element the readers use (pydicom otherwise converts them
lazily, on first access, outside any guard), so later access to those tags
cannot warn; names, dates and private tags are never converted.
"""

import contextlib
import logging
import os
import re
import struct
import sys
import warnings

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
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

# Vendor-private transfer syntaxes whose layout is known: GE's "Implicit VR Big
# Endian DLX" is Implicit VR Little Endian except for big-endian pixel data
# (as GDCM, DCMTK and fo-dicom read it).
_BIG_ENDIAN_PIXEL_SYNTAXES = {"1.2.840.113619.5.2": "GE Private Implicit VR Big Endian"}

# Uncompressed little-endian syntaxes whose pixels we can view directly.
_NATIVE_LITTLE_ENDIAN = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
)

_INSTALL_HINT = (
    "install a decoder for it (pip install python-gdcm pylibjpeg "
    "pylibjpeg-openjpeg, as in requirements.txt) or convert the file to an "
    "uncompressed transfer syntax"
)


# Pixel data elements: decoded (and read, when deferred) only by decode_pixels.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

# Elements whose loss would change the image or its identity: a damaged one
# refuses the file instead of being dropped. Whole groups: file meta, image
# pixel / rescale / window / LUT (0028), functional groups (5200), pixels.
_ESSENTIAL_GROUPS = frozenset({0x0002, 0x0028, 0x5200, 0x7FE0})
_ESSENTIAL_TAGS = frozenset(
    {
        0x00080008,  # ImageType (localizers)
        0x00080016,  # SOPClassUID
        0x00080060,  # Modality
        0x00100020,  # PatientID (the pseudonymous id)
        0x0020000D,  # StudyInstanceUID
        0x0020000E,  # SeriesInstanceUID
        0x00200032,  # ImagePositionPatient
        0x00200037,  # ImageOrientationPatient
        0x20500020,  # PresentationLUTShape
    }
)

# Outside the groups above, the elements the readers (and dataset adapters)
# use: converted, and checked, when the file is read. The others (names,
# dates, private groups) are never converted, so never read at all.
_READ_TAGS = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "SpecificCharacterSet", "ImageType", "SOPClassUID", "Modality", "Manufacturer",
        "ManufacturerModelName", "PatientID", "PatientAge", "PatientSex", "BodyPartExamined",
        "SliceThickness", "KVP", "GantryDetectorTilt", "ConvolutionKernel", "PatientPosition",
        "StudyInstanceUID", "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
        "SliceLocation",
    )
) | _ESSENTIAL_TAGS

# Text value representations, and the control characters each may hold. A
# text value with any other control character (NUL inside it, the bytes of
# a tag) has swallowed its neighbours: its length field is damaged.
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_LONG_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_BINARY_VRS = frozenset({"AT", "FD", "FL", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV", "UL", "US", "UV"})
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")
_CONTROL_LONG = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")

# A tag as pydicom prints it, "(0028,1052)": the only part of a pydicom
# message that may be repeated, since the rest can quote tag values.
_TAG_IN_TEXT = re.compile(r"\(([0-9A-Fa-f]{4}),\s?([0-9A-Fa-f]{4})\)")
_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CODE_STRING = re.compile(r"^[A-Z0-9 _]{0,16}$")

_PYDICOM_DIR = os.path.dirname(os.path.abspath(pydicom.__file__))
# pydicom and the decoder plugins it calls: their warnings can quote element
# values, so they are withheld; anyone else's (numpy, our own) pass.
_WITHHELD_DIRS = (_PYDICOM_DIR,) + tuple(
    os.path.join(os.path.dirname(_PYDICOM_DIR), name)
    for name in ("pylibjpeg", "openjpeg", "libjpeg", "rle", "gdcm", "_gdcm", "jpeg_ls", "pyjpegls")
)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn_outside(message, category=UserWarning):
    """``warnings.warn`` attributed to the first caller outside covid_keras."""
    frame, level = sys._getframe(1), 2
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or frame.f_code.co_filename == contextlib.__file__
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def code_string(value):
    """A code string (Modality, PhotometricInterpretation) fit for a message.

    The value itself when it is a well-formed CS (capitals, digits, space,
    underscore; 16 characters at most), else ``"(damaged value)"``: a
    damaged element's bytes are never repeated.
    """
    text = str(value or "").strip()
    return text if _CODE_STRING.match(text) else "(damaged value)"


def describe_tag(tag):
    """``"(0028,0008) NumberOfFrames"``: a tag and its keyword, never its value."""
    tag = pydicom.tag.Tag(tag)
    keyword = keyword_for_tag(tag)
    text = f"({tag.group:04X},{tag.element:04X})"
    return f"{text} {keyword}" if keyword else text


class _Withhold(logging.Filter):
    """Drops pydicom's log records: they repeat its warnings, values and all."""

    def filter(self, record):
        return False


class PydicomGuard:
    """What :func:`pydicom_guard` caught for one file (see there)."""

    def __init__(self, name):
        self.name = name
        self.withheld = 0  # pydicom warnings not shown
        self.tags = []  # tags those warnings named (no values)
        self.dropped = []  # damaged non-essential elements removed
        self._caught = []  # warnings caught so far: looked at, never shown

    def saw(self, fragment):
        """True when a warning caught so far contains ``fragment``."""
        return any(fragment in str(w.message) for w in self._caught)

    def summary(self):
        """One sentence on what was withheld or dropped, or None."""
        parts = []
        if self.dropped:
            listing = ", ".join(describe_tag(t) for t in self.dropped[:5])
            more = f" and {len(self.dropped) - 5} more" if len(self.dropped) > 5 else ""
            parts.append(f"ignored {len(self.dropped)} damaged element(s) ({listing}{more})")
        if self.withheld:
            tags = sorted(set(self.tags) - {describe_tag(t) for t in self.dropped})
            about = f" about {', '.join(tags[:5])}" if tags else ""
            parts.append(
                f"withheld {self.withheld} pydicom warning(s){about}, whose text can quote patient data"
            )
        if not parts:
            return None
        return f"{self.name}: {'; '.join(parts)}; the file may be damaged or non-standard."

    def _take(self, caught):
        """Re-emits our own warnings and other libraries' (numpy's); counts pydicom's."""
        for w in caught:
            text = str(w.message)
            if text.startswith(self.name):  # ours: every message starts with the path
                warn_outside(w.message)  # attributed to the caller of the reader
                continue
            # Passed on: warnings of another kind (numpy's RuntimeWarning, a
            # DeprecationWarning) raised outside pydicom and its decoders.
            # A UserWarning is withheld wherever it points: pydicom warns with
            # that category and, through ``stacklevel``, may point at its caller.
            outside = not os.path.abspath(w.filename or "").startswith(_WITHHELD_DIRS)
            if outside and not issubclass(w.category, UserWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                continue
            self.withheld += 1
            for group, element in _TAG_IN_TEXT.findall(text):
                self.tags.append(describe_tag(int(group + element, 16)))


@contextlib.contextmanager
def pydicom_guard(path, *, error=errors.DicomReadError, what="the file", notes=None):
    """The one place pydicom runs: no tag value escapes in a warning, log or error.

    For the duration, pydicom's value validation is off
    (``pydicom.config.settings.reading_validation_mode = IGNORE``: its
    messages quote values), its loggers drop their records, and warnings are
    caught. On the way out our own warnings (they start with the path) are
    re-emitted unchanged; pydicom's are replaced by one warning naming the
    file, how many were withheld and the tags they were about (or, when
    ``notes`` is a list, that sentence is appended to it for the caller to
    summarise). Any exception other than a :class:`CovidKerasError` becomes
    ``error`` naming the file, ``what`` failed and the exception's type,
    never its text.

    Args:
        path: the file (or folder) being read, named in every message.
        error: the :class:`CovidKerasError` type to raise.
        what: what is being read, for the message ("its pixel data").
        notes: a list that collects the summary instead of a warning.

    Yields:
        A :class:`PydicomGuard` (what was caught, for the caller to inspect).
    """
    guard = PydicomGuard(os.fspath(path))
    settings = pydicom.config.settings
    saved_mode = settings.reading_validation_mode
    withhold = _Withhold()
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n == "pydicom" or n.startswith("pydicom.")]
    for logger in loggers:
        logger.addFilter(withhold)
    settings.reading_validation_mode = pydicom.config.IGNORE
    caught, failed = [], True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            guard._caught = caught
            yield guard
        failed = False
    except (errors.CovidKerasError, MemoryError):
        raise
    except Exception as e:
        raise error(
            f"{guard.name}: {what} cannot be read ({type(e).__name__}); it is damaged or not "
            "standard DICOM, re-export or remove it."
        ) from None
    finally:
        settings.reading_validation_mode = saved_mode
        for logger in loggers:
            logger.removeFilter(withhold)
        guard._take(caught)
        summary = None if failed else guard.summary()
        if summary is not None:
            if notes is None:
                warn_outside(summary)
            else:
                notes.append(summary)


def _garbled(elem):
    """True when a text element holds control characters (its length is
    damaged: it swallowed its neighbours) or a number is no number."""
    vr = str(elem.VR)
    if vr not in _TEXT_VRS or elem.value is None:
        return False
    pattern = _CONTROL_LONG if vr in _LONG_TEXT_VRS else _CONTROL
    values = elem.value if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue)) else [elem.value]
    for value in values:
        if vr in ("DS", "IS") and isinstance(value, str) and value.strip():
            return True  # pydicom kept a number it could not parse as text
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if pattern.search(text.rstrip("\x00 ")):
            return True
    return False


def _vr_class(vr):
    if vr == "SQ":
        return "sequence"
    if vr in ("DS", "IS"):
        return "number"
    return "text" if vr in _TEXT_VRS else "binary" if vr in _BINARY_VRS else None


def _wrong_vr(elem):
    """True when an element's VR is of another kind than the standard's (a
    text VR on Rows, a binary one on RescaleIntercept): its VR bytes are
    damaged. UN and unknown tags are never wrong."""
    try:
        standard = dictionary_VR(elem.tag)
    except KeyError:
        return False
    actual = _vr_class(str(elem.VR))
    allowed = {_vr_class(vr.strip()) for vr in standard.split(" or ")}
    return actual is not None and None not in allowed and actual not in allowed


def _convert_all(ds, guard, essential=False):
    """Converts the elements the readers use now, in the guard.

    That is every element of the groups in :data:`_ESSENTIAL_GROUPS` (with
    their sequences' items), and :data:`_READ_TAGS`; pixel data is left for
    :func:`decode_pixels`, the rest is never converted. A damaged element
    (unknown VR, bad length, unparsable number, text that swallowed its
    neighbours, an essential element whose VR is of the wrong kind) refuses
    the file when it is essential (those groups,
    :data:`_ESSENTIAL_TAGS`, or inside an essential sequence), else it is
    removed and reported by the guard.
    """
    for tag in list(ds.keys()):
        if tag in PIXEL_DATA_TAGS:
            continue
        must = essential or tag.group in _ESSENTIAL_GROUPS or tag in _ESSENTIAL_TAGS
        if not must and tag not in _READ_TAGS:
            continue
        try:
            elem = ds[tag]
            damaged = _garbled(elem) or (must and _wrong_vr(elem))
            if not damaged and elem.VR == "SQ":
                for item in elem.value:
                    _convert_all(item, guard, must)
        except errors.CovidKerasError:
            raise
        except Exception:
            damaged = True
        if not damaged:
            continue
        if must:
            raise errors.DicomReadError(
                f"{guard.name}: its {describe_tag(tag)} element is damaged (it cannot be parsed); the "
                "file is corrupt, re-export or remove it."
            )
        del ds[tag]
        guard.dropped.append(tag)


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


def read_dataset(path, stop_before_pixels=False, defer_size=None, specific_tags=None, notes=None):
    """Reads one DICOM file, raising :class:`DicomReadError` naming it.

    Every element the readers use (pixel data aside) is converted here,
    inside :func:`pydicom_guard`, so no later access to them makes pydicom
    warn with a tag's value. A damaged element is dropped with a warning, or refuses
    the file when the image or its identity depends on it.

    Args:
        path: the file.
        stop_before_pixels: read the header only.
        defer_size: pydicom's ``defer_size``: large values (pixel data) are
            read from the file only when accessed.
        specific_tags: read only these tags (pydicom's ``specific_tags``).
        notes: a list collecting the guard's summary instead of a warning
            (see :func:`pydicom_guard`).

    Returns:
        A :class:`pydicom.Dataset`.

    Raises:
        DicomReadError: the file is missing, empty, truncated, not DICOM, or
            an essential element is damaged.
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
    truncated = (
        f"{name}: the file ends in the middle of a DICOM element, so it "
        "is truncated; re-export or remove it."
    )
    with pydicom_guard(name, what="its header", notes=notes) as guard:
        try:
            ds = pydicom.dcmread(
                name,
                force=True,
                stop_before_pixels=stop_before_pixels,
                defer_size=defer_size,
                specific_tags=specific_tags,
            )
        except (struct.error, EOFError):
            # A file cut inside an element's tag, VR or length field.
            raise errors.DicomReadError(truncated) from None
        except OSError as e:
            raise errors.DicomReadError(
                f"{name}: cannot be read ({e.strerror}); check the file and its permissions."
            ) from None
        except MemoryError:
            raise
        except Exception as e:  # pydicom raises many types on a corrupt header
            raise errors.DicomReadError(
                f"{name}: is not a readable DICOM file ({type(e).__name__}); it "
                "may be truncated or corrupt, re-export or remove it."
            ) from None
        # pydicom reports a file cut inside an element only as a warning.
        if guard.saw("end of file") or (len(ds) == 0 and specific_tags is None):
            raise errors.DicomReadError(truncated)
        if getattr(ds, "file_meta", None) is not None:
            _convert_all(ds.file_meta, guard, essential=True)
        _convert_all(ds, guard)
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


# Decoder plugins in the order they are tried (others after them).
_PLUGIN_ORDER = ("pylibjpeg", "pyjpegls", "pillow", "rle", "gdcm")
_JPEG2000_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
     "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
)

# Type 1 attributes of the Image Pixel module that decoding and display need.
_PIXEL_MODULE_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation")


def decode_pixels(ds, path, notes=None):
    """Returns the stored pixel values of ``ds`` as a NumPy array.

    Compressed transfer syntaxes are decoded by whichever pydicom plugin is
    installed (python-gdcm, pylibjpeg-openjpeg, pylibjpeg-libjpeg; RLE is
    built in). Multi-frame data comes back as [frames, rows, cols(, 3)].
    A Transfer Syntax UID that is no standard one is read, with a warning,
    when the pixel data has exactly the uncompressed size: as GE's private
    1.2.840.113619.5.2 (big-endian pixel words) for that UID, as Explicit VR
    Little Endian for any other; else the file is refused. Runs in :func:`pydicom_guard`.

    Args:
        ds: a data set from :func:`read_dataset`.
        path: its file, named in every message.
        notes: a list collecting the guard's summary instead of a warning.

    Raises:
        DicomReadError: no pixel data, missing image tags, truncated data,
            an unknown transfer syntax over compressed data, no installed
            decoder, or a corrupt codestream the installed decoders reject.
    """
    with pydicom_guard(path, what="its pixel data", notes=notes):
        if "PixelData" not in ds:
            raise errors.DicomReadError(
                f"{path}: has no pixel data (it is not an image); remove it from "
                "the folder or point to the image files."
            )
        missing = [k for k in _PIXEL_MODULE_TAGS if ds.get(k) in (None, "")]
        if missing:
            raise errors.DicomReadError(
                f"{path}: lacks {' and '.join(missing)}, so its pixel data cannot be interpreted; the "
                "file is damaged, re-export or remove it."
            )
        ts = transfer_syntax(ds)
        if not ts.is_transfer_syntax:
            return _decode_unknown_syntax(ds, path, ts, notes)
        return _decode(ds, path, ts)


_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, EOFError, AttributeError, KeyError,
                  TypeError, IndexError, struct.error)


def _decode(ds, path, ts):
    fast = _fast_native(ds, path)
    if fast is not None:
        return fast
    if not ts.is_compressed:
        expected = _expected_native_bytes(ds)
        if len(ds.PixelData) < expected:
            raise errors.DicomReadError(
                f"{path}: pixel data is truncated ({len(ds.PixelData)} of "
                f"{expected} bytes); the file is incomplete, re-export or "
                "remove it."
            )
        try:
            return ds.pixel_array
        except _DECODE_ERRORS as e:
            raise errors.DicomReadError(
                f"{path}: pixel data cannot be decoded ({type(e).__name__}); the file may be "
                "truncated or corrupt, re-export or remove it."
            ) from None
    name = getattr(ts, "name", str(ts))
    try:
        plugins = list(pydicom.pixels.get_decoder(ts).available_plugins)
    except (NotImplementedError, RuntimeError):  # no decoder for the syntax, or none installed
        plugins = []
    if not plugins:
        raise errors.DicomReadError(
            f"{path}: its pixel data is compressed as {name} and no "
            f"installed decoder can read it; {_INSTALL_HINT}."
        )
    # Preferred decoders first, python-gdcm last; for JPEG 2000 not at all
    # once another decoder rejected the codestream: on some corrupt JPEG
    # 2000 codestreams it aborts the whole process (an uncaught C++
    # exception) where pylibjpeg-openjpeg and Pillow raise.
    order = sorted(plugins, key=lambda n: _PLUGIN_ORDER.index(n) if n in _PLUGIN_ORDER else len(_PLUGIN_ORDER))
    if str(ts) in _JPEG2000_SYNTAXES and len(order) > 1:
        order = [n for n in order if n != "gdcm"]
    failures = []
    for plugin in order:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except _DECODE_ERRORS as e:
            failures.append(str(e))  # looked at, never shown: it may quote data
        finally:
            ds.pixel_array_options()
    if all("does not support" in text or "missing dependencies" in text for text in failures):
        raise errors.DicomReadError(
            f"{path}: its pixel data is compressed as {name} in a form none of the installed "
            f"decoders ({', '.join(order)}) supports (12-bit JPEG needs pylibjpeg-libjpeg); convert "
            "the file to an uncompressed transfer syntax (gdcmconv --raw, dcmdjpeg) or install a "
            "decoder that reads it."
        )
    raise errors.DicomReadError(
        f"{path}: its {name} pixel data is corrupt: the installed decoders ({', '.join(order)}) "
        "fail on it; re-export or remove the file."
    )


def _decode_unknown_syntax(ds, path, ts, notes=None):
    """Pixels of a file whose Transfer Syntax UID is no standard one.

    The warning goes to ``notes`` when given (a series: one warning for all
    its files), else it is warned at once.
    """
    uid = str(ts)
    shown = uid if _UID_SYNTAX.match(uid) and len(uid) <= 64 else "(not a valid UID)"
    raw = ds.PixelData
    expected = _expected_native_bytes(ds)
    encapsulated = ds["PixelData"].is_undefined_length or bytes(raw[:4]) == b"\xfe\xff\x00\xe0"
    if encapsulated or len(raw) not in (expected, expected + 1):
        raise errors.DicomReadError(
            f"{path}: its Transfer Syntax UID {shown} is not a standard DICOM one and its pixel data "
            f"is not uncompressed ({len(raw)} bytes, {expected} expected); convert the file to a "
            "standard transfer syntax with the vendor's software (or dcmconv, gdcmconv)."
        )
    big_endian = _BIG_ENDIAN_PIXEL_SYNTAXES.get(uid)
    if big_endian:
        message = (
            f"{path}: its Transfer Syntax UID {shown} is {big_endian}, a vendor-private syntax; its "
            "pixel data is read as uncompressed big-endian words under a little-endian header."
        )
    else:
        message = (
            f"{path}: its Transfer Syntax UID {shown} is not a standard DICOM one (a vendor-private "
            "syntax?); its pixel data has exactly the uncompressed size, so it is read as Explicit VR "
            "Little Endian."
        )
    if notes is None:
        warn_outside(message)
    else:
        notes.append(message)
    meta = ds.file_meta
    original = meta["TransferSyntaxUID"]
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    bits = int(ds.BitsAllocated)
    swap = big_endian and bits > 8
    if swap:
        words = np.frombuffer(raw, dtype=f"u{bits // 8}", count=len(raw) // (bits // 8))
        ds.PixelData = words.byteswap().tobytes() + bytes(raw[len(words) * (bits // 8):])
    try:
        return _decode(ds, path, meta.TransferSyntaxUID)
    finally:
        meta["TransferSyntaxUID"] = original
        if swap:
            ds.PixelData = raw


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
