"""One adapter per public dataset layout, yielding patient-labelled records.

Each adapter reads a dataset exactly as its publisher ships it (folder names,
index files, file-name conventions), harmonises the labels to one paper's
class list (``CLASS_NAMES``, after torchxrayvision's ``relabel_dataset``) and
returns a sorted list of :class:`Record`, each carrying a ``patient_id`` so
that :mod:`covid_keras.data.splits` can keep every patient on one side of a
split. Adapters only look at files and tables; they never decode pixels.

Patient ids are the dataset's own pseudonyms (COVID-CT-MD ``P001``, NIH
``nih-00001``, Kermany ``person1``, the COVID-19 image data collection
``cxr-<patientid>``) or, where a dataset publishes none,
:func:`covid_keras.data.privacy.pseudonymize` of the file's relative path.
Names and birth dates are never read.

Example:
    >>> from covid_keras.data import datasets
    >>> records = datasets.load_dataset("covid-ct-md", "data/COVID-CT-MD")  # doctest: +SKIP
    >>> records[0].patient_id, records[0].label                             # doctest: +SKIP
    ('P001', 'COVID-19')
"""

import csv
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from covid_keras import errors
from covid_keras.data.privacy import pseudonymize

# The papers' class lists (SPEC.md "Classes"); the order is the index order
# of each model's softmax output.
CLASS_NAMES = {
    "ct3": ("Normal", "CAP", "COVID-19"),
    "transfer_xray": ("COVID-19", "Pneumonia", "Normal"),
    "transfer_ct": ("COVID-19", "Normal"),
    "detl_a": ("normal", "disease"),
    "detl_b": ("normal", "other_disease", "pneumonia", "covid"),
    "xraycnn_step1": ("normal", "bacterial", "viral"),
    "xraycnn_step2": ("non-viral pneumonia", "COVID-19", "other viral"),
    "xraycnn_4class": ("Normal", "bacterial", "COVID-19", "other viral"),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Name, download address and where --data should point, per dataset; used in
# every layout error so that the user knows what to fetch and from where.
_SOURCES = {
    "covid-ct-md": (
        "COVID-CT-MD",
        "https://figshare.com/s/c20215f3d42c98f09ad0",
        "the folder that holds `COVID-19 Cases`",
    ),
    "covidx-ct": (
        "COVIDx CT",
        "https://www.kaggle.com/datasets/hgunraj/covidxct",
        "the folder that holds `2A_images` and `train_COVIDx_CT-2A.txt`",
    ),
    "sars-cov2-ct": (
        "the SARS-CoV-2 CT-scan dataset",
        "https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset",
        "the folder that holds `COVID` and `non-COVID`",
    ),
    "chest-xray-pneumonia": (
        "Chest X-Ray Images (Pneumonia)",
        "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
        "the `chest_xray` folder that holds `train`, `val` and `test`",
    ),
    "covid-chestxray": (
        "the COVID-19 image data collection",
        "https://github.com/ieee8023/covid-chestxray-dataset",
        "the folder that holds `metadata.csv` and `images`",
    ),
    "nih-chestxray14": (
        "NIH ChestX-ray14",
        "https://nihcc.app.box.com/v/ChestXray-NIHCC",
        "the folder that holds `Data_Entry_2017.csv`",
    ),
}


@dataclass(frozen=True)
class Record:
    """One labelled sample: an image, or a CT series folder, of one patient.

    Attributes:
        patient_id: pseudonymous patient id; splits group by it.
        label: a class name from one of the ``CLASS_NAMES`` lists.
        paths: image files, or a single DICOM series folder for CT volumes.
        dataset: the registry name of the dataset it came from.
        slice_labels: CT only, a tuple of ``(file_name, 0 or 1)`` pairs in
            slice order (1 = infected), or None when the dataset has none.
        age: age in years, or None.
        sex: ``"M"``, ``"F"`` or None.
        extra: dataset-specific details (split name, view, raw finding, box).
    """

    patient_id: str
    label: str
    paths: tuple[str, ...]
    dataset: str
    slice_labels: tuple | None = None
    age: float | None = None
    sex: str | None = None
    extra: dict = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _layout_error(dataset, path, problem):
    """Returns a DatasetLayoutError in torchxrayvision's "please download" tone."""
    name, url, target = _SOURCES[dataset]
    return errors.DatasetLayoutError(
        f"{path}: {problem}; download {name} from {url}, unpack it, "
        f"then point --data at {target}."
    )


def _check_root(root, dataset):
    """Returns ``root`` as a string, or raises when it is not a folder."""
    if root is None or not os.path.isdir(os.fspath(root)):
        raise _layout_error(dataset, root, "folder not found")
    return os.fspath(root)


def _require_file(folder, names, dataset):
    """Returns the path of the first of ``names`` present in ``folder``."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise _layout_error(dataset, folder, f"no `{names[0]}` found")


def _child(folder, names, want_dir=True):
    """Returns the path of the child of ``folder`` matching one of ``names``.

    Matching ignores case, so ``Cap Cases`` and ``CAP Cases`` both work.
    Returns None when no child matches.
    """
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    wanted = [name.lower() for name in names]
    for name in wanted:
        for entry in entries:
            path = os.path.join(folder, entry)
            is_right_kind = os.path.isdir(path) if want_dir else os.path.isfile(path)
            if entry.lower() == name and is_right_kind:
                return path
    return None


def _subfolders(folder):
    """Sorted child folders of ``folder``, hidden ones left out."""
    return sorted(
        entry.path
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith((".", "__MACOSX"))
    )


def _natural_key(name):
    """Sort key that orders ``IM2`` before ``IM10`` (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _image_files(folder, extensions=IMAGE_EXTENSIONS):
    """Sorted image files directly inside ``folder`` (hidden files left out)."""
    return sorted(
        entry.path
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.name.lower().endswith(extensions)
    )


def _read_csv(path):
    """Reads a CSV into a list of dicts with stripped header names.

    Args:
        path: the CSV file (a UTF-8 byte-order mark is accepted).

    Returns:
        ``(header, rows)``: the stripped column names and one dict per row.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        rows = [dict(zip(header, (value.strip() for value in row))) for row in reader if row]
    return header, rows


def _column(header, *candidates):
    """Returns the header name matching one of ``candidates`` (any case), or None."""
    by_lower = {name.lower(): name for name in header}
    for candidate in candidates:
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


def _require_columns(path, header, columns, dataset):
    """Raises when ``header`` lacks one of ``columns``."""
    for column in columns:
        if _column(header, column) is None:
            raise _layout_error(dataset, path, f"column `{column}` missing")


def parse_age(value):
    """Returns an age in years from ``"58"``, ``"58.5"`` or DICOM ``"058Y"``.

    Args:
        value: the raw text; DICOM suffixes M, W and D (months, weeks, days)
            are converted to years.

    Returns:
        A float, or None when the value is empty or unreadable.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([YMWDymwd])?\s*", str(value or ""))
    if not match:
        return None
    number = float(match.group(1))
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
    return number / per_year[(match.group(2) or "Y").upper()]


def parse_sex(value):
    """Returns ``"M"``, ``"F"`` or None from ``M``/``F``/``male``/``female``."""
    text = str(value or "").strip().upper()
    if text in ("M", "MALE"):
        return "M"
    if text in ("F", "FEMALE"):
        return "F"
    return None


def _sorted_records(records):
    """Records in a deterministic order: by patient, then by path."""
    return sorted(records, key=lambda r: (r.patient_id, r.paths, r.label))


def _warn(message):
    """warnings.warn pointing at the first caller outside this module."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_skipped(count, what, where, reason):
    """One warning counting the skipped items, none when nothing was skipped."""
    if count:
        _warn(f"{where}: skipped {count} {what} {reason}.")


# --------------------------------------------------------------------------
# COVID-CT-MD
# --------------------------------------------------------------------------

# Class-folder names seen in the figshare release and in the GitHub sample.
_CTMD_FOLDERS = {
    "COVID-19": ("COVID-19 Cases", "COVID-19 subjects", "COVID-19"),
    "CAP": ("Cap Cases", "CAP subjects", "CAP"),
    "Normal": ("Normal Cases", "Normal subjects", "Normal"),
}
_CTMD_DIAGNOSES = {"covid-19": "COVID-19", "covid19": "COVID-19", "cap": "CAP", "normal": "Normal"}
_CTMD_INDEX_GAP = 43  # the Label Index value the published Index.csv skips
_SLICE_ORDERS = ("name", "location")


def _ctmd_class_folders(root):
    """Maps each CT class to its folder under ``root`` (missing ones left out)."""
    folders = {}
    for label, names in _CTMD_FOLDERS.items():
        path = _child(root, names)
        if path is not None:
            folders[label] = path
    return folders


def _ctmd_label_rows(index_path, rows, n_label_rows):
    """Maps patient folder id to its row in ``Slice-level-labels.npy``.

    The published Index.csv numbers its rows ..., 41, 42, 44, 45, ...: it
    skips 43 while the label array has no gap, so every index above 42 is
    one too high and is decremented. The correction is applied only when the
    file really has that gap, so a corrected future release reads unchanged.
    """
    indices = {}
    for row in rows:
        text = row.get("Label Index", "")
        if text.strip() == "":
            continue
        try:
            indices[row["Folder/ID"]] = int(float(text))
        except ValueError:
            raise errors.DatasetLayoutError(
                f"{index_path}: `Label Index` {text!r} of {row['Folder/ID']} is not a "
                "number; re-download COVID-CT-MD from "
                "https://figshare.com/s/c20215f3d42c98f09ad0."
            ) from None
    values = set(indices.values())
    has_gap = _CTMD_INDEX_GAP not in values and any(v > _CTMD_INDEX_GAP for v in values)
    if has_gap:
        # Real file: ..., 41, 42, 44, 45, ... -> shift everything after the gap down by one.
        indices = {pid: (i - 1 if i > _CTMD_INDEX_GAP else i) for pid, i in indices.items()}
    for pid, i in indices.items():
        if n_label_rows is not None and not 0 <= i < n_label_rows:
            raise errors.DatasetLayoutError(
                f"{index_path}: `Label Index` of {pid} points at row {i} but "
                f"Slice-level-labels.npy has {n_label_rows} rows; use the Index.csv "
                "and Slice-level-labels.npy of the same COVID-CT-MD release."
            )
    return indices


def _load_slice_label_array(root):
    """Loads ``Slice-level-labels.npy`` or returns None with a warning."""
    path = os.path.join(root, "Slice-level-labels.npy")
    if not os.path.isfile(path):
        _warn(
            f"{root}: no `Slice-level-labels.npy` found; records get no slice labels "
            "(download it with COVID-CT-MD from https://figshare.com/s/c20215f3d42c98f09ad0)."
        )
        return None
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2:
        raise errors.DatasetLayoutError(
            f"{path}: expected a 2-D [patients, slices] array, found shape "
            f"{array.shape}; re-download it from https://figshare.com/s/c20215f3d42c98f09ad0."
        )
    return array


def _dicom_files(folder):
    """The ``.dcm`` files of a patient folder, by natural file-name order."""
    names = [
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(".dcm") and not entry.name.startswith(".")
    ]
    return sorted(names, key=_natural_key)


def _slice_location(path):
    """SliceLocation of a DICOM file, falling back to ImagePositionPatient z."""
    import pydicom  # imported here: only the "location" order needs it

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, force=True,
            specific_tags=["SliceLocation", "ImagePositionPatient"],
        )
    except Exception as exc:  # pydicom raises many types on a corrupt header
        raise errors.DatasetLayoutError(
            f"{path}: header unreadable ({type(exc).__name__}); re-download the file "
            "or use slice_order='name'."
        ) from exc
    if "SliceLocation" in ds and ds.SliceLocation not in (None, ""):
        return float(ds.SliceLocation)
    if "ImagePositionPatient" in ds and ds.ImagePositionPatient:
        return float(ds.ImagePositionPatient[2])
    raise errors.DatasetLayoutError(
        f"{path}: no SliceLocation or ImagePositionPatient to sort by; "
        "use slice_order='name' for this dataset."
    )


def _ordered_slices(folder, slice_order):
    """File names of a patient folder in the order the label array uses."""
    names = _dicom_files(folder)
    if slice_order == "location":
        names = sorted(names, key=lambda n: (_slice_location(os.path.join(folder, n)), _natural_key(n)))
    return names


def _dicom_demographics(folder, names):
    """(age, sex) from the first slice's header, or (None, None)."""
    if not names:
        return None, None
    import pydicom  # imported here: only read_dicom_demographics needs it

    try:
        ds = pydicom.dcmread(
            os.path.join(folder, names[0]),
            stop_before_pixels=True,
            force=True,
            specific_tags=["PatientAge", "PatientSex"],
        )
    except Exception:  # a broken header is reported by the series reader later
        return None, None
    return parse_age(ds.get("PatientAge", "")), parse_sex(ds.get("PatientSex", ""))


_ID_COLUMNS = ("Folder/ID", "Patient ID", "PatientID", "patient_id", "pid", "Subject-ID", "ID", "Folder")
_AGE_COLUMNS = ("Age", "Patient Age", "PatientAge", "age")
_SEX_COLUMNS = ("Sex", "Gender", "Patient Sex", "Patient Gender", "PatientSex", "sex", "gender")


def _find_metadata_csv(root):
    """A CSV in ``root`` (other than Index.csv) with an id and age or sex column."""
    for entry in sorted(os.listdir(root)):
        if not entry.lower().endswith(".csv") or entry.lower() == "index.csv":
            continue
        header, _ = _read_csv(os.path.join(root, entry))
        has_id = _column(header, *_ID_COLUMNS) is not None
        if has_id and (_column(header, *_AGE_COLUMNS) or _column(header, *_SEX_COLUMNS)):
            return os.path.join(root, entry)
    return None


def _read_demographics_csv(path):
    """Maps patient id to (age, sex) from a metadata CSV."""
    header, rows = _read_csv(path)
    id_col = _column(header, *_ID_COLUMNS)
    if id_col is None:
        raise errors.DatasetLayoutError(
            f"{path}: no patient id column (one of {', '.join(_ID_COLUMNS)}) found; "
            "add one or leave metadata_csv unset."
        )
    age_col, sex_col = _column(header, *_AGE_COLUMNS), _column(header, *_SEX_COLUMNS)
    return {
        row[id_col]: (
            parse_age(row.get(age_col)) if age_col else None,
            parse_sex(row.get(sex_col)) if sex_col else None,
        )
        for row in rows
        if row.get(id_col)
    }


def _ctmd_index(root):
    """Reads Index.csv into {patient: (diagnosis, row)} plus its path and rows."""
    index_path = _require_file(root, ("Index.csv",), "covid-ct-md")
    header, rows = _read_csv(index_path)
    _require_columns(index_path, header, ("Folder/ID", "Diagnosis", "Label Index"), "covid-ct-md")
    # Normalise header case so that the rest of the code can use fixed names.
    names = {col: _column(header, col) for col in ("Folder/ID", "Diagnosis", "Label Index")}
    rows = [{key: row.get(actual, "") for key, actual in names.items()} for row in rows]
    return index_path, [row for row in rows if row["Folder/ID"]]


def _ctmd_slice_labels(names, array, row):
    """``(file_name, 0/1)`` pairs from row ``row`` of the label array, or None.

    None when the patient has no label row, or more slices than the array
    has columns (then the files cannot be matched to the labels).
    """
    if array is None or row is None or len(names) > array.shape[1]:
        return None
    return tuple((name, int(value)) for name, value in zip(names, array[row, : len(names)]))


def _ctmd_record(folder, label, names, slice_labels, row, demographics, read_dicom_demographics):
    """The record of one COVID-CT-MD patient folder."""
    pid = os.path.basename(folder)
    age, sex = demographics.get(pid, (None, None))
    if read_dicom_demographics and age is None and sex is None:
        age, sex = _dicom_demographics(folder, names)
    return Record(
        patient_id=pid,
        label=label,
        paths=(folder,),
        dataset="covid-ct-md",
        slice_labels=slice_labels,
        age=age,
        sex=sex,
        extra={
            "n_slices": len(names),
            "label_row": row,
            "class_folder": os.path.basename(os.path.dirname(folder)),
        },
    )


def covid_ct_md(root, slice_order="name", metadata_csv=None, read_dicom_demographics=False):
    """Reads COVID-CT-MD: one record per patient CT series, CT 3-class labels.

    Dataset: COVID-CT-MD, Afshar et al., "COVID-CT-MD, COVID-19 computed
    tomography scan dataset applicable in machine learning and deep
    learning", Scientific Data 8, 121 (2021). Download:
    https://figshare.com/s/c20215f3d42c98f09ad0 (description and sample:
    https://github.com/ShahinSHH/COVID-CT-MD).

    Layout: ``COVID-19 Cases/<P001>/``, ``Cap Cases/<cap001>/`` and
    ``Normal Cases/<normal001>/`` folders of DICOM slices; ``Index.csv``
    (``Label Index``, ``Diagnosis``, ``Relative Path``, ``Folder/ID``) names
    the patients with slice labels and their row in ``Slice-level-labels.npy``
    ([labelled patients, max slices] of 0/1, 1 = infected). The published
    Index.csv skips index 43; indices above 42 are decremented to match the
    array (only when the gap is present).

    Classes (``CLASS_NAMES["ct3"]``): folder/Diagnosis ``COVID-19`` ->
    "COVID-19", ``CAP`` -> "CAP", ``Normal`` -> "Normal". Patient folders
    present on disk but absent from Index.csv (the Normal cases) are included
    with the label of their class folder and ``slice_labels=None``.

    Args:
        root: the folder that holds ``COVID-19 Cases`` and ``Index.csv``.
        slice_order: how column i of the label array maps to a file:
            ``"name"`` (default, as in COVIDx CT's construction script) takes
            the i-th ``.dcm`` file in natural file-name order (``IM2`` before
            ``IM10``); ``"location"`` sorts by the DICOM SliceLocation tag
            (ascending), which the dataset's README recommends. Reading tags
            needs pydicom and touches every file.
        metadata_csv: a CSV with a patient-id column and Age/Sex columns.
            None looks for such a CSV in ``root`` and carries on without one.
        read_dicom_demographics: read PatientAge/PatientSex from the first
            slice header of patients the CSV does not cover.

    Returns:
        A sorted list of :class:`Record` with ``paths=(patient_folder,)``,
        ``slice_labels`` as ``(file_name, 0/1)`` pairs for labelled patients,
        and ``extra`` holding ``n_slices``, ``label_row`` and ``class_folder``.

    Raises:
        DatasetLayoutError: ``root`` is missing, or has no Index.csv or no
            class folder, or Index.csv disagrees with the label array.
        ConfigurationError: ``slice_order`` is not one of ``"name"``, ``"location"``.

    Example:
        >>> records = covid_ct_md("data/COVID-CT-MD")        # doctest: +SKIP
        >>> records[0].patient_id, records[0].label, records[0].slice_labels[:2]  # doctest: +SKIP
        ('P001', 'COVID-19', (('IM0001.dcm', 0), ('IM0002.dcm', 0)))
    """
    if slice_order not in _SLICE_ORDERS:
        raise errors.ConfigurationError(
            f"`slice_order` must be one of {_SLICE_ORDERS}. Received: slice_order={slice_order!r}"
        )
    root = _check_root(root, "covid-ct-md")
    index_path, index_rows = _ctmd_index(root)
    class_folders = _ctmd_class_folders(root)
    if not class_folders:
        raise _layout_error("covid-ct-md", root, "no `COVID-19 Cases` folder found")
    array = _load_slice_label_array(root)
    n_rows = None if array is None else array.shape[0]
    label_rows = _ctmd_label_rows(index_path, index_rows, n_rows)
    diagnoses = {row["Folder/ID"]: _CTMD_DIAGNOSES.get(row["Diagnosis"].lower()) for row in index_rows}

    metadata_csv = metadata_csv or _find_metadata_csv(root)
    demographics = _read_demographics_csv(metadata_csv) if metadata_csv else {}

    records, empty, too_long = [], 0, 0
    for label, class_folder in class_folders.items():
        for folder in _subfolders(class_folder):
            names = _ordered_slices(folder, slice_order)
            if not names:
                empty += 1
                continue
            row = label_rows.get(os.path.basename(folder))
            slice_labels = _ctmd_slice_labels(names, array, row)
            too_long += slice_labels is None and row is not None and array is not None
            records.append(
                _ctmd_record(folder, label, names, slice_labels, row, demographics, read_dicom_demographics)
            )
    seen = {r.patient_id for r in records}
    mismatched = sum(1 for r in records if diagnoses.get(r.patient_id) not in (None, r.label))
    missing = sum(1 for pid in diagnoses if pid not in seen)
    _warn_skipped(empty, "patient folders", root, "that hold no .dcm file")
    _warn_skipped(missing, "Index.csv patients", index_path, "whose folder is not on disk")
    _warn_skipped(
        too_long, "patients' slice labels", root,
        "because they have more slices than Slice-level-labels.npy has columns",
    )
    if mismatched:
        _warn(f"{index_path}: {mismatched} patients sit in a class folder that disagrees "
              "with their Diagnosis; the class folder was used.")
    return _sorted_records(records)


# --------------------------------------------------------------------------
# COVIDx CT
# --------------------------------------------------------------------------

COVIDX_CT_CLASSES = {0: "Normal", 1: "CAP", 2: "COVID-19"}
COVIDX_CT_SPLITS = ("train", "val", "test")
_COVIDX_VARIANTS = ("2A", "3A", "2B", "3B")
_COVIDX_IMAGE_DIRS = ("2A_images", "3A_images", "images")

_CNCB_NAME = re.compile(r"^((?:NCP|CP|Normal)_\d+)_")
_LIDC_NAME = re.compile(r"^(LIDC-IDRI-\d+)", re.IGNORECASE)
_CTMD_NAME = re.compile(r"^(COVIDCTMD-[^-]+)-")


def covidx_patient_id(file_name):
    """Patient id of a COVIDx CT slice file name.

    COVIDx CT publishes ids in its metadata but not in the split files, so
    the id is read from the name each source's construction script writes:

    * CNCB ``<class>_<patient>_<scan>_<slice>.png`` (``NCP_96_1328_0032.png``,
      ``CP_12_3456_0001.png``, ``Normal_5_123_0001.png``) -> the first two
      underscore tokens (``NCP_96``), so all scans of a patient group together;
    * LIDC-IDRI ``LIDC-IDRI-0001-<series uid>-0012.png`` -> ``LIDC-IDRI-0001``;
    * COVID-CT-MD ``COVIDCTMD-P001-IM0001.png`` -> ``COVIDCTMD-P001``;
    * any other name -> the name without extension, without a trailing slice
      index (``-0045`` or ``_0045``), then without a ``_z<digits>`` or
      ``_day...`` suffix and a ``_ct`` suffix (``volume-covid19-A-0003_ct-0045``
      -> ``volume-covid19-A-0003``).

    Args:
        file_name: a file name as listed in the split files.

    Returns:
        The patient id string.
    """
    name = os.path.basename(file_name)
    for pattern in (_CNCB_NAME, _LIDC_NAME, _CTMD_NAME):
        match = pattern.match(name)
        if match:
            return match.group(1)
    stem = os.path.splitext(name)[0]
    stem = re.sub(r"[-_]\d+$", "", stem)
    stem = re.sub(r"[-_](z\d+|day.*)$", "", stem, flags=re.IGNORECASE)
    stem = re.sub(r"_ct$", "", stem, flags=re.IGNORECASE)
    return stem or os.path.splitext(name)[0]


def _covidx_splits(split):
    """Normalises ``split`` to a tuple of split names."""
    if split is None:
        return COVIDX_CT_SPLITS
    splits = (split,) if isinstance(split, str) else tuple(split)
    for name in splits:
        if name not in COVIDX_CT_SPLITS:
            raise errors.ConfigurationError(
                f"`split` must be None or one of {COVIDX_CT_SPLITS}. Received: split={split!r}"
            )
    return splits


def _covidx_split_files(root, splits, variant):
    """Returns (variant, {split: path}) for the first variant with every file."""
    variants = _COVIDX_VARIANTS if variant is None else (variant,)
    for candidate in variants:
        paths = {s: os.path.join(root, f"{s}_COVIDx_CT-{candidate}.txt") for s in splits}
        if all(os.path.isfile(p) for p in paths.values()):
            return candidate, paths
    first = variants[0]
    raise _layout_error("covidx-ct", root, f"no `{splits[0]}_COVIDx_CT-{first}.txt` found")


def _parse_covidx_line(path, number, line):
    """Parses ``filename class xmin ymin xmax ymax`` into (name, label, box)."""
    parts = line.split()
    try:
        name, cls = parts[0], int(parts[1])
        box = tuple(int(float(v)) for v in parts[2:6])
        if len(box) != 4 or cls not in COVIDX_CT_CLASSES:
            raise ValueError
    except (IndexError, ValueError):
        raise errors.DatasetLayoutError(
            f"{path}: line {number} is not `filename class xmin ymin xmax ymax` with class "
            "0, 1 or 2; re-download COVIDx CT from https://www.kaggle.com/datasets/hgunraj/covidxct."
        ) from None
    return name, COVIDX_CT_CLASSES[cls], box


def covidx_ct(root, split=None, variant=None, patient_id_fn=None):
    """Reads COVIDx CT: one record per PNG slice, CT 3-class labels.

    Dataset: COVIDx CT-2A (and CT-3A), Gunraj et al., "COVID-Net CT-2:
    Enhanced deep neural networks for detection of COVID-19 from chest CT
    images through bigger, more diverse learning", Frontiers in Medicine 8
    (2021). Download: https://www.kaggle.com/datasets/hgunraj/covidxct.

    Layout: slices in ``2A_images/`` (``3A_images/`` or ``images/`` also
    accepted); split files ``{train,val,test}_COVIDx_CT-2A.txt`` (or ``-3A``,
    ``-2B``, ``-3B``), one ``filename class xmin ymin xmax ymax`` per line.

    Classes (``CLASS_NAMES["ct3"]``): 0 -> "Normal", 1 (Pneumonia) -> "CAP",
    2 -> "COVID-19". Patient ids come from the file names, see
    :func:`covidx_patient_id`. Files listed in a split file but absent from
    the image folder are skipped with one warning counting them.

    Args:
        root: the folder holding ``2A_images`` and the split files.
        split: None for all of train, val and test, a split name, or a list.
        variant: ``"2A"``, ``"3A"``, ``"2B"`` or ``"3B"``; None takes the first
            of those whose split files are all present.
        patient_id_fn: optional callable file name -> patient id, replacing
            :func:`covidx_patient_id` (e.g. a lookup in COVIDx's metadata.csv).

    Returns:
        A sorted list of :class:`Record`, one per slice, ``extra`` holding
        ``split``, ``box`` (xmin, ymin, xmax, ymax) and ``variant``.

    Raises:
        DatasetLayoutError: ``root``, the image folder or a split file is
            missing, or a line is malformed.
        ConfigurationError: ``split`` or ``variant`` is not a known name.

    Example:
        >>> records = covidx_ct("data/covidxct", split="val")   # doctest: +SKIP
        >>> records[0].patient_id, records[0].label, records[0].extra["box"]  # doctest: +SKIP
        ('CP_1070', 'CAP', (9, 94, 512, 405))
    """
    splits = _covidx_splits(split)
    if variant is not None and variant not in _COVIDX_VARIANTS:
        raise errors.ConfigurationError(
            f"`variant` must be None or one of {_COVIDX_VARIANTS}. Received: variant={variant!r}"
        )
    root = _check_root(root, "covidx-ct")
    image_dir = _child(root, _COVIDX_IMAGE_DIRS)
    if image_dir is None:
        raise _layout_error("covidx-ct", root, "no `2A_images` folder found")
    variant, split_files = _covidx_split_files(root, splits, variant)
    on_disk = set(os.listdir(image_dir))
    to_patient = patient_id_fn or covidx_patient_id
    records, missing = [], 0
    for split_name, path in split_files.items():
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                name, label, box = _parse_covidx_line(path, number, line)
                if name not in on_disk:
                    missing += 1
                    continue
                records.append(
                    Record(
                        patient_id=to_patient(name),
                        label=label,
                        paths=(os.path.join(image_dir, name),),
                        dataset="covidx-ct",
                        extra={"split": split_name, "box": box, "variant": variant},
                    )
                )
    _warn_skipped(missing, "listed slices", image_dir, "whose image file is missing")
    return _sorted_records(records)


# --------------------------------------------------------------------------
# SARS-CoV-2 CT-scan dataset
# --------------------------------------------------------------------------

_SARS_FOLDERS = {"COVID-19": ("COVID",), "Normal": ("non-COVID", "non_COVID", "nonCOVID")}


def sars_cov2_ct(root):
    """Reads the SARS-CoV-2 CT-scan dataset: one record per PNG, 2 classes.

    Dataset: Soares et al., "SARS-CoV-2 CT-scan dataset: A large dataset of
    real patients CT scans for SARS-CoV-2 identification", medRxiv (2020).
    Download: https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset.

    Layout: ``COVID/`` and ``non-COVID/`` folders of PNG slices.

    Classes (``CLASS_NAMES["transfer_ct"]``): ``COVID`` -> "COVID-19",
    ``non-COVID`` -> "Normal" (non-COVID holds patients without COVID-19,
    some with other lung disease; the Transfer paper calls the class normal).

    The dataset publishes no patient ids, so each image gets its own id,
    ``pseudonymize(<relative path>, namespace="sars-cov2-ct-image")``. Splits
    therefore cannot group slices of one patient, and a warning says so: the
    identical-content check of :func:`covid_keras.data.splits.check_leakage`
    is the only protection against leakage for this dataset.

    Args:
        root: the folder that holds ``COVID`` and ``non-COVID``.

    Returns:
        A sorted list of :class:`Record`, one per image, ``extra["folder"]``
        naming the source folder.

    Raises:
        DatasetLayoutError: ``root`` or one of the two folders is missing.

    Example:
        >>> records = sars_cov2_ct("data/sarscov2-ctscan")    # doctest: +SKIP
        >>> sorted({r.label for r in records})                 # doctest: +SKIP
        ['COVID-19', 'Normal']
    """
    root = _check_root(root, "sars-cov2-ct")
    records = []
    for label, names in _SARS_FOLDERS.items():
        folder = _child(root, names)
        if folder is None:
            raise _layout_error("sars-cov2-ct", root, f"no `{names[0]}` folder found")
        for path in _image_files(folder):
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            records.append(
                Record(
                    patient_id=pseudonymize(relative, namespace="sars-cov2-ct-image"),
                    label=label,
                    paths=(path,),
                    dataset="sars-cov2-ct",
                    extra={"folder": os.path.basename(folder)},
                )
            )
    _warn(
        f"{root}: the SARS-CoV-2 CT-scan dataset publishes no patient ids, so patient-grouped "
        "splitting is impossible; the identical-image check is the only leakage protection."
    )
    return _sorted_records(records)


# --------------------------------------------------------------------------
# Chest X-Ray Images (Pneumonia), Kermany et al.
# --------------------------------------------------------------------------

_KERMANY_SPLITS = ("train", "val", "test")
_KERMANY_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+\.[a-z]+$", re.IGNORECASE)
_KERMANY_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+\.[a-z]+$", re.IGNORECASE)
_KERMANY_TASKS = {
    "xraycnn_step1": {"normal": "normal", "bacteria": "bacterial", "virus": "viral"},
    "transfer_xray": {"normal": "Normal", "bacteria": "Pneumonia", "virus": "Pneumonia"},
}


def _kermany_base(root):
    """The folder holding train/val/test: root, root/chest_xray, or one below."""
    for base in (root, os.path.join(root, "chest_xray"), os.path.join(root, "chest_xray", "chest_xray")):
        if any(_child(base, (s,)) for s in _KERMANY_SPLITS):
            return base
    raise _layout_error("chest-xray-pneumonia", root, "no `chest_xray/train` folder found")


def _kermany_parse(name, class_folder):
    """(patient_id, finding) for a file name, or None when it fits no pattern."""
    if class_folder == "PNEUMONIA":
        match = _KERMANY_PNEUMONIA.match(name)
        return (match.group(1).lower(), match.group(2).lower()) if match else None
    match = _KERMANY_NORMAL.match(name)
    return (match.group(1).upper(), "normal") if match else None


def chest_xray_pneumonia(root, task="xraycnn_step1"):
    """Reads Kermany's pediatric chest X-rays: normal, bacterial, viral.

    Dataset: Kermany et al., "Identifying medical diagnoses and treatable
    diseases by image-based deep learning", Cell 172(5) (2018). Download:
    https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia
    (also Mendeley Data, https://data.mendeley.com/datasets/rscbjbr9sj/2).

    Layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``; root
    may be the folder holding ``chest_xray`` or ``chest_xray`` itself.

    Classes: ``task="xraycnn_step1"`` (``CLASS_NAMES["xraycnn_step1"]``):
    NORMAL -> "normal", ``person<N>_bacteria_<k>.jpeg`` -> "bacterial",
    ``person<N>_virus_<k>.jpeg`` -> "viral". ``task="transfer_xray"``:
    NORMAL -> "Normal", PNEUMONIA -> "Pneumonia".

    Patient ids: ``person<N>`` for pneumonia; for normals the name without
    its image counter, ``IM-0115-0001.jpeg`` -> ``IM-0115`` and
    ``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``. Image files that
    match neither pattern are skipped with one warning counting them.

    Args:
        root: the ``chest_xray`` folder or the folder holding it.
        task: ``"xraycnn_step1"`` or ``"transfer_xray"``.

    Returns:
        A sorted list of :class:`Record`, one per image, ``extra`` holding
        ``split`` (train/val/test) and ``finding`` (normal/bacteria/virus).

    Raises:
        DatasetLayoutError: ``root`` or its train/val/test folders are missing.
        ConfigurationError: ``task`` is unknown.

    Example:
        >>> records = chest_xray_pneumonia("data/chest_xray")  # doctest: +SKIP
        >>> records[0].patient_id, records[0].label, records[0].extra["split"]  # doctest: +SKIP
        ('IM-0001', 'normal', 'test')
    """
    if task not in _KERMANY_TASKS:
        raise errors.ConfigurationError(
            f"`task` must be one of {tuple(_KERMANY_TASKS)}. Received: task={task!r}"
        )
    root = _check_root(root, "chest-xray-pneumonia")
    base = _kermany_base(root)
    labels = _KERMANY_TASKS[task]
    records, unmatched = [], 0
    for split_name in _KERMANY_SPLITS:
        split_dir = _child(base, (split_name,))
        if split_dir is None:
            continue
        for class_folder in ("NORMAL", "PNEUMONIA"):
            folder = _child(split_dir, (class_folder,))
            if folder is None:
                continue
            for path in _image_files(folder):
                parsed = _kermany_parse(os.path.basename(path), class_folder)
                if parsed is None:
                    unmatched += 1
                    continue
                pid, finding = parsed
                records.append(
                    Record(
                        patient_id=pid,
                        label=labels[finding],
                        paths=(path,),
                        dataset="chest-xray-pneumonia",
                        extra={"split": split_name, "finding": finding},
                    )
                )
    if not records and not unmatched:
        raise _layout_error("chest-xray-pneumonia", base, "no `NORMAL` or `PNEUMONIA` images found")
    _warn_skipped(unmatched, "images", base, "whose file name fits neither person<N>_bacteria/virus_<k> nor IM-<n>-<k>")
    return _sorted_records(records)


# --------------------------------------------------------------------------
# COVID-19 image data collection, Cohen et al.
# --------------------------------------------------------------------------

_VIRAL_WORDS = {"viral", "sars", "mers", "varicella", "influenza", "herpes", "h1n1"}
_NONVIRAL_WORDS = {
    "bacterial", "fungal", "lipoid", "aspiration", "streptococcus", "klebsiella",
    "legionella", "mycoplasma", "nocardia", "e.coli", "chlamydophila", "staphylococcus",
    "mrsa", "pneumocystis", "aspergillosis",
}
_COHEN_TASKS = {
    "xraycnn_step2": {"covid": "COVID-19", "viral": "other viral", "nonviral": "non-viral pneumonia"},
    "transfer_xray": {
        "covid": "COVID-19", "viral": "Pneumonia", "nonviral": "Pneumonia",
        "pneumonia": "Pneumonia", "normal": "Normal",
    },
    "detl_b": {"covid": "covid"},
}
_CT_VIEWS = {"axial", "coronal", "sagittal", "ct"}


def finding_category(finding):
    """Groups a COVID-19 image data collection finding into a coarse category.

    Handles the hierarchical findings of current releases
    (``Pneumonia/Viral/COVID-19``, ``Pneumonia/Bacterial/Streptococcus``,
    ``Pneumonia/Fungal/Pneumocystis``, ``Pneumonia/Lipoid``, ``No Finding``)
    and the flat ones of early releases (``COVID-19``, ``SARS``,
    ``Streptococcus``, ``COVID-19, ARDS``).

    Args:
        finding: the raw ``finding`` value.

    Returns:
        ``"covid"``, ``"viral"`` (other viral), ``"nonviral"`` (bacterial,
        fungal, lipoid, aspiration), ``"pneumonia"`` (pneumonia of unstated
        cause), ``"normal"`` (No Finding), or None (todo, unknown, ARDS,
        tuberculosis and anything else).
    """
    text = (finding or "").strip().lower()
    if "covid" in text:
        return "covid"
    words = set(re.findall(r"[a-z0-9.]+", text))
    if words & _VIRAL_WORDS:
        return "viral"
    if words & _NONVIRAL_WORDS:
        return "nonviral"
    if text == "pneumonia":
        return "pneumonia"
    if text == "no finding":
        return "normal"
    return None


def _cohen_modality(row, columns):
    """The row's modality; early releases had no column and put CT in `view`."""
    if columns["modality"]:
        return row.get(columns["modality"], "")
    view = row.get(columns["view"], "") if columns["view"] else ""
    return "CT" if view.strip().lower() in _CT_VIEWS else "X-ray"


def _cohen_columns(path, header):
    """Maps the fields the adapter uses to this release's column names."""
    _require_columns(path, header, ("patientid", "finding", "filename"), "covid-chestxray")
    return {
        "patientid": _column(header, "patientid"),
        "finding": _column(header, "finding"),
        "filename": _column(header, "filename"),
        "view": _column(header, "view"),
        "modality": _column(header, "modality"),
        "folder": _column(header, "folder"),
        "age": _column(header, "age"),
        "sex": _column(header, "sex"),
        "offset": _column(header, "offset"),
    }


def _cohen_keep(row, columns, views, modality):
    """True when the row's view and modality are among those asked for."""
    if modality is not None and _cohen_modality(row, columns).lower() != modality.lower():
        return False
    if views is not None:
        view = row.get(columns["view"], "") if columns["view"] else ""
        return view.strip().lower() in {v.lower() for v in views}
    return True


def covid_chestxray(root, task="xraycnn_step2", views=("PA", "AP", "AP Supine"), modality="X-ray"):
    """Reads the COVID-19 image data collection with one paper's class list.

    Dataset: Cohen et al., "COVID-19 image data collection: Prospective
    predictions are the future", arXiv:2006.11988 (2020). Download:
    https://github.com/ieee8023/covid-chestxray-dataset (``metadata.csv``
    and ``images/``).

    Classes, by ``task`` (see :func:`finding_category` for the grouping):

    * ``"xraycnn_step2"`` (``CLASS_NAMES["xraycnn_step2"]``): COVID-19 ->
      "COVID-19"; other viral (SARS, MERS, influenza, varicella, herpes) ->
      "other viral"; bacterial, fungal, lipoid, aspiration -> "non-viral
      pneumonia"; No Finding, todo, unknown and unstated causes are dropped.
    * ``"transfer_xray"`` (``CLASS_NAMES["transfer_xray"]``): COVID-19 ->
      "COVID-19"; every other pneumonia -> "Pneumonia"; No Finding -> "Normal".
    * ``"detl_b"``: COVID-19 rows only, labelled "covid" (DETL Data-B).

    The raw finding is kept in ``extra["finding"]``. Rows whose image file is
    missing are skipped with one warning counting them.

    Args:
        root: the folder that holds ``metadata.csv`` and ``images``.
        task: ``"xraycnn_step2"``, ``"transfer_xray"`` or ``"detl_b"``.
        views: the ``view`` values to keep (any case), or None for all.
        modality: ``"X-ray"`` or ``"CT"``, or None for both. Early releases
            lacked the column; there a CT view (Axial, Coronal) means CT.

    Returns:
        A sorted list of :class:`Record`, patient id ``cxr-<patientid>``.

    Raises:
        DatasetLayoutError: ``root`` or ``metadata.csv`` is missing, or a
            needed column is absent.
        ConfigurationError: ``task`` is unknown.

    Example:
        >>> records = covid_chestxray("data/covid-chestxray-dataset")  # doctest: +SKIP
        >>> records[0].patient_id, records[0].label, records[0].extra["finding"]  # doctest: +SKIP
        ('cxr-10', 'other viral', 'Pneumonia/Viral/SARS')
    """
    if task not in _COHEN_TASKS:
        raise errors.ConfigurationError(
            f"`task` must be one of {tuple(_COHEN_TASKS)}. Received: task={task!r}"
        )
    root = _check_root(root, "covid-chestxray")
    path = _require_file(root, ("metadata.csv",), "covid-chestxray")
    header, rows = _read_csv(path)
    columns = _cohen_columns(path, header)
    labels = _COHEN_TASKS[task]
    records, missing = [], 0
    for row in rows:
        if not _cohen_keep(row, columns, views, modality):
            continue
        finding = row.get(columns["finding"], "")
        label = labels.get(finding_category(finding))
        if label is None:
            continue
        folder = row.get(columns["folder"], "") if columns["folder"] else ""
        image = os.path.join(root, folder or "images", row[columns["filename"]])
        if not row[columns["filename"]] or not os.path.isfile(image):
            missing += 1
            continue
        pid = row[columns["patientid"]] or pseudonymize(
            row[columns["filename"]], namespace="covid-chestxray-image"
        )
        records.append(
            Record(
                patient_id=f"cxr-{pid}",
                label=label,
                paths=(image,),
                dataset="covid-chestxray",
                age=parse_age(row.get(columns["age"])) if columns["age"] else None,
                sex=parse_sex(row.get(columns["sex"])) if columns["sex"] else None,
                extra={
                    "finding": finding,
                    "view": row.get(columns["view"], "") if columns["view"] else "",
                    "modality": _cohen_modality(row, columns),
                    "offset": row.get(columns["offset"], "") if columns["offset"] else "",
                },
            )
        )
    _warn_skipped(missing, "metadata rows", path, "whose image file is missing")
    return _sorted_records(records)


# --------------------------------------------------------------------------
# NIH ChestX-ray14 and DETL's Data-A / Data-B
# --------------------------------------------------------------------------

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
    "Pleural_Thickening", "Hernia",
)
DETL_OTHER_DISEASES = ("Atelectasis", "Cardiomegaly", "Infiltration", "Effusion", "Nodule", "Mass")
NIH_SUBSETS = ("data_a", "data_b")
_NIH_CSVS = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")


def _nih_image_index(root):
    """Maps image file name to path over ``images/`` and ``images_*/images/``."""
    folders = []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if not os.path.isdir(path) or not entry.lower().startswith("images"):
            continue
        inner = _child(path, ("images",))
        folders.append(inner if inner is not None else path)
    if not folders:
        raise _layout_error("nih-chestxray14", root, "no `images` folder found")
    index = {}
    for folder in folders:
        for entry in os.scandir(folder):
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                index.setdefault(entry.name, entry.path)
    return index


def _nih_rows(root):
    """Reads Data_Entry_2017.csv into dicts with parsed fields."""
    path = _require_file(root, _NIH_CSVS, "nih-chestxray14")
    header, rows = _read_csv(path)
    _require_columns(path, header, ("Image Index", "Finding Labels", "Patient ID"), "nih-chestxray14")
    cols = {
        "image": _column(header, "Image Index"),
        "findings": _column(header, "Finding Labels"),
        "patient": _column(header, "Patient ID"),
        "age": _column(header, "Patient Age"),
        "sex": _column(header, "Patient Gender", "Patient Sex"),
        "view": _column(header, "View Position"),
        "follow_up": _column(header, "Follow-up #"),
    }
    parsed = []
    for row in rows:
        pid = row.get(cols["patient"], "")
        parsed.append({
            "image": row.get(cols["image"], ""),
            "findings": frozenset(f.strip() for f in row.get(cols["findings"], "").split("|") if f.strip()),
            "patient_id": f"nih-{int(pid):05d}" if pid.isdigit() else f"nih-{pid}",
            "age": parse_age(row.get(cols["age"])) if cols["age"] else None,
            "sex": parse_sex(row.get(cols["sex"])) if cols["sex"] else None,
            "view": row.get(cols["view"], "") if cols["view"] else "",
            "follow_up": row.get(cols["follow_up"], "") if cols["follow_up"] else "",
        })
    return path, parsed


def _nih_record(row, path, label, subset):
    return Record(
        patient_id=row["patient_id"],
        label=label,
        paths=(path,),
        dataset="nih-chestxray14",
        age=row["age"],
        sex=row["sex"],
        extra={
            "finding": "|".join(sorted(row["findings"])),
            "view": row["view"],
            "follow_up": row["follow_up"],
            "subset": subset,
        },
    )


def _sample(pool, count, seed, stream, what, where):
    """Picks ``count`` items of ``pool`` reproducibly; all of them when too few.

    Each class draws from its own stream, ``default_rng([seed, stream])``, so
    changing one class's count leaves the other classes' samples unchanged.
    """
    if count is None:
        return list(pool)
    if len(pool) < count:
        _warn(f"{where}: only {len(pool)} {what} images are available, fewer than the "
              f"{count} asked for; all of them are used.")
        return list(pool)
    rng = np.random.default_rng([seed, stream])
    chosen = np.sort(rng.choice(len(pool), size=count, replace=False))
    return [pool[i] for i in chosen]


def _nih_data_a(rows, images):
    """Data-A: No Finding -> normal; findings without Pneumonia -> disease."""
    records = []
    for row in rows:
        if not row["findings"] or "Pneumonia" in row["findings"]:
            continue
        label = "normal" if row["findings"] == {"No Finding"} else "disease"
        if label == "disease" and "No Finding" in row["findings"]:
            continue  # contradictory row: both No Finding and a finding
        records.append(_nih_record(row, images[row["image"]], label, "data_a"))
    return records


def _nih_data_b(rows, images, seed, n_normal, n_pneumonia, n_per_other, other_classes, where):
    """Data-B's NIH part: sampled normals, exact Pneumonia, single-label others."""
    def pool(findings):
        return sorted((r for r in rows if r["findings"] == findings), key=lambda r: r["image"])

    picks = [("normal", "No Finding", _sample(pool({"No Finding"}), n_normal, seed, 0, "No Finding", where))]
    picks.append(("pneumonia", "Pneumonia", _sample(pool({"Pneumonia"}), n_pneumonia, seed, 1, "Pneumonia", where)))
    for i, name in enumerate(other_classes):
        picks.append(("other_disease", name, _sample(pool({name}), n_per_other, seed, 2 + i, name, where)))
    return [
        _nih_record(row, images[row["image"]], label, "data_b")
        for label, _, chosen in picks
        for row in chosen
    ]


def nih_chestxray14(
    root,
    subset="data_a",
    seed=0,
    n_normal=350,
    n_pneumonia=None,
    n_per_other=50,
    other_classes=DETL_OTHER_DISEASES,
):
    """Reads NIH ChestX-ray14 as DETL's Data-A, or the NIH part of Data-B.

    Dataset: Wang et al., "ChestX-ray8: Hospital-scale chest X-ray database
    and benchmarks on weakly-supervised classification and localization of
    common thorax diseases", CVPR 2017. Download:
    https://nihcc.app.box.com/v/ChestXray-NIHCC.

    Layout: ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``) and the
    PNGs in ``images/`` or ``images_001/images/`` ... ``images_012/images/``
    (all are searched).

    Classes:

    * ``subset="data_a"`` (``CLASS_NAMES["detl_a"]``): ``No Finding`` ->
      "normal"; one or more of the 13 findings other than Pneumonia, and not
      Pneumonia -> "disease"; every image carrying Pneumonia is excluded.
    * ``subset="data_b"`` (the NIH classes of ``CLASS_NAMES["detl_b"]``):
      "normal" = ``n_normal`` ``No Finding`` images sampled with ``seed``;
      "pneumonia" = images whose Finding Labels is exactly ``Pneumonia`` (the
      paper's 322; all of them unless ``n_pneumonia`` is set); "other_disease"
      = ``n_per_other`` images sampled with ``seed`` from each of
      ``other_classes``, each among images whose *only* finding is that class,
      so the classes never overlap. When fewer images are available than
      asked for, all are taken and a warning says so. Use
      :func:`detl_data_b` to add the covid class.

    Images listed in the CSV but missing on disk are skipped with one
    warning counting them (before sampling, so samples exist on disk).

    Args:
        root: the folder holding ``Data_Entry_2017.csv``.
        subset: ``"data_a"`` or ``"data_b"``.
        seed: sampling seed for Data-B; the same seed gives the same sample.
        n_normal: No Finding images in Data-B.
        n_pneumonia: Pneumonia-only images in Data-B; None takes all.
        n_per_other: images per other disease in Data-B.
        other_classes: the single-label findings forming other_disease.

    Returns:
        A sorted list of :class:`Record`, patient id ``nih-<Patient ID>``
        (zero-padded to 5 digits), age and sex from the CSV, ``extra``
        holding ``finding``, ``view``, ``follow_up`` and ``subset``.

    Raises:
        DatasetLayoutError: ``root``, the CSV or the image folders are missing.
        ConfigurationError: ``subset`` is unknown or an other class is not an
            NIH finding.

    Example:
        >>> records = nih_chestxray14("data/ChestXray-NIHCC", subset="data_b")  # doctest: +SKIP
        >>> sorted({r.label for r in records})                                 # doctest: +SKIP
        ['normal', 'other_disease', 'pneumonia']
    """
    if subset not in NIH_SUBSETS:
        raise errors.ConfigurationError(
            f"`subset` must be one of {NIH_SUBSETS}. Received: subset={subset!r}"
        )
    unknown = [name for name in other_classes if name not in NIH_FINDINGS or name == "Pneumonia"]
    if unknown:
        raise errors.ConfigurationError(
            f"`other_classes` must be NIH findings other than Pneumonia {NIH_FINDINGS}. "
            f"Received: other_classes={tuple(other_classes)!r}"
        )
    root = _check_root(root, "nih-chestxray14")
    csv_path, rows = _nih_rows(root)
    images = _nih_image_index(root)
    present = [row for row in rows if row["image"] in images]
    _warn_skipped(len(rows) - len(present), "CSV rows", csv_path, "whose image file is missing")
    if subset == "data_a":
        records = _nih_data_a(present, images)
    else:
        records = _nih_data_b(present, images, seed, n_normal, n_pneumonia, n_per_other, other_classes, root)
    return _sorted_records(records)


def detl_data_b(nih_root, covid_root, seed=0, n_covid=225, **nih_options):
    """DETL's Data-B: NIH normal/pneumonia/other_disease plus Cohen's covid.

    Follows Basu & Mitra (DETL): normal (350 sampled), pneumonia (322),
    other_disease (50 each of six findings) from NIH ChestX-ray14 (see
    :func:`nih_chestxray14` with ``subset="data_b"``) and covid (225 images)
    from the COVID-19 image data collection (``covid_chestxray(task="detl_b")``,
    PA/AP/AP Supine X-rays), ``n_covid`` sampled with ``seed``; when fewer are
    available all are taken with a warning.

    Args:
        nih_root: the NIH ChestX-ray14 folder.
        covid_root: the covid-chestxray-dataset folder.
        seed: sampling seed for every class.
        n_covid: covid images to sample; None takes all.
        **nih_options: passed to :func:`nih_chestxray14` (``n_normal``, ...).

    Returns:
        A sorted list of :class:`Record` with labels from ``CLASS_NAMES["detl_b"]``.

    Raises:
        DatasetLayoutError: either dataset folder is missing or malformed.

    Example:
        >>> records = detl_data_b("data/NIH", "data/covid-chestxray-dataset")  # doctest: +SKIP
        >>> sorted({r.label for r in records})                                # doctest: +SKIP
        ['covid', 'normal', 'other_disease', 'pneumonia']
    """
    nih = nih_chestxray14(nih_root, subset="data_b", seed=seed, **nih_options)
    covid_pool = covid_chestxray(covid_root, task="detl_b")
    covid = _sample(covid_pool, n_covid, seed, 100, "COVID-19", os.fspath(covid_root))
    return _sorted_records(nih + covid)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

DATASETS = {
    "covid-ct-md": covid_ct_md,
    "covidx-ct": covidx_ct,
    "sars-cov2-ct": sars_cov2_ct,
    "chest-xray-pneumonia": chest_xray_pneumonia,
    "covid-chestxray": covid_chestxray,
    "nih-chestxray14": nih_chestxray14,
}


def load_dataset(name, root, **options):
    """Reads a dataset by its registry name.

    Args:
        name: one of the keys of ``DATASETS``.
        root: the dataset folder (what ``--data`` points at).
        **options: keyword arguments of that dataset's adapter.

    Returns:
        The adapter's sorted list of :class:`Record`.

    Raises:
        ConfigurationError: ``name`` is not a registered dataset.
        DatasetLayoutError: the folder does not hold that dataset.

    Example:
        >>> records = load_dataset("chest-xray-pneumonia", "data/chest_xray")  # doctest: +SKIP
    """
    if name not in DATASETS:
        raise errors.ConfigurationError(
            f"Unknown dataset {name!r}; use one of {', '.join(sorted(DATASETS))} with --dataset."
        )
    return DATASETS[name](root, **options)


__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "Record",
    "load_dataset",
    "covid_ct_md",
    "covidx_ct",
    "covidx_patient_id",
    "sars_cov2_ct",
    "chest_xray_pneumonia",
    "covid_chestxray",
    "finding_category",
    "nih_chestxray14",
    "detl_data_b",
    "parse_age",
    "parse_sex",
]
