"""Grad-CAM heat maps with tf-keras-vis, for 2-D and 3-D models alike.

Every covid_keras model names its last convolution output ``last_conv`` (and
the multi-scale model its stage outputs ``stage3`` / ``stage4`` /
``stage5``), and builds its backbone flat, so tf-keras-vis finds the layer
without the "not connected to inputs" failure of nested backbones.
Grad-CAM (Selvaraju et al. 2017; as paper 003 describes it): the class
score's gradients at the layer, averaged over space, weight the layer's
channels; the ReLU of the weighted sum, upsampled to the input size and
normalised, is the map.
"""

import numpy as np

from covid_keras import errors


def _layer_names(model):
    return [layer.name for layer in model.layers]


def gradcam(model, images, class_index=None, layer="last_conv", normalize=True):
    """Grad-CAM maps of ``images`` for ``class_index`` at ``layer``.

    Args:
        model: a Keras model whose output is class probabilities.
        images: a batch [n, H, W, C] (or [n, D, H, W, C] for 3-D models).
        class_index: the class to explain: an int for every image, a list
            with one per image, or None for each image's predicted class.
        layer: the layer whose output is explained (``last_conv``,
            ``stage3``, ``stage4``, ``stage5``, ...).
        normalize: scale each map to [0, 1].

    Returns:
        float32 [n, H, W] (or [n, D, H, W]) maps, the input's spatial size.

    Raises:
        ConfigurationError: ``layer`` is not in the model.

    Example:
        >>> from covid_keras import models, explain
        >>> import numpy as np
        >>> m = models.xray_cnn(num_classes=2)
        >>> explain.gradcam(m, np.zeros((1, 64, 64, 3), "float32")).shape
        (1, 64, 64)
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if layer not in _layer_names(model):
        raise errors.ConfigurationError(
            f"`layer` {layer!r} is not a layer of {model.name}; Grad-CAM layers are named "
            "last_conv (every model) and stage3/stage4/stage5 (multi-scale)."
        )
    images = np.asarray(images, dtype=np.float32)
    if class_index is None:
        class_index = np.argmax(model.predict(images, verbose=0), axis=-1).tolist()
    elif np.ndim(class_index) == 0:
        class_index = [int(class_index)] * len(images)
    cam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    maps = cam(CategoricalScore(list(class_index)), images, penultimate_layer=layer,
               normalize_cam=normalize, expand_cam=True)
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
