"""COVIDx CT: one record per PNG slice, patient ids read from file names."""

import os
import re

from covid_keras import errors
from covid_keras.data.datasets._layout import (
    _check_root,
    _child,
    _layout_error,
    _sorted_records,
    _warn_skipped,
)
from covid_keras.data.datasets.records import Record


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
