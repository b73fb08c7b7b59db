"""NIH ChestX-ray14 as DETL's Data-A or Data-B, and DETL's full Data-B."""

import os

import numpy as np

from covid_keras import errors
from covid_keras.data.datasets._layout import (
    IMAGE_EXTENSIONS,
    _check_root,
    _child,
    _column,
    _layout_error,
    _read_csv,
    _require_columns,
    _require_file,
    _sorted_records,
    _warn,
    _warn_skipped,
    parse_age,
    parse_sex,
)
from covid_keras.data.datasets.covid_chestxray import covid_chestxray
from covid_keras.data.datasets.records import Record


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
