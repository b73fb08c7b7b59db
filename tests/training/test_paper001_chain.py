"""Paper 001's three levels end to end on tiny phantoms, and repeatability by seed.

The seeded tiny run learns (its slice classifier beats the majority rate of
its validation patients), its reports equal scikit-learn's on the same
predictions, stage 3 leaves BatchNormalization untouched, and the exported
patient pipeline gives the trained ensemble's answers.
"""

import contextlib
import json
import os

import numpy as np
import pytest

from covid_keras.training import pipelines
from covid_keras.training.patient_level import EnsembleConfig, PatientLevelConfig, train_ensemble, train_patient_level
from covid_keras.training.slice_level import PHANTOM_PRESET, SliceLevelConfig, train_slice_level

TINY = {**PHANTOM_PRESET, "image_size": 32, "batch_size": 8, "phantom_patients_per_class": 5, "phantom_size": 64,
        "interpolate": 2,
        "pretrain_epochs": 3, "last_layers_epochs": 1, "finetune_epochs": 1, "pseudo_epochs": 1,
        "verbose": 0, "quiet": True}
# The tiny run's patient split, recorded before the settings moved into the recipes.
TINY_SPLIT = {"train": ["P001", "P002", "P003", "cap001", "cap003", "cap004", "normal001", "normal004", "normal005"],
              "val": ["P005", "cap002", "normal002"], "test": ["P004", "cap005", "normal003"]}


@contextlib.contextmanager
def _cache_in(root):
    saved = os.environ.get("COVID_KERAS_CACHE")
    os.environ["COVID_KERAS_CACHE"] = str(root / "cache")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("COVID_KERAS_CACHE", None)
        else:
            os.environ["COVID_KERAS_CACHE"] = saved


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Runs the slice level twice with one seed, then the heads and the ensemble."""
    root = tmp_path_factory.mktemp("chain")
    with _cache_in(root):
        first = train_slice_level(SliceLevelConfig(**TINY, runs_root=str(root / "runs"),
                                                   export_dir=str(root / "saved_models"),
                                                   run_dir=str(root / "runs" / "slice_level" / "a")))
        second = train_slice_level(SliceLevelConfig(**TINY, runs_root=str(root / "other"), export_dir=None,
                                                     run_dir=str(root / "other" / "slice_level" / "b")))
        heads = train_patient_level(PatientLevelConfig(slice_run=str(root / "runs" / "slice_level" / "a"),
                                                       epochs=2, lstm_units=8, runs_root=str(root / "runs"),
                                                       verbose=0, quiet=True))
        ensemble = train_ensemble(EnsembleConfig(epochs=3, runs_root=str(root / "runs"), verbose=0, quiet=True,
                                                 export_dir=str(root / "saved_models")))
    return root, first, second, heads, ensemble


@pytest.mark.slow
def test_slice_level_run_folder_and_export(chain):
    root, first, _, _, _ = chain
    run = root / "runs" / "slice_level" / "a"
    for name in ("config.json", "split.json", "summary.json", "model.keras"):
        assert (run / name).exists(), name
    for stage in ("pretrain", "last_layers", "finetune", "pseudo_label"):
        assert (run / "logs" / f"{stage}.csv").exists()
        assert (run / "stages" / f"{stage}.weights.h5").exists()
        assert (run / "tensorboard" / stage).is_dir()
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))
    assert split == TINY_SPLIT  # as before the recipes
    stages = {name: json.loads((run / "stages" / f"{name}.json").read_text()) for name in first["stages"]}
    assert [(name, s["learning_rate"], s["epochs"]) for name, s in stages.items()] == [
        ("pretrain", 1e-3, 3), ("last_layers", 1e-4, 1), ("finetune", 1e-5, 1), ("pseudo_label", 1e-5, 1)]
    assert first["exported"].endswith(os.path.join("multiscale_resnet50", "1"))
    assert os.path.exists(os.path.join(first["exported"], "saved_model.pb"))
    assert set(first["slice_report"]) == {"val", "test"}


@pytest.mark.slow
def test_exported_slice_model_signature_and_recipe(chain):
    """The export's signatures are as before the recipes, and its metadata names the recipe and builder args."""
    import tensorflow as tf

    from covid_keras import serving

    _, first, _, _, _ = chain
    meta = serving.load_metadata(first["exported"])
    assert meta["input"] == {"name": "image", "shape": [None, 32, 32, 3], "dtype": "float32", "range": [0.0, 255.0]}
    assert meta["output"] == {"name": "probabilities", "shape": [None, 3], "dtype": "float32"}
    assert sorted(meta["signatures"]) == ["serving_bytes", "serving_default"]
    assert meta["class_names"] == ["Normal", "CAP", "COVID-19"]
    recipe = meta["metadata"]["recipe"]
    assert recipe["recipe"] == "multiscale_resnet50" and recipe["builder"] == "multiscale_resnet50"
    assert recipe["builder_args"] == {"input_shape": [32, 32, 3], "weights": None, "dropout": 0.5}
    signature = tf.saved_model.load(first["exported"]).signatures["serving_default"]
    assert signature.structured_input_signature[1]["image"].shape.as_list() == [None, 32, 32, 3]
    assert signature.structured_outputs["probabilities"].shape.as_list() == [None, 3]


