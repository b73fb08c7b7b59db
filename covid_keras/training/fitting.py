"""One training stage: class-weighted fit, best-validation weights, resumable.

:func:`fit_stage` compiles the model with Adam at the stage's learning rate,
fits with Keras' BackupAndRestore (an interrupted stage continues from its
last finished epoch), CSVLogger, TensorBoard and a ModelCheckpoint that
keeps the best validation accuracy (its threshold restored from the log
when resuming), loads those best weights at the end and records them as the
finished stage. A finished stage is skipped on the next run: its best
weights are loaded instead.

A resumed stage repeats the uninterrupted one exactly (same seed, op
determinism): Keras' backup holds the weights, the optimizer and the epoch,
and :class:`ResumeState` adds what it leaves out, the state of the model's
random-number generators (Dropout, augmentation layers) and how many epoch
orders a reshuffling ``tf.data`` pipeline has drawn.
"""

import dataclasses
import os
import shutil
import sys
import warnings

import keras
import numpy as np

from covid_keras.training.runs import write_json


def balanced_class_weights(labels, num_classes):
    """scikit-learn's "balanced" weights: n / (k * count), classes absent get 1.0.

    Returns:
        ``{class_index: weight}`` for Keras' ``class_weight``.
    """
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def describe_class_weights(weights, classes, counts):
    """One line for the log: ``Normal 120 x0.84, CAP ...``."""
    return ", ".join(f"{c} {int(counts[i])} x{weights[i]:.2f}" for i, c in enumerate(classes))


@dataclasses.dataclass
class StageResult:
    name: str
    best_val_accuracy: float
    epochs_run: int
    weights: str
    skipped: bool = False


