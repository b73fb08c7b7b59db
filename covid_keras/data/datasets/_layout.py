"""Helpers shared by the dataset adapters: layout checks, CSV reading, warnings.

Layout errors name the dataset, where to download it and where ``--data``
should point (``_SOURCES``); warnings point at the first caller outside the
``covid_keras.data.datasets`` package.
"""

import csv
import os
import re
import sys
import warnings

from covid_keras import errors

# The package whose frames _warn skips (every adapter module lives in it).
_PACKAGE = __name__.rpartition(".")[0]

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
    """warnings.warn pointing at the first caller outside this package."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and f"{frame.f_globals.get('__name__')}.".startswith(f"{_PACKAGE}."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_skipped(count, what, where, reason):
    """One warning counting the skipped items, none when nothing was skipped."""
    if count:
        _warn(f"{where}: skipped {count} {what} {reason}.")
