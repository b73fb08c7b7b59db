"""Inference over many differently sized inputs with one traced function.

Calling ``model.predict`` once per study (a different slice count each
time) or on padded slice sequences of changing length retraced the model
on the phantom runs (TensorFlow warned "5 out of the last 35 calls ...
triggered tf.function retracing" during feature extraction), and each call
sets up a data adapter and callbacks again. :class:`Predictor` calls the
model through one ``tf.function`` traced once for every batch size and
slice count (see its docstring), and cuts large inputs into batches itself.
"""

import functools

import numpy as np


def _call_model(model, x):
    return model(x, training=False)


class Predictor:
    """``model(x, training=False)`` as one reusable ``tf.function``, traced once.

    The trace's input signature comes from the first batch and the model's
    declared input shapes: the batch dimension, and every dimension the model
    leaves open (a slice count, a sequence length), are unknown, so batches of
    any size and studies of any length reuse it. Build one Predictor per
    model and reuse it.

    Example:
        >>> predictor = Predictor(model)                  # doctest: +SKIP
        >>> probs = predictor(images, batch_size=64)      # doctest: +SKIP
    """

    def __init__(self, model):
        self.model = model
        self._fn = None

    def _signature(self, batch):
        """TensorSpecs with the model's own open dimensions, or None when they cannot be matched."""
        import tensorflow as tf

        declared = list(getattr(self.model, "inputs", None) or [])

        def spec(value, shape):
            shape = list(shape)
            if len(shape) != len(value.shape):
                raise ValueError
            return tf.TensorSpec([None] + shape[1:], tf.as_dtype(value.dtype))

        try:
            if isinstance(batch, dict):
                by_name = {t.name: t.shape for t in declared}
                return {k: spec(v, by_name[k]) for k, v in batch.items()}
            if len(declared) == 1 and not isinstance(batch, (list, tuple)):
                return spec(batch, declared[0].shape)
        except (KeyError, ValueError):
            pass
        return None

    def _function(self, batch):
        import tensorflow as tf

        if self._fn is None:
            # A partial, not a method: TensorFlow counts traces per code
            # object, so every Predictor's one trace would add up to a
            # false "excessive retracing" warning after five models.
            call = functools.partial(_call_model, self.model)
            signature = self._signature(batch)
            if signature is None:  # e.g. a subclassed model: let TensorFlow relax shapes itself
                self._fn = tf.function(call, reduce_retracing=True, autograph=False)
            else:
                self._fn = tf.function(call, input_signature=[signature], autograph=False)
        return self._fn

    def __call__(self, inputs, batch_size=64):
        """Outputs for ``inputs`` as NumPy (a list when the model has several outputs).

        Args:
            inputs: an array / tensor (or dict of them) with the batch first,
                cut into ``batch_size`` pieces here; or a ``tf.data``
                dataset of input batches, or of ``(inputs, label)`` /
                ``(inputs, label, weight)`` tuples as Keras' ``fit`` takes
                them (labels and weights are ignored).
            batch_size: batch size for array inputs.

        Raises:
            ConfigurationError: ``inputs`` holds no example.
        """
        import tensorflow as tf

        from covid_keras import errors

        if isinstance(inputs, tf.data.Dataset):
            batches = (b[0] if isinstance(b, tuple) and len(b) in (2, 3) else b for b in inputs)
        else:
            n = len(tf.nest.flatten(inputs)[0]) if tf.nest.flatten(inputs) else 0
            batches = (tf.nest.map_structure(lambda a: a[i:i + batch_size], inputs)
                       for i in range(0, n, batch_size))
        parts = [tf.nest.map_structure(lambda t: t.numpy(), self._function(b)(b)) for b in batches]
        if not parts:
            raise errors.ConfigurationError(
                f"nothing to predict: the inputs for model {self.model.name!r} hold no example."
            )
        return tf.nest.map_structure(lambda *a: np.concatenate(a), *parts)
