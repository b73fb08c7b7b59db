"""Built-in synthetic data: chest CT phantoms as real DICOM, and radiographs.

Every ``train/`` command uses these when no ``--data`` is given, and the
tests use them as fixtures, so the whole package runs without downloads.

A CT phantom is a chest in HU: air, a body ellipse with a fat rim, two lungs
whose cross-section grows and shrinks along z, a heart, a spine, and the
scanner table under the body (not touching it). Its pathology is one of

* ``normal``: nothing more;
* ``covid``: bilateral, peripheral ground-glass patches (about -600 HU)
  hugging the pleura of both lungs (COVID-19);
* ``cap``: lobar consolidation (about +20 HU) filling the lower posterior
  part of one lung (community-acquired, bacterial pneumonia);
* ``viral``: small diffuse bilateral central patches (other viral
  pneumonia; used by the X-ray class lists);
* ``nodule``: a single solid round mass (an "other disease" for DETL).

Series are written as CT Image Storage files with realistic tags (rescale
intercept -1024, 12 stored bits, positions, orientation, spacing, UIDs),
under random file names, in the COVID-CT-MD layout (``COVID-19 Cases/``,
``Cap Cases/``, ``Normal Cases/``, ``Index.csv``, ``Slice-level-labels.npy``)
so that :func:`covid_keras.data.datasets.covid_ct_md` reads them like the
real dataset. Radiographs are digitally reconstructed radiographs (DRR): the
phantom's attenuation summed front to back, written as 8-bit PNGs.

Everything is deterministic for a seed and cached under
``$COVID_KERAS_CACHE/phantoms`` (default ``~/.cache/covid_keras``). The
records of the built-in datasets carry synthetic age, sex, BMI and
ethnicity (:func:`phantom_covariates`), independent of the class, so that
paper 004's regression of correctness on them runs end to end.
"""

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from covid_keras.data.privacy import cache_dir

PATHOLOGIES = ("normal", "covid", "cap", "viral", "nodule")

#: CT 3-class label (docs/papers.md, class lists) of each CT pathology.
CT_LABELS = {"normal": "Normal", "cap": "CAP", "covid": "COVID-19"}
#: COVID-CT-MD class folders (the real dataset's names).
CT_FOLDERS = {"COVID-19": "COVID-19 Cases", "CAP": "Cap Cases", "Normal": "Normal Cases"}
_CT_PREFIX = {"COVID-19": "P", "CAP": "cap", "Normal": "normal"}

#: Each X-ray paper's class list (docs/papers.md) and the phantom pathologies in it.
#: A pathology missing from a task's map is not part of that task.
XRAY_TASKS = {
    "xraycnn_step1": {"normal": "normal", "cap": "bacterial", "covid": "viral", "viral": "viral"},
    "xraycnn_step2": {"cap": "non-viral pneumonia", "covid": "COVID-19", "viral": "other viral"},
    "xraycnn_4class": {"normal": "Normal", "cap": "bacterial", "covid": "COVID-19", "viral": "other viral"},
    "transfer_xray": {"covid": "COVID-19", "cap": "Pneumonia", "viral": "Pneumonia", "normal": "Normal"},
    "detl_a": {"normal": "normal", "nodule": "disease"},
    "detl_b": {"normal": "normal", "nodule": "other_disease", "cap": "pneumonia", "covid": "covid"},
}

_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "soft": 40.0,
    "lung": -850.0,
    "bone": 700.0,
    "marrow": 250.0,
    "table": 100.0,
    "ggo": -600.0,  # within clinical GGO (-700..-300), clear of the lung-mask threshold
    "consolidation": 20.0,
}


@dataclasses.dataclass(frozen=True)
class PhantomGeometry:
    """Physical layout of one phantom, in mm (x left-right, y front-back)."""

    body_ax: float = 160.0
    body_ay: float = 110.0
    lung_x: float = 72.0
    lung_y: float = -5.0
    lung_ax: float = 55.0
    lung_ay: float = 78.0
    heart_x: float = 18.0  # patient's left (+x in DICOM's LPS)
    heart_y: float = -35.0
    heart_r: float = 42.0
    spine_y: float = 85.0
    spine_r: float = 18.0
    table_y: float = 128.0
    table_h: float = 10.0
    lung_start: float = 0.12  # lungs span this fraction of the scan length...
    lung_end: float = 0.92  # ...to this one


