"""A stage's optimizer and learning-rate schedule as Keras objects, exact to the papers.

:func:`learning_rate` turns a :class:`covid_keras.recipes.Schedule` into what
a Keras optimizer takes: a float for a constant rate (paper 001's stages),
``ExponentialDecay(initial, every_epochs * steps_per_epoch, factor,
staircase=True)`` for step decay (paper 000: 2e-4 x0.5 every 40 epochs; it
is exact at every step, while ``PiecewiseConstantDecay`` switches one step
late at each boundary) and ``CosineDecay(initial, epochs * steps_per_epoch,
alpha)`` for cosine annealing over the whole stage (paper 003). The
optimizer's iteration count drives the schedule, so a stage resumed by
BackupAndRestore continues the schedule where it stopped.
"""

import keras

from covid_keras import errors
from covid_keras.recipes import ADAM, Schedule, constant


def learning_rate(schedule, steps_per_epoch, epochs):
    """A float or a ``keras.optimizers.schedules.LearningRateSchedule`` for one stage.

    Args:
        schedule: a :class:`covid_keras.recipes.Schedule`, or a float
            (a constant rate).
        steps_per_epoch: optimizer steps per epoch (needed by every
            schedule but a constant one).
        epochs: the stage's epochs (a cosine schedule spans them all).
    """
    if not isinstance(schedule, Schedule):
        schedule = constant(float(schedule))
    if schedule.kind == "constant":
        return schedule.initial
    if not steps_per_epoch or steps_per_epoch < 1:
        raise errors.ConfigurationError(
            f"a {schedule.kind} learning-rate schedule needs the number of steps per epoch; give the stage a "
            "finite tf.data dataset (known cardinality)."
        )
    if schedule.kind == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            schedule.initial, decay_steps=schedule.every_epochs * steps_per_epoch, decay_rate=schedule.factor,
            staircase=True)
    return keras.optimizers.schedules.CosineDecay(schedule.initial, decay_steps=epochs * steps_per_epoch,
                                                  alpha=schedule.alpha)


def build_optimizer(spec=None, schedule=1e-3, steps_per_epoch=None, epochs=1):
    """The Keras optimizer of a stage: ``spec`` (:class:`covid_keras.recipes.Optimizer`) at ``schedule``."""
    spec = spec or ADAM
    rate = learning_rate(schedule, steps_per_epoch, epochs)
    if spec.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=spec.momentum)
    return keras.optimizers.Adam(rate)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the rate of the epoch's last step) to each epoch's logs (CSV, History).

    Keras logs it only for a ``LearningRateScheduler``; schedule objects
    leave it out.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer; the schedule and the
        # step count that decide the rate are the inner optimizer's.
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        rate = optimizer.learning_rate
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = optimizer._learning_rate(max(int(optimizer.iterations.numpy()) - 1, 0))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
