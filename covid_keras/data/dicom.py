"""Reading a CT series from a folder of DICOM files into a volume in HU.

``read_ct_series`` accepts what real scanner and PACS exports contain: any
file names, files with or without the 128-byte preamble, non-DICOM files
beside the images, several series in one folder, localizers, compressed
transfer syntaxes, enhanced multi-frame CT, and pixel padding. Whatever would
make the volume wrong (a missing slice, tilt, duplicate positions, missing
geometry) is refused with a :mod:`covid_keras.errors` exception that names
the folder or file and what to do, instead of being stacked silently the way
some readers do (SimpleITK averages over a missing slice; MONAI stacks every
series in a folder together).
"""

import dataclasses
import os
import re
import warnings
from collections import defaultdict

import numpy as np

from covid_keras import errors
from covid_keras.data import dicom_files
from covid_keras.data.privacy import pseudonymize

#: A gap between neighbouring slices larger than this times the median step
#: is a missing slice.
GAP_TOLERANCE = 1.5
#: Slices closer than this (mm) along the normal are duplicates.
DUPLICATE_TOLERANCE_MM = 1e-3
#: Cosine tolerance for "the same orientation" between slices.
ORIENTATION_TOLERANCE = 1e-3
#: Largest angle (degrees) between the slice normal and the line through the
#: slice positions before the series counts as gantry-tilted.
TILT_TOLERANCE_DEG = 0.5
#: |normal . z| above which a series counts as axial.
AXIAL_COSINE = 0.8
#: Value (HU) written where PixelPaddingValue marks padding: air.
PADDING_HU = -1024.0

_MULTIFRAME_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    }
)

# Tags copied into CTSeries.meta: technical, never identifying.
_META_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "ConvolutionKernel",
    "SliceThickness",
    "BodyPartExamined",
    "PatientPosition",
)


@dataclasses.dataclass
class CTSeries:
    """A CT volume in Hounsfield units, sorted along the slice normal.

    Attributes:
        hu: float32 array [z, y, x] in HU, slice 0 lowest along the normal
            (for a standard axial series: feet first to head last).
        spacing: (z, y, x) voxel size in mm; z is the step between slice
            positions, not SliceThickness.
        patient_id: pseudonymous id (``pt-<hex>``); never the PatientID.
        meta: non-identifying technical tags (modality, manufacturer, kernel,
            transfer syntax, lossy flag, ...).
        origin: ImagePositionPatient of slice 0 (mm).
        orientation: the six ImageOrientationPatient cosines.
        source_files: the file of every slice in volume order (a multi-frame
            file appears once per frame). Paths are the caller's own; they
            are never logged.
    """

    hu: np.ndarray
    spacing: tuple
    patient_id: str
    meta: dict
    origin: tuple = (0.0, 0.0, 0.0)
    orientation: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    source_files: tuple = ()

    @property
    def shape(self):
        return self.hu.shape


@dataclasses.dataclass
class _Frame:
    """One image plane: a single-frame file or one frame of an enhanced file."""

    path: str
    ds: object
    frame: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple | None
    slope: float | None
    intercept: float | None
    rows: int
    cols: int


# --------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------


def _list_files(folder):
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            paths.append(os.path.join(root, name))
    return paths