def _lung_profile(t, geom):
    """Relative lung size in [0, 1] at fraction ``t`` of the scan length."""
    u = (t - geom.lung_start) / (geom.lung_end - geom.lung_start)
    return np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6, 0.0)


@dataclasses.dataclass(frozen=True)
class _Lesion:
    center: tuple  # (x, y, t): mm, mm, fraction of scan length
    radii: tuple  # (rx, ry, rt): mm, mm, fraction
    hu: float
    side: int  # -1 right lung, +1 left lung, 0 either


def _lesions(pathology, rng, geom):
    """Random lesions of one pathology (ellipsoids, clipped to the lungs)."""
    out = []
    if pathology == "covid":
        for side in (-1, 1):
            for _ in range(rng.integers(3, 6)):
                # Peripheral: near the lateral / posterior pleura.
                angle = rng.uniform(-0.6 * np.pi, 0.6 * np.pi)
                cx = side * (geom.lung_x + 0.75 * geom.lung_ax * np.cos(angle))
                cy = geom.lung_y + 0.75 * geom.lung_ay * np.sin(angle)
                t = rng.uniform(0.4, 0.65)  # where the lungs are widest
                out.append(
                    _Lesion((cx, cy, t), (rng.uniform(14, 24), rng.uniform(14, 24), rng.uniform(0.05, 0.09)),
                            _HU["ggo"] + rng.uniform(-60, 60), side)
                )
    elif pathology == "cap":
        side = int(rng.choice([-1, 1]))
        cx = side * geom.lung_x
        out.append(
            _Lesion((cx, geom.lung_y + 35, rng.uniform(0.38, 0.5)), (60, 55, rng.uniform(0.14, 0.2)),
                    _HU["consolidation"] + rng.uniform(-15, 15), side)
        )
    elif pathology == "viral":
        for side in (-1, 1):
            for _ in range(rng.integers(5, 9)):
                cx = side * (geom.lung_x + rng.uniform(-0.35, 0.35) * geom.lung_ax)
                cy = geom.lung_y + rng.uniform(-0.4, 0.4) * geom.lung_ay
                out.append(
                    _Lesion((cx, cy, rng.uniform(0.3, 0.8)), (rng.uniform(6, 10), rng.uniform(6, 10), 0.03),
                            -550.0 + rng.uniform(-50, 50), side)
                )
    elif pathology == "nodule":
        side = int(rng.choice([-1, 1]))
        out.append(
            _Lesion((side * geom.lung_x, geom.lung_y + rng.uniform(-30, 30), rng.uniform(0.4, 0.7)),
                    (18, 18, 0.06), _HU["soft"], side)
        )
    elif pathology != "normal":
        raise ValueError(f"`pathology` must be one of {PATHOLOGIES}. Received: pathology={pathology!r}")
    return out


def _ellipse(xx, yy, cx, cy, ax, ay):
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def phantom_slice(t, pathology_lesions, xx, yy, geom, rng, noise_hu=15.0):
    """One axial slice in HU at fraction ``t`` of the scan; returns (hu, lesion?)."""
    hu = np.full(xx.shape, _HU["air"], dtype=np.float32)
    # Above the lungs the trunk narrows to the neck.
    neck = 0.45 if t > geom.lung_end + 0.02 else 1.0
    ax, ay = geom.body_ax * neck, geom.body_ay * (0.6 + 0.4 * neck)
    hu[_ellipse(xx, yy, 0, 0, ax, ay)] = _HU["fat"]
    hu[_ellipse(xx, yy, 0, 0, ax - 10, ay - 10)] = _HU["soft"]
    table = (yy >= geom.table_y) & (yy <= geom.table_y + geom.table_h) & (np.abs(xx) <= geom.body_ax + 30)
    hu[table] = _HU["table"]
    s = float(_lung_profile(t, geom))
    lungs = np.zeros(xx.shape, dtype=bool)
    lesion_any = False
    if s > 0.05:
        for side in (-1, 1):
            lung = _ellipse(xx, yy, side * geom.lung_x, geom.lung_y, geom.lung_ax * s, geom.lung_ay * s)
            lungs |= lung
            hu[lung] = _HU["lung"]
            for les in pathology_lesions:
                if les.side not in (0, side):
                    continue
                dt = (t - les.center[2]) / les.radii[2]
                if abs(dt) >= 1:
                    continue
                k = np.sqrt(1 - dt * dt)
                inside = lung & _ellipse(xx, yy, les.center[0], les.center[1], les.radii[0] * k, les.radii[1] * k)
                if inside.any():
                    hu[inside] = les.hu
                    lesion_any = True
        if t > 0.45:
            hu[_ellipse(xx, yy, geom.heart_x, geom.heart_y, geom.heart_r * s, geom.heart_r * 0.85 * s)] = _HU["soft"]
    spine = _ellipse(xx, yy, 0, geom.spine_y, geom.spine_r, geom.spine_r)
    hu[spine] = _HU["bone"]
    hu[_ellipse(xx, yy, 0, geom.spine_y, geom.spine_r * 0.6, geom.spine_r * 0.6)] = _HU["marrow"]
    if noise_hu:
        hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    return hu, lesion_any


