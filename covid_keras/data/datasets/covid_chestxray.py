"""Cohen's COVID-19 image data collection, read with one paper's class list."""

import os
import re

from covid_keras import errors
from covid_keras.data.datasets._layout import (
    _check_root,
    _column,
    _read_csv,
    _require_columns,
    _require_file,
    _sorted_records,
    _warn_skipped,
    parse_age,
    parse_sex,
)
from covid_keras.data.datasets.records import Record
from covid_keras.data.privacy import pseudonymize


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
