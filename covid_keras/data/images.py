"""Reads chest X-rays as grey images shown the way a radiologist sees them.

One entry point, :func:`read_xray`, takes a DICOM file (recognised by its
content, whatever its name) or a PNG, JPEG, TIFF or BMP picture and returns a
float32 ``[H, W]`` array in ``[0, 1]`` where 0 is black and 1 is white on the
display: bone and mediastinum bright, aerated lung dark.

For DICOM the display pipeline of PS3.4 Annex N is followed in order:
stored values -> modality LUT / rescale -> VOI LUT or window -> scale to
[0, 1] -> presentation (MONOCHROME1 and Presentation LUT Shape ``INVERSE``
are inverted). Colour images (RGB, YBR, PALETTE COLOR) become grey by luma.
Enhanced multi-frame files take their rescale and window from the shared or
per-frame functional groups, which pydicom's helpers ignore.
"""

import os
import warnings

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
)

from covid_keras import errors
from covid_keras.data import dicom_files

# ITU-R BT.601 luma weights for R, G, B: what OpenCV's RGB2GRAY and most
# viewers use to show a colour image in grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Leading bytes of the picture formats OpenCV reads, to tell a corrupt
# picture from a file in a format we do not read at all.
_PICTURE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
)

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

# Attributes that decide how stored values become display values. Enhanced
# multi-frame files carry some of them inside functional group macros.
_DISPLAY_KEYWORDS = (
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PresentationLUTShape",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
)
_FUNCTIONAL_GROUP_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def read_xray(path, *, frame=None):
    """Reads one X-ray image as a grey float32 array in [0, 1].

    The result is the image as a radiologist sees it on a viewer: 0 is black,
    1 is white, lungs dark and bone bright, whatever the file's photometric
    interpretation.

    DICOM files (recognised by content, any extension, with or without
    preamble) go through the standard display pipeline: stored values ->
    modality LUT or rescale slope/intercept -> VOI: the VOI LUT Sequence if
    present, else the first Window Center/Width pair, else the image's own
    min-max (ignoring Pixel Padding Value pixels) -> scaled to [0, 1] ->
    inverted when MONOCHROME1 or when Presentation LUT Shape is INVERSE
    (once, not twice, when both hold). Padding pixels come out black. RGB
    and YBR images are converted to RGB by pydicom, PALETTE COLOR images
    through their palette, and both then to grey with BT.601 luma weights.
    Compressed transfer syntaxes are decoded by the installed plugins.

    PNG, JPEG, TIFF and BMP files are read with OpenCV unchanged: 8-bit
    values are divided by 255, 16-bit by 65535, colour becomes grey by luma
    and an alpha channel is dropped. Other sample types (float or signed
    TIFF) are scaled by their own min-max, with a warning.

    Args:
        path: the image file (str or path-like; non-ASCII names work).
        frame: for a multi-frame DICOM, the index of the frame to read,
            from 0. Must stay unset (or 0) for single-frame files.

    Returns:
        A float32 NumPy array of shape ``[H, W]`` with values in [0, 1].

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt, in an
            unsupported format, a DICOM without pixel data, a DICOM whose
            compression no installed decoder reads, or a multi-frame DICOM
            read without ``frame=`` (or with a frame it does not have).
        ConfigurationError: ``frame`` is not a non-negative integer.

    Warns:
        UserWarning: the DICOM pixels were lossy-compressed, its window is
            invalid, or the image is uniform.
            Warnings name the file and never carry patient identifiers.

    Example:

    >>> import numpy as np
    >>> from pydicom.data import get_testdata_file
    >>> image = read_xray(get_testdata_file("RG1_UNCR.dcm"))
    >>> image.shape, image.dtype
    ((1955, 1841), dtype('float32'))
    >>> bool(0.0 <= image.min() and image.max() <= 1.0)
    True
    """
    name = os.fspath(path)
    if frame is not None and (
        isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0
    ):
        raise errors.ConfigurationError(
            f"`frame` must be a non-negative integer or None. Received: frame={frame!r}"
        )
    _check_file(name)
    if dicom_files.looks_like_dicom(name):
        return _read_dicom(name, frame)
    return _read_picture(name, frame)


