"""The contract every model builder must keep, as reusable checks."""

import numpy as np
import pytest


@pytest.fixture
def model_contract(tmp_path):
    """Returns check(model, x, gradcam_layers=("last_conv",)) for one model.

    Checks: ``.keras`` save -> load with safe_mode=True -> identical
    predictions; predict on a ``tf.data`` input equals predict on arrays;
    the output layer is named ``probabilities`` and sums to 1; a Grad-CAM
    map from tf-keras-vis at each named layer has the input's spatial shape,
    values in [0, 1].
    """
    import keras
    import tensorflow as tf

    from covid_keras import explain

    def check(model, x, gradcam_layers=("last_conv",)):
        """``x``: one array, or a list of arrays for a multi-input model."""
        names = [layer.name for layer in model.layers]
        assert "probabilities" in names, names[-5:]
        for name in gradcam_layers:
            assert name in names
        expected = model.predict(x, verbose=0)
        np.testing.assert_allclose(expected.sum(axis=-1), 1.0, atol=1e-5)
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
        if isinstance(x, (list, tuple)):  # multi-input: feed tf.data by input name
            ds = tf.data.Dataset.from_tensor_slices(
                {t.name: arr for t, arr in zip(model.inputs, x)}).batch(2)
            first = [arr[:1] for arr in x]
        else:
            ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
            first = x[:1]
        np.testing.assert_allclose(model.predict(ds, verbose=0), expected, atol=1e-5)
        for name in gradcam_layers:
            cam = explain.gradcam(model, first, class_index=0, layer=name)
            assert cam.shape == (1,) + x.shape[1:-1]
            assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
        return expected

    return check
