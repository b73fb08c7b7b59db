"""A run's data audit: leakage across its split, and shortcut probes (``python -m evaluate.audit``).

:func:`audit_run` reads the run's records (``records.json``,
:func:`covid_keras.training.runs.read_records`) and its split
(``split.json`` and / or ``folds.json``, every fold), reads every study once
(:func:`scan_record`: X-ray and CT-slice pictures and DICOM files with
:func:`covid_keras.data.read_xray`, CT series folders with
:func:`covid_keras.data.read_ct_series`) and reports

* leakage (:mod:`covid_keras.evaluation.leakage`): patients on both sides
  of a boundary, identical files or pixels, near-duplicate images
  (perceptual-hash candidates confirmed on thumbnails);
* shortcut probes (:mod:`covid_keras.evaluation.shortcuts`): whether the
  class can be read from the image border outside the body, or from the
  non-identifying DICOM metadata.

:func:`write_audit` writes ``RUN_DIR/report/audit.json`` and ``audit.md``.
Records are named by pseudonymous patient id and record key, never by path.

Example:
    >>> from covid_keras.evaluation import audit
    >>> report = audit.audit_run("runs/xray_cnn/synthetic-xray-1a2b3c4d", permutations=200)  # doctest: +SKIP
    >>> audit.write_audit("runs/xray_cnn/synthetic-xray-1a2b3c4d", report)                  # doctest: +SKIP
    >>> report["warnings"]                                                                     # doctest: +SKIP
    []
"""

import dataclasses
import os
import typing
import warnings

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import leakage, shortcuts
from covid_keras.evaluation.leakage import (
    MAX_DIFFERENCE,
    PHASH_SIZE,
    PHASH_THRESHOLD,
    Fingerprint,
)
from covid_keras.evaluation.shortcuts import ALPHA, MIN_GAIN, PERMUTATIONS

FORMAT = "covid_keras.audit"
VERSION = 2
#: Datasets whose picture files are CT slices (their border is what lies outside the body), not radiographs.
CT_IMAGE_DATASETS = frozenset({"sars-cov2-ct", "covidx-ct"})
#: The window (HU) CT slices are shown in before they are hashed: the lung window (width 1500, level -600).
HASH_WINDOW = (-1350.0, 150.0)
#: How many findings of one kind ``audit.md`` lists (``audit.json`` keeps up to :data:`leakage.MAX_LISTED`).
MD_LISTED = 20


@dataclasses.dataclass
class RecordScan:
    """What the audit read from one record.

    Attributes:
        fingerprint: its :class:`covid_keras.evaluation.leakage.Fingerprint`.
        label: its class.
        kind: ``"radiograph"``, ``"ct-image"`` (a CT slice as a picture or
            a DICOM file) or ``"ct-series"``.
        border: the border probe's features (``shortcuts.radiograph_border``
            or ``shortcuts.outside_body``), averaged over its images.
        metadata: the metadata probe's features, or None (no DICOM header).
    """

    fingerprint: Fingerprint
    label: str
    kind: str
    border: dict
    metadata: dict | None


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


class _ImageScan(typing.NamedTuple):
    """What one path of a record gave: an image file, or a CT series folder."""

    kind: str
    file_hashes: set
    pixel_hashes: set
    phash: np.ndarray  # bool [k, bits]
    thumbnails: np.ndarray  # float32 [k, d]
    border: dict
    metadata: dict | None


def _window01(hu):
    """HU in the lung window, as grey in [0, 1] (for hashing)."""
    from covid_keras.preprocess.body_slices import to_uint8

    return to_uint8(hu, normalization="window", window=HASH_WINDOW).astype(np.float32) / 255.0


def series_grey(hu):
    """A CT series' representative slices as the near-duplicate check sees them.

    Args:
        hu: float [z, y, x] in HU.

    Returns:
        ``(chosen, grey)``: the HU slices at
        :data:`covid_keras.evaluation.shortcuts.CT_SLICE_FRACTIONS` of the
        series' height, and each in the lung window (:data:`HASH_WINDOW`)
        as grey in [0, 1], for :func:`covid_keras.evaluation.leakage.perceptual_hash`
        and :func:`covid_keras.evaluation.leakage.thumbnail`.
    """
    chosen = np.asarray(hu)[shortcuts.representative_indices(np.shape(hu)[0])]
    return chosen, [_window01(s) for s in chosen]


