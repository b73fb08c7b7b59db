"""A workaround for Keras 3.15's ``fit`` under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, open).

As shipped, Keras 3.15 on TensorFlow cannot train, evaluate or predict
under ``tf.distribute.MultiWorkerMirroredStrategy``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes the first distributed
   batch and calls ``strategy.reduce("MEAN", batch, axis=None)`` on it to
   get shapes for building the model; that strategy cannot reduce a
   ``PerReplica`` (x, y) tuple: ``ValueError: Attempt to convert a value
   (PerReplica:{...}) with an unsupported type``.
2. With that bypassed, ``reduce_per_replica`` reduces the step's logs with
   ``strategy.reduce("MEAN", v, axis=0)``; the logs are scalars:
   ``Invalid reduction dimension 0 for input with 0 dimensions``.

:func:`installed` overrides both in Keras' ``TensorFlowTrainer`` while a
multi-worker command runs, and only for models of a
``MultiWorkerMirroredStrategy`` (:func:`needed`; every other model runs
Keras' own code): the build uses this worker's own part of the first batch
(only its shapes and dtypes matter), and ``train_step`` / ``test_step``
return their logs with shape [1] (the reduction then averages equal values
across replicas and returns scalars). Nothing else changes: gradients are
still all-reduced by the strategy, so every worker ends with the same
weights. It is installed on the class, not per model, so that every model a
command makes (feature extractors, heads, the two-step classifier's steps)
is covered; a model class with its own ``train_step`` is not.

Both overrides touch private Keras API, so they are kept to this module,
applied only when the model's strategy is a ``MultiWorkerMirroredStrategy``
(:func:`needed`), and guarded by ``tests/training/test_multiworker_fix.py``,
which is pinned to :data:`CHECKED_KERAS`: it fails when Keras is upgraded
(re-check #20585, and delete this module once plain ``fit`` works), and
when the defect it works around no longer shows.

Why not a custom training loop with ``strategy.run``: every training
command shares :func:`covid_keras.training.fitting.fit_stage`, whose
callbacks (BackupAndRestore, ModelCheckpoint, CSVLogger, TensorBoard,
class weights, schedules) are Keras ``fit`` features; a loop of our own
would re-implement all of them for one strategy, where these two overrides
keep ``fit`` itself.
"""

import contextlib

#: The Keras minor version this workaround was checked against.
CHECKED_KERAS = "3.15"


def needed(model):
    """Whether ``model`` was built under a ``MultiWorkerMirroredStrategy`` (the only models the overrides change)."""
    import tensorflow as tf

    return isinstance(getattr(model, "_distribute_strategy", None), tf.distribute.MultiWorkerMirroredStrategy)


def _overrides(trainer):
    import tensorflow as tf
    from keras.src import tree

    build, train_step, test_step = trainer._maybe_symbolic_build, trainer.train_step, trainer.test_step

    def local_first_build(self, iterator=None, data_batch=None):
        # Keras: strategy.reduce("MEAN", batch, axis=None), which MWMS refuses; shapes are all the build needs.
        if not needed(self) or iterator is None:
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        strategy = self.distribute_strategy
        data_batch = tree.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def rank1_logs(step):
        def wrapped(self, data):
            logs = step(self, data)
            if not needed(self):
                return logs
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        wrapped.__wrapped__ = step
        return wrapped

    return {"_maybe_symbolic_build": local_first_build, "train_step": rank1_logs(train_step),
            "test_step": rank1_logs(test_step)}


@contextlib.contextmanager
def installed():
    """The overrides in Keras' ``TensorFlowTrainer`` for the body's duration (nested uses install once)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    if getattr(TensorFlowTrainer, "_covid_keras_multiworker_fix", False):
        yield
        return
    originals = {name: TensorFlowTrainer.__dict__[name] for name in ("_maybe_symbolic_build", "train_step",
                                                                     "test_step")}
    for name, method in _overrides(TensorFlowTrainer).items():
        setattr(TensorFlowTrainer, name, method)
    TensorFlowTrainer._covid_keras_multiworker_fix = True
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(TensorFlowTrainer, name, method)
        del TensorFlowTrainer._covid_keras_multiworker_fix
