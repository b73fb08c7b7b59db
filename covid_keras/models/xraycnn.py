"""XrayCNN (paper 004): the small chest X-ray CNN of Table 1 and its two-step hierarchy.

Gao & Wang, deep CNN for COVID-19 on chest X-rays (docs/papers.md, "004 XrayCNN").
:func:`xray_cnn` is Table 1, layer for layer; :class:`HierarchicalXrayClassifier`
chains two of them as the paper's user interface does: step 1 tells normal,
bacterial and viral pneumonia apart and, where viral wins, step 2 tells
non-viral pneumonia, COVID-19 and other viral pneumonia apart. The combined
result is reported over the paper's 4-class table (Fig. 5): :func:`combine`
in NumPy, :func:`combine_tensors` (with :func:`route`) in a graph, as the
two-step SavedModel (:func:`covid_keras.serving.export_two_step`) runs it.
"""

import numbers

import keras
import numpy as np
from keras import layers, ops

from covid_keras import errors
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.models._common import check_image_shape, check_num_classes, check_rate, check_weights, load_weights_file

#: Step 1 classes, in softmax order: normal, bacterial, viral.
STEP1_CLASSES = CLASS_NAMES["xraycnn_step1"]
#: Step 2 classes, in softmax order: non-viral pneumonia, COVID-19, other viral.
STEP2_CLASSES = CLASS_NAMES["xraycnn_step2"]
#: The paper's reported table (Fig. 5): Normal, bacterial, COVID-19, other viral.
COMBINED_CLASSES = CLASS_NAMES["xraycnn_4class"]

#: Table 1's convolution filters (3 x 3, "same", each followed by ReLU and a 2 x 2 max-pool).
CONV_FILTERS = (32, 64, 128)
#: Table 1's hidden dense layers, each followed by ReLU.
DENSE_UNITS = (16, 64, 128)

_VIRAL = STEP1_CLASSES.index("viral")


def xray_cnn(input_shape=(64, 64, 3), num_classes=2, dropout=0.5, weights=None):
    """Paper 004's CNN (Table 1): three conv/ReLU/pool stages, then Dense 16 -> 64 -> 128 -> softmax.

    Follows Gao & Wang (paper 004), Table 1, with one layer per table row:
    ``conv1`` (32 filters, 3 x 3, "same"), ``conv1_relu``, ``pool1``,
    ``conv2`` (64), ``conv2_relu``, ``pool2``, ``conv3`` (128),
    ``conv3_relu``, ``last_conv`` (Identity: the third convolution's output
    after its ReLU, for Grad-CAM), ``pool3``, ``flatten`` (8192 at 64 x 64),
    ``dense1`` (16), ``dense1_relu``, ``dense2`` (64), ``dense2_relu``,
    ``dense3`` (128), ``dense3_relu``, ``dropout``, ``probabilities``
    (Table 1's Dense4, softmax). At the paper's 64 x 64 x 3 input and 2
    classes the parameter counts are Table 1's: 896, 18,496, 73,856,
    131,088, 1,088, 8,320, 258.

    The paper uses "a dropout layer with a dropout factor of 0.5" without
    placing it in Table 1 (ours: before the output layer). Inputs are raw
    pixels in [0, 255], scaled to [0, 1] inside the model (layer
    ``rescale``; ours).

    Args:
        input_shape: ``(height, width, channels)``, at least 8 x 8.
        num_classes: number of classes, at least 2 (paper: 2 in Table 1;
            3 for each step of the hierarchy).
        dropout: dropout rate before the output layer, in [0, 1).
        weights: ``None`` (random) or the path of a ``.weights.h5`` /
            ``.keras`` file saved from this builder with the same arguments.

    Returns:
        A ``keras.Model`` named ``xray_cnn``.

    Raises:
        ConfigurationError: an argument is out of range.
        WeightsError: the weights file cannot be loaded.

    Example:
        >>> m = xray_cnn()
        >>> m.get_layer("flatten").output.shape, m.get_layer("dense1").count_params()
        ((None, 8192), 131088)
    """
    check_image_shape(input_shape, 8)
    check_num_classes(num_classes)
    check_rate("dropout", dropout)
    _, weights_file = check_weights(weights, allowed=(None,))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate(CONV_FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = layers.ReLU(name=f"conv{i}_relu")(x)
        if i == len(CONV_FILTERS):
            x = layers.Identity(name="last_conv")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(DENSE_UNITS, start=1):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.ReLU(name=f"dense{i}_relu")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="xray_cnn")
    if weights_file:
        load_weights_file(model, weights_file)
    return model