def _scan_series(folder, hash_size):
    """The :class:`_ImageScan` of a CT series folder (hashed and probed on its representative slices)."""
    from covid_keras.data import read_ct_series

    ct = read_ct_series(folder)
    chosen, grey = series_grey(ct.hu)
    phash = np.stack([leakage.perceptual_hash(g, hash_size) for g in grey])
    thumbnails = np.stack([leakage.thumbnail(g) for g in grey])
    pixels = {leakage.pixel_hash(s) for s in ct.hu} - {None}
    meta = {**ct.meta, "pixel_spacing_row": ct.spacing[1], "pixel_spacing_col": ct.spacing[2],
            "Rows": ct.hu.shape[1], "Columns": ct.hu.shape[2]}
    return _ImageScan("ct-series", leakage.file_hashes(folder), pixels, phash, thumbnails,
                      shortcuts.ct_outside_body(chosen), shortcuts.metadata_features(meta))


def _dicom_header(path):
    """``(stored pixels, {tag: value})`` of a DICOM image file: the probe's tags only."""
    from pydicom.datadict import tag_for_keyword

    from covid_keras.data import dicom_files

    ds = dicom_files.read_dataset(path)
    stored = dicom_files.decode_pixels(ds, path)
    keywords = [t for t in shortcuts.CATEGORICAL_TAGS + shortcuts.NUMERIC_TAGS if tag_for_keyword(t) is not None]
    with dicom_files.pydicom_guard(path, error=errors.ImageReadError, what="its header"):
        meta = {tag: ds.get(tag) for tag in keywords if tag in ds}  # by keyword: the values
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if spacing is not None and len(spacing) == 2:
            meta["pixel_spacing_row"], meta["pixel_spacing_col"] = spacing
        meta["TransferSyntax"] = getattr(dicom_files.transfer_syntax(ds), "name", "")
        meta["lossy"] = dicom_files.is_lossy(ds)
        meta["multiframe"] = int(ds.get("NumberOfFrames") or 1) > 1
        meta = {k: (list(v) if hasattr(v, "__iter__") and not isinstance(v, str) else v) for k, v in meta.items()}
    return stored, meta


def _scan_file(path, dataset, hash_size):
    """The :class:`_ImageScan` of one image file (a DICOM file is read twice: as shown, and its stored pixels)."""
    from covid_keras.data import read_xray
    from covid_keras.data.dicom_files import looks_like_dicom

    image = read_xray(path)
    meta = None
    if looks_like_dicom(path):
        stored, header = _dicom_header(path)
        pixels = leakage.pixel_hash(stored)
        meta = shortcuts.metadata_features(header)
        is_ct = str(header.get("Modality", "")).strip().upper() == "CT"
    else:
        pixels = leakage.pixel_hash(image)  # the decoded grey levels: the same picture re-encoded matches
        is_ct = False
    kind = "ct-image" if is_ct or dataset in CT_IMAGE_DATASETS else "radiograph"
    border = shortcuts.ct_image_outside_body(image) if kind == "ct-image" else shortcuts.radiograph_border(image)
    return _ImageScan(kind, leakage.file_hashes(path), {pixels} - {None},
                      leakage.perceptual_hash(image, hash_size)[None], leakage.thumbnail(image)[None], border, meta)


