"""K-fold cross-validation: fresh models per fold, patient-disjoint folds, summaries, resuming.

Tiny synthetic records (6 patients, 2 studies each, no files: check_content=False), features
keyed by study, a two-layer Dense model trained by the real fit_stage in each fold's sub-run.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from covid_keras import errors
from covid_keras.data import splits
from covid_keras.data.datasets.records import Record
from covid_keras.evaluation import classification_report
from covid_keras.training import crossval
from covid_keras.training.fitting import EpochRecorder, fit_stage
from covid_keras.training.runs import RunFolder

CLASSES = ("Normal", "COVID-19")
K, SEED, EPOCHS = 3, 0, 4
PATIENTS = [(f"p{c}{j}", label) for c, label in enumerate(CLASSES) for j in range(3)]
RECORDS = [Record(pid, label, (f"{pid}/study{s}",), "synthetic") for pid, label in PATIENTS for s in range(2)]


def _features():
    """Three 4-value 'slices' per study; class 1 shifted, so the model can learn something."""
    rng = np.random.default_rng(7)
    return {r.paths[0]: (rng.normal(size=(3, 4)) + CLASSES.index(r.label) * 0.8).astype("float32")
            for r in RECORDS}


FEATURES = _features()


class Crash(Exception):
    pass


class CrashAtEpoch(keras.callbacks.Callback):
    """Raises when epoch ``epoch`` begins (the epochs before it are finished and backed up)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Crash(f"simulated crash at epoch {epoch}")


def _arrays(records):
    x = np.concatenate([FEATURES[r.paths[0]] for r in records])
    y = np.repeat([CLASSES.index(r.label) for r in records], 3).astype("int64")
    return x, y


class Trainer:
    """A train_fold that records what each call saw: records, layer names, weights, epochs trained."""

    def __init__(self, crash=None):
        self.crash = crash  # (fold, epoch) or None
        self.calls = {}

    def __call__(self, fold_run, train, val, fold):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(8, activation="relu")(inputs)  # auto names: a fresh session gives "dense"
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
        call = {"train": list(train), "val": None if val is None else list(val),
                "layers": [layer.name for layer in model.layers],
                "initial": [w.copy() for w in model.get_weights()]}
        self.calls[fold] = call
        recorder = EpochRecorder()
        extra = [recorder]
        if self.crash is not None and self.crash[0] == fold:
            extra.append(CrashAtEpoch(self.crash[1]))
        call["epochs"] = recorder.epochs  # filled while fit runs, kept when it crashes
        x_train, y_train = _arrays(train)
        train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(64, seed=1).batch(8)
        # The final model has no validation patients: fit_stage keeps its last weights.
        val_ds = None if val is None else tf.data.Dataset.from_tensor_slices(_arrays(val)).batch(8)
        fit_stage(model, fold_run, "stage", train_ds, val_ds, learning_rate=1e-2, epochs=EPOCHS, verbose=0,
                  log=lambda m: None, extra_callbacks=extra)
        call["final_weights"] = [w.copy() for w in model.get_weights()]
        x_eval, y_eval = _arrays(val if val is not None else train)
        return classification_report(y_eval, model(x_eval, training=False).numpy(), CLASSES)


