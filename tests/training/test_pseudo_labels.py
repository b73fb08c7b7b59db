"""Stage 4's pseudo-labels: slices of label-only infected patients, from the (interpolated) training cache."""

import json

import keras
import numpy as np

from covid_keras.data import synthetic
from covid_keras.data.datasets import covid_ct_md
from covid_keras.preprocess.cache import build_cache
from covid_keras.preprocess.pipelines import PipelineOptions
from covid_keras.training import pipelines
from covid_keras.training.runs import RunFolder
from covid_keras.training.slice_level import SliceLevelConfig, _run_pseudo_labels, pseudo_labels


def _constant_model(probabilities):
    """Gives every slice the same class probabilities."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(np.log(probabilities)))
    return keras.Model(inputs, dense(x))


def test_pseudo_labels_come_from_the_interpolated_cache(tmp_path):
    config = synthetic.CTPhantomConfig(patients_per_class=2, size=48, min_slices=10, max_slices=12, seed=2,
                                       labelled_fraction=0.5)
    synthetic.write_ct_dataset(str(tmp_path / "data"), config)
    recs = covid_ct_md(str(tmp_path / "data"))
    folder = str(tmp_path / "cache")
    build_cache(recs, folder, PipelineOptions("ct_slices", size=32, interpolate=2), workers=1, progress=False)
    rows, classes = pipelines.manifest_rows(folder)
    patients = sorted({r.patient_id for r in rows})
    candidates = {r.id for r in rows if r.label != "Normal" and r.slice_label == -1}
    assert candidates and any(int(c.split("#")[1]) % 2 for c in candidates)  # interpolated ones too

    sure = _constant_model([0.1, 0.45, 0.45])
    chosen = pseudo_labels(sure, folder, rows, patients, threshold=0.4, batch_size=8)
    assert chosen == candidates
    selected = pipelines.select_slices(rows, patients, classes, pseudo=chosen)
    assert candidates <= set(selected)
    assert pseudo_labels(sure, folder, rows, patients, threshold=0.5, batch_size=8) == set()

    # Chosen once per run; a resumed run reads them back instead of choosing again.
    run = RunFolder.open(str(tmp_path / "run"), {"k": 1})
    split = {"train": patients}
    settings = SliceLevelConfig(pseudo_threshold=0.4, batch_size=8)
    assert _run_pseudo_labels(run, sure, folder, rows, split, settings, log=lambda m: None) == candidates
    assert set(json.loads((tmp_path / "run" / "pseudo_labels.json").read_text())) == candidates
    unsure = _constant_model([0.8, 0.1, 0.1])
    assert _run_pseudo_labels(run, unsure, folder, rows, split, settings, log=lambda m: None) == candidates


def test_pseudo_labels_follow_the_patients_class(tmp_path):
    """Only the slices of patients whose own class passes the threshold are chosen."""
    config = synthetic.CTPhantomConfig(patients_per_class=2, size=48, min_slices=10, max_slices=12, seed=3,
                                       labelled_fraction=0.5)
    synthetic.write_ct_dataset(str(tmp_path / "data"), config)
    recs = covid_ct_md(str(tmp_path / "data"))
    folder = str(tmp_path / "cache")
    build_cache(recs, folder, PipelineOptions("ct_slices", size=32), workers=1, progress=False)
    rows, classes = pipelines.manifest_rows(folder)
    assert classes == ["Normal", "CAP", "COVID-19"]
    patients = sorted({r.patient_id for r in rows})
    # Label-only patients: one CAP and one COVID-19 patient (phantom 2 of each class).
    unlabelled = {label: {r.id for r in rows if r.label == label and r.slice_label == -1}
                  for label in ("Normal", "CAP", "COVID-19")}
    assert unlabelled["CAP"] and unlabelled["COVID-19"]
    assert {r.patient_id for r in rows if r.id in unlabelled["CAP"]} == {"cap002"}
    assert {r.patient_id for r in rows if r.id in unlabelled["COVID-19"]} == {"P002"}

    cap_sure = _constant_model([0.1, 0.6, 0.3])  # Normal, CAP, COVID-19
    assert pseudo_labels(cap_sure, folder, rows, patients, threshold=0.5, batch_size=8) == unlabelled["CAP"]
    covid_sure = _constant_model([0.1, 0.3, 0.6])
    assert pseudo_labels(covid_sure, folder, rows, patients, threshold=0.5, batch_size=8) == unlabelled["COVID-19"]
    # Below the threshold for both: nothing; above it for both: both.
    assert pseudo_labels(_constant_model([0.2, 0.4, 0.4]), folder, rows, patients, threshold=0.5,
                         batch_size=8) == set()
    both = pseudo_labels(_constant_model([0.1, 0.45, 0.45]), folder, rows, patients, threshold=0.4, batch_size=8)
    assert both == unlabelled["CAP"] | unlabelled["COVID-19"]
    # Patients outside the given list are never chosen.
    assert pseudo_labels(cap_sure, folder, rows, ["P002"], threshold=0.5, batch_size=8) == set()
    # The chosen slices train as their patient's class.
    selected = pipelines.select_slices(rows, patients, classes, pseudo=unlabelled["CAP"])
    assert {selected[sid] for sid in unlabelled["CAP"]} == {classes.index("CAP")}
    assert not unlabelled["COVID-19"] & set(selected)