def scan_record(record, hash_size=PHASH_SIZE):
    """Reads one record's images once for the leakage checks and the probes.

    Args:
        record: a :class:`covid_keras.data.datasets.Record` (image files, or
            one DICOM series folder).
        hash_size: the perceptual hash's side (``hash_size ** 2`` bits).

    Returns:
        A :class:`RecordScan`.

    Raises:
        CovidKerasError: a file cannot be read (ImageReadError,
            DicomReadError, NoDicomError, SeriesGeometryError, ...).
        OSError: a file vanished or cannot be opened.

    Example:
        >>> scan = scan_record(records[0])  # doctest: +SKIP
        >>> scan.kind, len(scan.fingerprint.phashes)  # doctest: +SKIP
        ('radiograph', 1)
    """
    from covid_keras.preprocess.cache import record_key

    parts = [_scan_series(p, hash_size) if os.path.isdir(p) else _scan_file(p, record.dataset, hash_size)
             for p in record.paths]
    if not parts:
        raise errors.ImageReadError(f"record {record_key(record)} has no image paths; train the run again.")
    metadata = next((p.metadata for p in parts if p.metadata is not None), None)
    fingerprint = Fingerprint(key=record_key(record), patient_id=record.patient_id,
                              file_hashes=set().union(*(p.file_hashes for p in parts)),
                              pixel_hashes=set().union(*(p.pixel_hashes for p in parts)),
                              phashes=[p.phash for p in parts], thumbnails=[p.thumbnails for p in parts])
    return RecordScan(fingerprint, record.label, parts[0].kind, shortcuts.mean_features([p.border for p in parts]),
                      metadata)


def scan_records(records, hash_size=PHASH_SIZE, progress=False):
    """:func:`scan_record` of every record; unreadable ones are counted, not fatal.

    Returns:
        ``(scans, unreadable)``: the :class:`RecordScan` list, and
        ``[{"key", "patient_id", "error"}]`` (the error's type only: its
        message names the file) of the records that could not be read.
    """
    from covid_keras.preprocess.cache import record_key

    scans, unreadable = [], []
    for record in _progress(records, progress):
        try:
            scans.append(scan_record(record, hash_size))
        except (errors.CovidKerasError, OSError) as e:  # one bad study does not stop the audit
            unreadable.append({"key": record_key(record), "patient_id": record.patient_id,
                               "error": type(e).__name__})
    if unreadable:
        warnings.warn(f"{len(unreadable)} of {len(records)} records could not be read and were not audited "
                      "(audit.json lists their keys).", UserWarning, stacklevel=2)
    return scans, unreadable


def _progress(records, progress):
    if not progress:
        return records
    from tqdm import tqdm

    return tqdm(records, desc="audit: reading", unit="record", leave=False)


# --------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------


def _check_args(phash_threshold, phash_size, max_difference, permutations, alpha, min_gain):
    """ConfigurationError for settings out of range; returns the hash threshold (None: a quarter of the bits)."""
    shortcuts.check_probe_args(permutations, alpha, min_gain)
    if isinstance(max_difference, bool) or not isinstance(max_difference, (int, float)) \
            or not 0 <= max_difference < 255:
        raise errors.ConfigurationError(
            f"`max_difference` must be a number of grey levels in [0, 255). Received: {max_difference}"
        )
    if isinstance(phash_size, bool) or int(phash_size) != phash_size or phash_size < 2:
        raise errors.ConfigurationError(f"`phash_size` must be an integer of at least 2. Received: {phash_size}")
    bits = int(phash_size) ** 2
    if phash_threshold is None:
        return bits * PHASH_THRESHOLD // PHASH_SIZE**2
    if isinstance(phash_threshold, bool) or not isinstance(phash_threshold, (int, float)) \
            or int(phash_threshold) != phash_threshold or not 0 <= phash_threshold < bits:
        raise errors.ConfigurationError(
            f"`phash_threshold` must be an integer in [0, {bits}) for a {bits}-bit hash. "
            f"Received: {phash_threshold}"
        )
    return int(phash_threshold)


def _assigned(records, partitions, run_dir):
    """The records whose patient is on a side of some partition; an error when none is."""
    patients = set().union(*(set().union(*p.sides.values()) for p in partitions))
    kept = [r for r in records if r.patient_id in patients]
    if not kept:
        raise errors.ConfigurationError(
            f"{run_dir}: no record of records.json belongs to a patient of its split; "
            "the files come from different runs, train the run again."
        )
    return kept


