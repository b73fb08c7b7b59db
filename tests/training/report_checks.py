"""evaluate.report on a real (phantom) training run: the report's sections are the run's predictions files.

Shared by the chain tests of every training command: each calls
:func:`check_report` on the run its module-scoped fixture trained.
"""

import json
import os

import numpy as np

from covid_keras.evaluation.predictions import find_predictions
from covid_keras.evaluation.report import write_report


def check_report(run_dir, n_boot=100, phantom=True):
    """Writes the run's report and checks it against the run's own predictions files; returns metrics.json.

    Every image / study / volume file outside the folds is one section
    whose case count and accuracy are the file's, by hand (argmax against
    the label); a slice file gives its labelled slices and its patients;
    fold files give one k-fold table. ``phantom``: the run trained on the
    built-in phantoms (no ``--data``), and the report must say so; a run
    on a dataset folder (even one of generated studies) must not.
    """
    written = write_report(run_dir, n_boot=n_boot)
    with open(written["metrics"]) as f:
        metrics = json.load(f)
    assert metrics["run"]["phantom"] is phantom
    by_file = {}
    for section in metrics["sections"]:
        by_file.setdefault(section.get("file"), []).append(section)
    folds = 0
    for predictions in find_predictions(run_dir):
        if predictions.fold is not None:
            folds += 1
            continue
        sections = by_file[os.path.relpath(predictions.path, run_dir)]
        y, p = predictions.y_true(), predictions.probabilities()
        labelled = y >= 0
        first = sections[0]
        assert first["n"] == int(labelled.sum()) and first["classes"] == predictions.classes
        assert first["accuracy"]["k"] == int(np.sum(p[labelled].argmax(1) == y[labelled]))
        assert len(sections) == (2 if predictions.level == "slice" else 1)
    assert sum(table["k"] for table in metrics["kfold"]) == folds
    for path in written["figures"]:
        assert os.path.getsize(path) > 1000, path
    text = open(written["markdown"]).read()
    assert ("**Phantom run.**" in text) is phantom
    return metrics
