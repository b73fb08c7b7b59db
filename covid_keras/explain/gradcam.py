"""Grad-CAM heat maps with tf-keras-vis, for 2-D and 3-D models alike.

Every covid_keras model names its last convolution output ``last_conv`` (and
the multi-scale model its stage outputs ``stage3`` / ``stage4`` /
``stage5``), and builds its backbone flat, so tf-keras-vis reaches any named
layer without the "not connected to inputs" failure of nested backbones.

Grad-CAM (Selvaraju et al. 2017; as paper 003 describes it): the gradients
of the class score at the layer's output, averaged over space, weight the
layer's channels; the ReLU of the weighted sum, upsampled to the input size
and normalised, is the map. The class score is the output layer's value
before its softmax (tf-keras-vis' ``ReplaceToLinear``, as in the paper and
in the keras-io example).

The map is computed at exactly the layer named: tf-keras-vis is called with
``seek_penultimate_conv_layer=False``. With its default (``True``) it moves
from a layer that is not a ``Conv`` layer — ``last_conv`` and ``stage3..5``
are ``Identity`` layers — to the nearest convolution listed before it,
which explained ``conv3`` before its ReLU instead of ``last_conv`` in
``xray_cnn``, and gave the multi-scale model one identical map for all three
stages.
"""

import numpy as np

from covid_keras import errors


def _layer_names(model):
    return [layer.name for layer in model.layers]


def gradcam(model, images, class_index=None, layer="last_conv", normalize=True):
    """Grad-CAM maps of ``images`` for ``class_index`` at the output of ``layer``.

    The map is computed at the named layer's output (never at a convolution
    near it), with tf-keras-vis' ``Gradcam`` and ``seek_penultimate_conv_layer
    =False``. Resize and normalisation are tf-keras-vis': the map at the
    layer's resolution is upsampled to the input's spatial size by linear
    (order 1) spline interpolation, ``scipy.ndimage.zoom`` with corners
    aligned, in 2-D and 3-D alike; then each map is scaled by its own
    minimum and maximum, ``(m - min) / (max - min + 1e-7)``. An all-zero
    map (a layer that does not respond) therefore stays zero, never NaN, and
    a constant map becomes zero. The keras-io Grad-CAM example differs: it
    divides by the maximum only (``relu(m) / max``: NaN for an all-zero map,
    and a constant map becomes one), and it resizes the jet-coloured map as
    an RGB picture with PIL instead of resizing the values.

    Each call copies the model (tf-keras-vis' linear-output clone); to
    explain many images with one model, build a :class:`GradcamExplainer`
    once and call it.

    Args:
        model: a Keras model whose output layer is a softmax over classes.
        images: a batch [n, H, W, C] (or [n, D, H, W, C] for 3-D models).
        class_index: the class to explain: an int for every image, a list
            with one per image, or None for each image's predicted class.
        layer: the layer whose output is explained (``last_conv``,
            ``stage3``, ``stage4``, ``stage5``, or any layer with spatial
            axes).
        normalize: scale each map to [0, 1] as above; ``False`` returns the
            ReLU of the weighted sum, upsampled, in the layer's own units.

    Returns:
        float32 [n, H, W] (or [n, D, H, W]) maps, the input's spatial size.

    Raises:
        ConfigurationError: ``layer`` is not in the model, or its output has
            no spatial axes (a Dense layer such as ``features``).

    Example:
        >>> from covid_keras import models, explain
        >>> import numpy as np
        >>> m = models.xray_cnn(num_classes=2)
        >>> explain.gradcam(m, np.zeros((1, 64, 64, 3), "float32")).shape
        (1, 64, 64)
    """
    _check_layer(model, layer)
    return GradcamExplainer(model)(images, class_index=class_index, layer=layer, normalize=normalize)


def _check_layer(model, layer):
    if layer not in _layer_names(model):
        raise errors.ConfigurationError(
            f"`layer` {layer!r} is not a layer of {model.name}; Grad-CAM layers are named "
            "last_conv (every model) and stage3/stage4/stage5 (multi-scale)."
        )
    rank = len(model.get_layer(layer).output.shape)
    if rank < 3:
        raise errors.ConfigurationError(
            f"`layer` {layer!r} of {model.name} has no spatial axes (output rank {rank}); "
            "Grad-CAM needs a convolutional layer such as last_conv."
        )


class GradcamExplainer:
    """:func:`gradcam` for one model, its tf-keras-vis ``Gradcam`` built once and reused.

    Building it copies the model with a linear output layer (tf-keras-vis'
    ``ReplaceToLinear`` on a clone: about 3 s for DenseNet121 on 2 cores),
    so an app explaining many images builds one per model. The copy holds
    the weights the model had when the explainer was built: build it after
    training.

    Args:
        model: a Keras model whose output layer is a softmax over classes.

    Example:
        >>> from covid_keras import models
        >>> explainer = GradcamExplainer(models.xray_cnn(num_classes=2))
        >>> explainer(np.zeros((2, 64, 64, 3), "float32"), class_index=[0, 1]).shape
        (2, 64, 64)
    """

    def __init__(self, model):
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        self.model = model
        self._cam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def __call__(self, images, class_index=None, layer="last_conv", normalize=True):
        """The maps, as :func:`gradcam` computes them (same arguments, same result)."""
        from tf_keras_vis.utils.scores import CategoricalScore

        _check_layer(self.model, layer)
        images = np.asarray(images, dtype=np.float32)
        if class_index is None:
            class_index = np.argmax(self.model.predict(images, verbose=0), axis=-1).tolist()
        elif np.ndim(class_index) == 0:
            class_index = [int(class_index)] * len(images)
        maps = self._cam(CategoricalScore(list(class_index)), images, penultimate_layer=layer,
                         seek_penultimate_conv_layer=False, normalize_cam=normalize, expand_cam=True)
        return np.asarray(maps, dtype=np.float32).reshape(images.shape[:-1])


def overlay(image, cam, alpha=0.4):
    """Draws a [0, 1] heat map over a grey or RGB image (paper 004's display).

    Returns:
        uint8 RGB [H, W, 3]: the map scaled to [0, 255], coloured with the
        jet colour map, blended over the image.
    """
    import cv2

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 3:
        grey = img
    else:
        grey = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=-1)
    if grey.max() <= 1.0:
        grey = grey * 255.0
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(np.clip((1 - alpha) * grey + alpha * heat, 0, 255))
