"""Paper 001's patient-level heads over the slices of one study.

Each head takes a padded batch of slice sequences ``[batch, T, F]`` and a
boolean mask ``[batch, T]`` (True = a real slice), so any slice count works
and padding never changes the answer:

* :func:`maxpool_head`: element-wise max over the real slices -> Dense 512
  ReLU -> Dense 3 softmax (Maxpool on the 1024-d features, Maxpool-Weighted
  on the 3072-d weighted features);
* :func:`bilstm_head`: BiLSTM with 512 units per direction over the real
  slices -> mean of its outputs over the real slices -> Dense 1024 ReLU ->
  Dense 3 softmax (BiLSTM, BiLSTM-Weighted).

L1 1e-5 + L2 1e-4 regularise every Dense kernel and the LSTM input kernels
(ours: the paper names the coefficients, not the layers).
:func:`weighted_features` makes the 3072-d features, :func:`pad_sequences`
the padded batch.
"""

import keras
import numpy as np
from keras import layers, ops

from covid_keras import errors

L1, L2 = 1e-5, 1e-4
FEATURE_DIMS = (1024, 3072)


def regularizer(l1=L1, l2=L2):
    """The heads' and ensemble's L1 + L2 kernel regulariser."""
    return keras.regularizers.L1L2(l1=l1, l2=l2)


@keras.saving.register_keras_serializable(package="covid_keras")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over the time steps where ``mask`` is True (Keras' own ignores masks).

    Call with ``layer(sequences, mask=mask)``; a sequence with no real step
    gives zeros.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
        lowest = ops.full_like(inputs, -3.0e38)
        pooled = ops.max(ops.where(keep, inputs, lowest), axis=1)
        any_real = ops.any(keep, axis=1)
        return ops.where(any_real, pooled, ops.zeros_like(pooled))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def compute_mask(self, inputs, mask=None):
        return None


def _inputs(feature_dim, max_slices):
    if feature_dim < 1:
        raise errors.ConfigurationError(f"`feature_dim` must be positive. Received: feature_dim={feature_dim}")
    features = keras.Input(shape=(max_slices, feature_dim), name="slice_features")
    mask = keras.Input(shape=(max_slices,), dtype="bool", name="slice_mask")
    return features, mask


def maxpool_head(feature_dim=1024, num_classes=3, hidden_units=512, max_slices=None, l1=L1, l2=L2,
                 name=None):
    """Paper 001's Maxpool head (Maxpool-Weighted with ``feature_dim=3072``).

    Args:
        feature_dim: per-slice feature width: 1024 (features A) or 3072
            (features B, :func:`weighted_features`).
        num_classes: output classes.
        hidden_units: the hidden Dense layer (512).
        max_slices: fixed sequence length, or None for any.
        l1, l2: kernel regularisation.
        name: model name (default ``maxpool_head`` / ``maxpool_weighted_head``).

    Returns:
        ``keras.Model`` with inputs ``slice_features`` [batch, T, F] and
        ``slice_mask`` [batch, T] (bool), output ``probabilities``.

    Example:
        >>> head = maxpool_head(feature_dim=8)
        >>> x, m = pad_sequences([np.ones((3, 8)), np.ones((5, 8))])
        >>> head.predict([x, m], verbose=0).shape
        (2, 3)
    """
    features, mask = _inputs(feature_dim, max_slices)
    x = MaskedGlobalMaxPooling1D(name="slice_max")(features, mask=mask)
    x = layers.Dense(hidden_units, activation="relu", kernel_regularizer=regularizer(l1, l2), name="hidden")(x)
    out = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer(l1, l2),
                       name="probabilities")(x)
    default = "maxpool_weighted_head" if feature_dim == 3072 else "maxpool_head"
    return keras.Model([features, mask], out, name=name or default)


def bilstm_head(feature_dim=3072, num_classes=3, lstm_units=512, hidden_units=1024, max_slices=None,
                l1=L1, l2=L2, name=None):
    """Paper 001's BiLSTM head (BiLSTM-Weighted with ``feature_dim=3072``).

    Args:
        feature_dim: per-slice feature width (1024 or 3072).
        num_classes: output classes.
        lstm_units: LSTM units per direction (512).
        hidden_units: the hidden Dense layer (1024).
        max_slices: fixed sequence length, or None for any.
        l1, l2: kernel regularisation.
        name: model name (default ``bilstm_head`` / ``bilstm_weighted_head``).

    Returns:
        ``keras.Model`` with inputs ``slice_features`` and ``slice_mask``,
        output ``probabilities``.

    Example:
        >>> head = bilstm_head(feature_dim=8, lstm_units=4, hidden_units=8)
        >>> x, m = pad_sequences([np.ones((3, 8)), np.ones((5, 8))])
        >>> head.predict([x, m], verbose=0).shape
        (2, 3)
    """
    features, mask = _inputs(feature_dim, max_slices)
    lstm = layers.LSTM(lstm_units, return_sequences=True, kernel_regularizer=regularizer(l1, l2))
    x = layers.Bidirectional(lstm, name="bilstm")(features, mask=mask)
    x = layers.GlobalAveragePooling1D(name="slice_mean")(x, mask=mask)
    x = layers.Dense(hidden_units, activation="relu", kernel_regularizer=regularizer(l1, l2), name="hidden")(x)
    out = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer(l1, l2),
                       name="probabilities")(x)
    default = "bilstm_weighted_head" if feature_dim == 3072 else "bilstm_head"
    return keras.Model([features, mask], out, name=name or default)


def weighted_features(features, probabilities):
    """Paper 001's features B: the 1024-d vector times each class probability.

    Args:
        features: [..., F] per-slice features (the ``features`` layer).
        probabilities: [..., C] per-slice class probabilities.

    Returns:
        [..., C * F]: ``concat(features * p_1, ..., features * p_C)``.
    """
    features = np.asarray(features, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if features.shape[:-1] != probabilities.shape[:-1]:
        raise errors.ConfigurationError(
            f"features {features.shape} and probabilities {probabilities.shape} must have the same "
            "leading dimensions (one row per slice)."
        )
    parts = [features * probabilities[..., c:c + 1] for c in range(probabilities.shape[-1])]
    return np.concatenate(parts, axis=-1)


def pad_sequences(sequences, max_slices=None):
    """Pads per-study slice features into a batch and its mask.

    Args:
        sequences: list of [n_i, F] arrays (one per study, n_i >= 1).
        max_slices: length to pad to (default: the longest).

    Returns:
        ``(batch [len, T, F] float32, mask [len, T] bool)``.
    """
    if not sequences:
        raise errors.ConfigurationError("`sequences` is empty; give at least one study's slice features.")
    width = sequences[0].shape[-1]
    longest = max(len(s) for s in sequences)
    length = longest if max_slices is None else int(max_slices)
    if length < longest:
        raise errors.ConfigurationError(
            f"`max_slices` ({length}) is shorter than the longest study ({longest} slices); masking, "
            "not truncation, handles variable slice counts."
        )
    batch = np.zeros((len(sequences), length, width), dtype=np.float32)
    mask = np.zeros((len(sequences), length), dtype=bool)
    for i, s in enumerate(sequences):
        if s.ndim != 2 or s.shape[-1] != width or len(s) == 0:
            raise errors.ConfigurationError(
                f"study {i} has features of shape {s.shape}; every study needs [n >= 1, {width}]."
            )
        batch[i, : len(s)] = s
        mask[i, : len(s)] = True
    return batch, mask
