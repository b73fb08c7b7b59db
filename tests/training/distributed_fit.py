"""A tiny model trained by ``fit_stage`` under ``--strategy``: the process ``test_distribute.py`` starts.

    python tests/training/distributed_fit.py --strategy multi-worker --run-dir R --out W.npz   # TF_CONFIG set

Trains a two-layer classifier on 96 fixed random examples in global
batches of 16 (one seeded order, so every strategy sees the same global
batches) through :func:`covid_keras.training.fitting.fit_stage` (its
BackupAndRestore, checkpoints and logs) inside
:func:`covid_keras.training.distribute.session`, and writes the final
weights to ``--out`` and what it ran to ``--out`` + ``.json``.
"""

import argparse
import dataclasses
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--strategy", default="default")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--logical-cpus", type=int, default=0, help="split the CPU into this many logical devices")
    p.add_argument("--hold-in-epoch", type=int, default=-1,
                   help="after this epoch's second batch, wait while --hold exists (a test kills a worker meanwhile)")
    p.add_argument("--hold", help="the file whose presence holds the workers (see --hold-in-epoch)")
    p.add_argument("--marker", help="file the chief writes 'holding' to when it waits in --hold-in-epoch")
    return p.parse_args(argv)


@dataclasses.dataclass
class Config:
    strategy: str
    export_dir: str = None
    quiet: bool = True


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    import keras
    import numpy as np

    from covid_keras.training import distribute, fitting, runs

    class Hold(keras.callbacks.Callback):
        """Waits in epoch --hold-in-epoch while --hold exists; the chief says so in --marker."""

        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch != args.hold_in_epoch or batch != 1:
                return
            if args.marker and distribute.current().cluster.is_chief:
                with open(f"{args.marker}.tmp", "w") as f:
                    f.write("holding")
                os.replace(f"{args.marker}.tmp", args.marker)
            while args.hold and os.path.exists(args.hold):
                time.sleep(0.05)

    fitting.seed_everything(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 10)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    with distribute.session(Config(args.strategy)):
        session = distribute.current()
        run = runs.RunFolder.open(distribute.run_path(args.run_dir), {"test": "distributed_fit"})
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")], name="tiny")
        # One seeded order for every epoch: under a strategy Keras draws a first batch from a fresh
        # iterator to build the model, which would shift a reshuffling pipeline's orders by one epoch.
        train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=1, reshuffle_each_iteration=False)
        train = train.batch(16).apply(tf.data.experimental.assert_cardinality(6))
        val = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16)
        result = fitting.fit_stage(model, run, "stage", train, val, learning_rate=0.05, epochs=args.epochs,
                                   keep="last", verbose=0, log=lambda m: None, extra_callbacks=[Hold()])
        np.savez(args.out, *[np.asarray(w) for w in model.get_weights()])
        with open(f"{args.out}.json", "w") as f:
            json.dump({"replicas": session.replicas, "variable": type(model.weights[0]._value).__name__,
                       "epochs_run": result.epochs_run, "run_path": run.path,
                       "chief": session.cluster.is_chief, "scratch": session.scratch}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
