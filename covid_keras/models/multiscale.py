"""Paper 001's multi-scale ResNet50 slice classifier (Garg et al.).

ImageNet ResNet50, built flat; the outputs of Stage3, Stage4 and Stage5
(``conv3_block4_out``, ``conv4_block6_out``, ``conv5_block3_out``) are
exposed as top-level layers ``stage3`` / ``stage4`` / ``stage5``, each
globally average-pooled (ours: the paper does not name the pooling),
concatenated to 512 + 1024 + 2048 = 3584 features -> Dropout -> Dense 1024
ReLU (``features``, the patient heads' input) -> Dense 3 softmax
(``probabilities``). ResNet50's ``preprocess_input`` is a layer inside, so
the model takes raw RGB pixels in [0, 255].
"""

import keras
from keras import layers

from covid_keras.models._common import (
    check_image_shape,
    check_num_classes,
    check_weights,
    imagenet_application,
    load_weights_file,
)
from covid_keras.models.layers import ImageNetPreprocessing

#: Keras ResNet50 layer that ends each stage.
STAGE_OUTPUTS = {
    "stage3": "conv3_block4_out",
    "stage4": "conv4_block6_out",
    "stage5": "conv5_block3_out",
}
FEATURE_UNITS = 1024
#: Dropout before the ``features`` layer (ours: the paper gives no rate).
DROPOUT = 0.5


def multiscale_resnet50(input_shape=(224, 224, 3), num_classes=3, weights="imagenet", dropout=DROPOUT,
                        feature_units=FEATURE_UNITS, name="multiscale_resnet50"):
    """Builds paper 001's multi-scale ResNet50 slice classifier.

    Args:
        input_shape: (H, W, 3) raw RGB pixels in [0, 255]; at least 32x32.
        num_classes: classes of the softmax (3: Normal, CAP, COVID-19).
        weights: ``None``, ``"imagenet"`` (Keras' download and cache) or a
            path to weights saved from this builder.
        dropout: rate of the Dropout after the concatenation.
        feature_units: width of the ``features`` Dense layer (1024).
        name: the model's name.

    Returns:
        A ``keras.Model`` with top-level layers ``stage3``, ``stage4``,
        ``stage5`` (= ``last_conv``), ``multiscale_concat`` (3584 wide),
        ``features`` and ``probabilities``.

    Raises:
        ConfigurationError: bad arguments. WeightsError: weights cannot be
        downloaded or loaded.

    Example:
        >>> m = multiscale_resnet50(input_shape=(64, 64, 3), weights=None)
        >>> m.get_layer("multiscale_concat").output.shape
        (None, 3584)
    """
    app_weights, weights_file = check_weights(weights)
    check_image_shape(input_shape, 32, channels=3)
    check_num_classes(num_classes)
    inputs = keras.Input(shape=input_shape, name="image")
    x = ImageNetPreprocessing("caffe", name="preprocess")(inputs)
    backbone = imagenet_application(keras.applications.ResNet50, "ResNet50", include_top=False,
                                    weights=app_weights, input_tensor=x)
    pooled = []
    for stage, layer_name in STAGE_OUTPUTS.items():
        out = backbone.get_layer(layer_name).output
        if stage == "stage5":
            out = layers.Identity(name="last_conv")(out)
        out = layers.Identity(name=stage)(out)
        pooled.append(layers.GlobalAveragePooling2D(name=f"{stage}_pool")(out))
    x = layers.Concatenate(name="multiscale_concat")(pooled)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(feature_units, activation="relu", name="features")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights_file:
        load_weights_file(model, weights_file)
    return model
