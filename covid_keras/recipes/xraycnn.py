"""Paper 004 XrayCNN: the small X-ray CNN, trained once per step of its two-step hierarchy.

The paper gives no optimiser, learning rate, batch size or epoch count:
ours are Adam 1e-3, batch 32, 50 epochs. Augmentation by scale, shift,
rotation, salt-and-pepper noise and flips (no ranges given: ours).
"""

from covid_keras.recipes.base import Holdout, Param, Recipe, Stage, constant
from covid_keras.recipes.config import data_params, run_params

STEPS = ("xraycnn_step1", "xraycnn_step2")

XRAY_CNN = Recipe(
    name="xray_cnn",
    paper="004 XrayCNN (Gao & Wang)",
    command=None,
    builder="xray_cnn",
    builder_args=lambda c: {"input_shape": (c.image_size, c.image_size, 3), "num_classes": 3, "dropout": c.dropout},
    classes=lambda c: c.step if c is not None else "xraycnn_step1",
    pipeline=lambda c: {"pipeline": "xray", "size": c.image_size},
    input_shape=lambda c: (c.image_size, c.image_size, 3),
    stages=(Stage("train", "all", 50, constant(1e-3), flag="",
                  ours="the paper gives no optimiser, rate or epochs: Adam 1e-3, 50 epochs",
                  ours_rate="the paper gives none", ours_epochs="the paper gives none"),),
    params=(
        Param("step", "xraycnn_step1", "xraycnn_step1 (normal / bacterial / viral) or xraycnn_step2 (non-viral "
                                       "pneumonia / COVID-19 / other viral)", choices=STEPS),
        *data_params(("chest-xray-pneumonia", "covid-chestxray")),
        Param("image_size", 64, "image side in pixels (Table 1)"),
        Param("dropout", 0.5, "dropout before the output layer", ours="Table 1 does not place it"),
        Param("batch_size", 32, "images per batch", ours="the paper gives none"),
        Param("augment", True, "scale, shift, rotation, salt-and-pepper noise and flips",
              ours="the paper gives no ranges"),
        Param("val_fraction", 0.1, "fraction of patients for validation",
              ours="the paper plans about 100 of 1,900 images (5 %) on its own data"),
        Param("test_fraction", 0.2, "fraction of patients held out for testing",
              ours="the paper plans about 400 of 1,900 images (21 %) on its own data"),
        *run_params("xray_cnn"),
    ),
    # Scale, shift, rotation and flips (the paper's; the ranges are ours, none given). Its
    # salt-and-pepper noise is not a RandomAffine transform: the training command adds it.
    augmentation=lambda c: ({"rotation": 10.0, "translation": 0.1 * c.image_size, "zoom": (0.9, 1.1),
                             "shear": 0.0, "horizontal_flip": True, "brightness": (1.0, 1.0)} if c.augment else {}),
    validation=lambda c: Holdout(c.val_fraction, c.test_fraction),
    datasets=("chest-xray-pneumonia", "covid-chestxray"),
    ours={"optimizer": "Adam 1e-3, 50 epochs, batch 32: the paper gives none"},
    reported={"accuracy (Fig. 5, 4 classes)": 0.91},
)