def _cross_validate(path, train_fold, lines=None, **kwargs):
    run = RunFolder.open(path, {"test": "crossval"})
    log = lines.append if lines is not None else (lambda m: None)
    return crossval.cross_validate(run, RECORDS, k=K, seed=SEED, train_fold=train_fold, check_content=False,
                                   log=log, **kwargs)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run, clear_session spied on: (summary, trainer, events, run path)."""
    path = tmp_path_factory.mktemp("straight") / "run"
    events = []
    trainer = Trainer()
    original = keras.utils.clear_session

    def spy(*args, **kwargs):
        events.append("clear_session")
        return original(*args, **kwargs)

    def train_fold(fold_run, train, val, fold):
        events.append(f"train {fold}")
        return trainer(fold_run, train, val, fold)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.utils, "clear_session", spy)
        summary = _cross_validate(path, train_fold)
    return summary, trainer, events, path


def test_every_fold_trains_a_fresh_model(straight):
    summary, trainer, events, _ = straight
    assert events == ["clear_session", "train 1", "clear_session", "train 2", "clear_session", "train 3",
                      "clear_session", "train final"]
    # Fresh Keras state: every fold's auto-named layers are named as in a new process.
    names = [trainer.calls[fold]["layers"] for fold in (1, 2, 3, "final")]
    assert names[0][1:] == ["dense", "dense_1"] and all(n == names[0] for n in names)
    # Fresh weights: a fold starts from its own initialisation, not from the fold before's result.
    for before, after in ((1, 2), (2, 3), (3, "final")):
        for a, b in zip(trainer.calls[before]["final_weights"], trainer.calls[after]["initial"]):
            assert not np.array_equal(a, b)
    # ... the initialisation a new session seeded with seed + fold gives.
    keras.utils.clear_session()
    keras.utils.set_random_seed(SEED + 2)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8)(inputs)  # in Trainer's order: initialisers draw their seeds when made
    fresh = keras.Model(inputs, keras.layers.Dense(2)(x))
    for a, b in zip(fresh.get_weights(), trainer.calls[2]["initial"]):
        np.testing.assert_array_equal(a, b)


def test_folds_are_patient_disjoint_and_cover_every_patient(straight):
    _, trainer, _, path = straight
    everyone = {pid for pid, _ in PATIENTS}
    val_sets = [{r.patient_id for r in trainer.calls[i]["val"]} for i in range(1, K + 1)]
    assert sum(len(s) for s in val_sets) == len(everyone) and set().union(*val_sets) == everyone
    for i, val_patients in enumerate(val_sets, start=1):
        train_patients = {r.patient_id for r in trainer.calls[i]["train"]}
        assert not train_patients & val_patients
        assert train_patients | val_patients == everyone
        # Stratified: one patient of each class in each validation fold (3 per class, 3 folds).
        assert sorted(dict(PATIENTS)[p] for p in val_patients) == sorted(CLASSES)
    saved = json.loads((path / "folds.json").read_text())
    assert [set(f["val"]) for f in saved["folds"]] == val_sets
    assert {r.patient_id for r in trainer.calls["final"]["train"]} == everyone
    assert trainer.calls["final"]["val"] is None


def test_reports_and_summary(straight):
    summary, _, _, path = straight
    for i in range(1, K + 1):
        assert (path / "folds" / f"fold_{i}" / "report.json").exists()
    written = json.loads((path / "crossval.json").read_text())
    assert written == summary
    assert written["k"] == K and len(written["folds"]) == K and written["std_ddof"] == 0
    assert [f["fold"] for f in written["folds"]] == [1, 2, 3]
    assert [f["val_patients"] for f in written["folds"]] == [2, 2, 2]
    for name, get in (("accuracy", lambda r: r["accuracy"]),
                      ("sensitivity/COVID-19", lambda r: r["sensitivity"]["COVID-19"]),
                      ("specificity/Normal", lambda r: r["specificity"]["Normal"])):
        values = [get(f["report"]) for f in written["folds"]]
        assert written["mean"][name] == pytest.approx(np.mean(values))
        assert written["std"][name] == pytest.approx(np.std(values))  # ddof=0
        assert written["counts"][name] == K
    assert "confusion" not in written["mean"]  # lists stay per fold
    assert written["final"]["n"] == 36  # the final model's report: on all 12 studies' slices


def test_summary_skips_none_values_and_counts_them():
    reports = [{"accuracy": 0.5, "sensitivity": {"CAP": None, "Normal": 1.0}, "name": "x", "confusion": [[1]]},
               {"accuracy": 1.0, "sensitivity": {"CAP": 0.25, "Normal": 0.5}},
               {"accuracy": 0.75, "sensitivity": {"CAP": None, "Normal": None}}]
    summary = crossval.summarise(reports)
    assert summary["mean"] == {"accuracy": pytest.approx(0.75), "sensitivity/CAP": 0.25,
                               "sensitivity/Normal": pytest.approx(0.75)}
    assert summary["std"]["accuracy"] == pytest.approx(np.std([0.5, 1.0, 0.75], ddof=0))
    assert summary["std"]["sensitivity/CAP"] == 0.0
    assert summary["counts"] == {"accuracy": 3, "sensitivity/CAP": 1, "sensitivity/Normal": 2}
    assert crossval.summarise([{"a": None}]) == {"mean": {"a": None}, "std": {"a": None}, "counts": {"a": 0}}


def test_an_interrupted_run_resumes_fold_by_fold(tmp_path, straight, monkeypatch):
    path = tmp_path / "run"
    crashed = Trainer(crash=(2, 2))
    with pytest.raises(Crash):
        _cross_validate(path, crashed)
    assert crashed.calls[1]["epochs"] == [0, 1, 2, 3] and crashed.calls[2]["epochs"] == [0, 1, 2]
    assert not (path / "folds" / "fold_2" / "report.json").exists()

    monkeypatch.setattr(splits, "kfold_splits", _stop)  # a resumed run reads folds.json, never splits again
    resumed, lines = Trainer(), []
    summary = _cross_validate(path, resumed, lines)
    assert 1 not in resumed.calls  # finished: its report is read back, train_fold is not called
    assert resumed.calls[2]["epochs"] == [2, 3]  # continues after the last finished epoch
    assert resumed.calls[3]["epochs"] == list(range(EPOCHS))
    assert resumed.calls["final"]["epochs"] == list(range(EPOCHS))
    assert lines[1].startswith("[fold 1/3] accuracy") and lines[1].endswith("(finished earlier)")
    assert lines[2].startswith("[fold 2/3] accuracy") and lines[2].endswith("(resumed)")
    assert not lines[3].endswith(")")
    # fit_stage repeats an uninterrupted stage exactly, and each fold is seeded on its own.
    assert summary == straight[0]

    again, lines = Trainer(), []
    assert _cross_validate(path, again, lines) == summary
    assert again.calls == {}  # every fold and the final model finished earlier
    assert lines[-1] == f"[final] accuracy {summary['final']['accuracy']:.4g} (finished earlier)"


def test_final_false_trains_no_final_model(tmp_path, straight):
    path = tmp_path / "run"
    shutil.copytree(straight[3], path)
    shutil.rmtree(path / "final")
    trainer = Trainer()
    summary = _cross_validate(path, trainer, final=False)
    assert trainer.calls == {} and summary["final"] is None and not os.path.exists(path / "final")
    assert summary["folds"] == straight[0]["folds"]


class Stop(Exception):
    pass


def _stop(*args):
    raise Stop


def test_bad_k_and_changed_records_are_refused(tmp_path):
    run = RunFolder.open(tmp_path / "run", {"test": "errors"})

    def cv(records=RECORDS, **kwargs):
        kwargs = {"k": K, "seed": SEED, "train_fold": _stop, "check_content": False, "log": lambda m: None,
                  **kwargs}
        return crossval.cross_validate(run, records, **kwargs)

    with pytest.raises(errors.ConfigurationError, match="at least 2"):
        cv(k=1)
    with pytest.raises(errors.ConfigurationError, match="class 'COVID-19' has 3"):
        cv(k=4)
    with pytest.raises(errors.ConfigurationError, match="7 folds need at least 7 patients, but there are 6"):
        cv(k=7, stratify=False)
    assert not os.path.exists(run.file("folds.json"))
    with pytest.raises(Stop):
        cv()  # splits, writes folds.json, stops in fold 1
    assert os.path.exists(run.file("folds.json"))
    with pytest.raises(errors.ConfigurationError, match="holds 3 folds, not k=2"):
        cv(k=2)
    with pytest.raises(errors.ConfigurationError, match="other patients than the records"):
        cv([r for r in RECORDS if r.patient_id != "p00"] + [Record("p09", "Normal", ("p09/s",), "synthetic")])
    with pytest.raises(errors.ConfigurationError, match="must return a dict"):
        cv(train_fold=lambda *args: 0.5)