def phantom_volume(pathology="normal", n_slices=48, size=128, pixel_spacing=None,
                   slice_spacing=5.0, seed=0, geometry=None, noise_hu=15.0):
    """Generates a chest CT phantom in HU.

    Args:
        pathology: one of :data:`PATHOLOGIES`.
        n_slices: number of axial slices.
        size: rows = columns of each slice.
        pixel_spacing: mm per pixel; default fits a 380 mm field of view.
        slice_spacing: mm between slices.
        seed: random seed (lesion placement, noise).
        geometry: a :class:`PhantomGeometry`.
        noise_hu: standard deviation of the added Gaussian noise.

    Returns:
        ``(hu, slice_labels, spacing)``: float32 [z, y, x] in HU with slice 0
        the most inferior, a bool [z] array that is True where a slice shows
        a lesion, and the (z, y, x) spacing in mm.
    """
    geom = geometry or PhantomGeometry()
    rng = np.random.default_rng(seed)
    px = pixel_spacing or 380.0 / size
    coords = (np.arange(size) - (size - 1) / 2) * px
    xx, yy = np.meshgrid(coords, coords)
    lesions = _lesions(pathology, rng, geom)
    hu = np.empty((n_slices, size, size), dtype=np.float32)
    labels = np.zeros(n_slices, dtype=bool)
    for k in range(n_slices):
        t = (k + 0.5) / n_slices
        hu[k], labels[k] = phantom_slice(t, lesions, xx, yy, geom, rng, noise_hu)
    return hu, labels, (float(slice_spacing), float(px), float(px))