class HierarchicalXrayClassifier:
    """Paper 004's two-step diagnosis: step 1 for every image, step 2 where viral wins.

    Follows Gao & Wang (paper 004), Fig. 4: step 1 classifies
    ``STEP1_CLASSES`` (normal, bacterial, viral); "if detection of step 1
    shows viral pneumonia with the highest score", step 2 classifies
    ``STEP2_CLASSES`` (non-viral pneumonia, COVID-19, other viral). The
    result is reported over ``COMBINED_CLASSES`` (Normal, bacterial,
    COVID-19, other viral), the paper's Fig. 5 table.

    Combination (ours; the paper reports only the final labels), with step-1
    probabilities ``(n, b, v)`` and step-2 probabilities ``(nv, c, o)``:

    * routed images (step 1's argmax is viral): ``[n, b + v*nv, v*c, v*o]``.
      Step 2's non-viral pneumonia class is bacterial, fungal, lipoid or
      aspiration pneumonia, so its share of the viral mass goes to
      "bacterial", the table's only non-viral pneumonia class.
    * other images (step 2 not run): ``[n, b, v*f, v*(1-f)]`` with
      ``f = unrouted_covid_fraction`` (default 0.5: step 1's viral mass
      split evenly, no COVID-19 evidence either way). Because viral did not
      win, the label is normal or bacterial whatever ``f`` is.

    Every row is renormalised to sum to 1.

    Args:
        step1: a model (anything with ``predict(x, batch_size=, verbose=)``)
            returning ``[n, 3]`` probabilities over ``STEP1_CLASSES``, e.g.
            ``xray_cnn(num_classes=3)``.
        step2: the same over ``STEP2_CLASSES``.
        unrouted_covid_fraction: share of step 1's viral probability given
            to COVID-19 for images that step 2 does not see, in [0, 1].

    Raises:
        ConfigurationError: ``unrouted_covid_fraction`` is out of range.

    Example:
        >>> import numpy as np
        >>> clf = HierarchicalXrayClassifier(xray_cnn(num_classes=3), xray_cnn(num_classes=3))
        >>> out = clf.predict(np.zeros((2, 64, 64, 3), "float32"))
        >>> out["combined"].shape, len(out["labels"])
        ((2, 4), 2)
    """

    def __init__(self, step1, step2, unrouted_covid_fraction=0.5):
        for name, model in (("step1", step1), ("step2", step2)):
            if not callable(getattr(model, "predict", None)):
                raise errors.ConfigurationError(
                    f"`{name}` must be a model with a predict method. Received: {name}={type(model).__name__}"
                )
        self.step1 = step1
        self.step2 = step2
        self.unrouted_covid_fraction = _check_fraction(unrouted_covid_fraction)

    def predict(self, images, batch_size=32):
        """Classifies ``images`` [n, H, W, C] (raw pixels) through both steps.

        Returns:
            A dict of numpy arrays:
            ``step1`` float32 [n, 3] over ``STEP1_CLASSES``;
            ``routed`` bool [n], True where step 1's argmax is viral;
            ``step2`` float32 [n, 3] over ``STEP2_CLASSES``, NaN rows where
            step 2 was not run;
            ``combined`` float32 [n, 4] over ``COMBINED_CLASSES``, rows
            summing to 1;
            ``labels`` [n] str, the argmax class names of ``combined``.

        Raises:
            ConfigurationError: a step's model does not return [n, 3]
                probabilities.
        """
        images = np.asarray(images)
        n = len(images)
        p1 = _probabilities(self.step1.predict(images, batch_size=batch_size, verbose=0), n, "step1")
        routed = np.argmax(p1, axis=-1) == _VIRAL
        p2 = np.full((n, len(STEP2_CLASSES)), np.nan, dtype=np.float32)
        if routed.any():
            p2[routed] = _probabilities(
                self.step2.predict(images[routed], batch_size=batch_size, verbose=0), int(routed.sum()), "step2")
        combined = combine(p1, p2, routed, self.unrouted_covid_fraction)
        labels = np.asarray(COMBINED_CLASSES)[np.argmax(combined, axis=-1)]
        return {"step1": p1, "routed": routed, "step2": p2, "combined": combined, "labels": labels}


