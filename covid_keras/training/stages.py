"""Staged training from a recipe's :class:`~covid_keras.recipes.Stage` records.

:func:`run_stages` trains a model stage after stage: each stage sets which
layers train (:func:`set_trainable`), gets its data from the caller
(:class:`StageData`), weights its classes, and fits with
:func:`covid_keras.training.fitting.fit_stage` at the stage's optimizer,
learning-rate schedule and epochs (best-validation weights, resumable).
Paper 001 has four stages, paper 003 two; a command line adds nothing but
the data each stage trains on.
"""

import dataclasses

import numpy as np

from covid_keras import errors
from covid_keras.training.fitting import balanced_class_weights, describe_class_weights, fit_stage


def set_trainable(model, mode):
    """Which layers a stage trains.

    Modes: ``all``; ``last2`` (paper 001 stage 2: the ``features`` and
    ``probabilities`` layers); ``all_but_bn`` (paper 001 stages 3-4:
    BatchNormalization frozen, which in Keras 3 also runs it in inference
    mode); ``from:<layer>`` (that layer and every later one: paper 003's
    "last convolution block and the dense layers").
    """
    import keras

    layers = model.layers
    if mode.startswith("from:"):
        names = [layer.name for layer in layers]
        first = mode.split(":", 1)[1]
        if first not in names:
            raise errors.ConfigurationError(
                f"trainable mode {mode!r}: model {model.name!r} has no layer {first!r}."
            )
        start = names.index(first)
        for i, layer in enumerate(layers):
            layer.trainable = i >= start
        return
    for layer in layers:
        if mode == "all":
            layer.trainable = True
        elif mode == "last2":
            layer.trainable = layer.name in ("features", "probabilities")
        elif mode == "all_but_bn":
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        else:
            raise errors.ConfigurationError(f"unknown trainable mode {mode!r}")


@dataclasses.dataclass
class StageData:
    """What one stage trains and validates on.

    Attributes:
        train, val: ``tf.data`` datasets of (inputs, label) batches.
        labels: the training labels (for the class weights and the log).
        what: the unit counted in the log ("slices", "studies", "images").
        validation: names the validation set; a stage keeps new weights
            only if they beat the previous stage's, when both validate on
            the same set.
        counts: extra numbers for the summary (e.g. ``{"train": n, "val": m}``).
    """

    train: object
    val: object
    labels: np.ndarray
    what: str = "examples"
    validation: str = "val"
    counts: dict = dataclasses.field(default_factory=dict)


def run_stages(model, run, stages, stage_data, classes, *, trainer=None, keep="best", class_weights=True,
               verbose=1, log=print):
    """Trains ``model`` through ``stages`` in order; returns ``{stage name: StageResult}``.

    Args:
        model: the model whose layers the stages freeze and unfreeze.
        run: the :class:`covid_keras.training.runs.RunFolder`.
        stages: :class:`covid_keras.recipes.Stage` records (``config.stage_list()``).
        stage_data: ``stage -> StageData``.
        classes: the class names (the log's class weights).
        trainer: the model ``fit`` runs (``model`` behind training-only
            augmentation layers); default ``model``.
        keep: ``"best"`` (best-validation weights) or ``"last"`` (the last
            epoch's: a cross-validation fold, whose validation patients are
            the ones it reports, must not choose its epoch on them).
        class_weights: weight the loss by scikit-learn's "balanced" class
            weights of each stage's training labels; False: plain
            cross-entropy.
        verbose, log: Keras progress output and the one-line log.
    """
    results, last = {}, None
    for stage in stages:
        set_trainable(model, stage.trainable)
        data = stage_data(stage)
        labels = np.asarray(data.labels, dtype=int)
        weights = balanced_class_weights(labels, len(classes)) if class_weights else None
        counts = np.bincount(labels, minlength=len(classes))
        described = (f"class weights: {describe_class_weights(weights, classes, counts)}" if weights else
                     "unweighted loss: " + ", ".join(f"{c} {int(n)}" for c, n in zip(classes, counts)))
        log(f"[{stage.name}] {len(labels)} training / {data.counts.get('val', '?')} validation {data.what}; "
            f"{described}")
        previous = last[1] if last is not None and last[0] == data.validation else None
        result = fit_stage(trainer or model, run, stage.name, data.train, data.val, learning_rate=stage.schedule,
                           optimizer=stage.optimizer, epochs=stage.epochs, class_weight=weights,
                           keep=keep, verbose=verbose, log=log, previous=previous)
        results[stage.name] = result
        last = (data.validation, result)
    return results