# --------------------------------------------------------------------------
# Writing DICOM
# --------------------------------------------------------------------------

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _uid(*parts):
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_ct_series(hu, spacing, folder, *, patient_name="PHANTOM^TEST", patient_id="PHANTOM-0",
                    birth_date="19700101", seed=0, shuffle=True, z0=-200.0, instance_numbers=True,
                    file_prefix="", orientation=(1, 0, 0, 0, 1, 0), direction=1, patient_position="HFS"):
    """Writes a HU volume as a CT Image Storage series, one file per slice.

    Stored values are ``HU + 1024`` in 12 bits (RescaleIntercept -1024),
    slice 0 centred at ``(0, 0, z0)`` mm and each next one ``spacing[0]``
    further along the slice normal (row cosine x column cosine of
    ``orientation``): with the default axial orientation, ``spacing[0]``
    higher. ``direction=-1`` stacks them the other way, so positions fall
    as instance numbers and plain file names rise (as feet-first exports
    often do). File names are random numbers (``shuffle=True``) so that
    only ImagePositionPatient gives the order, as in many real exports.

    The identifying tags (``patient_name``, ``patient_id``, ``birth_date``)
    are filled with the given made-up values so that tests can check that
    they never leak into outputs.

    Args:
        orientation: the six ImageOrientationPatient cosines (row, column).
        direction: ``1`` or ``-1``, the way slice k moves along the normal.
        patient_position: the PatientPosition tag (``"HFS"``, ``"FFS"``...).

    Returns:
        The list of written file paths in slice order (slice k of ``hu``).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    n, rows, cols = hu.shape
    dz, dy, dx = spacing
    study_uid = _uid("study", patient_id, seed)
    series_uid = _uid("series", patient_id, seed, n)
    frame_uid = _uid("frame", patient_id, seed)
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
    # Random fixed-width numbers: name order (plain or natural) is not slice order.
    names = [f"{file_prefix}{h:09d}.dcm" for h in rng.choice(10**9, size=n, replace=False)] if shuffle \
        else [f"{file_prefix}IM{k + 1:04d}.dcm" for k in range(n)]
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_cos, col_cos)
    cosines = [f"{float(c) + 0.0:.6g}" for c in orientation]  # "+ 0.0": no "-0"
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = _uid("sop", series_uid, k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = os.path.join(folder, names[k])
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = _CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = "O"
        ds.Modality = "CT"
        ds.Manufacturer = "covid_keras phantom"
        ds.ManufacturerModelName = "synthetic"
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.SeriesNumber = 2
        if instance_numbers:
            ds.InstanceNumber = k + 1
        # The slice's centre, then its first pixel: half the field of view back along rows and columns.
        centre = np.array([0.0, 0.0, z0]) + direction * k * dz * normal
        corner = centre - (cols - 1) / 2 * dx * row_cos - (rows - 1) / 2 * dy * col_cos
        ds.ImagePositionPatient = [f"{v:.3f}" for v in corner]
        ds.ImageOrientationPatient = cosines
        ds.SliceLocation = f"{centre @ normal:.3f}"
        ds.SliceThickness = f"{dz:.3f}"
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.PatientPosition = patient_position
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------
# Radiographs
# --------------------------------------------------------------------------


def drr(hu, spacing, size=128, mu_water=0.02):
    """Digitally reconstructed radiograph of a volume, as a PA chest film.

    The linear attenuation ``mu_water * (1 + HU / 1000)`` is summed along
    the front-back axis. A film shows the log of the transmitted intensity,
    which is that line integral, so it is mapped linearly to brightness
    (dense = bright) with a percentile window, head at the top.

    Returns:
        float32 [size, size] in [0, 1].
    """
    import cv2

    mu = np.clip(mu_water * (1.0 + hu / 1000.0), 0.0, None)
    path = mu.sum(axis=1) * spacing[1]  # [z, x]
    film = path[::-1]  # head at the top
    lo, hi = np.percentile(film, (1, 99.5))
    film = np.clip((film - lo) / max(hi - lo, 1e-6), 0, 1)
    height_mm = hu.shape[0] * spacing[0]
    width_mm = hu.shape[2] * spacing[2]
    # Keep the physical aspect ratio, then pad to a square film.
    scale = size / max(height_mm, width_mm)
    h, w = max(1, round(height_mm * scale)), max(1, round(width_mm * scale))
    film = cv2.resize(film.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = film
    return out


# --------------------------------------------------------------------------
# Cached built-in datasets
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CTPhantomConfig:
    """Parameters of the built-in CT phantom dataset (the cache key)."""

    patients_per_class: int = 8
    #: Fraction of COVID-19 / CAP patients whose slice labels are published
    #: (COVID-CT-MD labels 80 of its 231 infected patients); the others carry
    #: only the patient label, as paper 001's pseudo-labelling stage needs.
    labelled_fraction: float = 0.75
    size: int = 128
    min_slices: int = 40
    max_slices: int = 64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class XrayPhantomConfig:
    """Parameters of the built-in radiograph dataset (the cache key)."""

    images_per_pathology: int = 24
    size: int = 128
    seed: int = 0
    #: Lesions are drawn this many times denser than in the CT phantoms (ours): summed through
    #: the chest, a CT phantom's ground glass changes a film by a few grey levels, too faint for
    #: the small presets to learn from in minutes.
    lesion_gain: float = 3.0


def _key(config):
    blob = json.dumps({"kind": type(config).__name__, **dataclasses.asdict(config), "v": 5}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _atomic_folder(final, build):
    """Builds a folder under a temporary name and renames it when complete."""
    if os.path.isdir(final):
        return final
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # built meanwhile by another process
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


#: Prioritised ethnicity groups (New Zealand's, as in paper 004's CM Health data) drawn for phantom records.
PHANTOM_ETHNICITIES = ("European", "Maori", "Pacific", "Asian", "Other")


def phantom_covariates(record, seed=0):
    """Synthetic age, sex, BMI and ethnicity of one phantom record (paper 004's covariates).

    Drawn from ``seed`` and a hash of the last two parts of the record's
    first path (class folder and file or patient folder name), never from
    its label or its pseudonymous id (which changes with the id salt): they
    are reproducible, the same for a record in every X-ray task, and
    independent of the class, so a regression of correctness on them
    should find nothing. Images and records are not otherwise touched.

    Args:
        record: a phantom :class:`covid_keras.data.datasets.Record`.
        seed: the phantom config's seed.

    Returns:
        ``(age, sex, bmi, ethnicity)``: years 20-90, ``"F"`` or ``"M"``,
        kg/m2 (normal, mean 27, sd 5, within 16-45, one decimal) and one of
        :data:`PHANTOM_ETHNICITIES`.

    Example:
        >>> from covid_keras.data.datasets import Record
        >>> age, sex, bmi, ethnicity = phantom_covariates(Record("p", "Normal", ("/x/normal/a.png",), "s"))
        >>> 20 <= age <= 90 and sex in ("F", "M") and 16 <= bmi <= 45
        True
    """
    name = "/".join(os.path.normpath(record.paths[0]).split(os.sep)[-2:])
    rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:12], 16), 29])
    age = float(rng.integers(20, 91))
    sex = str(rng.choice(["F", "M"]))
    bmi = round(float(np.clip(rng.normal(27.0, 5.0), 16.0, 45.0)), 1)
    return age, sex, bmi, str(rng.choice(PHANTOM_ETHNICITIES))


def with_phantom_covariates(records, seed=0):
    """The records, each with :func:`phantom_covariates` as ``age``, ``sex`` and ``extra`` bmi / ethnicity."""
    out = []
    for r in records:
        age, sex, bmi, ethnicity = phantom_covariates(r, seed)
        out.append(dataclasses.replace(r, age=age, sex=sex,
                                       extra={**(r.extra or {}), "bmi": bmi, "ethnicity": ethnicity}))
    return out


def _ct_patient_params(config, label, i):
    rng = np.random.default_rng([config.seed, list(CT_LABELS.values()).index(label), i])
    n = int(rng.integers(config.min_slices, config.max_slices + 1))
    slice_spacing = float(rng.choice([2.5, 3.0, 4.0, 5.0]))
    pixel_spacing = float(380.0 / config.size * rng.uniform(0.92, 1.08))
    return n, slice_spacing, pixel_spacing, int(rng.integers(2**31))


def write_ct_dataset(root, config=CTPhantomConfig()):
    """Writes the CT phantom dataset in the COVID-CT-MD layout under ``root``."""
    pathology_of = {v: k for k, v in CT_LABELS.items()}
    label_rows, index_rows = [], []
    for label in ("COVID-19", "CAP", "Normal"):
        for i in range(config.patients_per_class):
            pid = f"{_CT_PREFIX[label]}{i + 1:03d}"
            n, dz, px, seed = _ct_patient_params(config, label, i)
            hu, labels, spacing = phantom_volume(pathology_of[label], n_slices=n, size=config.size,
                                                 pixel_spacing=px, slice_spacing=dz, seed=seed)
            folder = os.path.join(root, CT_FOLDERS[label], pid)
            paths = write_ct_series(hu, spacing, folder, patient_id=f"PHANTOM-{pid}",
                                    patient_name=f"PHANTOM^{pid}", seed=seed)
            if label != "Normal" and i < round(config.labelled_fraction * config.patients_per_class):
                # Slice-level-labels.npy: column j = j-th file by sorted name.
                by_name = sorted(range(n), key=lambda k: os.path.basename(paths[k]))
                label_rows.append(labels[by_name].astype(np.uint8))
                index_rows.append((pid, label, len(label_rows) - 1))
    width = max(len(r) for r in label_rows)
    arr = np.zeros((len(label_rows), width), dtype=np.uint8)
    for i, r in enumerate(label_rows):
        arr[i, : len(r)] = r
    np.save(os.path.join(root, "Slice-level-labels.npy"), arr)
    with open(os.path.join(root, "Index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Folder/ID", "Diagnosis", "Relative Path", "Label Index"])
        for pid, label, idx in index_rows:
            w.writerow([pid, label, CT_FOLDERS[label].replace(" Cases", ""), idx])


def ct_dataset_dir(config=CTPhantomConfig()):
    """Returns the folder of the built-in CT phantoms, generating it once."""
    final = os.path.join(cache_dir(), "phantoms", f"ct-{_key(config)}")
    return _atomic_folder(final, lambda tmp: write_ct_dataset(tmp, config))


def ct_dataset(config=CTPhantomConfig()):
    """Records of the built-in CT phantoms (the COVID-CT-MD adapter's output, with :func:`with_phantom_covariates`)."""
    from covid_keras.data.datasets import covid_ct_md

    return with_phantom_covariates(covid_ct_md(ct_dataset_dir(config)), config.seed)


def write_xray_dataset(root, config=XrayPhantomConfig()):
    """Writes phantom radiographs: ``<pathology>/<id>.png`` plus ``labels.csv``."""
    import cv2

    rows = []
    for p_index, pathology in enumerate(PATHOLOGIES):
        os.makedirs(os.path.join(root, pathology), exist_ok=True)
        for i in range(config.images_per_pathology):
            rng = np.random.default_rng([config.seed, p_index, i, 7])
            geom = PhantomGeometry(
                body_ax=160.0 * rng.uniform(0.9, 1.1),
                lung_ax=55.0 * rng.uniform(0.9, 1.1),
                lung_ay=78.0 * rng.uniform(0.9, 1.1),
            )
            seed = int(rng.integers(2**31))
            hu, _, spacing = phantom_volume(pathology, n_slices=96, size=96, slice_spacing=4.0,
                                            seed=seed, geometry=geom, noise_hu=0.0)
            if pathology != "normal" and config.lesion_gain != 1:
                # Without noise the same geometry gives the same anatomy: the difference is the lesions.
                anatomy, _, _ = phantom_volume("normal", n_slices=96, size=96, slice_spacing=4.0,
                                               seed=seed, geometry=geom, noise_hu=0.0)
                hu = anatomy + config.lesion_gain * (hu - anatomy)
            film = drr(hu, spacing, size=config.size)
            film = np.clip(film + rng.normal(0, 0.01, film.shape), 0, 1)
            name = f"{pathology}-{i:04d}"
            cv2.imwrite(os.path.join(root, pathology, name + ".png"), np.rint(film * 255).astype(np.uint8))
            rows.append((f"xph-{pathology}-{i:04d}", pathology, f"{pathology}/{name}.png"))
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "pathology", "path"])
        w.writerows(rows)


