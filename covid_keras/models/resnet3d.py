"""Paper 000's 3-D ResNet for whole CT volumes, with 2-D → 3-D weight inflation.

Xue & Abhayaratne (ICASSP 2021 SPGC) fine-tune MATLAB's pre-trained 3-D
ResNet50 convolutional base with a new head (Table 2): GlobalAveragePooling3D → Dense 512 → clipped ReLU
→ Dropout 0.5 → Dense 3 → softmax. MATLAB's 3-D weights are not available
to Keras, so (ours) the base is initialised by inflating the Keras ImageNet
2-D ResNet50 into 3-D kernels the way I3D does (Carreira & Zisserman,
"Quo Vadis, Action Recognition?", CVPR 2017).

The 3-D network mirrors ``keras.applications.ResNet50`` layer by layer, in
the same flat functional graph and under the same layer names
(``conv1_conv``, ``conv2_block1_1_conv``, ..., ``conv5_block3_out``), every
k×k kernel becoming k×k×k and every stride s becoming s in all three
dimensions; that is what lets :func:`inflate_from` copy weights by name.
Depths 18 and 34 (basic blocks of two 3×3×3 convolutions, as in He et al.
2016) are selectable; Table 2's 512 pooled channels are what they end with,
while depth 50 (the default) ends with 2048.
"""

import numpy as np

import keras
from keras import layers

from covid_keras import errors
from covid_keras.models import _common
from covid_keras.models.layers import ClippedReLU

#: Depths the builder accepts, and their (blocks per stage, block kind).
DEPTHS = (18, 34, 50)
_STAGES = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
}
#: Bottleneck (or basic-block) widths of stages conv2..conv5.
_FILTERS = (64, 128, 256, 512)
#: What ``weights=`` accepts (plus a file path).
WEIGHTS_CHOICES = (None, "imagenet-inflated")
#: How :func:`inflate_from` spreads a k×k kernel over the k depth taps.
INFLATION_MODES = ("mean", "center")
#: Keras' ResNet BatchNormalization epsilon.
_BN_EPSILON = 1.001e-5
_DATA_FORMAT = "channels_last"


def _conv(filters, kernel_size, name, strides=1, padding="valid"):
    return layers.Conv3D(filters, kernel_size, strides=strides, padding=padding,
                         data_format=_DATA_FORMAT, name=name)


def _bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=_BN_EPSILON, name=name)


