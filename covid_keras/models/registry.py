"""Every paper model by name: its builder, paper, and paper-default arguments.

The one place that says which builder and which arguments each paper
uses: paper settings live in this one table, not in the scripts. Training presets
build on it.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A paper model: builder name in :mod:`covid_keras.models`, paper, defaults."""

    builder: str
    paper: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    inputs: str = ""

    def build(self, **overrides):
        from covid_keras import models

        return getattr(models, self.builder)(**{**self.kwargs, **overrides})


MODELS = {
    "multiscale_resnet50": ModelSpec("multiscale_resnet50", "001 MultiScale (Garg et al.)",
                                     {"weights": None}, "224x224x3 slice, raw pixels"),
    "maxpool_head": ModelSpec("maxpool_head", "001 MultiScale", {"feature_dim": 1024},
                              "slices x 1024 features + mask"),
    "maxpool_weighted_head": ModelSpec("maxpool_head", "001 MultiScale", {"feature_dim": 3072},
                                       "slices x 3072 weighted features + mask"),
    "bilstm_head": ModelSpec("bilstm_head", "001 MultiScale", {"feature_dim": 1024},
                             "slices x 1024 features + mask"),
    "bilstm_weighted_head": ModelSpec("bilstm_head", "001 MultiScale", {"feature_dim": 3072},
                                      "slices x 3072 weighted features + mask"),
    "ensemble_mlp": ModelSpec("ensemble_mlp", "001 MultiScale", {}, "4 heads x 3 probabilities"),
    "densenet_classifier": ModelSpec("densenet_classifier", "002 Transfer (Berrimi et al.)",
                                     {"weights": None}, "224x224x3 X-ray/CT, raw pixels"),
    "new_densenet": ModelSpec("new_densenet", "002 Transfer", {"weights": None}, "224x224x3, raw pixels"),
    "inceptionv3_classifier": ModelSpec("inceptionv3_classifier", "002 Transfer", {"weights": None},
                                        "299x299x3, raw pixels"),
    "detl_cnn": ModelSpec("detl_cnn", "003 DETL (Basu & Mitra)", {}, "224x224x3 X-ray, raw pixels"),
    "xray_cnn": ModelSpec("xray_cnn", "004 XrayCNN (Gao & Wang)", {}, "64x64x3 X-ray, raw pixels"),
    "resnet50_3d": ModelSpec("resnet50_3d", "000 Volume3D (Xue & Abhayaratne)", {"weights": None},
                             "224x224x224x1 CT volume in [0, 1]"),
}