def _scan_folder(folder, notes):
    """Returns (datasets, skipped_count) for every DICOM image in ``folder``.

    ``notes`` collects what the guard withheld or dropped, per file.
    """
    if not os.path.exists(folder):
        raise errors.NoDicomError(
            f"{folder}: folder does not exist; check the path to the CT "
            "series."
        )
    if not os.path.isdir(folder):
        raise errors.NoDicomError(
            f"{folder}: is a file, not a folder; pass the folder that holds "
            "the series' DICOM files."
        )
    paths = _list_files(folder)
    if not paths:
        raise errors.NoDicomError(
            f"{folder}: the folder is empty; put the series' DICOM files in "
            "it or point to the right folder."
        )
    found, skipped = [], 0
    for path in paths:
        try:
            size = os.path.getsize(path)
        except OSError:  # a broken symbolic link, or a file removed meanwhile
            skipped += 1
            continue
        if size == 0 or not dicom_files.looks_like_dicom(path):
            if size == 0 and _dicom_like_name(path):
                raise errors.DicomReadError(
                    f"{path}: the file is empty (0 bytes); re-export the "
                    "series or remove the file."
                )
            skipped += 1
            continue
        ds = dicom_files.read_dataset(path, defer_size="256 KB", notes=notes)
        if dicom_files.is_non_image(ds):
            skipped += 1  # DICOMDIR, structured reports, presentation states
            continue
        if "PixelData" not in ds:
            if dicom_files.sop_class(ds) or ("Rows" in ds and "Columns" in ds):
                # An image object without its pixels: the file was cut short.
                raise errors.DicomReadError(
                    f"{path}: is a DICOM image whose pixel data is missing, so "
                    "the file is truncated; re-export the series or remove "
                    "the file."
                )
            skipped += 1
            continue
        found.append((path, ds))
    if not found:
        raise errors.NoDicomError(
            f"{folder}: none of its {len(paths)} files is a DICOM image; point "
            "to the folder that holds the series' .dcm files."
        )
    if skipped:
        warnings.warn(
            f"{folder}: skipped {skipped} file(s) that are not DICOM images "
            "(DICOMDIR, notes, system files) or cannot be opened (broken links).",
            stacklevel=3,
        )
    return found, skipped


def _dicom_like_name(path):
    return path.lower().endswith((".dcm", ".dicom", ".ima"))


# --------------------------------------------------------------------------
# Geometry and rescale, single- and multi-frame
# --------------------------------------------------------------------------


def _floats(value, n):
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _first(seq_item, seq_name):
    seq = getattr(seq_item, seq_name, None) if seq_item is not None else None
    return seq[0] if seq else None


def _frames_of(path, ds):
    """Splits a dataset into image planes with their geometry and rescale."""
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if n_frames > 1 or per_frame is not None:
        shared = _first(ds, "SharedFunctionalGroupsSequence")
        frames = []
        for i in range(n_frames):
            item = per_frame[i] if per_frame is not None and i < len(per_frame) else None

            def group(name, item=item):
                # Per-frame functional groups override shared ones.
                return _first(item, name) or _first(shared, name)

            pos = group("PlanePositionSequence")
            ori = group("PlaneOrientationSequence")
            meas = group("PixelMeasuresSequence")
            pvt = group("PixelValueTransformationSequence")
            frames.append(
                _Frame(
                    path=path,
                    ds=ds,
                    frame=i,
                    position=_array(getattr(pos, "ImagePositionPatient", None), 3),
                    orientation=_array(getattr(ori, "ImageOrientationPatient", None), 6),
                    pixel_spacing=_floats(getattr(meas, "PixelSpacing", None), 2),
                    slope=_maybe_float(getattr(pvt, "RescaleSlope", None)),
                    intercept=_maybe_float(getattr(pvt, "RescaleIntercept", None)),
                    rows=rows,
                    cols=cols,
                )
            )
        return frames
    return [
        _Frame(
            path=path,
            ds=ds,
            frame=None,
            position=_array(getattr(ds, "ImagePositionPatient", None), 3),
            orientation=_array(getattr(ds, "ImageOrientationPatient", None), 6),
            pixel_spacing=_floats(getattr(ds, "PixelSpacing", None), 2),
            slope=_maybe_float(getattr(ds, "RescaleSlope", None)),
            intercept=_maybe_float(getattr(ds, "RescaleIntercept", None)),
            rows=rows,
            cols=cols,
        )
    ]


def _array(value, n):
    values = _floats(value, n)
    return None if values is None else np.asarray(values, dtype=np.float64)


def _maybe_float(value):
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _normal(orientation):
    row, col = orientation[:3], orientation[3:]
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _is_localizer(ds):
    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
    return "LOCALIZER" in image_type


# --------------------------------------------------------------------------
# Choosing the series
# --------------------------------------------------------------------------