def _probes(scans, permutations, alpha, min_gain, seed):
    labels = [s.label for s in scans]
    patients = [s.fingerprint.patient_id for s in scans]
    kinds = sorted({s.kind for s in scans})
    common = {"permutations": permutations, "alpha": alpha, "min_gain": min_gain, "seed": seed}
    border = shortcuts.shortcut_probe([s.border for s in scans], labels, patients, name="border", same_unit=True,
                                      **common)
    border["measures"] = [_BORDER_MEANS[k] for k in kinds]
    if all(s.metadata is None for s in scans):
        metadata = shortcuts.skipped("metadata", "no record is a DICOM file or series (PNG and JPEG files "
                                      "carry no scanner metadata)")
    else:
        metadata = shortcuts.shortcut_probe([s.metadata for s in scans], labels, patients, name="metadata",
                                            **common)
    return {"border": border, "metadata": metadata}


_BORDER_MEANS = {
    "radiograph": f"radiographs: the outer ring of a {shortcuts.FRAME_GRID}x{shortcuts.FRAME_GRID} grid of cells "
                  f"(about {1 / shortcuts.FRAME_GRID:.0%} of each side), each cell's mean and maximum ranked along "
                  "the ring",
    "ct-image": "CT-slice pictures: the pixels outside the body mask",
    "ct-series": f"CT series: the voxels outside the body mask on the slices at "
                 f"{', '.join(f'{f:.0%}' for f in shortcuts.CT_SLICE_FRACTIONS)} of the series' height",
}


def _warnings(report):
    """The report's warning sentences."""
    out = []
    findings = report["leakage"]
    for entry in findings["patients_on_both_sides"]:
        out.append(f"{entry['partition']} {entry['boundary']}: {entry['count']} patient(s) on both sides.")
    for entry in findings["identical"]:
        out.append(f"{entry['partition']} {entry['boundary']}: {entry['count']} pair(s) of records of different "
                   "patients with identical files or pixels on both sides.")
    for entry in findings["near_duplicates"]:
        out.append(f"{entry['partition']} {entry['boundary']}: {entry['count']} pair(s) of near-duplicate images "
                   f"of different patients on both sides (perceptual hash distance <= "
                   f"{report['settings']['phash_threshold']} bits and thumbnail difference <= "
                   f"{report['settings']['max_difference']:g} grey levels).")
    kinds = report["records"]["kinds"]
    border = [text for kind, text in (("radiograph", "the films' outer frame"),
                                      ("ct-image", "what lies outside the body"),
                                      ("ct-series", "what lies outside the body")) if kind in kinds]
    what = {"border": " and ".join(dict.fromkeys(border)) or "the image border", "metadata": "the DICOM metadata"}
    for name, probe in report["shortcuts"].items():
        if probe.get("warning"):
            out.append(f"the class is readable from {what[name]}: balanced accuracy {probe['balanced_accuracy']:.2f} "
                       f"against chance {probe['chance']:.2f}, permutation p = {probe['p_value']:.3g} "
                       "(strongest features: "
                       f"{', '.join(probe['top_features'])}); a model may learn it instead of the lungs.")
    if report["records"]["unreadable"]:
        out.append(f"{len(report['records']['unreadable'])} record(s) could not be read and were not audited.")
    return out


