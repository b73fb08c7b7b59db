"""Kermany's Chest X-Ray Images (Pneumonia): normal, bacterial, viral."""

import os
import re

from covid_keras import errors
from covid_keras.data.datasets._layout import (
    _check_root,
    _child,
    _image_files,
    _layout_error,
    _sorted_records,
    _warn_skipped,
)
from covid_keras.data.datasets.records import Record


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