@pytest.mark.slow
def test_only_training_patients_are_interpolated(chain):
    root, first, _, _, _ = chain
    split = json.loads((root / "runs" / "slice_level" / "a" / "split.json").read_text())
    plain, classes = pipelines.manifest_rows(first["cache"])
    finer, _ = pipelines.manifest_rows(first["training_cache"])
    assert {r.patient_id for r in finer} == set(split["train"])
    stride = TINY["slice_stride"]
    n_train = len(pipelines.select_slices(plain, split["train"], classes, stride=stride))
    n_val = len(pipelines.select_slices(plain, split["val"], classes, stride=stride))
    counts = first["slices"]["last_layers"]
    assert counts["val"] == n_val
    assert 1.5 * n_train < counts["train"] < 2 * n_train


@pytest.mark.slow
def test_same_seed_same_run(chain):
    _, first, second, _, _ = chain
    for stage in first["stages"]:
        assert first["stages"][stage]["best_val_accuracy"] == second["stages"][stage]["best_val_accuracy"]
    import keras

    a = keras.saving.load_model(first["model"], safe_mode=True)
    b = keras.saving.load_model(second["model"], safe_mode=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.slow
def test_heads_and_ensemble_report_and_export(chain):
    _, _, _, heads, ensemble = chain
    assert set(heads["heads"]) == {"maxpool", "maxpool_weighted", "bilstm", "bilstm_weighted"}
    assert set(ensemble["reports"]["test"]) >= {"accuracy", "sensitivity", "majority_rate"}
    assert os.path.exists(os.path.join(ensemble["exported"], "saved_model.pb"))


def _sklearn_report(y_true, y_pred, k):
    """Accuracy, per-class recall and specificity, majority rate and confusion matrix by scikit-learn."""
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score, confusion_matrix, multilabel_confusion_matrix, recall_score

    labels = list(range(k))
    per_class = multilabel_confusion_matrix(y_true, y_pred, labels=labels)  # [[tn, fp], [fn, tp]] per class
    x = np.zeros((len(y_true), 1))
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "sensitivity": recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan),
        "specificity": [tn / (tn + fp) if tn + fp else np.nan for (tn, fp), _ in per_class],
        "majority_rate": DummyClassifier(strategy="most_frequent").fit(x, y_true).score(x, y_true),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _assert_same_report(ours, y_true, y_pred, classes):
    theirs = _sklearn_report(y_true, y_pred, len(classes))
    assert ours["n"] == len(y_true)
    assert ours["confusion"] == theirs["confusion"]
    for key in ("accuracy", "majority_rate"):
        assert ours[key] == pytest.approx(theirs[key], abs=5e-5), key
    for key in ("sensitivity", "specificity"):
        for c, value in zip(classes, theirs[key]):
            if np.isnan(value):
                assert ours[key][c] is None, (key, c)
            else:
                assert ours[key][c] == pytest.approx(value, abs=5e-5), (key, c)
    return theirs


@pytest.fixture(scope="module")
def val_predictions(chain):
    """The slice classifier's predictions on its validation patients' labelled slices: (y_true, probs, split)."""
    import keras

    root, first, _, _, _ = chain
    split = json.loads((root / "runs" / "slice_level" / "a" / "split.json").read_text())
    rows, classes = pipelines.manifest_rows(first["cache"])
    selection = pipelines.select_slices(rows, split["val"], classes)
    ds = pipelines.slice_dataset(first["cache"], selection, training=False, batch_size=16)
    y_true = np.concatenate([y.numpy() for _, y in ds])
    model = keras.saving.load_model(first["model"], safe_mode=True)
    return y_true, model.predict(ds.map(lambda x, y: x), verbose=0), split


@pytest.mark.slow
def test_slice_classifier_beats_the_majority_rate(val_predictions):
    """On its validation patients the seeded slice classifier beats always answering the commonest class."""
    y_true, probs, split = val_predictions
    theirs = _sklearn_report(y_true, np.argmax(probs, axis=-1), 3)
    assert len(split["val"]) == 3 and len(set(y_true)) >= 2
    assert theirs["accuracy"] > theirs["majority_rate"]


@pytest.mark.slow
def test_slice_report_is_scikit_learns(chain, val_predictions):
    from covid_keras.evaluation import classification_report

    _, first, _, _, _ = chain
    y_true, probs, _ = val_predictions
    ours = classification_report(y_true, probs, first["classes"])
    assert ours == first["slice_report"]["val"]  # the run's own report rests on these predictions
    _assert_same_report(ours, y_true, np.argmax(probs, axis=-1), first["classes"])