def _check_file(name):
    if not os.path.exists(name):
        raise errors.ImageReadError(
            f"{name}: does not exist; check the path (and the working folder "
            "it is relative to)."
        )
    if os.path.isdir(name):
        raise errors.ImageReadError(
            f"{name}: is a folder, not an image file; pass one DICOM, PNG or "
            "JPEG file."
        )
    try:
        size = os.path.getsize(name)
    except OSError as e:
        raise errors.ImageReadError(
            f"{name}: cannot be opened ({e.strerror}); check its permissions."
        ) from None
    if size == 0:
        raise errors.ImageReadError(
            f"{name}: the file is empty (0 bytes); re-export or remove it."
        )


# --------------------------------------------------------------------------
# PNG, JPEG, TIFF, BMP


def _read_picture(name, frame):
    try:
        data = np.fromfile(name, dtype=np.uint8)
    except OSError as e:
        raise errors.ImageReadError(
            f"{name}: cannot be opened ({e.strerror}); check its permissions."
        ) from None
    kind = _picture_kind(data[:16].tobytes())
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        if kind is not None:
            raise errors.ImageReadError(
                f"{name}: starts like a {kind} file but cannot be decoded; it "
                "is corrupt or truncated, re-export or remove it."
            )
        if name.lower().endswith(_DICOM_SUFFIXES) and _has_image_header(name):
            # Named like DICOM, without preamble and not starting with group
            # 8, yet pydicom finds an image header in it.
            return _read_dicom(name, frame)
        raise errors.ImageReadError(
            f"{name}: is neither DICOM nor a picture OpenCV can read (PNG, "
            "JPEG, TIFF, BMP); convert it to DICOM or PNG, or remove it."
        )
    if frame not in (None, 0):
        raise errors.ImageReadError(
            f"{name}: is a single {kind or 'picture'} image, so it has no frame "
            f"{frame}; leave `frame` unset."
        )
    return _picture_to_grey(image, name)


def _has_image_header(name):
    try:
        ds = dicom_files.read_dataset(name, stop_before_pixels=True)
    except errors.DicomReadError:
        return False
    return "Rows" in ds and "Columns" in ds


def _picture_kind(head):
    for signature, kind in _PICTURE_SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


