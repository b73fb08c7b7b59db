"""Paper 000 Volume3D: the 3-D ResNet50 on whole CT volumes, 4-fold cross-validation.

Training (paper, Table 3): cross-entropy, Adam 2e-4 halved every 40 epochs,
120 epochs; 4-fold cross-validation by patient, then a final model.
No batch size is given (ours: 2; the paper trained on an 8 GB RTX 2070, and two 224^3 volumes
is our estimate of what fits there, not measured).
``python -m train.volume3d`` runs it (covid_keras.training.volume_level).
"""

from covid_keras.recipes.base import KFold, Param, Recipe, Schedule, Stage
from covid_keras.recipes.config import data_params, run_params

RESNET50_3D = Recipe(
    name="resnet50_3d",
    paper="000 Volume3D (Xue & Abhayaratne)",
    command="train.volume3d",
    builder="resnet50_3d",
    builder_args=lambda c: {"input_shape": (c.volume_size,) * 3 + (1,), "depth": c.depth, "weights": c.weights},
    classes="ct3",
    pipeline=lambda c: {"pipeline": "volume3d", "size": c.volume_size,
                        "augment_minority": c.augment_minority, "seed": c.seed},
    input_shape=lambda c: (c.volume_size,) * 3 + (1,),
    # The phantom preset trains 10 epochs at 5e-4 (the step schedule does not reach its first halving).
    stages=(Stage("train", "all", 120, Schedule("step", 2e-4, every_epochs=40, factor=0.5), flag="",
                  phantom_epochs=10, phantom_rate=5e-4),),
    params=(
        *data_params(("covid-ct-md",)),
        Param("weights", "imagenet-inflated", "imagenet-inflated (2-D ImageNet kernels inflated to 3-D), none, "
                                              "or a weights file", phantom=None,
              ours="MATLAB's 3-D ResNet weights are not available to Keras: ImageNet ResNet50 inflated as I3D"),
        Param("depth", 50, "ResNet depth", choices=(18, 34, 50), phantom=18,
              ours="the paper's Table 2 fits a ResNet-18/34 as well; 50 as its title says"),
        Param("volume_size", 224, "side of the resampled cubic volume", phantom=32),
        Param("batch_size", 2, "volumes per batch", phantom=4,
              ours="the paper gives none: 2, our estimate for its 8 GB GPU (not measured)"),
        Param("bn_momentum", 0.99, "BatchNormalization momentum of the moving statistics (Keras' default)",
              phantom=0.9, ours="the paper gives none"),
        Param("augment_minority", True, "extra CAP and Normal training volumes from the second resampling and "
                                        "random centre crops (paper 000), training patients only"),
        Param("class_weights", "none", "none: plain cross-entropy (the paper); balanced: weight each class by "
                                       "n / (k x its volumes); the phantom preset's, as the copies leave its COVID-19 volumes a third of "
                                       "each other class's", choices=("none", "balanced"), phantom="balanced"),
        Param("folds", 4, "cross-validation folds by patient"),
        Param("final", True, "after the folds, train a final model on all patients (the one exported)"),
        Param("mixed_precision", False, "mixed_float16 compute for GPUs (Keras loss scaling); the softmax and "
                                        "the loss stay float32"),
        Param("phantom_patients_per_class", 8, "phantom patients per class when no --data is given"),
        *run_params("volume3d", workers=True, folder="<dataset>-<config hash>"),
    ),
    # No augmentation layer: the paper augments the minority classes (CAP, Normal) with extra
    # volumes made by the pipeline (augment_minority: a second resampling, spacing x1.75 and
    # thickness x0.7, and random centre crops 0.75-0.9), for training patients only.
    validation=lambda c: KFold(c.folds, c.final),
    datasets=("covid-ct-md",),
    ours={"batch size": "the paper gives none: 2"},
    # Table 4's summary row as printed (the four folds' specificities average 91.12 %).
    reported={"accuracy (4-fold)": 0.8694, "COVID-19 sensitivity (4-fold)": 0.8779,
              "COVID-19 specificity (4-fold)": 0.8988, "accuracy (SPGC test)": 0.8556},
)