def _group_series(found):
    groups = defaultdict(list)
    for path, ds in found:
        groups[str(getattr(ds, "SeriesInstanceUID", "") or "unknown")].append((path, ds))
    return groups


def _series_frames(items):
    """Frames of a series, localizer images left out."""
    frames = []
    for path, ds in items:
        # Damaged values (a list where one number belongs, ...) become a
        # DicomReadError naming the file.
        with dicom_files.pydicom_guard(path, what="its image position and size tags"):
            if _is_localizer(ds):
                continue
            frames.extend(_frames_of(path, ds))
    return frames


def _ds_modality(ds):
    """A data set's Modality as the series chooser and the modality check compare it."""
    return str(getattr(ds, "Modality", "") or "").strip().upper()


def _modality(frames):
    return _ds_modality(frames[0].ds)


def _series_pseudonym(uid):
    """The ``se-`` id of a SeriesInstanceUID (``CTSeries.meta["series"]``, accepted as ``series_uid``)."""
    return pseudonymize(str(uid), "series", prefix="se")


def _is_axial(frames):
    ori = next((f.orientation for f in frames if f.orientation is not None), None)
    if ori is None:
        return True  # judged (and refused) later by the geometry checks
    return abs(_normal(ori)[2]) >= AXIAL_COSINE


def _short(uid):
    """A UID as messages show it: its last 8 characters (never the whole UID)."""
    if not re.fullmatch(r"[0-9.]+", uid):
        return "(damaged UID)" if uid != "unknown" else "(no SeriesInstanceUID)"
    return f"...{uid[-8:]}"


def _describe(uid, frames):
    if not frames:
        return f"series {_short(uid)} (localizers only)"
    modality = dicom_files.code_string(_modality(frames)) or "unset-modality"
    return f"series {_short(uid)} ({len(frames)} {modality} images)"