def _picture_to_grey(image, name):
    dtype = image.dtype
    image = image.astype(np.float32)
    if image.ndim == 3:
        channels = image.shape[2]
        if channels in (1, 2):  # grey, or grey + alpha
            image = image[..., 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise errors.ImageReadError(
                f"{name}: has {channels} channels, which is not a grey or "
                "colour picture; convert it to grey PNG."
            )
    if dtype == np.uint8:
        image /= 255.0
    elif dtype == np.uint16:
        image /= 65535.0
    else:
        if not np.all(np.isfinite(image)):
            raise errors.ImageReadError(
                f"{name}: holds NaN or infinite pixel values; re-export it "
                "as an 8- or 16-bit PNG."
            )
        warnings.warn(
            f"{name}: has {dtype} pixels, which have no fixed display range; "
            "scaled its own min-max to [0, 1].",
            stacklevel=4,
        )
        image = _min_max(image, None, name)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------
# DICOM


def _read_dicom(name, frame):
    try:
        ds = dicom_files.read_dataset(name)
    except errors.DicomReadError as e:
        raise errors.ImageReadError(str(e)) from None
    # pydicom's display helpers (LUTs, windowing, colour) run here too: the
    # guard keeps their warnings' values in, and turns whatever a damaged
    # header makes them raise into an ImageReadError naming the file.
    with dicom_files.pydicom_guard(name, error=errors.ImageReadError, what="its image"):
        return _dicom_to_display(ds, name, frame)


def _dicom_to_display(ds, name, frame):
    _check_has_pixels(ds, name)
    n_frames = _number_of_frames(ds, name)
    if n_frames > 1 and frame is None:
        raise errors.ImageReadError(
            f"{name}: holds {n_frames} frames where one image is expected; "
            f"pass frame=<0..{n_frames - 1}> to read_xray to pick one."
        )
    index = 0 if frame is None else int(frame)
    if index >= n_frames:
        raise errors.ImageReadError(
            f"{name}: has {n_frames} frame{'s' if n_frames > 1 else ''}, so "
            f"frame={index} does not exist; pass a frame below {n_frames}."
        )
    try:
        stored = dicom_files.decode_pixels(ds, name)
    except errors.DicomReadError as e:
        raise errors.ImageReadError(str(e)) from None
    if n_frames > 1:
        stored = stored[index]
    if dicom_files.is_lossy(ds):
        warnings.warn(
            f"{name}: its pixels were lossy-compressed ({_lossy_reason(ds)}); "
            "fine detail may differ from the acquired image, prefer a "
            "losslessly stored copy for training and evaluation.",
            stacklevel=3,
        )
    header = _frame_header(ds, index)
    photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples == 3 and stored.ndim == 3 and stored.shape[-1] == 3:
        # pydicom hands colour back as RGB whatever the stored colour space
        # (YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT).
        bits = int(header.get("BitsStored", 8 * stored.dtype.itemsize))
        return _rgb_to_grey(stored, 2.0**bits - 1.0)
    if stored.ndim != 2:
        raise errors.ImageReadError(
            f"{name}: its pixel data has shape {stored.shape}, not one grey or "
            "colour image; check that it is an X-ray image."
        )
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(stored, ds)
        except (ValueError, KeyError, AttributeError, IndexError) as e:
            raise errors.ImageReadError(
                f"{name}: is PALETTE COLOR but its palette cannot be applied "
                f"({type(e).__name__}); re-export it as MONOCHROME2 or RGB."
            ) from None
        return _rgb_to_grey(rgb[..., :3], float(np.iinfo(rgb.dtype).max))
    if photometric in ("MONOCHROME1", "MONOCHROME2", ""):
        return _monochrome_to_display(stored, header, name)
    raise errors.ImageReadError(
        f"{name}: has photometric interpretation {dicom_files.code_string(photometric)!r}, which is not "
        "a grey, RGB, YBR or palette image; re-export it as MONOCHROME2."
    )


def _check_has_pixels(ds, name):
    if "PixelData" in ds:
        return
    if len(ds) == 0 or "Rows" in ds:
        # pydicom returns an empty data set (with only a warning) when the
        # file ends inside an undefined-length sequence or pixel data.
        raise errors.ImageReadError(
            f"{name}: its header was read but no pixel data followed; the "
            "file is probably truncated, re-export or remove it."
        )
    raise errors.ImageReadError(
        f"{name}: is a DICOM file without pixel data (not an image, e.g. a "
        "report, a DICOMDIR or a presentation state); pass an image file."
    )


def _number_of_frames(ds, name):
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        raise errors.ImageReadError(
            f"{name}: its Number of Frames is not a number; the file is "
            "corrupt, re-export it."
        ) from None


def _lossy_reason(ds):
    syntax = dicom_files.transfer_syntax(ds)
    if str(syntax) in dicom_files.LOSSY_TRANSFER_SYNTAXES:
        return f"stored as {getattr(syntax, 'name', str(syntax))}"
    return "Lossy Image Compression is 01: compressed before it was stored"


def _frame_header(ds, index):
    """The display attributes of one frame, functional groups included.

    Classic images hold rescale and window at the top level and are returned
    unchanged. Enhanced multi-frame images hold them in the shared and
    per-frame functional groups, which pydicom's LUT helpers do not read:
    they are copied into a small data set, per-frame values winning.
    """
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    groups = []
    if shared:
        groups.append(shared[0])
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    if not any(macro in group for group in groups for macro in _FUNCTIONAL_GROUP_MACROS):
        return ds
    header = Dataset()
    header.file_meta = ds.file_meta
    for keyword in _DISPLAY_KEYWORDS:
        if keyword in ds:
            element = ds[keyword]
            header[element.tag] = element
    for group in groups:
        for macro in _FUNCTIONAL_GROUP_MACROS:
            items = group.get(macro)
            if not items:
                continue
            for element in items[0]:
                if element.keyword in _DISPLAY_KEYWORDS:
                    header[element.tag] = element
    return header


def _monochrome_to_display(stored, header, name):
    padding = dicom_files.padding_mask(stored, header)
    values = apply_modality_lut(stored, header)
    if header.get("VOILUTSequence"):
        shown, low, high = _apply_voi_lut(values, header)
    elif "WindowCenter" in header and "WindowWidth" in header:
        shown, low, high = _apply_window(values, header, name)
    else:
        shown, low, high = values, None, None
    if low is None:
        image = _min_max(shown, padding, name)
    else:
        image = (np.asarray(shown, dtype=np.float64) - low) / (high - low)
    image = np.clip(image, 0.0, 1.0)
    photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(header.get("PresentationLUTShape", "")).strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        image = 1.0 - image
    if padding is not None:
        image[padding] = 0.0
    return image.astype(np.float32)


def _apply_voi_lut(values, header):
    """Applies the first VOI LUT; returns it with its output range."""
    descriptor = [int(v) for v in header.VOILUTSequence[0].LUTDescriptor]
    entries = descriptor[0] or 2**16
    first = descriptor[1]
    # Clip before the lookup: pydicom casts the input to the LUT's unsigned
    # type, which wraps values far outside the table instead of clamping.
    inputs = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
    shown = apply_voi(inputs, header)
    table = apply_voi(np.arange(first, first + entries, dtype=np.int64), header)
    # The output range is 2**bits - 1 for the descriptor's bits per entry,
    # widened when the table holds larger values (a mislabelled descriptor).
    bits = max(descriptor[2], int(table.max()).bit_length())
    return shown, 0.0, float(2**bits - 1)


def _apply_window(values, header, name):
    """Applies the first Window Center/Width; returns it with its range."""
    try:
        shown = apply_windowing(values, header, index=0)
        # The window's output range, as pydicom defines it for this data set.
        with np.errstate(over="ignore"):
            low, high = apply_windowing(np.array([-np.inf, np.inf]), header, index=0)
    except (ValueError, TypeError, IndexError, AttributeError, OverflowError) as e:
        warnings.warn(
            f"{name}: its window (Window Center/Width) cannot be applied "
            f"({type(e).__name__}); showing the image's own min-max instead.",
            stacklevel=5,
        )
        return values, None, None
    if not np.isfinite(low) or not np.isfinite(high) or low == high:
        return values, None, None
    return shown, float(low), float(high)


def _min_max(values, mask, name=None):
    values = np.asarray(values, dtype=np.float64)
    inside = values if mask is None else values[~mask]
    if inside.size == 0:
        return np.zeros(values.shape)
    low, high = float(inside.min()), float(inside.max())
    if high == low:
        warnings.warn(
            f"{name or 'image'}: every pixel has the same value ({low:g}); the "
            "image is blank.",
            stacklevel=5,
        )
        return np.zeros(values.shape)
    return (values - low) / (high - low)


def _rgb_to_grey(rgb, maximum):
    rgb = rgb.astype(np.float64)
    weights = np.asarray(LUMA_WEIGHTS)
    grey = rgb @ weights / maximum
    return np.clip(grey, 0.0, 1.0).astype(np.float32)
