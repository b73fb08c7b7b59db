"""Transfer (paper 002): ImageNet DenseNet and InceptionV3 classifiers, and New-DenseNet.

Berrimi et al., "COVID-19 detection from Xray and CT scans using transfer
learning" (docs/papers.md, "002 Transfer"). Each builder takes raw pixels in
[0, 255]: the ``keras.applications`` preprocessing is a layer inside the
model (``imagenet_preprocessing``: ``"torch"`` for DenseNet, ``"tf"`` for
InceptionV3). Backbones are built flat, so every backbone layer is a layer
of the returned model, and the last feature map is exposed as ``last_conv``
for Grad-CAM. The paper's classes: X-ray 3 (``CLASS_NAMES["transfer_xray"]``),
CT 2 (``CLASS_NAMES["transfer_ct"]``); any ``num_classes >= 2`` builds.
"""


import keras
from keras import layers

from covid_keras.models._common import (
    check_choice,
    check_image_shape,
    check_num_classes,
    check_positive_int,
    check_rate,
    check_weights,
    imagenet_application,
    load_weights_file,
)
from covid_keras.models.layers import ImageNetPreprocessing

#: DenseNet depths the DenseNet builders accept (ours: 121 by default).
DENSENET_VARIANTS = (121, 169, 201)

# keras.applications constructor names, looked up at call time.
_DENSENET_CONSTRUCTORS = {121: "DenseNet121", 169: "DenseNet169", 201: "DenseNet201"}

# Smallest spatial size each backbone accepts (keras.applications' checks).
_MIN_SIZE = {"densenet": 32, "inception_v3": 75}


def densenet_classifier(input_shape=(224, 224, 3), num_classes=3, variant=121, weights="imagenet", dropout=0.0):
    """ImageNet DenseNet with its top replaced by one softmax layer (paper 002's "DenseNet").

    Follows Berrimi et al. (paper 002): the DenseNet convolutional base,
    global average pooling, then a new fully-connected softmax layer.
    The paper does not name the depth: DenseNet121 by default, 169 and 201
    selectable (ours).

    Layers by name: ``imagenet_preprocessing`` (``"torch"`` mode), the
    DenseNet layers, ``last_conv`` (the final feature map), ``avg_pool``,
    ``dropout`` (only when ``dropout > 0``), ``probabilities``.

    Args:
        input_shape: ``(height, width, 3)``, at least 32 x 32; inputs are raw
            pixels in [0, 255].
        num_classes: number of classes, at least 2 (paper: 3 for X-ray,
            2 for CT).
        variant: DenseNet depth, one of ``DENSENET_VARIANTS``.
        weights: ``"imagenet"``, ``None`` (random) or the path of a
            ``.weights.h5`` / ``.keras`` file saved from this builder with
            the same arguments.
        dropout: dropout rate before the softmax layer, in [0, 1); 0 (the
            paper's plain replacement) adds no layer.

    Returns:
        A ``keras.Model`` named ``densenet_classifier``.

    Raises:
        ConfigurationError: an argument is out of range.
        WeightsError: the ImageNet weights cannot be downloaded, or the
            weights file cannot be loaded.

    Example:
        >>> m = densenet_classifier(input_shape=(32, 32, 3), num_classes=2, weights=None)
        >>> m.output_shape
        (None, 2)
    """
    check_choice("variant", variant, DENSENET_VARIANTS)
    check_image_shape(input_shape, _MIN_SIZE["densenet"], channels=3)
    check_num_classes(num_classes)
    check_rate("dropout", dropout)
    app_weights, weights_file = check_weights(weights)

    inputs, features = _densenet_base(input_shape, variant, app_weights)
    x = layers.Identity(name="last_conv")(features)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="densenet_classifier")
    if weights_file:
        load_weights_file(model, weights_file)
    return model