def xray_dataset_dir(config=XrayPhantomConfig()):
    """Returns the folder of the built-in phantom radiographs, generating it once."""
    final = os.path.join(cache_dir(), "phantoms", f"xray-{_key(config)}")
    return _atomic_folder(final, lambda tmp: write_xray_dataset(tmp, config))


def xray_records(root, task="xraycnn_step1"):
    """Records of phantom radiographs labelled in one X-ray paper's class list.

    Args:
        root: a folder written by :func:`write_xray_dataset`.
        task: a key of :data:`XRAY_TASKS`.
    """
    from covid_keras import errors
    from covid_keras.data.datasets import Record

    if task not in XRAY_TASKS:
        raise errors.ConfigurationError(
            f"`task` must be one of {sorted(XRAY_TASKS)}. Received: task={task!r}."
        )
    mapping = XRAY_TASKS[task]
    out = []
    with open(os.path.join(root, "labels.csv"), newline="") as f:
        for row in csv.DictReader(f):
            if row["pathology"] in mapping:
                out.append(
                    Record(
                        patient_id=row["patient_id"],
                        label=mapping[row["pathology"]],
                        paths=(os.path.join(root, row["path"]),),
                        dataset="synthetic-xray",
                        extra={"pathology": row["pathology"]},
                    )
                )
    return out


