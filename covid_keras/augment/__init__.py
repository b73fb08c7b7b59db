"""Training-time augmentation as Keras layers (active only when ``training``).

    aug = augment.paper001_augmentation(seed=0)   # paper 001: one fused warp
    x = aug(images, training=True)                # raw pixels in [0, 255]

:class:`~covid_keras.augment.layers.RandomAffine` draws rotation,
translation, zoom, shear, flip and brightness per image and resamples the
batch once; ``separate_layers_augmentation`` is the six-stock-layer baseline
it replaces (``benchmarks/augmentation.py``). :class:`~covid_keras.augment.layers.SaltAndPepper`
is paper 004's salt-and-pepper noise (the same pixels black or white in every channel).
"""

from covid_keras.augment.layers import (
    PAPER001_AUGMENTATION,
    RandomAffine,
    SaltAndPepper,
    paper001_augmentation,
    separate_layers_augmentation,
)

__all__ = [
    "PAPER001_AUGMENTATION",
    "RandomAffine",
    "SaltAndPepper",
    "paper001_augmentation",
    "separate_layers_augmentation",
]
