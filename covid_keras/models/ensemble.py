"""Paper 001's ensemble over the patient heads.

The heads' class probabilities are concatenated (paper 001: 4 heads x 3 =
12) -> Dense 10 ReLU -> Dense 3 softmax, with the heads' L1 1e-5 + L2 1e-4
kernel regularisation. The order of the heads is the patient-level run's
(``--heads``); the exported pipeline records it as ``head_order``.
"""

import keras
from keras import layers

from covid_keras import errors
from covid_keras.models.patient_heads import L1, L2, regularizer


def ensemble_mlp(num_heads=4, num_classes=3, hidden_units=10, l1=L1, l2=L2, name="ensemble_mlp"):
    """Builds the ensemble MLP: [batch, num_heads * num_classes] -> probabilities.

    Args:
        num_heads: heads whose probabilities are concatenated (paper 001: 4).
        num_classes: classes per head and of the output (3).
        hidden_units: the hidden Dense layer (10).
        l1, l2: kernel regularisation.
        name: the model's name.

    Returns:
        ``keras.Model`` with input ``head_probabilities`` and output
        ``probabilities``.

    Example:
        >>> import numpy as np
        >>> ensemble_mlp().predict(np.full((2, 12), 1 / 3, "float32"), verbose=0).shape
        (2, 3)
    """
    if num_heads < 1 or num_classes < 2:
        raise errors.ConfigurationError(
            f"`num_heads` must be >= 1 and `num_classes` >= 2. Received: num_heads={num_heads}, "
            f"num_classes={num_classes}"
        )
    inputs = keras.Input(shape=(num_heads * num_classes,), name="head_probabilities")
    x = layers.Dense(hidden_units, activation="relu", kernel_regularizer=regularizer(l1, l2), name="hidden")(inputs)
    out = layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer(l1, l2),
                       name="probabilities")(x)
    return keras.Model(inputs, out, name=name)