class EpochRecorder(keras.callbacks.Callback):
    """Records which epochs this process actually trained."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


class ResumeState(keras.callbacks.Callback):
    """What Keras' BackupAndRestore leaves out, so that a resumed stage repeats the uninterrupted one.

    At the end of every epoch it writes the state of the model's
    ``SeedGenerator`` objects (the ``model.variables`` that are not
    ``model.weights``: Dropout, augmentation layers) to ``path``. When fit
    starts at epoch k > 0 (BackupAndRestore restored epoch k), it loads the
    state saved after epoch k - 1 and draws k epoch orders from
    ``train_ds`` before Keras iterates it: each new iterator of a seeded
    ``Dataset.shuffle(..., reshuffle_each_iteration=True)`` takes the next
    order, so epoch k sees the order it would have seen. The first of those
    passes is read to the end, so that an in-memory ``cache()`` is filled in
    the order the first epoch filled it; the others only start an iterator.
    Put it after BackupAndRestore in the callback list.
    """

    def __init__(self, path, train_ds=None):
        super().__init__()
        self.path = path
        self.train_ds = train_ds
        self._started = False

    def _states(self):
        weights = {id(w) for w in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        if epoch == 0:
            return
        states = self._states()
        saved = {}
        if os.path.exists(self.path):
            with np.load(self.path) as f:
                saved = {k: f[k] for k in f.files}
        if int(saved.get("epoch", -1)) != epoch - 1 or len(saved) != len(states) + 1:
            warnings.warn(
                f"{self.path}: holds no random-generator state of the epoch the backup resumes from; "
                "the stage resumes, but will not repeat an uninterrupted run exactly.",
                stacklevel=2,
            )
        else:
            for i, v in enumerate(states):
                v.assign(saved[f"state_{i}"])
        import tensorflow as tf

        if isinstance(self.train_ds, tf.data.Dataset):
            for _ in self.train_ds:  # epoch 0's order, read through: fills a cache() as epoch 0 did
                pass
            for _ in range(epoch - 1):
                iter(self.train_ds)

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"state_{i}": np.asarray(v.numpy()) for i, v in enumerate(self._states())}
        tmp = f"{self.path}.tmp.npz"
        np.savez(tmp, epoch=epoch, **arrays)
        os.replace(tmp, self.path)

    def on_train_end(self, logs=None):
        if os.path.exists(self.path):
            os.remove(self.path)


def fit_stage(model, run, name, train_ds, val_ds, *, learning_rate, epochs, optimizer=None, class_weight=None,
              extra_callbacks=(), verbose=1, log=print, previous=None, keep="best"):
    """Trains one stage (or loads it when already finished).

    Args:
        model: the Keras model to train (trainable flags already set).
        run: the :class:`covid_keras.training.runs.RunFolder`.
        name: stage name (file names under the run folder).
        train_ds, val_ds: ``tf.data`` datasets of (inputs, label) batches;
            ``val_ds`` None for a stage without validation data (a final
            model on all training patients): it ends with its last weights.
        learning_rate: a float (constant), or a
            :class:`covid_keras.recipes.Schedule` over the stage (built by
            :mod:`covid_keras.training.schedules`; it needs a finite
            ``train_ds``).
        epochs: epochs of the stage.
        optimizer: a :class:`covid_keras.recipes.Optimizer` (default Adam).
        class_weight: Keras class weights.
        extra_callbacks: more callbacks (tests stop training with one).
        verbose: Keras progress output.
        log: where one-line messages go.
        previous: the :class:`StageResult` of the stage before, on the same
            validation set: this stage keeps new weights only when they beat
            its validation accuracy, and otherwise ends with its weights.
        keep: ``"best"``: end with the best-validation-accuracy weights;
            ``"last"``: end with the last epoch's weights (validation is
            still logged). A cross-validation fold keeps its last weights:
            choosing the epoch on the patients it reports would overstate
            them.

    Returns:
        A :class:`StageResult`; ``model`` holds the kept weights.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"`keep` must be 'best' or 'last'. Received: keep={keep!r}")
    weights_path = run.file("stages", f"{name}.weights.h5")
    if run.stage_done(name):
        _load_model_weights(model, weights_path)
        result = run.stage_result(name)
        log(f"[{name}] finished in an earlier run (best val_accuracy {_fmt(result['best_val_accuracy'])}); "
            "loaded its best weights.")
        return StageResult(name, result["best_val_accuracy"], result["epochs_run"], weights_path, skipped=True)

    from covid_keras.recipes import ADAM, Schedule, constant
    from covid_keras.training import schedules

    schedule = learning_rate if isinstance(learning_rate, Schedule) else constant(float(learning_rate))
    optimizer = optimizer or ADAM
    fit_data, steps = _one_iterator(train_ds)
    model.compile(optimizer=schedules.build_optimizer(optimizer, schedule, steps, epochs),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best_file = run.file("checkpoints", name, "best.weights.h5")
    resumed_best = run.best_val_accuracy(name)
    candidates = [v for v in (resumed_best, previous.best_val_accuracy if previous else None) if v is not None]
    previous_best = max(candidates) if candidates else None
    checkpoint = keras.callbacks.ModelCheckpoint(
        best_file, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True,
        initial_value_threshold=previous_best,
    )
    recorder = EpochRecorder()
    callbacks = [
        keras.callbacks.BackupAndRestore(run.file("checkpoints", name, "backup"), save_freq="epoch",
                                         delete_checkpoint=True),
        ResumeState(run.file("checkpoints", name, "random_state.npz"), train_ds),
        *([checkpoint] if val_ds is not None and keep == "best" else []),
        schedules.LearningRateLogger(),  # before the CSV logger, which writes what it adds
        keras.callbacks.CSVLogger(run.file("logs", f"{name}.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(run.path, "tensorboard", name), write_graph=False),
        recorder,
        *extra_callbacks,
    ]
    if resumed_best is not None:
        log(f"[{name}] resuming (best val_accuracy so far {resumed_best:.4f}).")
    model.fit(fit_data, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps, class_weight=class_weight,
              shuffle=False, callbacks=callbacks, verbose=verbose)
    if os.path.exists(best_file):
        _load_model_weights(model, best_file)
        shutil.copyfile(best_file, weights_path)
        best = max(v for v in (run.best_val_accuracy(name), previous_best) if v is not None)
    elif previous is not None and val_ds is not None and keep == "best":  # no epoch beat the stage before
        _load_model_weights(model, previous.weights)
        shutil.copyfile(previous.weights, weights_path)
        best = previous.best_val_accuracy
        log(f"[{name}] no epoch beat the previous stage's {best:.4f}; keeping its weights.")
    else:
        model.save_weights(weights_path)
        best = run.best_val_accuracy(name)
    write_json(run.file("stages", f"{name}.json"),
               {"best_val_accuracy": best, "epochs_run": len(recorder.epochs),
                "learning_rate": schedule.initial, "epochs": epochs, "schedule": schedule.describe(),
                "optimizer": optimizer.describe(), "kept": keep if val_ds is not None else "last"})
    if keep == "last" and val_ds is not None:
        log(f"[{name}] done: kept the last epoch's weights (best val_accuracy during training {_fmt(best)}).")
    else:
        log(f"[{name}] done: best val_accuracy {_fmt(best)}.")
    return StageResult(name, best, len(recorder.epochs), weights_path)


def _one_iterator(train_ds):
    """``(data for fit, steps_per_epoch)``: a finite ``tf.data`` set repeated, one epoch per pass.

    Keras iterates a repeated dataset with ``steps_per_epoch`` through one
    iterator for the whole fit; each pass then starts one new iterator of
    ``train_ds``, so epoch e of a stage has the e-th order of a reshuffling
    dataset however often Keras itself restarts iterators (:class:`ResumeState`
    counts on it). Other inputs go to fit unchanged.
    """
    import tensorflow as tf

    if isinstance(train_ds, tf.data.Dataset):
        steps = int(train_ds.cardinality())
        if steps > 0:
            return train_ds.repeat(), steps
    return train_ds, None


def _load_model_weights(model, path):
    """Loads a stage's weights; the optimizer state stored beside them is not wanted.

    Keras' weights files also hold the optimizer that wrote them; a stage
    with other trainable layers has another optimizer, and Keras warns that
    it skips it. Only the model's weights carry over between stages, so that
    warning is expected and hidden.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def seed_everything(seed):
    """Seeds Python, NumPy and TensorFlow and makes TF ops deterministic (repeatable CPU runs)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def printer(quiet=False):
    """A one-line logger to stderr (silent with ``quiet``)."""
    def log(message):
        if not quiet:
            print(message, file=sys.stderr, flush=True)
    return log