def inceptionv3_classifier(input_shape=(299, 299, 3), num_classes=3, weights="imagenet"):
    """ImageNet InceptionV3 with its top replaced by one softmax layer (paper 002).

    Follows Berrimi et al. (paper 002): the InceptionV3 convolutional base,
    global average pooling, then a new fully-connected softmax layer.

    Layers by name: ``imagenet_preprocessing`` (``"tf"`` mode: [-1, 1]),
    the InceptionV3 layers, ``last_conv`` (the ``mixed10`` feature map),
    ``avg_pool``, ``probabilities``.

    Args:
        input_shape: ``(height, width, 3)``, at least 75 x 75; inputs are raw
            pixels in [0, 255]. The paper resizes to 224 x 224; 299 x 299
            is InceptionV3's native size.
        num_classes: number of classes, at least 2.
        weights: ``"imagenet"``, ``None`` or the path of a weights file saved
            from this builder with the same arguments.

    Returns:
        A ``keras.Model`` named ``inceptionv3_classifier``.

    Raises:
        ConfigurationError: an argument is out of range.
        WeightsError: the ImageNet weights cannot be downloaded, or the
            weights file cannot be loaded.

    Example:
        >>> m = inceptionv3_classifier(input_shape=(75, 75, 3), num_classes=2, weights=None)
        >>> m.output_shape
        (None, 2)
    """
    check_image_shape(input_shape, _MIN_SIZE["inception_v3"], channels=3)
    check_num_classes(num_classes)
    app_weights, weights_file = check_weights(weights)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = ImageNetPreprocessing("tf", name="imagenet_preprocessing")(inputs)
    backbone = imagenet_application(
        keras.applications.InceptionV3, "InceptionV3",
        include_top=False, weights=app_weights, input_tensor=x, input_shape=tuple(input_shape),
    )
    x = layers.Identity(name="last_conv")(backbone.output)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="inceptionv3_classifier")
    if weights_file:
        load_weights_file(model, weights_file)
    return model


def new_densenet(input_shape=(224, 224, 3), num_classes=3, variant=121, weights="imagenet",
                 conv_filters=256, dense_units=256, dropout=0.5):
    """Paper 002's "New-DenseNet": DenseNet + an extra convolution + a regularised dense head.

    Follows Berrimi et al. (paper 002), section "DenseNet tuning": a
    convolutional layer added on top of the DenseNet features, then a dense
    layer, dropout and batch normalisation before the softmax. The paper
    gives no sizes (ours: a 3 x 3 "same" convolution of ``conv_filters``
    filters with ReLU, global average pooling, ``dense_units`` ReLU units,
    dropout ``dropout``; defaults 256 / 256 / 0.5).

    Layers by name, in order after the DenseNet base: ``extra_conv``
    (Conv2D + ReLU), ``last_conv`` (its output, for Grad-CAM), ``avg_pool``,
    ``fc`` (Dense + ReLU), ``dropout``, ``fc_bn`` (BatchNormalization),
    ``probabilities``.

    Args:
        input_shape: ``(height, width, 3)``, at least 32 x 32; raw pixels in
            [0, 255].
        num_classes: number of classes, at least 2.
        variant: DenseNet depth, one of ``DENSENET_VARIANTS``.
        weights: ``"imagenet"`` (the DenseNet base; the head starts random),
            ``None`` or the path of a weights file saved from this builder
            with the same arguments.
        conv_filters: filters of the extra convolution.
        dense_units: units of the dense layer.
        dropout: dropout rate after the dense layer, in [0, 1).

    Returns:
        A ``keras.Model`` named ``new_densenet``.

    Raises:
        ConfigurationError: an argument is out of range.
        WeightsError: the ImageNet weights cannot be downloaded, or the
            weights file cannot be loaded.

    Example:
        >>> m = new_densenet(input_shape=(32, 32, 3), num_classes=2, weights=None,
        ...                  conv_filters=8, dense_units=8)
        >>> m.get_layer("extra_conv").filters, m.output_shape
        (8, (None, 2))
    """
    check_choice("variant", variant, DENSENET_VARIANTS)
    check_image_shape(input_shape, _MIN_SIZE["densenet"], channels=3)
    check_num_classes(num_classes)
    check_positive_int("conv_filters", conv_filters)
    check_positive_int("dense_units", dense_units)
    check_rate("dropout", dropout)
    app_weights, weights_file = check_weights(weights)

    inputs, features = _densenet_base(input_shape, variant, app_weights)
    x = layers.Conv2D(conv_filters, 3, padding="same", activation="relu", name="extra_conv")(features)
    x = layers.Identity(name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(dense_units, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="new_densenet")
    if weights_file:
        load_weights_file(model, weights_file)
    return model


def _densenet_base(input_shape, variant, app_weights):
    """Input -> "torch" preprocessing -> flat DenseNet base; returns (inputs, last feature map)."""
    name = _DENSENET_CONSTRUCTORS[variant]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = ImageNetPreprocessing("torch", name="imagenet_preprocessing")(inputs)
    backbone = imagenet_application(
        getattr(keras.applications, name), name,
        include_top=False, weights=app_weights, input_tensor=x, input_shape=tuple(input_shape),
    )
    return inputs, backbone.output







