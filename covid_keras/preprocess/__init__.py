"""Each paper's preprocessing pipeline, as small pure functions in the paper's order.

    vol = preprocess.volume3d(ct)         # paper 000 -> float32 [224, 224, 224] in [0, 1]
    sl  = preprocess.ct_slices(ct)        # paper 001 -> uint8 [n, 224, 224]
    x   = preprocess.xray(img, size=224)  # papers 002-004 -> float32 [size, size, 3] in [0, 255]

``python -m covid_keras.preprocess`` caches a whole dataset as TFRecord
shards (:mod:`covid_keras.preprocess.cache`). Nothing here imports
TensorFlow.

Modules, one per pipeline: ``lung_volume`` (paper 000's lung-only
volume), ``body_slices`` (paper 001's body-cropped slices), ``radiograph``
(the X-ray papers' resize), with ``lung_mask`` and ``resample`` beneath and
``pipelines`` / ``cache`` / ``preview`` for whole datasets.
"""

from covid_keras.preprocess.body_slices import covidx_slice, ct_slices, interpolate_slices
from covid_keras.preprocess.lung_mask import lung_masks
from covid_keras.preprocess.lung_volume import augment_minority, volume3d
from covid_keras.preprocess.radiograph import xray

__all__ = [
    "augment_minority",
    "covidx_slice",
    "ct_slices",
    "interpolate_slices",
    "lung_masks",
    "volume3d",
    "xray",
]
