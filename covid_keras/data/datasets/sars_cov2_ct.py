"""The SARS-CoV-2 CT-scan dataset: one record per PNG, no patient ids."""

import os

from covid_keras.data.datasets._layout import (
    _check_root,
    _child,
    _image_files,
    _layout_error,
    _sorted_records,
    _warn,
)
from covid_keras.data.datasets.records import Record
from covid_keras.data.privacy import pseudonymize


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