def audit_run(run_dir, *, phash_threshold=None, phash_size=PHASH_SIZE, max_difference=MAX_DIFFERENCE,
              permutations=PERMUTATIONS, alpha=ALPHA, min_gain=MIN_GAIN, seed=0, progress=False):
    """Audits a run's split for leakage and its data for shortcuts.

    Args:
        run_dir: the training run's folder (``records.json`` and
            ``split.json`` and / or ``folds.json``).
        phash_threshold: largest perceptual-hash Hamming distance of a
            near-duplicate candidate; None: a quarter of the bits
            (:data:`covid_keras.evaluation.leakage.PHASH_THRESHOLD` of 256).
        phash_size: the perceptual hash's side (``phash_size ** 2`` bits).
        max_difference: largest thumbnail difference (grey levels,
            :func:`covid_keras.evaluation.leakage.thumbnail_difference`) that
            confirms a candidate as a near duplicate.
        permutations: permutations of each probe's permutation test.
        alpha: the probes' significance level.
        min_gain: balanced accuracy above chance (1 / K) a probe also needs for a warning.
        seed: seeds the probes' folds and permutations.
        progress: show a progress bar (stderr) while reading.

    Returns:
        The report dict (what ``audit.json`` holds): ``settings``,
        ``records``, ``partitions``, ``leakage``, ``shortcuts`` and
        ``warnings`` (sentences; empty when nothing was found).

    Raises:
        ConfigurationError: a setting is out of range, the run has no
            ``records.json`` or no split, or its records and split do not match.

    Example:
        >>> report = audit_run("runs/detl/phase2-synthetic-0a1b2c3d", phash_threshold=6)  # doctest: +SKIP
        >>> [p["name"] for p in report["partitions"]]  # doctest: +SKIP
        ['fold 1', 'fold 2', 'fold 3', 'fold 4', 'fold 5']
    """
    from covid_keras.training.runs import read_records

    phash_threshold = _check_args(phash_threshold, phash_size, max_difference, permutations, alpha, min_gain)
    run_dir = os.fspath(run_dir)
    partitions = leakage.read_partitions(run_dir)
    records = read_records(run_dir)
    audited = _assigned(records, partitions, run_dir)
    scans, unreadable = scan_records(audited, phash_size, progress)
    fingerprints = [s.fingerprint for s in scans]
    found = {"patients_on_both_sides": [], "identical": [], "near_duplicates": []}
    for partition in partitions:
        found["patients_on_both_sides"] += leakage.shared_patients(partition)
        matches = leakage.cross_matches(partition, fingerprints, phash_threshold, max_difference)
        found["identical"] += matches["identical"]
        found["near_duplicates"] += matches["near_duplicates"]
    report = {
        "format": FORMAT, "version": VERSION,
        "settings": {"phash_size": int(phash_size), "phash_bits": int(phash_size) ** 2,
                     "phash_threshold": int(phash_threshold), "thumbnail_size": leakage.THUMBNAIL_SIZE,
                     "max_difference": float(max_difference), "permutations": int(permutations), "alpha": alpha,
                     "min_gain": min_gain, "seed": seed,
                     "rule": "a probe warns when p_value < alpha and balanced_accuracy >= chance + min_gain "
                             "(chance = 1 / number of classes)"},
        "records": {"total": len(records), "audited": len(scans), "not_in_split": len(records) - len(audited),
                    "unreadable": unreadable, "kinds": sorted({s.kind for s in scans})},
        "partitions": [{"name": p.name, "sides": {s: len(v) for s, v in p.sides.items()}} for p in partitions],
        "leakage": found,
        "shortcuts": _probes(scans, permutations, alpha, min_gain, seed) if scans else
        {n: shortcuts.skipped(n, "no record could be read") for n in ("border", "metadata")},
    }
    report["warnings"] = _warnings(report)
    return report


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _count(entries):
    return sum(e["count"] for e in entries)


def summary(report, paths=None):
    """The one-line JSON summary of a report (what ``python -m evaluate.audit`` prints)."""
    found = report["leakage"]
    probe = {name: {k: p.get(k) for k in ("status", "balanced_accuracy", "chance", "p_value", "warning") if k in p}
             for name, p in report["shortcuts"].items()}
    out = {"warnings": len(report["warnings"]), "records": report["records"]["audited"],
           "patients_on_both_sides": _count(found["patients_on_both_sides"]),
           "identical_pairs": _count(found["identical"]), "near_duplicate_pairs": _count(found["near_duplicates"]),
           "shortcuts": probe}
    if paths:
        out["report"] = paths
    return out


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _markdown_leakage(report):
    found = report["leakage"]
    lines = ["## Leakage across the split", "",
             "| partition | sides (patients) | patients on both sides | identical pairs | near-duplicate pairs |",
             "|---|---|---|---|---|"]
    for p in report["partitions"]:
        def n(kind, name=p["name"]):
            return _count([e for e in found[kind] if e["partition"] == name])

        sides = ", ".join(f"{s} {c}" for s, c in p["sides"].items())
        lines.append(f"| {p['name']} | {sides} | {n('patients_on_both_sides')} | {n('identical')} | "
                     f"{n('near_duplicates')} |")
    lines.append("")
    for entry in found["patients_on_both_sides"]:
        lines.append(f"- {entry['partition']} {entry['boundary']}, patients on both sides: "
                     f"{', '.join(entry['patients'][:MD_LISTED])}" + (" ..." if entry["count"] > MD_LISTED else ""))
    for kind, title in (("identical", "identical"), ("near_duplicates", "near duplicates")):
        for entry in found[kind]:
            a, b = entry["boundary"].split("/")
            pairs = [f"{pair[a]['key']} ~ {pair[b]['key']}"
                     + (f" ({pair['by']})" if "by" in pair else
                        f" (distance {pair['distance']}, difference {pair['difference']:g})")
                     for pair in entry["pairs"][:MD_LISTED]]
            more = " ..." if entry["count"] > MD_LISTED else ""
            lines.append(f"- {entry['partition']} {entry['boundary']}, {title} ({a} ~ {b}): {'; '.join(pairs)}{more}")
    return lines


