"""Paper 004 XrayCNN: the small X-ray CNN, trained once per step of its two-step hierarchy.

Step 1 classifies normal / bacterial / viral; where viral wins, step 2
classifies non-viral pneumonia / COVID-19 / other viral; the two answers
combine into the four classes the paper reports (Normal, bacterial,
COVID-19, other viral: ``models.xraycnn.combine``). Both steps are this
recipe's model (Table 1, 64 x 64 x 3, three outputs), trained with the same
settings. The paper gives no optimiser, learning rate, batch size or epoch
count: ours are Adam 1e-3, batch 32, 50 epochs. Augmentation by scale,
shift, rotation, salt-and-pepper noise and flips (no ranges given: ours).
"""

from covid_keras.recipes.base import Holdout, Param, Recipe, Stage, constant
from covid_keras.recipes.config import data_params, run_params

STEPS = ("xraycnn_step1", "xraycnn_step2")


def _validate(c):
    """Settings the types cannot check, refused before anything trains."""
    from covid_keras import errors

    if not 0 <= c.unrouted_covid_fraction <= 1:
        raise errors.ConfigurationError(
            f"--unrouted-covid-fraction must be in [0, 1]. Received: {c.unrouted_covid_fraction}"
        )
    if not 0 <= c.salt_pepper < 1:
        raise errors.ConfigurationError(f"--salt-pepper must be in [0, 1). Received: {c.salt_pepper}")
    if c.covid_data and not c.data:
        raise errors.ConfigurationError("--covid-data adds to --data's images; give --data as well.")

XRAY_CNN = Recipe(
    name="xray_cnn",
    paper="004 XrayCNN (Gao & Wang)",
    command="train.xray_cnn",
    builder="xray_cnn",
    builder_args=lambda c: {"input_shape": (c.image_size, c.image_size, 3), "num_classes": 3, "dropout": c.dropout},
    # The two-step classifier answers in the combined 4 classes; one step alone in its own 3.
    classes=lambda c: c.step if c is not None and c.step in STEPS else "xraycnn_4class",
    pipeline=lambda c: {"pipeline": "xray", "size": c.image_size},
    input_shape=lambda c: (c.image_size, c.image_size, 3),
    stages=(Stage("train", "all", 50, constant(1e-3), flag="",
                  ours="the paper gives no optimiser, rate or epochs: Adam 1e-3, 50 epochs",
                  ours_rate="the paper gives none", ours_epochs="the paper gives none"),),
    params=(
        Param("step", "both", "what to train: both (the two-step classifier, exported as one SavedModel), or "
                              "one step alone, exported as an image model: xraycnn_step1 (normal / bacterial / "
                              "viral) or xraycnn_step2 (non-viral pneumonia / COVID-19 / other viral)",
              choices=("both", *STEPS)),
        *data_params(("chest-xray-pneumonia",),
                     data_help="Kermany chest_xray folder: normal, bacterial and viral (-> other viral) X-rays, "
                               "for both steps (omit to use the built-in phantoms)"),
        Param("covid_data", None, "COVID-19 image data collection folder: its COVID-19, other viral and non-viral "
                                  "pneumonia (-> bacterial) X-rays join --data's, for both steps (required with "
                                  "--data unless --step xraycnn_step1)"),
        Param("phantom_images", 24, "phantom images per pathology when no --data is given"),
        Param("image_size", 64, "image side in pixels (Table 1)"),
        Param("dropout", 0.5, "dropout before the output layer", ours="Table 1 does not place it"),
        Param("batch_size", 32, "images per batch", ours="the paper gives none", phantom=8),
        Param("augment", True, "scale, shift, rotation and flips", ours="the paper gives no ranges"),
        Param("class_weights", "none", "none (plain cross-entropy, as the paper) or balanced (scikit-learn's "
                                       "balanced class weights)", choices=("none", "balanced"),
              ours="the paper weights no class; weighted, the Table 1 CNN's 16-unit layer died on the phantoms "
                   "(every unit at zero after 5 epochs) and step 1 stayed at the majority rate"),
        Param("salt_pepper", 0.05, "salt-and-pepper noise density in training: the fraction of pixels set to 0 or "
                                   "255 (0: none)", ours="the paper gives no density"),
        Param("unrouted_covid_fraction", 0.5, "COVID-19's share of step 1's viral probability where step 2 is not "
                                              "run (the combined 4-class answer)",
              ours="the paper reports labels only; models.xraycnn.combine documents the rule"),
        Param("val_fraction", 0.1, "fraction of patients for validation",
              ours="the paper plans about 100 of 1,900 images (5 %) on its own data"),
        Param("test_fraction", 0.2, "fraction of patients held out for testing",
              ours="the paper plans about 400 of 1,900 images (21 %) on its own data"),
        *run_params("xray_cnn"),
    ),
    # Scale, shift, rotation and flips (the paper's; the ranges are ours, none given). Its
    # salt-and-pepper noise is not a RandomAffine transform: augment.SaltAndPepper, --salt-pepper.
    augmentation=lambda c: ({"rotation": 10.0, "translation": 0.1 * c.image_size, "zoom": (0.9, 1.1),
                             "shear": 0.0, "horizontal_flip": True, "brightness": (1.0, 1.0)} if c.augment else {}),
    validation=lambda c: Holdout(c.val_fraction, c.test_fraction),
    datasets=("chest-xray-pneumonia",),
    validate=lambda c: _validate(c),
    ours={"optimizer": "Adam 1e-3, 50 epochs, batch 32: the paper gives none",
          "salt-and-pepper density": "0.05: the paper gives none"},
    reported={"accuracy (Fig. 5, 4 classes)": 0.91},
    notes="with --step both the classes are the combined answer's (xraycnn_4class); step 1 trains on "
          "xraycnn_step1's classes and step 2 on xraycnn_step2's, each a three-output model of this recipe's builder",
)