def _match_series(folder, groups, candidates, series_uid):
    """The SeriesInstanceUID ``series_uid`` names: the whole UID, its end as
    messages show it (``...12345678``), or the series' ``se-`` pseudonym."""
    wanted = str(series_uid).strip()
    if wanted in groups:
        return wanted
    if wanted.startswith("se-"):
        matches = [uid for uid in groups if _series_pseudonym(uid) == wanted]
    else:
        tail = wanted.lstrip(".")  # at least the 8 characters messages show
        matches = [uid for uid in groups if len(tail) >= 8 and uid.endswith(tail)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(_describe(uid, candidates.get(uid, [])) for uid in sorted(groups))
    if matches:
        raise errors.ConfigurationError(
            f"{folder}: {len(matches)} series end in series_uid=...{wanted[-8:]}; give more of "
            f"the SeriesInstanceUID (the series there are: {listing})."
        )
    raise errors.ConfigurationError(
        f"{folder}: holds no series with series_uid=...{wanted[-8:]}; the series there "
        f"are: {listing}."
    )


def _choose_series(folder, found, series_uid, modalities=None):
    groups = _group_series(found)
    candidates = {uid: _series_frames(items) for uid, items in groups.items()}
    candidates = {uid: fr for uid, fr in candidates.items() if fr}
    if series_uid is not None:
        chosen = _match_series(folder, groups, candidates, series_uid)
        if chosen not in candidates:
            raise errors.NoDicomError(
                f"{folder}: series {_short(chosen)} holds only localizer images; "
                "choose another series_uid."
            )
    else:
        if not candidates:
            raise errors.NoDicomError(
                f"{folder}: holds only localizer/scout images; point to the "
                "folder of the axial CT series."
            )
        pool = candidates
        if modalities is not None:
            # A PET/CT study: the PET series may have more slices than the CT.
            allowed = {m.upper() for m in modalities}
            pool = {uid: fr for uid, fr in candidates.items() if _modality(fr) in allowed} or candidates
        axial = {uid: fr for uid, fr in pool.items() if _is_axial(fr)}
        pool = axial or pool
        chosen = max(pool, key=lambda uid: (len(pool[uid]), uid))
    others = [_describe(uid, fr) for uid, fr in candidates.items() if uid != chosen]
    if others:
        warnings.warn(
            f"{folder}: holds {len(candidates)} series; reading "
            f"{_describe(chosen, candidates[chosen])} and skipping "
            f"{', '.join(others)}; pass series_uid= to choose another.",
            stacklevel=3,
        )
    return chosen, candidates[chosen]


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def _check_modality(folder, frames, modalities):
    if modalities is None:
        return
    allowed = {m.upper() for m in modalities}
    found = {_ds_modality(f.ds) for f in frames}
    bad = sorted(found - allowed)
    if bad:
        raise errors.ModalityError(
            f"{folder}: the series has modality "
            f"{', '.join(dicom_files.code_string(m) or 'unset' for m in bad)}, "
            f"not {'/'.join(sorted(allowed))}; point to a CT series or pass "
            "modalities=None to read it anyway."
        )


def _check_geometry(folder, frames):
    for f in frames:
        where = _where(f)
        missing = [
            name
            for name, value in (
                ("ImagePositionPatient", f.position),
                ("ImageOrientationPatient", f.orientation),
                ("PixelSpacing", f.pixel_spacing),
            )
            if value is None
        ]
        if missing:
            raise errors.SeriesGeometryError(
                f"{where}: lacks {' and '.join(missing)}, so the slice cannot "
                "be placed in the volume; re-export the series with full "
                "geometry tags."
            )
    sizes = {(f.rows, f.cols) for f in frames}
    if len(sizes) > 1:
        listing = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise errors.SeriesGeometryError(
            f"{folder}: slices have different sizes ({listing}); the folder "
            "mixes images that do not form one volume, separate them."
        )
    spacings = {tuple(np.round(f.pixel_spacing, 4)) for f in frames}
    if len(spacings) > 1:
        raise errors.SeriesGeometryError(
            f"{folder}: slices have different PixelSpacing "
            f"({', '.join(f'{dy:g} x {dx:g} mm' for dy, dx in sorted(spacings))}); "
            "the folder mixes images that do not form one volume, separate them."
        )
    ref = frames[0].orientation
    for f in frames[1:]:
        if np.max(np.abs(f.orientation - ref)) > ORIENTATION_TOLERANCE:
            raise errors.SeriesGeometryError(
                f"{_where(f)}: its orientation differs from the other slices' "
                "(non-parallel slices); a volume needs parallel slices, "
                "separate or resample them first."
            )


def _where(frame):
    return frame.path if frame.frame is None else f"{frame.path} (frame {frame.frame})"


def _sort_and_step(folder, frames):
    """Sorts frames along the slice normal; returns (frames, step, normal)."""
    normal = _normal(frames[0].orientation)
    dist = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    dist = dist[order]
    if len(frames) == 1:
        thickness = _maybe_float(getattr(frames[0].ds, "SliceThickness", None))
        return frames, thickness or 1.0, normal
    steps = np.diff(dist)
    dup = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if dup.size:
        i = int(dup[0])
        raise errors.SeriesGeometryError(
            f"{folder}: {dup.size} duplicate slice position(s), e.g. "
            f"{os.path.basename(frames[i].path)} and "
            f"{os.path.basename(frames[i + 1].path)} both at {dist[i]:.2f} mm "
            "along the slice normal; remove the duplicates or separate the "
            "series."
        )
    step = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_TOLERANCE * step)
    if gaps.size:
        i = int(gaps[0])
        raise errors.SeriesGeometryError(
            f"{folder}: slices are missing between {dist[i]:.2f} mm and "
            f"{dist[i + 1]:.2f} mm along the slice normal (gap "
            f"{steps[i]:.2f} mm, step {step:.2f} mm, {gaps.size} gap(s) in "
            "all); re-export the complete series."
        )
    tilt = _tilt_degrees(frames, normal)
    gantry = _maybe_float(getattr(frames[0].ds, "GantryDetectorTilt", None)) or 0.0
    if tilt > TILT_TOLERANCE_DEG or abs(gantry) > TILT_TOLERANCE_DEG:
        angle = max(tilt, abs(gantry))
        raise errors.SeriesGeometryError(
            f"{folder}: the series is gantry-tilted by {angle:.1f} degrees "
            "(slice positions do not follow the slice normal); correct the "
            "tilt first (e.g. dcm2niix or a vendor reformat) and read the "
            "corrected series."
        )
    rel = np.abs(steps - step)
    if np.any(rel > np.maximum(0.05 * step, 0.1)):
        warnings.warn(
            f"{folder}: slice spacing varies from {steps.min():.3f} to "
            f"{steps.max():.3f} mm; using the median step {step:.3f} mm.",
            stacklevel=3,
        )
    return frames, step, normal


