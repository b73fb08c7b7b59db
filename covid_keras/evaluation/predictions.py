"""Per-case predictions: the one file format every training command writes and every report reads.

A run keeps, for each group of cases it answered (the validation and
held-out test patients, each fold's validation patients), one JSON file::

    {"format": "covid_keras.predictions", "version": 1,
     "answer": "densenet",            # which model or head answered
     "level": "image",                # image | slice | study | volume
     "part": "test",                  # val | test
     "fold": null,                    # the fold's index in k-fold runs
     "classes": ["COVID-19", "Pneumonia", "Normal"],
     "rows": [{"key": "...", "patient_id": "p-3f2a...", "label": "Normal",
               "probabilities": {"COVID-19": 0.1, "Pneumonia": 0.2, "Normal": 0.7},
               "slice_index": 41,            # slice models only
               "study_label": "COVID-19",    # slice models: the patient's class
               "covariates": {"age": 61, "sex": "F"}}]}   # where the dataset publishes them

``label`` is the case's true class, or None for a slice the paper's rules
leave unlabelled (a clean slice of an infected patient): slice metrics skip
it, the patient-level answer (mean of the patient's slice probabilities)
uses it. Patient ids are the pseudonymous ones of the split; nothing else
of the patient is written.

Files are named ``predictions_<part>.json`` (``predictions_<answer>_<part>.json``
where one run has several answers) and are found by :func:`find_predictions`.
"""

import dataclasses
import glob
import json
import os

import numpy as np

from covid_keras import errors

FORMAT = "covid_keras.predictions"
VERSION = 1
LEVELS = ("image", "slice", "study", "volume")
#: Record fields and ``Record.extra`` keys a report may relate correctness to (paper 004).
COVARIATES = ("age", "sex", "bmi", "ethnicity")


@dataclasses.dataclass
class Predictions:
    """One predictions file, read back.

    Attributes:
        path: the file. answer, level, part, fold, classes: its header.
        rows: the per-case dicts (module docstring).
    """

    path: str
    answer: str
    level: str
    part: str
    fold: int | None
    classes: list
    rows: list

    def y_true(self):
        """int [n]: class index of each row's ``label`` (-1 where the row has none)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([-1 if r["label"] is None else index[r["label"]] for r in self.rows], dtype=np.int64)

    def probabilities(self):
        """float64 [n, classes]: each row's probabilities in class order."""
        if not self.rows:
            return np.zeros((0, len(self.classes)))
        return np.array([[r["probabilities"][c] for c in self.classes] for r in self.rows], dtype=np.float64)

    def patients(self):
        """str [n]: each row's pseudonymous patient id."""
        return np.array([r["patient_id"] for r in self.rows], dtype=object)


def covariates(record):
    """``{name: value}`` of the :data:`COVARIATES` a record carries (age and sex, or ``extra``); may be empty."""
    values = {"age": getattr(record, "age", None), "sex": getattr(record, "sex", None)}
    extra = getattr(record, "extra", None) or {}
    values.update({k: extra[k] for k in ("bmi", "ethnicity") if extra.get(k) is not None})
    return {k: v for k, v in values.items() if v is not None}


def case_row(key, patient_id, label, probabilities, classes, *, slice_index=None, study_label=None, record=None):
    """One row of a predictions file (module docstring); ``record`` adds its :func:`covariates`."""
    row = {"key": key, "patient_id": patient_id, "label": label,
           "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probabilities)}}
    if slice_index is not None:
        row["slice_index"] = int(slice_index)
    if study_label is not None:
        row["study_label"] = study_label
    found = covariates(record) if record is not None else {}
    if found:
        row["covariates"] = found
    return row


def write_predictions(path, rows, *, classes, level, answer, part, fold=None):
    """Writes one predictions file (atomically) and returns its path.

    Raises:
        ValueError: an unknown ``level``, or a row whose label is not one of ``classes``.
    """
    from covid_keras.training.runs import write_json

    if level not in LEVELS:
        raise ValueError(f"level {level!r}: not one of {', '.join(LEVELS)}")
    known = set(classes) | {None}
    bad = next((r["label"] for r in rows if r["label"] not in known), None)
    if bad is not None:
        raise ValueError(f"a row's label {bad!r} is not one of the classes {list(classes)}")
    write_json(path, {"format": FORMAT, "version": VERSION, "answer": answer, "level": level, "part": part,
                      "fold": fold, "classes": list(classes), "rows": list(rows)})
    return path


def read_predictions(path):
    """Reads a predictions file.

    Raises:
        ConfigurationError: the file is not one (an older run's per-case file, or another JSON file).
    """
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise errors.ConfigurationError(
            f"{path}: not a per-case predictions file of this version of covid_keras (the run is older than "
            "the evaluation reports); run its training command again to write them."
        )
    if data.get("version") != VERSION:
        raise errors.ConfigurationError(f"{path}: predictions format version {data.get('version')}, "
                                        f"this covid_keras reads version {VERSION}.")
    return Predictions(path=path, answer=data["answer"], level=data["level"], part=data["part"],
                       fold=data.get("fold"), classes=list(data["classes"]), rows=data["rows"])


def find_predictions(run_dir):
    """Every predictions file under ``run_dir`` (sorted; the report's own folder left out).

    Raises:
        ConfigurationError: ``run_dir`` is not a folder, holds no run
            (no ``config.json``), or holds no predictions of this format.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise errors.ConfigurationError(f"{run_dir}: not a folder; pass a run folder (runs/<command>/<name>).")
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        raise errors.ConfigurationError(f"{run_dir}: holds no run (no config.json); pass a run folder "
                                        "(runs/<command>/<name>) a training command wrote.")
    paths = sorted(p for p in glob.glob(os.path.join(run_dir, "**", "predictions*.json"), recursive=True)
                   if os.sep + "report" + os.sep not in p[len(run_dir):])
    if not paths:
        raise errors.ConfigurationError(
            f"{run_dir}: holds no per-case predictions (predictions_<part>.json); the run is older than the "
            "evaluation reports or has not finished: run its training command again."
        )
    return [read_predictions(p) for p in paths]


def patient_rows(predictions):
    """Slice rows aggregated per patient: the mean of the slice probabilities against the patient's class.

    The one patient-level answer of a slice model that the evaluation
    commands share (``evaluate.report``'s patient section,
    ``evaluate.demographics``); patients are grouped by patient id, not by
    record key (COVIDx-CT keeps one record per slice).

    Args:
        predictions: slice-level :class:`Predictions` files (one run part).

    Returns:
        One row per patient: ``patient_id``, ``label`` (the rows'
        ``study_label``, else their label), ``probabilities`` (mean over the
        patient's slices) and ``covariates`` (the first found).
    """
    grouped = {}
    for p in predictions:
        for row in p.rows:
            grouped.setdefault(row["patient_id"], []).append(row)
    out = []
    for patient, rows in grouped.items():
        label = next((r.get("study_label") for r in rows if r.get("study_label") is not None), None)
        label = label or next((r["label"] for r in rows if r["label"] is not None), None)
        classes = list(rows[0]["probabilities"])
        mean = {c: float(np.mean([r["probabilities"][c] for r in rows])) for c in classes}
        found = next((r["covariates"] for r in rows if r.get("covariates")), None)
        out.append({"patient_id": patient, "label": label, "probabilities": mean,
                    **({"covariates": found} if found else {})})
    return out
