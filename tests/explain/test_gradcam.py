"""Grad-CAM is computed at exactly the layer it names.

The reference below is a plain ``tf.GradientTape`` Grad-CAM written here, not
tf-keras-vis: the pre-softmax class score's gradient at the layer's output,
spatial-mean channel weights, ReLU of the weighted sum, then the same resize
(linear ``scipy.ndimage.zoom``) and min-max normalisation that
``explain.gradcam`` documents. A Grad-CAM that explains another layer (the
nearest convolution before an ``Identity``, as tf-keras-vis' default seek
did) differs from it.
"""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from covid_keras import errors, explain, models


def reference_gradcam(model, images, class_index, layer):
    """Plain GradientTape Grad-CAM at ``layer``'s output, normalised to [0, 1]."""
    import keras

    head = model.get_layer("probabilities")
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, head.input])
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        activation, features = probe(images, training=False)
        logits = tf.matmul(features, head.kernel) + head.bias  # the class score before the softmax
        score = tf.reduce_sum(logits[:, class_index])
    grads = tape.gradient(score, activation).numpy()
    activation = activation.numpy()
    spatial = tuple(range(1, grads.ndim - 1))
    weights = grads.mean(axis=spatial, keepdims=True)
    cam = np.maximum((activation * weights).sum(axis=-1), 0.0)
    factors = (1.0,) + tuple(t / f for t, f in zip(images.shape[1:-1], cam.shape[1:]))
    cam = scipy.ndimage.zoom(cam, factors, order=1)
    axes = tuple(range(1, cam.ndim))
    low, high = cam.min(axis=axes, keepdims=True), cam.max(axis=axes, keepdims=True)
    return ((cam - low) / (high - low + 1e-7)).astype(np.float32)


def _random_images(shape, seed):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.fixture(scope="module")
def multiscale_64():
    import keras

    keras.utils.set_random_seed(1)
    return models.multiscale_resnet50(input_shape=(64, 64, 3), weights=None)


STAGES = ("stage3", "stage4", "stage5", "last_conv")


@pytest.fixture(scope="module")
def multiscale_maps(multiscale_64):
    """{(layer, class): maps} for 3 random images; random weights leave some maps all zero."""
    x = _random_images((3, 64, 64, 3), seed=1)
    return x, {(name, c): explain.gradcam(multiscale_64, x, class_index=c, layer=name)
               for name in STAGES for c in range(3)}


def _assert_matches_reference(model, x, class_index, layer, cam):
    """Returns how many of the maps are informative (not all zero)."""
    expected = reference_gradcam(model, x, class_index, layer)
    assert cam.shape == expected.shape
    np.testing.assert_allclose(cam, expected, atol=1e-4, rtol=0)
    return int(np.sum(expected.reshape(len(expected), -1).max(axis=1) > 0.5))


@pytest.mark.parametrize("layer", STAGES)
def test_multiscale_gradcam_is_at_the_named_layer(multiscale_64, multiscale_maps, layer):
    x, maps = multiscale_maps
    informative = sum(_assert_matches_reference(multiscale_64, x, c, layer, maps[layer, c]) for c in range(3))
    assert informative >= 3, f"only {informative} of 9 maps at {layer} are not all zero"


def test_multiscale_stage_maps_differ(multiscale_maps):
    _, maps = multiscale_maps
    for a, b in (("stage3", "stage4"), ("stage3", "stage5"), ("stage4", "stage5")):
        compared = 0
        for c in range(3):
            for i in range(3):
                ma, mb = maps[a, c][i], maps[b, c][i]
                if ma.max() > 0.5 and mb.max() > 0.5:
                    compared += 1
                    assert np.abs(ma - mb).max() > 0.1, (a, b, c, i)
        assert compared >= 2, (a, b)
    # last_conv is stage5 by definition (models.multiscale_resnet50's docstring).
    for c in range(3):
        np.testing.assert_allclose(maps["last_conv", c], maps["stage5", c], atol=1e-6)


def test_xray_cnn_gradcam_is_after_the_relu():
    import keras

    keras.utils.set_random_seed(2)
    model = models.xray_cnn(input_shape=(64, 64, 3), num_classes=3)
    x = _random_images((3, 64, 64, 3), seed=2)
    informative = 0
    for c in range(3):  # every class of every image; with random weights some maps are all zero
        cam = explain.gradcam(model, x, class_index=c, layer="last_conv")
        informative += _assert_matches_reference(model, x, c, "last_conv", cam)
        # conv3, before its ReLU, is where the default seek went: a different map.
        assert np.abs(reference_gradcam(model, x, c, "conv3") - cam).max() > 1e-2
    assert informative >= 3


def test_resnet3d_gradcam_is_at_the_named_layer():
    import keras

    keras.utils.set_random_seed(3)
    model = models.resnet50_3d(input_shape=(64, 64, 64, 1), depth=18)  # last_conv is 2 x 2 x 2
    x = np.random.default_rng(3).random((2, 64, 64, 64, 1)).astype("float32")
    informative = 0
    for c in range(3):
        cam = explain.gradcam(model, x, class_index=c, layer="last_conv")
        assert cam.shape == (2, 64, 64, 64)
        informative += _assert_matches_reference(model, x, c, "last_conv", cam)
    assert informative >= 2


def test_all_zero_map_stays_zero():
    # Zero images through bias-free-at-init convolutions: last_conv is all zero, so is its map.
    model = models.xray_cnn(input_shape=(32, 32, 3), num_classes=2)
    x = np.zeros((2, 32, 32, 3), "float32")
    for normalize in (True, False):
        cam = explain.gradcam(model, x, class_index=0, layer="last_conv", normalize=normalize)
        assert np.isfinite(cam).all()
        assert np.count_nonzero(cam) == 0


def test_layer_without_space_is_a_configuration_error(multiscale_64):
    with pytest.raises(errors.ConfigurationError, match="no spatial axes"):
        explain.gradcam(multiscale_64, np.zeros((1, 64, 64, 3), "float32"), layer="features")
    with pytest.raises(errors.ConfigurationError, match="not a layer"):
        explain.gradcam(multiscale_64, np.zeros((1, 64, 64, 3), "float32"), layer="stage9")
