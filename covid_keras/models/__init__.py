"""One builder per paper model, as flat Keras functional graphs with named layers.

Every model names its last convolution output ``last_conv`` and its output
``probabilities``; the multi-scale model also exposes ``stage3``,
``stage4``, ``stage5`` and ``features``. Custom layers are registered under
the ``covid_keras`` package, so ``.keras`` files load with safe_mode=True.
"""

from covid_keras import cli as _cli

# `python -m covid_keras.models` imports this package (and TensorFlow) before
# its __main__: mute TensorFlow's start-up lines here in that case only.
_cli.quiet_tensorflow(__name__)


from covid_keras.models.detl import detl_cnn, detl_extend
from covid_keras.models.ensemble import ensemble_mlp
from covid_keras.models.heads import HeadSpec, get_head, register_head, registered_heads
from covid_keras.models.layers import ClippedReLU, ImageNetPreprocessing
from covid_keras.models.multiscale import multiscale_resnet50
from covid_keras.models.resnet3d import inflate_from, resnet50_3d
from covid_keras.models.transfer import densenet_classifier, inceptionv3_classifier, new_densenet
from covid_keras.models.xraycnn import HierarchicalXrayClassifier, xray_cnn
from covid_keras.models.patient_heads import (
    MaskedGlobalMaxPooling1D,
    bilstm_head,
    maxpool_head,
    pad_sequences,
    weighted_features,
)

__all__ = [
    "ClippedReLU",
    "HeadSpec",
    "HierarchicalXrayClassifier",
    "densenet_classifier",
    "detl_cnn",
    "detl_extend",
    "inceptionv3_classifier",
    "inflate_from",
    "new_densenet",
    "resnet50_3d",
    "xray_cnn",
    "ImageNetPreprocessing",
    "MaskedGlobalMaxPooling1D",
    "bilstm_head",
    "ensemble_mlp",
    "get_head",
    "maxpool_head",
    "multiscale_resnet50",
    "pad_sequences",
    "register_head",
    "registered_heads",
    "weighted_features",
]