def xray_dataset(task="xraycnn_step1", config=XrayPhantomConfig()):
    """Records of the built-in phantom radiographs for one X-ray class list (with :func:`with_phantom_covariates`)."""
    return with_phantom_covariates(xray_records(xray_dataset_dir(config), task), config.seed)


def as_ct_series(hu, spacing, patient_id="pt-phantom", label=None):
    """Wraps a phantom volume as an in-memory :class:`CTSeries` (no DICOM)."""
    from covid_keras.data.dicom import CTSeries

    meta = {"Modality": "CT", "series": "se-phantom", "n_slices": int(hu.shape[0])}
    if label is not None:
        meta["label"] = label
    return CTSeries(hu=np.asarray(hu, np.float32), spacing=tuple(float(s) for s in spacing),
                    patient_id=patient_id, meta=meta)


def write_ct_phantom(folder, label="COVID-19", seed=0, n_slices=40, size=96, slice_spacing=5.0):
    """Writes one CT phantom series (for examples and quick checks).

    Returns:
        ``folder``.
    """
    pathology = {v: k for k, v in CT_LABELS.items()}.get(label, label)
    hu, _, spacing = phantom_volume(pathology, n_slices=n_slices, size=size,
                                    slice_spacing=slice_spacing, seed=seed)
    write_ct_series(hu, spacing, folder, seed=seed)
    return folder


