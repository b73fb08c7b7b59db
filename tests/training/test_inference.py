"""One traced function for inputs of many sizes (features, pseudo-labels, heads)."""

import keras
import numpy as np
import tensorflow as tf

from covid_keras.models import bilstm_head
from covid_keras.training.inference import Predictor


def _slice_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, [keras.layers.Dense(5, name="features")(x), keras.layers.Dense(3)(x)])


def test_same_outputs_as_predict_with_one_trace():
    model = _slice_model()
    predictor = Predictor(model)
    rng = np.random.default_rng(0)
    for n in (3, 7, 12, 1, 30):  # studies with different slice counts
        x = rng.random((n, 8, 8, 3), dtype=np.float32)
        feats, probs = predictor(x, batch_size=8)
        want = model.predict(x, verbose=0)
        np.testing.assert_allclose(feats, want[0], atol=1e-5)
        np.testing.assert_allclose(probs, want[1], atol=1e-5)
    assert predictor._fn.experimental_get_tracing_count() == 1


def test_padded_sequence_batches_from_a_dataset():
    head = bilstm_head(feature_dim=6, lstm_units=4, hidden_units=8)
    rng = np.random.default_rng(1)
    lengths = [2, 5, 3, 9, 4]
    feats = np.zeros((len(lengths), 9, 6), np.float32)
    mask = np.zeros((len(lengths), 9), bool)
    for i, n in enumerate(lengths):
        feats[i, :n] = rng.random((n, 6))
        mask[i, :n] = True
    ds = tf.data.Dataset.from_tensor_slices(({"slice_features": feats, "slice_mask": mask}, np.zeros(5)))
    # Batches of two, each padded only to its own longest study.
    batches = [{"slice_features": feats[i:i + 2, :max(lengths[i:i + 2])],
                "slice_mask": mask[i:i + 2, :max(lengths[i:i + 2])]} for i in range(0, 5, 2)]
    predictor = Predictor(head)
    got = np.concatenate([predictor(b) for b in batches])
    want = head.predict({"slice_features": feats, "slice_mask": mask}, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)  # masking: padding length does not matter
    np.testing.assert_allclose(predictor(ds.batch(2)), want, atol=1e-5)
    assert predictor._fn.experimental_get_tracing_count() == 1  # every batch size and length


def test_nothing_to_predict_is_a_clear_error():
    import pytest

    from covid_keras import errors

    with pytest.raises(errors.ConfigurationError, match="hold no example"):
        Predictor(_slice_model())(np.zeros((0, 8, 8, 3), np.float32))


def test_one_trace_per_model_raises_no_retracing_warning(caplog):
    # Feature extraction and four heads in one process: five models, one
    # trace each, must not look like "excessive retracing" to TensorFlow.
    caplog.set_level("WARNING", logger="tensorflow")
    for _ in range(7):
        inputs = keras.Input((None, 4))
        model = keras.Model(inputs, keras.layers.GlobalMaxPooling1D()(keras.layers.Dense(3)(inputs)))
        Predictor(model)(np.zeros((2, 3, 4), np.float32))
    assert "retracing" not in caplog.text
