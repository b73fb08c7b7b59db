"""COVID-CT-MD: one record per patient CT series, with slice labels."""

import os
from collections.abc import Sequence

import numpy as np

from covid_keras import errors
from covid_keras.data.datasets._layout import (
    _check_root,
    _child,
    _column,
    _layout_error,
    _natural_key,
    _read_csv,
    _require_columns,
    _require_file,
    _sorted_records,
    _subfolders,
    _warn,
    _warn_skipped,
    parse_age,
    parse_sex,
)
from covid_keras.data.datasets.records import Record


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
    """SliceLocation of a DICOM file, falling back to ImagePositionPatient z.

    Read through the package's DICOM guard (:func:`covid_keras.data.
    dicom_files.read_dataset`): no warning or error carries a tag's value.
    """
    from covid_keras.data import dicom_files

    try:
        ds = dicom_files.read_dataset(
            path, stop_before_pixels=True, specific_tags=["SliceLocation", "ImagePositionPatient"],
        )
    except errors.DicomReadError:
        raise errors.DatasetLayoutError(
            f"{path}: header unreadable (truncated or corrupt); re-download the file "
            "or use slice_order='name'."
        ) from None
    location = _first_number(ds.get("SliceLocation"))
    if location is None:
        position = ds.get("ImagePositionPatient")
        location = _first_number(position[2:3] if position and len(position) == 3 else None)
    if location is not None:
        return location
    raise errors.DatasetLayoutError(
        f"{path}: no SliceLocation or ImagePositionPatient to sort by; "
        "use slice_order='name' for this dataset."
    )


def _first_number(value):
    """The first value of a DS element as a float, or None (absent, empty, damaged)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # a MultiValue
        value = value[0] if len(value) else None
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


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
    from covid_keras.data import dicom_files

    try:
        ds = dicom_files.read_dataset(
            os.path.join(folder, names[0]), stop_before_pixels=True, specific_tags=["PatientAge", "PatientSex"],
        )
    except errors.DicomReadError:  # a broken header is reported by the series reader later
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