# --------------------------------------------------------------------------
# CT-slice images (the SARS-CoV-2 CT-scan dataset's layout)
# --------------------------------------------------------------------------

#: SARS-CoV-2 CT-scan class folders and file-name stems (the real dataset's names).
SARS_CT_FOLDERS = {"COVID-19": ("COVID", "Covid"), "Normal": ("non-COVID", "Non-Covid")}
_SARS_CT_PATHOLOGY = {"COVID-19": "covid", "Normal": "normal"}
#: Lung window (HU) of the written images: width 1500, level -600, so
#: [-1350, 150] HU maps to [0, 255]: lung (-850) at 85, ground glass (-600)
#: at 128, fat and soft tissue near white.
SARS_CT_WINDOW = (1500.0, -600.0)
# Few slices are enough to pick one through the widest part of the lungs,
# where _lesions centres the COVID-19 patches (t in 0.4..0.65).
_SARS_CT_SLICES = 20
_SARS_CT_T_RANGE = (0.4, 0.65)


@dataclasses.dataclass(frozen=True)
class CTImagePhantomConfig:
    """Parameters of the built-in CT-slice image dataset (the cache key).

    Args:
        images_per_class: images written in each of ``COVID/`` and ``non-COVID/``.
        size: rows = columns of the phantom slice before it is cropped to the
            body; the written images are 0.8-1.0 ``size`` wide and 0.55-0.75
            ``size`` high, varying with each phantom's build and field of view.
        seed: base seed; image ``i`` of a class is its own phantom "patient".
    """

    images_per_class: int = 24
    size: int = 128
    seed: int = 0


def lung_window(hu, width=SARS_CT_WINDOW[0], level=SARS_CT_WINDOW[1]):
    """Maps HU to 8-bit grey levels with a display window.

    Args:
        hu: an array in HU.
        width: window width in HU.
        level: window centre in HU.

    Returns:
        A uint8 array of the same shape: ``level - width / 2`` and below is 0,
        ``level + width / 2`` and above is 255.

    Example:
        >>> lung_window(np.array([-1350.0, -600.0, 150.0])).tolist()
        [0, 128, 255]
    """
    grey = (np.asarray(hu, np.float64) - (level - width / 2)) / width
    return np.rint(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)


def _body_mask(hu):
    """The body in an axial slice: the largest solid region, its lungs filled in.

    The scanner table, a separate region under the body, is left out.
    """
    from scipy import ndimage

    solid = ndimage.binary_fill_holes(hu > -500.0)
    regions, n = ndimage.label(solid)
    if n == 0:
        return solid
    sizes = np.bincount(regions.ravel())[1:]
    return regions == 1 + int(sizes.argmax())


def _sars_ct_slice(label, i, config):
    """HU of one image: a slice through the lungs of patient ``i`` of a class.

    Both classes draw from the same heights (:data:`_SARS_CT_T_RANGE`), so
    that lung size or the heart's presence tells nothing; a COVID-19 slice
    is drawn among those whose ground glass covers at least half the largest
    lesion area of the patient, so that every COVID-19 image shows lesions.

    Returns:
        ``(hu, rng)``: the float32 [size, size] slice, and the patient's
        generator (the caller draws the crop margin from it).
    """
    class_index = list(SARS_CT_FOLDERS).index(label)
    rng = np.random.default_rng([config.seed, class_index, i, 11])
    body_ax, body_ay = 160.0 * rng.uniform(0.9, 1.1), 110.0 * rng.uniform(0.97, 1.06)
    # The lungs stay 22 mm inside the skin (fat rim 10 mm): a lung reaching
    # the air would no longer be a hole in the body that _body_mask fills.
    base = PhantomGeometry()
    geom = PhantomGeometry(
        body_ax=body_ax,
        body_ay=body_ay,
        lung_ax=min(base.lung_ax * rng.uniform(0.9, 1.1), body_ax - base.lung_x - 22.0),
        lung_ay=min(base.lung_ay * rng.uniform(0.9, 1.1), body_ay + base.lung_y - 22.0),
    )
    px = 380.0 / config.size * rng.uniform(0.92, 1.08)
    hu, lesion, _ = phantom_volume(_SARS_CT_PATHOLOGY[label], n_slices=_SARS_CT_SLICES, size=config.size,
                                   pixel_spacing=px, seed=int(rng.integers(2**31)), geometry=geom)
    t = (np.arange(_SARS_CT_SLICES) + 0.5) / _SARS_CT_SLICES
    allowed = (t >= _SARS_CT_T_RANGE[0]) & (t <= _SARS_CT_T_RANGE[1])
    if label == "COVID-19":
        # Ground glass (about -600 HU) against lung (-850): the noise (15 HU) keeps them apart.
        ggo = ((hu > -760.0) & (hu < -440.0)).sum(axis=(1, 2)) * lesion * allowed
        allowed = ggo >= max(0.5 * ggo.max(), 1)
    return hu[int(rng.choice(np.flatnonzero(allowed)))], rng


