"""One worker of a two-worker MultiWorkerMirroredStrategy run of plain Keras, with or without the workaround.

    TF_CONFIG=... python tests/training/multiworker_probe.py with|without OUT.json

Fits, evaluates and predicts a tiny model under the strategy; with
``with`` inside :func:`covid_keras.training.multiworker_fix.installed`.
Writes ``{"ok": ..., "error": "<type>: <message>"}`` to OUT.json, so that
the test reads which Keras defect (if any) showed.
"""

import json
import sys


def main(mode, out):
    import contextlib

    import keras
    import numpy as np
    import tensorflow as tf

    from covid_keras.training import multiworker_fix

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    result = {"keras": keras.__version__}
    try:
        with multiworker_fix.installed() if mode == "with" else contextlib.nullcontext(), strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
            history = model.fit(data, epochs=2, verbose=0)
            loss, accuracy = model.evaluate(data, verbose=0)
            predicted = model.predict(x[:11], batch_size=4, verbose=0)
        result.update(ok=True, loss=history.history["loss"], evaluated=[loss, accuracy],
                      predicted_matches_call=float(np.abs(predicted - model(x[:11]).numpy()).max()),
                      weights=[w.tolist() for w in model.get_weights()])
    except Exception as e:  # noqa: BLE001 - the test reads which error Keras raised
        result.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
