"""Stage fitting: resume after a crash, best weights, class weights, slice rules.

BatchNormalization staying frozen in stage 3 is tested through train.slice_level itself
(tests/training/test_paper001_chain.py).
"""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from covid_keras import errors
from covid_keras.training import pipelines
from covid_keras.training.fitting import EpochRecorder, balanced_class_weights, fit_stage
from covid_keras.training.runs import RunFolder
from covid_keras.training.slice_level import set_trainable


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Crash(f"simulated crash after epoch {epoch}")


def _tiny():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="features")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probabilities")(x))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_interrupted_stage_resumes_from_the_next_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    run = RunFolder.open(tmp_path / "run", {"test": 1})
    with pytest.raises(Crash):
        fit_stage(_tiny(), run, "stage", _data(), _data(1), learning_rate=1e-2, epochs=4, verbose=0,
                  extra_callbacks=[CrashAfterEpoch(1)], log=lambda m: None)
    assert not run.stage_done("stage")
    recorder = EpochRecorder()
    result = fit_stage(_tiny(), run, "stage", _data(), _data(1), learning_rate=1e-2, epochs=4, verbose=0,
                       extra_callbacks=[recorder], log=lambda m: None)
    assert recorder.epochs == [2, 3]  # epochs 0 and 1 were finished before the crash
    with open(run.file("logs", "stage.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert run.stage_done("stage") and result.epochs_run == 2
    # A third run skips the finished stage and loads its best weights.
    again = fit_stage(_tiny(), run, "stage", _data(), _data(1), learning_rate=1e-2, epochs=4, verbose=0,
                      log=lambda m: None)
    assert again.skipped and again.best_val_accuracy == result.best_val_accuracy


class LastEpochWeights(keras.callbacks.Callback):
    """The model's weights at the end of each epoch this process trained."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]


def _stage_with_randomness(cache, run_dir, crash_after=None):
    """A seeded stage as train.slice_level runs one: shuffled slices, augmentation, Dropout, class weights.

    Everything is built anew after seeding, as a new process would.
    """
    from covid_keras.augment import RandomAffine
    from covid_keras.training.fitting import seed_everything

    seed_everything(0)
    rows, classes = pipelines.manifest_rows(cache)
    selection = pipelines.select_slices(rows, {r.patient_id for r in rows}, classes)
    train = pipelines.slice_dataset(cache, selection, training=True, batch_size=4, seed=3)
    val = pipelines.slice_dataset(cache, selection, training=False, batch_size=4)
    inputs = keras.Input((16, 16, 3))
    x = RandomAffine(translation=2.0, seed=1)(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(x))
    x = keras.layers.Dropout(0.5)(keras.layers.Dense(8, activation="relu", name="features")(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(x))
    labels = np.fromiter(selection.values(), dtype=int)
    last = LastEpochWeights()
    extra = [last] + ([CrashAfterEpoch(crash_after)] if crash_after is not None else [])
    run = RunFolder.open(run_dir, {"resume": 1})
    fit_stage(model, run, "stage", train, val, learning_rate=1e-2, epochs=4, verbose=0, log=lambda m: None,
              class_weight=balanced_class_weights(labels, len(classes)), extra_callbacks=extra)
    return model, last, run


def test_resumed_stage_repeats_the_uninterrupted_run(tmp_path, phantom_slice_cache):
    """Crash after epoch 1 + resume == one uninterrupted run: same losses and the same weights, bit for bit.

    The stage draws random numbers (shuffled, reshuffled slices; augmentation;
    Dropout), so a resume that started from fresh weights, from other random
    states or from another data order would differ.
    """
    model, last, run = _stage_with_randomness(phantom_slice_cache, tmp_path / "straight")
    with pytest.raises(Crash):
        _stage_with_randomness(phantom_slice_cache, tmp_path / "crashed", crash_after=1)
    resumed_model, resumed_last, resumed_run = _stage_with_randomness(phantom_slice_cache, tmp_path / "crashed")
    assert sorted(resumed_last.weights) == [2, 3]

    def log(r):
        with open(r.file("logs", "stage.csv")) as f:
            return list(csv.DictReader(f))

    straight = log(run)
    assert len({row["loss"] for row in straight}) == 4  # it trained
    assert log(resumed_run) == straight
    for a, b in zip(last.weights[3], resumed_last.weights[3]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.get_weights(), resumed_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_stage_that_never_beats_the_stage_before_keeps_its_weights(tmp_path):
    keras.utils.set_random_seed(0)
    run = RunFolder.open(tmp_path / "run", {"previous": 1})
    model = _tiny()
    first = fit_stage(model, run, "first", _data(), _data(1), learning_rate=1e-2, epochs=5, verbose=0,
                      log=lambda m: None)
    kept = [w.copy() for w in model.get_weights()]

    def flipped(seed):
        return _data(seed).map(lambda x, y: (x, 1 - y))

    # Trained on flipped labels: every epoch is worse on the true validation labels.
    second = fit_stage(model, run, "second", flipped(0), _data(1), learning_rate=0.1, epochs=3, verbose=0,
                       log=lambda m: None, previous=first)
    with open(run.file("logs", "second.csv")) as f:
        accuracies = [float(r["val_accuracy"]) for r in csv.DictReader(f)]
    assert len(accuracies) == 3 and max(accuracies) < first.best_val_accuracy
    assert second.best_val_accuracy == first.best_val_accuracy
    for a, b in zip(model.get_weights(), kept):
        np.testing.assert_array_equal(a, b)
    reloaded = _tiny()
    reloaded.load_weights(second.weights)
    for a, b in zip(reloaded.get_weights(), kept):
        np.testing.assert_array_equal(a, b)


def test_best_validation_weights_are_kept(tmp_path):
    run = RunFolder.open(tmp_path / "run", {"test": 2})
    model = _tiny()
    result = fit_stage(model, run, "s", _data(), _data(1), learning_rate=1e-2, epochs=5, verbose=0,
                       log=lambda m: None)
    with open(run.file("logs", "s.csv")) as f:
        best = max(float(r["val_accuracy"]) for r in csv.DictReader(f))
    assert result.best_val_accuracy == pytest.approx(best)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.evaluate(_data(1), verbose=0)[1] == pytest.approx(best)


def test_run_folder_refuses_other_settings(tmp_path):
    RunFolder.open(tmp_path / "run", {"lr": 1})
    with pytest.raises(errors.ConfigurationError, match="other settings \\(lr differ\\).*--fresh"):
        RunFolder.open(tmp_path / "run", {"lr": 2})
    RunFolder.open(tmp_path / "run", {"lr": 2}, fresh=True)


def test_last_two_layers_mode():
    from covid_keras.models import multiscale_resnet50

    model = multiscale_resnet50(input_shape=(32, 32, 3), weights=None)
    set_trainable(model, "last2")
    assert {layer.name for layer in model.layers if layer.trainable and layer.weights} == {"features", "probabilities"}


def test_balanced_class_weights():
    w = balanced_class_weights([0, 0, 0, 1], 3)
    assert w == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0), 2: 1.0}


def test_select_slices_follows_paper_001():
    rows = [
        pipelines.SliceRow("n", "p-normal", "Normal", 0, -1),
        pipelines.SliceRow("c", "p-covid", "COVID-19", 0, 0),
        pipelines.SliceRow("c", "p-covid", "COVID-19", 1, 1),
        pipelines.SliceRow("u", "p-unlabelled", "CAP", 0, -1),
        pipelines.SliceRow("u", "p-unlabelled", "CAP", 1, -1),
        pipelines.SliceRow("o", "p-other", "CAP", 0, 1),
    ]
    classes = list(pipelines.CT_CLASSES)
    everyone = ["p-normal", "p-covid", "p-unlabelled"]
    sel = pipelines.select_slices(rows, everyone, classes)
    assert sel == {"n#0": 0, "c#1": 2}  # clean slices of infected patients left out
    assert pipelines.select_slices(rows, everyone, classes, pseudo={"u#1"}) == {"n#0": 0, "c#1": 2, "u#1": 1}
    assert pipelines.select_slices(rows, everyone, classes, clean_slices_of_infected=True)["c#0"] == 0
    assert pipelines.select_slices(rows, ["p-other"], classes) == {"o#0": 1}


def test_png_slices_survive_the_slice_stride():
    rows = [pipelines.SliceRow("png", "p", "CAP", -1, 1), pipelines.SliceRow("ct", "p", "CAP", 1, 1)]
    assert pipelines.select_slices(rows, ["p"], list(pipelines.CT_CLASSES), stride=2) == {"png#-1": 1}


def test_stride_keeps_interpolated_slices_with_their_original():
    # An interpolated cache (factor 2): originals at even indices, slice 5
    # lies between originals 2 and 3.
    rows = [pipelines.SliceRow("k", "p", "Normal", i, -1, 2) for i in (0, 1, 2, 3, 4, 5, 6)]
    kept = pipelines.select_slices(rows, ["p"], list(pipelines.CT_CLASSES), stride=2)
    assert sorted(kept) == ["k#0", "k#1", "k#4", "k#5"]


def test_stage_without_validation_data_ends_with_its_last_weights(tmp_path):
    """A final model on all training patients has no validation set: it trains every epoch and keeps the last weights."""
    keras.utils.set_random_seed(0)
    run = RunFolder.open(tmp_path / "run", {"test": "final"})
    model = _tiny()
    first = fit_stage(_tiny(), run, "warmup", _data(), _data(1), learning_rate=1e-2, epochs=1, verbose=0,
                      log=lambda m: None)
    result = fit_stage(model, run, "final", _data(), None, learning_rate=1e-2, epochs=3, verbose=0,
                       log=lambda m: None, previous=first)
    assert result.epochs_run == 3 and result.best_val_accuracy is None
    saved = _tiny()
    saved.load_weights(result.weights)
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(saved.get_weights()[0], _weights_of(first))  # not the previous stage's weights


def _weights_of(result):
    model = _tiny()
    model.load_weights(result.weights)
    return model.get_weights()[0]


class WeightsAtEpochEnd(keras.callbacks.Callback):
    """The model's weights after every epoch (what "the last epoch's weights" must equal)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_keep_last_ends_with_the_last_epochs_weights_and_still_logs_validation(tmp_path):
    """A cross-validation fold (keep="last") must not pick its epoch on the patients it reports."""
    keras.utils.set_random_seed(0)
    run = RunFolder.open(tmp_path / "run", {"test": "keep-last"})
    model, seen = _tiny(), WeightsAtEpochEnd()
    # A high rate makes validation accuracy move between epochs, so best and last differ.
    result = fit_stage(model, run, "fold", _data(), _data(1), learning_rate=0.5, epochs=6, verbose=0,
                       keep="last", extra_callbacks=[seen], log=lambda m: None)
    with open(run.file("logs", "fold.csv")) as f:
        val = [float(r["val_accuracy"]) for r in csv.DictReader(f)]
    assert len(val) == 6 and result.best_val_accuracy == pytest.approx(max(val))
    for a, b in zip(model.get_weights(), seen.weights[-1]):
        np.testing.assert_array_equal(a, b)
    assert not os.path.exists(run.file("checkpoints", "fold", "best.weights.h5"))
    with pytest.raises(ValueError, match="keep"):
        fit_stage(_tiny(), run, "other", _data(), _data(1), learning_rate=0.5, epochs=1, keep="first")
