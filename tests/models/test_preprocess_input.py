"""The in-model ImageNet preprocessing equals keras.applications' preprocess_input of each backbone.

Each model takes raw RGB pixels in [0, 255]; the layer that turns them into
the backbone's inputs must compute what the backbone's own
``keras.applications.<module>.preprocess_input`` computes on the same pixels.
"""

import keras
import numpy as np
import pytest

from covid_keras.models import multiscale_resnet50, transfer
from covid_keras.models.layers import ImageNetPreprocessing

# (builder, arguments at a small size, the backbone's keras.applications module)
MODELS = {
    "multiscale_resnet50": (multiscale_resnet50, {"input_shape": (32, 32, 3)}, keras.applications.resnet50),
    "densenet_classifier": (transfer.densenet_classifier, {"input_shape": (32, 32, 3)},
                            keras.applications.densenet),
    "new_densenet": (transfer.new_densenet, {"input_shape": (32, 32, 3), "conv_filters": 4, "dense_units": 4},
                     keras.applications.densenet),
    "inceptionv3_classifier": (transfer.inceptionv3_classifier, {"input_shape": (75, 75, 3)},
                               keras.applications.inception_v3),
}


def _pixels(shape, seed=0):
    """Random RGB pixels in [0, 255], each channel drawn apart (a channel swap shows)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, shape).astype("float32")
    x[..., 0] *= 0.3  # R darker than B, so an RGB/BGR mix-up cannot cancel out
    return x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_preprocessing_equals_keras_applications(name):
    builder, kwargs, app = MODELS[name]
    model = builder(num_classes=2, weights=None, **kwargs)
    pre = [layer for layer in model.layers if isinstance(layer, ImageNetPreprocessing)]
    assert len(pre) == 1, [layer.name for layer in model.layers[:4]]
    pre = pre[0]
    # The backbone's first layer reads the preprocessed pixels, and nothing else does.
    readers = [layer for layer in model.layers if any(t is pre.output for t in keras.tree.flatten(layer.input))]
    assert len(readers) == 1 and readers[0] is model.layers[model.layers.index(pre) + 1]
    x = _pixels((2,) + tuple(kwargs["input_shape"]), seed=len(name))
    got = keras.Model(model.input, pre.output)(x)
    expected = app.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("app", [keras.applications.resnet50, keras.applications.densenet,
                                 keras.applications.inception_v3, keras.applications.vgg16,
                                 keras.applications.mobilenet_v2],
                         ids=lambda app: app.__name__.rsplit(".", 1)[-1])
def test_each_mode_equals_a_keras_applications_preprocess_input(app):
    """Every mode the layer offers matches the application that uses it."""
    x = _pixels((3, 5, 7, 3), seed=1)
    expected = app.preprocess_input(x.copy())
    matches = [mode for mode in ("caffe", "torch", "tf")
               if np.allclose(keras.ops.convert_to_numpy(ImageNetPreprocessing(mode)(x)), expected, atol=1e-4)]
    assert len(matches) == 1, matches
