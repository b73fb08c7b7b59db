"""Small custom layers the paper models need where Keras has none.

Every layer is registered for serialisation under the ``covid_keras``
package, keeps one attribute per ``__init__`` argument and chains
``get_config`` to ``super()``, so ``.keras`` files load with
``safe_mode=True`` (no Lambda layers anywhere).
"""

import keras
from keras import layers, ops

# keras.applications' preprocess_input modes, as constants a layer can hold.
_IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
_IMAGENET_TORCH_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("caffe", "torch", "tf")


@keras.saving.register_keras_serializable(package="covid_keras")
class ImageNetPreprocessing(layers.Layer):
    """``keras.applications.*.preprocess_input`` as a layer, so models take raw pixels.

    Args:
        mode: ``"caffe"`` (ResNet50: RGB -> BGR, minus the ImageNet mean),
            ``"torch"`` (DenseNet: [0, 1], minus mean, over std) or ``"tf"``
            (InceptionV3: [-1, 1]).

    Input: float images in [0, 255], RGB, channels last.

    Example:
        >>> import numpy as np
        >>> layer = ImageNetPreprocessing("tf")
        >>> float(layer(np.full((1, 2, 2, 3), 255.0, "float32"))[0, 0, 0, 0])
        1.0
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"`mode` must be one of {PREPROCESS_MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_IMAGENET_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        bgr = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB[::-1], dtype=x.dtype)
        return bgr - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="covid_keras")
class ClippedReLU(layers.Layer):
    """ReLU capped at ``ceiling`` (MATLAB's clippedReluLayer, default 10; paper 000's head)."""

    def __init__(self, ceiling=10.0, **kwargs):
        super().__init__(**kwargs)
        if ceiling <= 0:
            raise ValueError(f"`ceiling` must be positive. Received: ceiling={ceiling}")
        self.ceiling = float(ceiling)

    def call(self, inputs):
        return ops.clip(inputs, 0.0, self.ceiling)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ceiling": self.ceiling})
        return config