def sars_ct_image(hu, rng=None):
    """One axial HU slice as the SARS-CoV-2 CT-scan dataset shows it.

    The slice is lung-windowed (:data:`SARS_CT_WINDOW`), everything outside
    the body (air, scanner table) is set to black, and the image is cropped
    to the body with a margin of a few pixels, as the real dataset's
    images are.

    Args:
        hu: float [rows, cols] in HU.
        rng: a ``numpy.random.Generator`` drawing the margin (2-6 pixels);
            None: 4 pixels.

    Returns:
        uint8 [h, w].
    """
    body = _body_mask(hu)
    grey = np.where(body, lung_window(hu), 0).astype(np.uint8)
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        return grey
    m = 4 if rng is None else int(rng.integers(2, 7))
    top, bottom = max(rows[0] - m, 0), min(rows[-1] + m + 1, hu.shape[0])
    left, right = max(cols[0] - m, 0), min(cols[-1] + m + 1, hu.shape[1])
    return grey[top:bottom, left:right]


def write_sars_ct_dataset(root, config=CTImagePhantomConfig()):
    """Writes phantom CT-slice PNGs in the SARS-CoV-2 CT-scan dataset's layout.

    ``COVID/Covid (<n>).png`` hold slices of ``phantom_volume("covid")``
    patients through lesions (ground glass, brighter than the lung in the
    lung window); ``non-COVID/Non-Covid (<n>).png`` slices of
    ``phantom_volume("normal")`` patients at the same heights. Every image
    is a different phantom "patient" (its own geometry, field of view and
    noise, seeded by ``config.seed``, the class and the index), written by
    :func:`sars_ct_image` as an 8-bit grey PNG.

    Args:
        root: the folder to write into (created if missing).
        config: a :class:`CTImagePhantomConfig`.

    Returns:
        ``root``.

    Example:
        >>> write_sars_ct_dataset("/tmp/sars", CTImagePhantomConfig(2, 64))  # doctest: +SKIP
        '/tmp/sars'
    """
    import cv2

    for label, (folder, stem) in SARS_CT_FOLDERS.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for i in range(config.images_per_class):
            hu, rng = _sars_ct_slice(label, i, config)
            # Encoded, then written by Python: a failed write raises OSError
            # (cv2.imwrite only returns False).
            png = cv2.imencode(".png", sars_ct_image(hu, rng))[1]
            with open(os.path.join(root, folder, f"{stem} ({i + 1}).png"), "wb") as f:
                f.write(png.tobytes())
    return root


def sars_ct_dataset_dir(config=CTImagePhantomConfig()):
    """Returns the folder of the built-in CT-slice images, generating it once."""
    final = os.path.join(cache_dir(), "phantoms", f"sars-ct-{_key(config)}")
    return _atomic_folder(final, lambda tmp: write_sars_ct_dataset(tmp, config))


def sars_ct_dataset(config=CTImagePhantomConfig()):
    """Records of the built-in CT-slice images (the SARS-CoV-2 CT-scan adapter's output).

    The adapter warns that the dataset has no patient ids; that is true of
    these images too (one phantom patient per image) and the warning is kept.
    """
    from covid_keras.data.datasets import sars_cov2_ct

    return with_phantom_covariates(sars_cov2_ct(sars_ct_dataset_dir(config)), config.seed)