def _tilt_degrees(frames, normal):
    line = frames[-1].position - frames[0].position
    length = np.linalg.norm(line)
    if length == 0:
        return 0.0
    cos = abs(float(line @ normal)) / length
    return float(np.degrees(np.arccos(min(1.0, cos))))


# --------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------


def _stored_values(frames, cache, notes=None):
    """Decodes every frame's stored values, each file at most once."""
    out = []
    for f in frames:
        if f.path not in cache:
            cache[f.path] = dicom_files.decode_pixels(f.ds, f.path, notes=notes)
        arr = cache[f.path]
        if f.frame is not None:
            arr = arr[f.frame] if arr.ndim == 3 else arr
        if arr.ndim != 2:
            raise errors.DicomReadError(
                f"{f.path}: holds a colour or multi-sample image "
                f"(shape {arr.shape}), not a CT slice; remove it from the series."
            )
        out.append(arr)
    return out


def _to_hu(frames, stored, padding_hu):
    hu = np.empty((len(frames),) + stored[0].shape, dtype=np.float32)
    missing_rescale = False
    for k, (f, arr) in enumerate(zip(frames, stored)):
        slope = 1.0 if f.slope is None else f.slope
        intercept = 0.0 if f.intercept is None else f.intercept
        missing_rescale |= f.slope is None or f.intercept is None
        out = hu[k]
        np.multiply(arr, np.float32(slope), out=out, casting="unsafe")
        if intercept:
            out += np.float32(intercept)
        mask = dicom_files.padding_mask(arr, f.ds)
        if mask is not None:
            out[mask] = padding_hu
    return hu, missing_rescale


def _meta(frames, step):
    ds = frames[0].ds
    meta = {}
    for tag in _META_TAGS:
        value = getattr(ds, tag, None)
        if value not in (None, ""):
            if isinstance(value, int):
                meta[tag] = int(value)
            elif isinstance(value, float):
                meta[tag] = float(value)
            else:
                meta[tag] = str(value)
    ts = dicom_files.transfer_syntax(ds)
    meta["TransferSyntax"] = getattr(ts, "name", str(ts))
    meta["lossy"] = any(dicom_files.is_lossy(ds) for ds in {id(f.ds): f.ds for f in frames}.values())
    meta["multiframe"] = frames[0].frame is not None
    meta["n_slices"] = len(frames)
    meta["slice_step_mm"] = step
    meta["series"] = _series_pseudonym(getattr(ds, "SeriesInstanceUID", ""))
    return meta


def _patient_id(ds):
    pid = str(getattr(ds, "PatientID", "") or "").strip()
    if pid:
        return pseudonymize(pid, "patient")
    study = str(getattr(ds, "StudyInstanceUID", "") or "")
    return pseudonymize(study or str(getattr(ds, "SeriesInstanceUID", "")), "study")


