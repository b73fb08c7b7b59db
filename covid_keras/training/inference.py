"""Inference over many differently sized inputs with one traced function.

``model.predict`` traces a new graph for every new input shape: called once
per study (a different slice count each time) or per padded batch of slice
sequences, it retraces again and again, which costs seconds each time and
makes TensorFlow warn about "excessive retracing". :func:`predict_batches`
calls the model through one ``tf.function`` with ``reduce_retracing=True``
(after a second shape, dimensions that changed are traced as unknown), and
cuts large inputs into batches itself.
"""

import numpy as np


class Predictor:
    """``model(x, training=False)`` as one reusable, shape-relaxed ``tf.function``.

    Example:
        >>> predictor = Predictor(model)                  # doctest: +SKIP
        >>> probs = predictor(images, batch_size=64)      # doctest: +SKIP
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, inputs, batch_size=64):
        """Outputs for ``inputs`` as NumPy (a list when the model has several outputs).

        Args:
            inputs: an array / tensor (or dict of them) with the batch first,
                cut into ``batch_size`` pieces here; or a ``tf.data``
                dataset of input batches (or of ``(inputs, label)`` pairs,
                whose labels are ignored).
            batch_size: batch size for array inputs.
        """
        import tensorflow as tf

        if isinstance(inputs, tf.data.Dataset):
            batches = (b[0] if isinstance(b, tuple) else b for b in inputs)
        else:
            n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
            batches = (tf.nest.map_structure(lambda a: a[i:i + batch_size], inputs)
                       for i in range(0, n, batch_size))
        parts = [tf.nest.map_structure(lambda t: t.numpy(), self._fn(b)) for b in batches]
        if not parts:
            raise ValueError("no inputs to predict on")
        if isinstance(parts[0], (list, tuple)):
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        return np.concatenate(parts)


def predict_batches(model, inputs, batch_size=64):
    """One-off :class:`Predictor` call (build a Predictor to reuse its trace)."""
    return Predictor(model)(inputs, batch_size=batch_size)