@pytest.mark.slow
def test_stage_three_keeps_batchnorm_frozen(chain):
    """train.slice_level's own stage 3 (finetune) on a fresh model: BatchNormalization keeps its initial state.

    Built from scratch, every BatchNormalization layer starts at gamma 1,
    beta 0, moving mean 0 and moving variance 1 (Keras' initializers); a
    stage that trained them, or ran them in training mode, would move them.
    """
    import keras

    root, _, _, _, _ = chain
    with _cache_in(root):
        summary = train_slice_level(SliceLevelConfig(**{**TINY, "stages": ("finetune",)}, runs_root=str(root / "bn"),
                                                     export_dir=None, run_dir=str(root / "bn" / "finetune")))
    assert summary["stages"]["finetune"]["epochs_run"] == 1
    model = keras.saving.load_model(summary["model"], safe_mode=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) > 50
    for layer in bns:
        expected = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}
        for weight in layer.weights:
            np.testing.assert_array_equal(weight.numpy(), expected[weight.name], err_msg=weight.path)
    trained = [layer.name for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and np.any(layer.bias.numpy() != 0)]
    assert len(trained) > 50  # the convolutions did train (their biases start at 0)


@pytest.mark.slow
def test_exported_patient_pipeline_gives_the_trained_ensembles_answers(chain):
    """The one SavedModel, fed a study's cached slices, answers what the trained heads + ensemble answered."""
    import tensorflow as tf

    from covid_keras import serving

    root, first, _, _, ensemble = chain
    from covid_keras.evaluation.predictions import read_predictions

    classes = ensemble["classes"]
    wanted = {}
    for part in ("val", "test"):
        mine = read_predictions(ensemble["predictions"][part])
        assert (mine.answer, mine.level, mine.part, mine.classes) == ("ensemble", "study", part, classes)
        _assert_same_report(ensemble["reports"][part], mine.y_true(), np.argmax(mine.probabilities(), axis=-1),
                            classes)
        wanted.update({p["key"]: {"probabilities": [p["probabilities"][c] for c in classes],
                                  "label": classes.index(p["label"])} for p in mine.rows})
    assert len(wanted) == 6  # 3 validation + 3 test patients, one study each
    assert serving.load_metadata(ensemble["exported"])["class_names"] == classes
    signature = tf.saved_model.load(ensemble["exported"]).signatures["serving_default"]
    seen = set()
    for key, _, label, slices, _, _ in pipelines.study_slices(first["cache"], set(wanted)):
        got = signature(slices=tf.constant(pipelines.to_rgb(slices)))["probabilities"].numpy()[0]
        np.testing.assert_allclose(got, wanted[key]["probabilities"], atol=1e-5, err_msg=key)
        assert label == wanted[key]["label"]
        seen.add(key)
    assert seen == set(wanted)


@pytest.mark.slow
def test_evaluate_report_on_the_three_runs(chain):
    """Slice run: labelled slices and patients (mean of every slice); heads and ensemble: one section per part."""
    from report_checks import check_report

    root, first, _, heads, ensemble = chain
    slices = check_report(root / "runs" / "slice_level" / "a")
    assert [s["level"] for s in slices["sections"]] == ["slice", "patient", "slice", "patient"]
    assert slices["sections"][0]["accuracy"]["value"] == pytest.approx(first["slice_report"]["test"]["accuracy"],
                                                                       abs=5e-5)
    assert [s["n"] for s in slices["sections"] if s["level"] == "patient"] == [3, 3]  # 3 test, 3 val patients
    patient_run = os.path.dirname(heads["features"])
    sections = check_report(patient_run)["sections"]
    assert sorted((s["answer"], s["part"]) for s in sections) == sorted(
        (name, part) for name in heads["head_order"] for part in ("test", "val"))
    for s in sections:
        assert s["accuracy"]["value"] == pytest.approx(heads["reports"][s["answer"]][s["part"]]["accuracy"], abs=5e-5)
    sections = check_report(os.path.dirname(ensemble["model"]))["sections"]
    assert [(s["answer"], s["part"], s["n"]) for s in sections] == [("ensemble", "test", 3), ("ensemble", "val", 3)]


@pytest.mark.slow
def test_evaluate_tsne_on_the_patient_level_run(chain):
    """evaluate.tsne on the real patient-level run: every study of the split, both feature sets."""
    from covid_keras import cli
    from evaluate import tsne as command

    _, _, _, heads, _ = chain
    run = os.path.dirname(heads["features"])
    assert cli.run(command.main, [run, "--parts", "all"]) == 0
    with open(os.path.join(run, "report", "tsne.json")) as f:
        saved = json.load(f)
    assert saved["studies"] == 15 and set(saved["features"]) == {"1024", "3072"}
    assert {r["patient_id"] for r in saved["rows"]} == {p for part in TINY_SPLIT.values() for p in part}