def combine(step1, step2, routed, unrouted_covid_fraction=0.5):
    """Combines step-1 and step-2 probabilities over ``COMBINED_CLASSES``.

    See :class:`HierarchicalXrayClassifier` for the rule. ``step2`` rows
    where ``routed`` is False are ignored (they may be NaN).

    Args:
        step1: [n, 3] over ``STEP1_CLASSES``.
        step2: [n, 3] over ``STEP2_CLASSES``.
        routed: bool [n], where step 2 was run.
        unrouted_covid_fraction: COVID-19's share of the viral mass where
            step 2 was not run.

    Returns:
        float32 [n, 4] over ``COMBINED_CLASSES``, rows summing to 1.

    Example:
        >>> import numpy as np
        >>> combine(np.array([[0.2, 0.2, 0.6]]), np.array([[0.5, 0.25, 0.25]]), np.array([True]))
        array([[0.2 , 0.5 , 0.15, 0.15]], dtype=float32)
    """
    p1 = np.asarray(step1, dtype=np.float64)
    p2 = np.asarray(step2, dtype=np.float64)
    routed = np.asarray(routed, dtype=bool)
    normal, bacterial, viral = p1[:, 0], p1[:, 1], p1[:, 2]
    f = unrouted_covid_fraction
    nonviral_share = np.where(routed, np.nan_to_num(p2[:, 0]), 0.0)
    covid_share = np.where(routed, np.nan_to_num(p2[:, 1]), f)
    other_share = np.where(routed, np.nan_to_num(p2[:, 2]), 1.0 - f)
    out = np.stack([normal, bacterial + viral * nonviral_share, viral * covid_share, viral * other_share], axis=-1)
    total = out.sum(axis=-1, keepdims=True)
    out = np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / out.shape[-1])
    return out.astype(np.float32)


def route(step1):
    """Where step 2 runs: step 1's argmax is viral, as a tensor (``keras.ops``).

    Equals ``numpy.argmax(step1, axis=-1) == viral`` exactly: viral must
    beat both other classes strictly, since argmax gives a tie to the
    earlier class (and ``tf.math.argmax`` does not promise which).

    Args:
        step1: [n, 3] over ``STEP1_CLASSES`` (a tensor or an array).

    Returns:
        A bool tensor [n].

    Example:
        >>> import numpy as np
        >>> np.asarray(route(np.array([[0.1, 0.2, 0.7], [0.4, 0.2, 0.4]], "float32"))).tolist()
        [True, False]
    """
    p1 = ops.convert_to_tensor(step1)
    viral = p1[:, _VIRAL]
    others = [p1[:, i] for i in range(len(STEP1_CLASSES)) if i != _VIRAL]
    return ops.logical_and(viral > others[0], viral > others[1])


def combine_tensors(step1, step2, routed, unrouted_covid_fraction=0.5):
    """:func:`combine` as ``keras.ops`` tensors, for a model graph or a SavedModel signature.

    The same rule and the same arithmetic as :func:`combine` (float64,
    summed left to right, then cast to float32), so both give the same
    float32 numbers. ``step2`` rows where ``routed`` is False are ignored
    (they may be NaN).

    Args:
        step1: [n, 3] over ``STEP1_CLASSES``.
        step2: [n, 3] over ``STEP2_CLASSES``.
        routed: bool [n], where step 2 was run.
        unrouted_covid_fraction: a Python number in [0, 1], COVID-19's
            share of the viral mass where step 2 was not run.

    Returns:
        A float32 tensor [n, 4] over ``COMBINED_CLASSES``, rows summing to 1.

    Raises:
        ConfigurationError: ``unrouted_covid_fraction`` is out of range.

    Example:
        >>> import numpy as np
        >>> np.asarray(combine_tensors(np.array([[0.2, 0.2, 0.6]]), np.array([[0.5, 0.25, 0.25]]),
        ...                            np.array([True])))
        array([[0.2 , 0.5 , 0.15, 0.15]], dtype=float32)
    """
    f = _check_fraction(unrouted_covid_fraction)
    p1 = ops.cast(step1, "float64")
    p2 = ops.cast(step2, "float64")
    routed = ops.cast(routed, "bool")
    normal, bacterial, viral = p1[:, 0], p1[:, 1], p1[:, 2]
    p2 = ops.where(ops.isnan(p2), ops.zeros_like(p2), p2)  # np.nan_to_num; probabilities are never infinite
    nonviral_share = ops.where(routed, p2[:, 0], 0.0)
    covid_share = ops.where(routed, p2[:, 1], f)
    other_share = ops.where(routed, p2[:, 2], 1.0 - f)
    columns = [normal, bacterial + viral * nonviral_share, viral * covid_share, viral * other_share]
    # numpy sums 4 numbers left to right: the same order here, for the same rounding.
    total = ((columns[0] + columns[1]) + columns[2]) + columns[3]
    total = ops.expand_dims(total, -1)
    out = ops.stack(columns, axis=-1)
    out = ops.where(total > 0, out / ops.where(total > 0, total, 1.0), 1.0 / len(columns))
    return ops.cast(out, "float32")


def _check_fraction(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise errors.ConfigurationError(
            f"`unrouted_covid_fraction` must be in [0, 1]. Received: unrouted_covid_fraction={value!r}"
        )
    return float(value)


def _probabilities(p, n, name):
    p = np.asarray(p, dtype=np.float32)
    if p.shape != (n, 3):
        raise errors.ConfigurationError(
            f"`{name}` must return [n, 3] probabilities; it returned shape {p.shape} for {n} images."
        )
    return p

