"""Paper 003 DETL: a 12-layer CNN on NIH Data-A, then domain extension to Data-B.

Phase 1: Adam 1e-3 with cosine annealing over 100 epochs, real-time
rotation / scaling / mirroring, a class-balanced validation set sampled
from the training set. Phase 2: the last layer replaced by a 4-way
softmax, everything before the last convolution block frozen, SGD 1e-4
momentum 0.9; 5-fold cross-validation (no epoch count given: ours 30).
"""

from covid_keras.recipes.base import KFold, Optimizer, Param, Recipe, Schedule, Stage, constant
from covid_keras.recipes.config import data_params, run_params

def _validate(c):
    from covid_keras import errors

    if c.covid_data and not c.data:
        raise errors.ConfigurationError("--covid-data is Data-B's covid class beside --data; give --data as well.")


DETL_CNN = Recipe(
    name="detl_cnn",
    paper="003 DETL (Basu & Mitra)",
    command="train.detl",
    builder="detl_cnn",
    builder_args=lambda c: {"input_shape": (c.image_size, c.image_size, 3), "num_classes": 2},
    classes="detl_b",
    pipeline=lambda c: {"pipeline": "xray", "size": c.image_size},
    input_shape=lambda c: (c.image_size, c.image_size, 3),
    stages=(
        Stage("phase1", "all", 100, Schedule("cosine", 1e-3), data="data_a",
              help="from scratch on Data-A (normal vs disease), cosine annealing over the phase", phantom_epochs=20),
        Stage("phase2", "from:block3_conv1", 30, constant(1e-4), Optimizer("sgd", 0.9), data="data_b",
              help="domain extension: new 4-way softmax, last conv block and dense layers retrained on Data-B",
              ours="the paper gives no epoch count: 30; 'up to the last convolutional block' read as everything "
                   "before block3_conv1", ours_epochs="the paper gives no epoch count",
              phantom_epochs=15, phantom_rate=1e-2),
    ),
    params=(
        *data_params(("nih-chestxray14",), data_help="NIH ChestX-ray14 folder (Data-A and the normal, pneumonia "
                                                     "and other_disease images of Data-B)"),
        Param("covid_data", None, "COVID-19 image data collection folder (Data-B's covid class; required with --data)"),
        Param("phantom_images", 24, "phantom images per pathology when no --data is given"),
        Param("image_size", 224, "image side in pixels", phantom=64, ours="the paper gives no input size"),
        Param("batch_size", 32, "images per batch", ours="the paper gives none", phantom=16),
        Param("augment", True, "real-time rotation, scaling and mirroring", ours="the paper gives no ranges"),
        Param("balanced_val", 20000, "size of the class-balanced validation set sampled from Data-A's training "
                                     "set (half per class), left out of phase 1's training", phantom=24),
        Param("folds", 5, "phase 2 cross-validation folds by patient"),
        Param("final", True, "after the folds, train a final phase-2 model on all Data-B patients"),
        *run_params("detl"),
    ),
    # Rotation, scaling and mirroring (the paper's); the ranges are ours (none given).
    augmentation=lambda c: ({"rotation": 10.0, "translation": 0.0, "zoom": (0.9, 1.1), "shear": 0.0,
                             "horizontal_flip": True, "brightness": (1.0, 1.0)} if c.augment else {}),
    validation=lambda c: KFold(c.folds, c.final),
    validate=lambda c: _validate(c),
    datasets=("nih-chestxray14",),
    ours={"phase 2 epochs": "30", "input size": "224", "batch size": "32", "augmentation ranges": "none given"},
    reported={"5-fold accuracy": 0.953, "5-fold accuracy std": 0.02},
    notes="builder_args build phase 1's Data-A model (2 classes, detl_a: normal / disease); phase 2 extends it "
          "with models.detl_extend to the 4 classes of detl_b, the classes this recipe exports",
)
