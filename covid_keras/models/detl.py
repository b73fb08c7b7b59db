"""DETL (paper 003): a 12-layer CNN trained from scratch, and its domain extension.

Basu & Mitra, "Deep learning for screening COVID-19 using chest X-ray
images" (docs/papers.md, "003 DETL"). :func:`detl_cnn` is the CNN trained on
Data-A (NIH ChestX-ray14, ``CLASS_NAMES["detl_a"]``: normal vs disease);
:func:`detl_extend` is the domain extension to Data-B
(``CLASS_NAMES["detl_b"]``: normal, other_disease, pneumonia, covid): the
last fully-connected layer replaced by a 4-way softmax and everything up to
the last convolution block frozen. Training (Adam + cosine annealing for
Data-A, SGD 1e-4 momentum 0.9 for Data-B) is recipe ``detl_cnn``'s
(``covid_keras.recipes``).
"""


import keras
from keras import layers

from covid_keras import errors
from covid_keras.models._common import check_image_shape, check_num_classes, check_weights, load_weights_file

#: Filters of the six 3 x 3 convolutions, two per block (ours: the paper
#: gives "increasing filter numbers (32, 64, 128)" for six convolutions in
#: three convolution-and-pooling sets).
CONV_FILTERS = ((32, 32), (64, 64), (128, 128))

#: Units of the two hidden fully-connected layers (paper: 256 x 128 x 2).
FC_UNITS = (256, 128)

#: The layer :func:`detl_extend` freezes up to by default: the first
#: convolution of the last block.
DEFAULT_FREEZE_UNTIL = "block3_conv1"


def detl_cnn(input_shape=(224, 224, 3), num_classes=2, weights=None):
    """Paper 003's 12-layer CNN: three blocks of two "valid" 3 x 3 convolutions and a pool, then 256 -> 128 -> softmax.

    Follows Basu & Mitra (paper 003), trained from scratch on Data-A:
    six 3 x 3 convolutions with 32, 32, 64, 64, 128, 128 filters, "valid"
    padding and ReLU, three 2 x 2 max-pools (ours: one after each pair of
    convolutions), then fully-connected 256 -> 128 -> ``num_classes``.
    Inputs are raw pixels in [0, 255]; the model scales them to [0, 1]
    (layer ``rescale``; ours, the paper states no scaling).

    Layers by name, in order: ``image``, ``rescale``, ``block1_conv1``,
    ``block1_conv2``, ``block1_pool``, ``block2_conv1``, ``block2_conv2``,
    ``block2_pool``, ``block3_conv1``, ``block3_conv2`` (the last
    convolution), ``last_conv`` (an Identity on ``block3_conv2``'s output,
    the Grad-CAM layer), ``block3_pool``, ``flatten``, ``fc1``, ``fc2``,
    ``probabilities``.

    Args:
        input_shape: ``(height, width, channels)``, at least 36 x 36 (the
            valid convolutions and pools must leave a feature map).
        num_classes: number of classes, at least 2 (paper: 2 on Data-A).
        weights: ``None`` (random) or the path of a ``.weights.h5`` /
            ``.keras`` file saved from this builder with the same arguments.

    Returns:
        A ``keras.Model`` named ``detl_cnn``.

    Raises:
        ConfigurationError: an argument is out of range.
        WeightsError: the weights file cannot be loaded.

    Example:
        >>> m = detl_cnn(input_shape=(64, 64, 3))
        >>> m.get_layer("flatten").output.shape, m.output_shape
        ((None, 2048), (None, 2))
    """
    # Three (valid 3x3, valid 3x3, 2x2 pool) blocks: 36 -> 32 -> 16 -> 12 -> 6 -> 2 -> 1.
    check_image_shape(input_shape, 36)
    check_num_classes(num_classes)
    _, weights_file = check_weights(weights, allowed=(None,))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate(CONV_FILTERS, start=1):
        for i, f in enumerate(filters, start=1):
            x = layers.Conv2D(f, 3, padding="valid", activation="relu", name=f"block{block}_conv{i}")(x)
        if block == len(CONV_FILTERS):
            x = layers.Identity(name="last_conv")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(FC_UNITS, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="detl_cnn")
    if weights_file:
        load_weights_file(model, weights_file)
    return model


def detl_extend(source_model, num_classes=4, freeze_until=DEFAULT_FREEZE_UNTIL):
    """Paper 003's domain extension: a copy of a trained DETL CNN with a new softmax, partly frozen.

    Follows Basu & Mitra (paper 003): load the Data-A model, replace the
    last fully-connected layer with a ``num_classes``-way softmax, freeze
    the layers up to the last convolution block, and retrain the last
    convolution block and the fully-connected layers (compile the returned
    model yourself: recipe ``detl_cnn``'s phase 2 is SGD 1e-4, momentum 0.9).

    The source model is not changed: its layers are cloned and its weights
    copied into the clones, so training the extension leaves the source's
    weights and ``trainable`` flags as they were. The new model keeps the
    source's layer names; its output layer is a new ``probabilities`` Dense
    fed by the input of the source's output layer (``fc2`` for a
    :func:`detl_cnn`).

    Trainability: every layer before ``freeze_until`` in the model's layer
    order is frozen (``trainable = False``); ``freeze_until`` and every layer
    after it stay trainable. With the default, frozen: ``rescale``,
    ``block1_*``, ``block2_*``; trainable: ``block3_conv1``,
    ``block3_conv2``, ``fc1``, ``fc2`` and the new ``probabilities``.

    Args:
        source_model: a trained :func:`detl_cnn` (or any functional model
            whose output layer is named ``probabilities`` and holds a
            layer named ``freeze_until``).
        num_classes: classes of the new softmax, at least 2 (paper: 4 on
            Data-B).
        freeze_until: name of the first trainable layer, or None to leave
            every layer trainable.

    Returns:
        A new ``keras.Model`` named ``detl_extend``.

    Raises:
        ConfigurationError: ``source_model`` has no such layers, or
            ``num_classes`` is out of range.

    Example:
        >>> source = detl_cnn(input_shape=(64, 64, 3))
        >>> extended = detl_extend(source, num_classes=4)
        >>> extended.output_shape, extended.get_layer("block2_conv2").trainable
        ((None, 4), False)
    """
    if not isinstance(source_model, keras.Model):
        raise errors.ConfigurationError(
            f"`source_model` must be a keras.Model (a detl_cnn). Received: source_model={type(source_model).__name__}"
        )
    check_num_classes(num_classes)
    names = [layer.name for layer in source_model.layers]
    if "probabilities" not in names:
        raise errors.ConfigurationError(
            f"`source_model` {source_model.name!r} has no output layer named 'probabilities'; "
            "pass a model built by detl_cnn."
        )
    if freeze_until is not None and freeze_until not in names:
        raise errors.ConfigurationError(
            f"`freeze_until` must name a layer of {source_model.name!r} (e.g. {DEFAULT_FREEZE_UNTIL!r}). "
            f"Received: freeze_until={freeze_until!r}"
        )

    copy = keras.models.clone_model(source_model)
    copy.set_weights(source_model.get_weights())
    features = copy.get_layer("probabilities").input
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(features)
    model = keras.Model(copy.inputs, outputs, name="detl_extend")

    frozen = freeze_until is not None
    for layer in model.layers:
        if layer.name == freeze_until:
            frozen = False
        layer.trainable = not frozen
    return model



