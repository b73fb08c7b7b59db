"""Learning-rate schedules and optimizers of the recipes' stages, at their boundary steps and epochs."""

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from covid_keras import errors, recipes
from covid_keras.recipes import Optimizer, Schedule
from covid_keras.training import schedules
from covid_keras.training.fitting import fit_stage
from covid_keras.training.runs import RunFolder

STEPS = 7  # steps per epoch in the step-level checks


def _rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_paper_000_step_decay_switches_exactly_at_the_boundary_steps():
    stage = recipes.get("resnet50_3d").stages[0]
    assert (stage.schedule.kind, stage.schedule.initial, stage.schedule.every_epochs, stage.epochs) == \
        ("step", 2e-4, 40, 120)
    rate = schedules.learning_rate(stage.schedule, steps_per_epoch=STEPS, epochs=stage.epochs)
    f32 = {"rel": 1e-6}
    assert _rate(rate, 0) == pytest.approx(2e-4, **f32)
    assert _rate(rate, 40 * STEPS - 1) == pytest.approx(2e-4, **f32)  # last step of epoch 39
    assert _rate(rate, 40 * STEPS) == pytest.approx(1e-4, **f32)  # first step of epoch 40
    assert _rate(rate, 80 * STEPS - 1) == pytest.approx(1e-4, **f32)
    assert _rate(rate, 80 * STEPS) == pytest.approx(5e-5, **f32)
    assert _rate(rate, 120 * STEPS - 1) == pytest.approx(5e-5, **f32)
    # Why not PiecewiseConstantDecay: it keeps the old rate at the boundary step itself (one step late).
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay([40 * STEPS, 80 * STEPS], [2e-4, 1e-4, 5e-5])
    assert _rate(piecewise, 40 * STEPS) == pytest.approx(2e-4, **f32)
    assert _rate(piecewise, 40 * STEPS + 1) == pytest.approx(1e-4, **f32)


def test_paper_003_cosine_annealing_over_phase_1():
    stage = recipes.get("detl_cnn").stages[0]
    assert (stage.schedule.kind, stage.schedule.initial, stage.epochs) == ("cosine", 1e-3, 100)
    rate = schedules.learning_rate(stage.schedule, steps_per_epoch=STEPS, epochs=stage.epochs)
    total = 100 * STEPS
    assert _rate(rate, 0) == pytest.approx(1e-3, rel=1e-6)
    assert _rate(rate, 50 * STEPS) == pytest.approx(0.5e-3, rel=1e-6)
    assert _rate(rate, total) == pytest.approx(0.0, abs=1e-9)
    for step in (1, STEPS, 10 * STEPS + 3, 25 * STEPS, 75 * STEPS, total - 1):
        expected = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / total))
        assert _rate(rate, step) == pytest.approx(expected, rel=1e-5, abs=1e-10)


def test_paper_001_stages_are_constant_floats():
    stages = recipes.get("multiscale_resnet50").stages
    assert [s.learning_rate for s in stages] == [1e-3, 1e-4, 1e-5, 1e-5]
    for stage in stages:
        rate = schedules.learning_rate(stage.schedule, steps_per_epoch=None, epochs=stage.epochs)
        assert type(rate) is float and rate == stage.learning_rate
    assert schedules.learning_rate(3e-4, None, 1) == 3e-4  # a plain float is a constant rate


def _tiny():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def _data(seed=0, n=24):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int64"))).batch(8)


class FirstStepRates(keras.callbacks.Callback):
    """The rate the optimizer applies at the first step of each epoch."""

    def __init__(self):
        super().__init__()
        self.rates = []
        self._first = False

    def on_epoch_begin(self, epoch, logs=None):
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        if self._first:
            self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            self._first = False


def test_a_step_schedule_halves_the_rate_at_the_boundary_epochs_of_a_real_fit(tmp_path):
    keras.utils.set_random_seed(0)
    run = RunFolder.open(tmp_path / "run", {"test": "schedule"})
    first = FirstStepRates()
    fit_stage(_tiny(), run, "stage", _data(), _data(1), learning_rate=Schedule("step", 0.1, every_epochs=2,
              factor=0.5), epochs=6, verbose=0, log=lambda m: None, extra_callbacks=[first])
    with open(run.file("logs", "stage.csv")) as f:
        logged = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    expected = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert logged == pytest.approx(expected, rel=1e-6)  # the rate of each epoch's last step
    assert first.rates == pytest.approx(expected, rel=1e-6)  # ... and of its first: it switches at the boundary
    assert run.stage_result("stage")["schedule"] == "0.1 x0.5 every 2 epochs"


def test_an_sgd_momentum_stage_compiles_sgd_with_that_momentum(tmp_path):
    stage = recipes.get("detl_cnn").stages[1]
    assert stage.optimizer == Optimizer("sgd", 0.9)
    model = _tiny()
    run = RunFolder.open(tmp_path / "run", {"test": "sgd"})
    fit_stage(model, run, "sgd", _data(), _data(1), learning_rate=stage.schedule, optimizer=stage.optimizer,
              epochs=1, verbose=0, log=lambda m: None)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == pytest.approx(0.9)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-4, rel=1e-6)
    assert run.stage_result("sgd")["optimizer"] == "SGD momentum 0.9"
    adam = schedules.build_optimizer(None, 1e-3)
    assert isinstance(adam, keras.optimizers.Adam)


def test_a_schedule_without_steps_per_epoch_is_refused(tmp_path):
    cosine = Schedule("cosine", 1e-3)
    for steps in (None, 0):
        with pytest.raises(errors.ConfigurationError, match="cosine learning-rate schedule needs the number"):
            schedules.learning_rate(cosine, steps_per_epoch=steps, epochs=10)
    # Through fit_stage: a dataset of unknown length gives no steps per epoch.
    unknown = tf.data.Dataset.from_generator(lambda: iter([(np.zeros((2, 4), "float32"), np.zeros(2, "int64"))]),
                                             output_signature=(tf.TensorSpec((None, 4)), tf.TensorSpec((None,),
                                                                                                      tf.int64)))
    run = RunFolder.open(tmp_path / "run", {"test": "unknown"})
    with pytest.raises(errors.ConfigurationError, match="step learning-rate schedule"):
        fit_stage(_tiny(), run, "stage", unknown, None, learning_rate=Schedule("step", 1e-3, every_epochs=2,
                  factor=0.5), epochs=2, verbose=0, log=lambda m: None)


def test_the_logged_rate_is_right_under_mixed_precision(tmp_path):
    """Under mixed_float16 Keras wraps the optimizer in loss scaling; the log reads the inner schedule's rate."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        run = RunFolder.open(tmp_path / "run", {"test": "mixed"})
        model = _tiny()
        fit_stage(model, run, "stage", _data(), _data(1), learning_rate=Schedule("step", 0.1, every_epochs=2,
                  factor=0.5), epochs=4, verbose=0, log=lambda m: None)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with open(run.file("logs", "stage.csv")) as f:
        logged = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert logged == pytest.approx([0.1, 0.1, 0.05, 0.05], rel=1e-6)