def _warn_notes(folder, notes):
    """One warning for what the guards withheld or dropped in the folder's files."""
    if len(notes) == 1:
        warnings.warn(notes[0], stacklevel=4)
    elif notes:
        warnings.warn(
            f"{folder}: {len(notes)} files have damaged or non-standard header elements; the "
            f"first: {notes[0]}",
            stacklevel=4,
        )


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def read_ct_series(folder, series_uid=None, modalities=("CT",), padding_hu=PADDING_HU):
    """Reads a CT series from a folder of DICOM files into a volume in HU.

    Every file in ``folder`` (and its subfolders) that is DICOM is read,
    whatever its name or extension; other files are skipped with one
    warning (so are broken links). Images are grouped by
    SeriesInstanceUID; localizers are left out and, among the series whose
    modality ``modalities`` allows (a PET/CT study's PET series is passed
    over however many slices it has), the axial series with the most slices
    is taken, unless ``series_uid`` names another. Slices are sorted by
    ImagePositionPatient projected on the normal of ImageOrientationPatient (never by file name
    or InstanceNumber), and the z spacing is the median step between those
    positions. Stored values equal to PixelPaddingValue become
    ``padding_hu``; everything else goes through RescaleSlope/Intercept,
    per slice or, for enhanced multi-frame CT, per frame from the
    functional groups.

    Args:
        folder: the folder that holds the series.
        series_uid: the series to read when the folder holds several: its
            whole SeriesInstanceUID, the end of it as warnings and errors
            show it (``"...12345678"``, at least 8 characters), or its
            pseudonymous ``se-`` id (``CTSeries.meta["series"]``).
        modalities: accepted Modality values; ``None`` accepts any.
        padding_hu: HU written where PixelPaddingValue marks padding.

    Returns:
        A :class:`CTSeries`.

    Raises:
        NoDicomError: the folder is missing, empty or holds no DICOM image.
        DicomReadError: a file is truncated, corrupt or undecodable, or
            one of its essential elements is damaged.
        ConfigurationError: ``series_uid`` matches no series of the folder.
        SeriesGeometryError: missing geometry tags, mixed slice sizes,
            duplicate positions, a missing slice, non-parallel slices or
            gantry tilt.
        ModalityError: the series is not CT (see ``modalities``).

    Warns:
        UserWarning: skipped files, several series, varying spacing, missing
            rescale, lossy compression, a non-standard transfer syntax read
            as uncompressed, and damaged or non-standard header elements
            (one warning for the folder; pydicom's own messages are
            withheld, as they can quote patient data). No warning or error
            carries a tag's value.

    Example:
        >>> from covid_keras import data
        >>> folder = data.synthetic.write_ct_phantom("/tmp/ph", "COVID-19", seed=0)
        >>> ct = data.read_ct_series(folder)
        >>> ct.hu.dtype, ct.hu.ndim
        (dtype('float32'), 3)
    """
    folder = os.fspath(folder)
    # The guard is a last net: whatever a damaged file still makes raise
    # becomes a DicomReadError naming the folder (files are named inside).
    with dicom_files.pydicom_guard(folder, what="a file of the series"):
        return _read(folder, series_uid, modalities, padding_hu)


def _read(folder, series_uid, modalities, padding_hu):
    notes = []
    found, _ = _scan_folder(folder, notes)
    _, frames = _choose_series(folder, found, series_uid, modalities)
    _check_modality(folder, frames, modalities)
    _check_geometry(folder, frames)
    frames, step, _ = _sort_and_step(folder, frames)
    stored = _stored_values(frames, cache={}, notes=notes)
    _warn_notes(folder, notes)
    hu, missing_rescale = _to_hu(frames, stored, padding_hu)
    if missing_rescale:
        warnings.warn(
            f"{folder}: some slices lack RescaleSlope/RescaleIntercept; "
            "their stored values are taken as HU.",
            stacklevel=2,
        )
    meta = _meta(frames, step)
    if meta["lossy"]:
        warnings.warn(
            f"{folder}: slices were lossy-compressed "
            f"({meta['TransferSyntax']}); HU values are approximate.",
            stacklevel=2,
        )
    dy, dx = frames[0].pixel_spacing  # PixelSpacing is (row step, column step)
    return CTSeries(
        hu=hu,
        spacing=(float(step), float(dy), float(dx)),
        patient_id=_patient_id(frames[0].ds),
        meta=meta,
        origin=tuple(float(v) for v in frames[0].position),
        orientation=tuple(float(v) for v in frames[0].orientation),
        source_files=tuple(f.path for f in frames),
    )