def _markdown_probes(report):
    lines = ["## Shortcut probes", "",
             ("A scaled, class-weighted logistic regression fitted on features that should carry no diagnosis, "
              "scored by its balanced accuracy (the mean recall of the classes) in patient-grouped "
              "cross-validation and tested against chance by permuting the patients' labels. "
              f"Rule: {report['settings']['rule']}."), "",
             ("| probe | status | records | features | balanced accuracy | chance | majority share | "
              "permutation mean | p | verdict |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, p in report["shortcuts"].items():
        if p["status"] != "ok":
            lines.append(f"| {name} | skipped | {p.get('records', '-')} | - | - | - | - | - | - | {p['reason']} |")
            continue
        verdict = "**WARNING: class readable**" if p["warning"] else "not readable"
        lines.append(f"| {name} | ok | {p['records']} | {p['features']} | {_number(p['balanced_accuracy'])} | "
                     f"{_number(p['chance'])} | {_number(p['majority_share'])} | {_number(p['permutation_mean'])} | "
                     f"{_number(p['p_value'])} | {verdict} |")
        notes.append(f"- {name}: {p['folds']} folds, {p['permutations']} permutations of the {p['permuted']}' "
                     f"labels; strongest features: {', '.join(p['top_features'])}.")
    measures = report["shortcuts"]["border"].get("measures")
    if measures:
        notes.append(f"- border measured on {'; '.join(measures)}.")
    return lines + [""] + notes


def markdown(report, title="Data audit"):
    """``audit.md``: the report as tables and sentences."""
    s, r = report["settings"], report["records"]
    lines = [f"# {title}", "",
             (f"{r['audited']} of {r['total']} records audited ({', '.join(r['kinds']) or 'none'}); "
              f"{r['not_in_split']} not in the split, {len(r['unreadable'])} unreadable. Near duplicate: "
              f"perceptual hash ({s['phash_bits']} bits) distance <= {s['phash_threshold']} and "
              f"{s['thumbnail_size']}x{s['thumbnail_size']} thumbnail difference <= {s['max_difference']:g} grey "
              "levels. Records are named by pseudonymous patient id and record key."), "", "## Warnings", ""]
    lines += [f"- WARNING: {w}" for w in report["warnings"]] or ["None."]
    lines += [""] + _markdown_leakage(report) + [""] + _markdown_probes(report)
    return "\n".join(lines) + "\n"


def write_audit(run_dir, report):
    """Writes ``RUN_DIR/report/audit.json`` and ``audit.md``.

    Returns:
        ``{"json": path, "markdown": path}``.
    """
    from covid_keras.training.runs import write_json

    folder = os.path.join(os.fspath(run_dir), "report")
    os.makedirs(folder, exist_ok=True)
    paths = {"json": os.path.join(folder, "audit.json"), "markdown": os.path.join(folder, "audit.md")}
    write_json(paths["json"], report)
    title = f"Data audit of run {os.path.basename(os.path.abspath(run_dir))}"
    with open(paths["markdown"], "w") as f:
        f.write(markdown(report, title))
    return paths


__all__ = ["CT_IMAGE_DATASETS", "RecordScan", "audit_run", "markdown", "scan_record", "scan_records", "series_grey",
           "summary", "write_audit"]