def _bottleneck_block(x, filters, stride=1, conv_shortcut=True, name=None):
    """Keras' ``residual_block_v1`` in 3-D: 1×1×1 (strided) → 3×3×3 → 1×1×1 (×4)."""
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, f"{name}_0_conv", strides=stride)(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = _conv(filters, 1, f"{name}_1_conv", strides=stride)(x)
    x = _bn(f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv(filters, 3, f"{name}_2_conv", padding="same")(x)
    x = _bn(f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv(4 * filters, 1, f"{name}_3_conv")(x)
    x = _bn(f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _basic_block(x, filters, stride=1, conv_shortcut=True, name=None):
    """He et al.'s basic block in 3-D: 3×3×3 (strided) → 3×3×3, Keras-style names."""
    if conv_shortcut:
        shortcut = _conv(filters, 1, f"{name}_0_conv", strides=stride)(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = _conv(filters, 3, f"{name}_1_conv", strides=stride, padding="same")(x)
    x = _bn(f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv(filters, 3, f"{name}_2_conv", padding="same")(x)
    x = _bn(f"{name}_2_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _stack(x, filters, blocks, kind, stride1=2, name=None):
    """Keras' ``stack_residual_blocks_v1``: the first block projects and strides."""
    if kind == "bottleneck":
        x = _bottleneck_block(x, filters, stride=stride1, conv_shortcut=True, name=f"{name}_block1")
        for i in range(2, blocks + 1):
            x = _bottleneck_block(x, filters, conv_shortcut=False, name=f"{name}_block{i}")
        return x
    # Basic blocks project only where the shape changes (not in conv2).
    project = stride1 != 1 or x.shape[-1] != filters
    x = _basic_block(x, filters, stride=stride1, conv_shortcut=project, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = _basic_block(x, filters, conv_shortcut=False, name=f"{name}_block{i}")
    return x


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 4:
        raise errors.ConfigurationError(
            "`input_shape` must be (depth, height, width, channels), channels last, so that "
            f"batches are 5-D. Received: input_shape={input_shape!r}"
        )
    for size in shape:
        if size is not None and (not isinstance(size, (int, np.integer)) or size < 1):
            raise errors.ConfigurationError(
                f"`input_shape` must hold positive integers (or None for a spatial size). "
                f"Received: input_shape={input_shape!r}"
            )
    if shape[-1] is None:
        raise errors.ConfigurationError(
            f"`input_shape` must give the number of channels (last). Received: input_shape={input_shape!r}"
        )
    return shape


def _check_positive(name, value, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value <= 0 \
            or (kind is int and int(value) != value):
        raise errors.ConfigurationError(f"`{name}` must be a positive {kind.__name__}. Received: {name}={value!r}")
    return kind(value)


def resnet50_3d(input_shape=(224, 224, 224, 1), depth=50, num_classes=3, weights=None,
                dense_units=512, clip_ceiling=10.0, dropout=0.5, name=None):
    """Paper 000's 3-D ResNet classifier of whole CT volumes.

    Follows Xue & Abhayaratne, "Covid-19 diagnostic using 3D deep transfer
    learning for classification of volumetric computerised tomography chest
    scans", ICASSP 2021 (paper 000 in docs/papers.md): a Conv3D / MaxPool3D ResNet convolutional base without its
    fully connected layers, then Table 2's head: ``avg_pool``
    (GlobalAveragePooling3D) → ``fc1`` (Dense ``dense_units``) →
    ``fc1_clipped_relu`` (ReLU capped at ``clip_ceiling``, MATLAB's default
    10) → ``fc1_dropout`` → ``probabilities`` (Dense ``num_classes``,
    softmax).

    The base mirrors ``keras.applications.ResNet50`` in 3-D with the same
    layer names (``conv1_conv`` ... ``conv5_block3_out``); the last block's
    output is also exposed as ``last_conv`` (an Identity layer) for Grad-CAM.
    Depth 50 uses Keras' bottleneck blocks (the stride on the first 1×1×1
    convolution, v1); depths 18 and 34 use basic blocks. The pooled width is
    2048 for depth 50 and 512 for 18/34 (Table 2 shows 512).

    ``weights="imagenet-inflated"`` builds the Keras ImageNet 2-D ResNet50
    and inflates it (:func:`inflate_from`, ``mode="mean"``). Limitation: the
    2-D network was trained on ``preprocess_input``'s caffe inputs (BGR minus
    the ImageNet mean, in [0, 255]); no such step is applied here, CT volumes
    arrive in [0, 1], so the inflated weights are an initialisation for
    fine-tuning, not a ready feature extractor.

    Args:
        input_shape: (depth, height, width, channels), channels last.
        depth: 18, 34 or 50.
        num_classes: classes of the softmax output (the paper's 3:
            COVID, CAP, Normal).
        weights: None (random), ``"imagenet-inflated"`` (depth 50 only; needs
            the Keras ResNet50 ImageNet file, downloaded once or copied into
            ``~/.keras/models/``), or a path to a ``.weights.h5`` / ``.keras``
            file saved from this builder with the same arguments.
        dense_units: width of ``fc1`` (Table 2: 512).
        clip_ceiling: the clipped ReLU's ceiling.
        dropout: dropout rate before the output layer (Table 2: 0.5).
        name: model name; defaults to ``resnet{depth}_3d``.

    Returns:
        A ``keras.Model`` from [batch, D, H, W, C] volumes to [batch,
        num_classes] probabilities.

    Raises:
        ConfigurationError: a bad ``depth``, ``input_shape``, size or rate,
            or ``"imagenet-inflated"`` with a depth other than 50.
        WeightsError: the ImageNet weights cannot be downloaded, or the
            weights file is missing or does not fit.

    Example:
        >>> m = resnet50_3d(input_shape=(32, 32, 32, 1), depth=18, weights=None)
        >>> m.name, m.output_shape, m.get_layer("avg_pool").output.shape[-1]
        ('resnet18_3d', (None, 3), 512)
    """
    if depth not in DEPTHS:
        raise errors.ConfigurationError(f"`depth` must be one of {DEPTHS}. Received: depth={depth!r}")
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive("num_classes", num_classes)
    dense_units = _check_positive("dense_units", dense_units)
    clip_ceiling = _check_positive("clip_ceiling", clip_ceiling, float)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise errors.ConfigurationError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    application_weights, weights_file = _common.check_weights(weights, WEIGHTS_CHOICES)
    if application_weights == "imagenet-inflated" and depth != 50:
        raise errors.ConfigurationError(
            "`weights='imagenet-inflated'` inflates the Keras ImageNet ResNet50, so it needs depth=50. "
            f"Received: depth={depth}"
        )

    blocks, kind = _STAGES[depth]
    inputs = keras.Input(shape=input_shape, name="volume")
    x = layers.ZeroPadding3D(padding=3, data_format=_DATA_FORMAT, name="conv1_pad")(inputs)
    x = _conv(64, 7, "conv1_conv", strides=2)(x)
    x = _bn("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding3D(padding=1, data_format=_DATA_FORMAT, name="pool1_pad")(x)
    x = layers.MaxPool3D(3, strides=2, data_format=_DATA_FORMAT, name="pool1_pool")(x)
    for stage, (filters, n_blocks) in enumerate(zip(_FILTERS, blocks), start=2):
        x = _stack(x, filters, n_blocks, kind, stride1=1 if stage == 2 else 2, name=f"conv{stage}")
    x = layers.Identity(name="last_conv")(x)

    x = layers.GlobalAveragePooling3D(data_format=_DATA_FORMAT, name="avg_pool")(x)
    x = layers.Dense(dense_units, name="fc1")(x)
    x = ClippedReLU(clip_ceiling, name="fc1_clipped_relu")(x)
    x = layers.Dropout(dropout, name="fc1_dropout")(x)
    # float32 even under a mixed_float16 policy (--mixed-precision): the softmax and the loss
    # it feeds keep full precision, as Keras' mixed-precision guide advises.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}_3d")

    if application_weights == "imagenet-inflated":
        model_2d = _common.imagenet_application(
            keras.applications.ResNet50, "ResNet50",
            include_top=False, weights="imagenet", input_shape=(224, 224, 3),
        )
        inflate_from(model_2d, model, mode="mean")
    elif weights_file is not None:
        _common.load_weights_file(model, weights_file)
    return model


def _weighted_layers(model, kinds):
    return {layer.name: layer for layer in model.layers if isinstance(layer, kinds)}


def _inflate_kernel(kernel, depth_taps, in_channels, mode):
    """A [k, k, cin, cout] kernel → [depth_taps, k, k, cin', cout]."""
    if kernel.shape[2] != in_channels and in_channels == 1:
        # RGB filters of the first convolution applied to a grey volume:
        # a grey slice repeated in R, G and B gives the summed filter.
        kernel = kernel.sum(axis=2, keepdims=True)
    if mode == "mean":
        return np.repeat(kernel[None], depth_taps, axis=0) / depth_taps
    inflated = np.zeros((depth_taps,) + kernel.shape, dtype=kernel.dtype)
    inflated[depth_taps // 2] = kernel
    return inflated


def inflate_from(model_2d, model_3d, mode="mean"):
    """Copies a 2-D ResNet50's weights into a 3-D one, in place, layer by layer.

    I3D inflation (Carreira & Zisserman, CVPR 2017), paper 000's pre-trained
    3-D base as far as Keras can have it. Layers are matched by name: every
    ``*_conv`` Conv2D of ``model_2d`` goes into the Conv3D of the same name
    in ``model_3d`` and every ``*_bn`` BatchNormalization is copied as is
    (gamma, beta, moving mean and variance). The kernels:

    - ``mode="mean"``: each k×k kernel repeated over the k depth taps and
      divided by k, so a volume of identical slices gives, away from the
      depth borders, exactly the 2-D layer's output.
    - ``mode="center"``: the 2-D kernel at the central depth tap, zeros
      elsewhere; every depth position then computes the 2-D network on its
      own slice, so a volume of identical slices gives the 2-D network's
      features at every depth position.

    The first convolution's 2-D kernel has 3 input channels (RGB) while a CT
    volume has 1: its RGB input filters are summed (a grey slice repeated in
    R, G and B). Biases are copied. Layers of ``model_3d`` with no 2-D
    counterpart (the head) are left as they are.

    Limitation: the 2-D network's preprocessing (``preprocess_input``, caffe
    mode: RGB → BGR minus the ImageNet mean, in [0, 255]) is not applied; CT
    volumes arrive in [0, 1], so the inflated weights are a starting point for
    fine-tuning rather than ImageNet features of the volume.

    Args:
        model_2d: a 2-D ResNet50 (``keras.applications.ResNet50``, any
            ``include_top``); its input size does not matter.
        model_3d: the model from :func:`resnet50_3d` with ``depth=50``.
        mode: ``"mean"`` or ``"center"``.

    Returns:
        ``model_3d``, its weights replaced.

    Raises:
        ConfigurationError: a bad ``mode``, a convolution or BatchNormalization
            layer that one model has and the other lacks, or a kernel whose
            inflated shape does not fit.

    Example:
        >>> import keras
        >>> m2 = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
        >>> m3 = inflate_from(m2, resnet50_3d(input_shape=(32, 32, 32, 1)), mode="center")
        >>> tuple(m3.get_layer("conv1_conv").kernel.shape)
        (7, 7, 7, 1, 64)
    """
    _common.check_choice("mode", mode, INFLATION_MODES)
    kinds = (layers.Conv2D, layers.Conv3D, layers.BatchNormalization)
    source = _weighted_layers(model_2d, kinds)
    target = _weighted_layers(model_3d, kinds)
    for name in sorted(set(source) ^ set(target)):
        has, lacks = (model_2d, model_3d) if name in source else (model_3d, model_2d)
        raise errors.ConfigurationError(
            f"inflate_from: layer {name!r} of {has.name} has no counterpart in {lacks.name}; "
            "inflate a Keras 2-D ResNet50 into resnet50_3d(depth=50)."
        )

    updates = []
    for name, layer_3d in target.items():
        layer_2d = source[name]
        values = [np.asarray(w) for w in layer_2d.get_weights()]
        wanted = [tuple(w.shape) for w in layer_3d.weights]
        if isinstance(layer_3d, layers.Conv3D) and isinstance(layer_2d, layers.Conv2D) \
                and values and values[0].ndim == 4 and len(wanted[0]) == 5:
            depth_taps, in_channels = wanted[0][0], wanted[0][3]
            if values[0].shape[0] == depth_taps:
                values[0] = _inflate_kernel(values[0], depth_taps, in_channels, mode)
        elif isinstance(layer_3d, layers.Conv3D) or isinstance(layer_2d, (layers.Conv2D, layers.Conv3D)):
            raise errors.ConfigurationError(
                f"inflate_from: layer {name!r} is a {type(layer_2d).__name__} in {model_2d.name} and a "
                f"{type(layer_3d).__name__} in {model_3d.name}; a Conv2D must map to a Conv3D."
            )
        got = [tuple(v.shape) for v in values]
        if got != wanted:
            raise errors.ConfigurationError(
                f"inflate_from: layer {name!r} of {model_2d.name} has weights {got} after inflation but "
                f"{model_3d.name} expects {wanted}; inflate a Keras 2-D ResNet50 into resnet50_3d(depth=50)."
            )
        updates.append((layer_3d, values))
    for layer_3d, values in updates:
        layer_3d.set_weights([v.astype(w.dtype) for v, w in zip(values, layer_3d.get_weights())])
    return model_3d
