"""Paper 002 Transfer: DenseNet121 / New-DenseNet / InceptionV3 on X-rays or CT images.

Training (paper): Adam 1e-4, 50 epochs, 80 / 20 split, augmentation by
rotation, zoom, horizontal flip and shift (no ranges given: ours). One
recipe per model; ``task`` chooses the classes (X-ray 3 classes or CT 2).
"""

from covid_keras.recipes.base import Holdout, Param, Recipe, Stage, constant
from covid_keras.recipes.config import data_params, run_params

PAPER = "002 Transfer (Berrimi et al.)"
TASKS = ("transfer_xray", "transfer_ct")


def _augmentation(c):
    """Rotation, zoom, horizontal flip and shift (the paper's); the ranges are ours (none given)."""
    if not c.augment:
        return {}
    return {"rotation": 10.0, "translation": 0.1 * c.image_size, "zoom": (0.9, 1.1), "shear": 0.0,
            "horizontal_flip": True, "brightness": (1.0, 1.0)}


def _validate(c):
    """--task and --dataset must agree: the CT task reads the SARS-CoV-2 CT-scan images, the X-ray task X-rays."""
    from covid_keras import errors

    if c.data is None:
        if c.covid_data:
            raise errors.ConfigurationError("--covid-data adds to --data's images; give --data as well.")
        return
    if (c.task == "transfer_ct") != (c.dataset == "sars-cov2-ct"):
        raise errors.ConfigurationError(
            f"--task {c.task} does not go with --dataset {c.dataset}: transfer_ct reads the SARS-CoV-2 CT-scan "
            "images (--dataset sars-cov2-ct), transfer_xray the X-ray datasets."
        )
    if c.covid_data and c.task == "transfer_ct":
        raise errors.ConfigurationError("--covid-data adds COVID-19 X-rays; it does not apply to --task transfer_ct.")


def _recipe(name, builder, size, reported, extra_args=lambda c: {}, extra_params=()):
    return Recipe(
        name=name,
        paper=PAPER,
        command="train.transfer",
        builder=builder,
        builder_args=lambda c: {"input_shape": (c.image_size, c.image_size, 3), "num_classes": 3 if
                                c.task == "transfer_xray" else 2, "weights": c.weights, **extra_args(c)},
        classes=lambda c: c.task if c is not None else "transfer_xray",
        pipeline=lambda c: {"pipeline": "xray", "size": c.image_size},
        input_shape=lambda c: (c.image_size, c.image_size, 3),
        stages=(Stage("train", "all", 50, constant(1e-4), flag="", phantom_epochs=20, phantom_rate=1e-3),),
        params=(
            Param("task", "transfer_xray", "transfer_xray (COVID-19 / Pneumonia / Normal X-rays) or transfer_ct "
                                           "(COVID-19 / Normal CT images)", choices=TASKS),
            *data_params(("chest-xray-pneumonia", "covid-chestxray", "sars-cov2-ct"),
                         dataset_help="layout of --data (sars-cov2-ct for --task transfer_ct)"),
            Param("covid_data", None, "COVID-19 image data collection folder: its COVID-19 X-rays join --data's "
                                      "images (paper 002's COVID class beside Kermany's pneumonia and normal)"),
            Param("phantom_images", 48, "phantom images per pathology when no --data is given"),
            Param("weights", "imagenet", "imagenet, none, or a weights file", phantom=None),
            Param("image_size", size, "image side in pixels", phantom=64 if size == 224 else 75,
                  ours="" if size == 224 else "the paper resizes to 224; 299 is InceptionV3's ImageNet size"),
            *extra_params,
            Param("batch_size", 32, "images per batch", ours="the paper gives none", phantom=16),
            Param("bn_momentum", 0.99, "BatchNormalization momentum (Keras' default)", phantom=0.9,
                  ours="the phantom preset's few steps need moving statistics that follow faster"),
            Param("augment", True, "rotation, zoom, horizontal flip and shift",
                  ours="the paper gives no ranges"),
            Param("test_fraction", 0.2, "fraction of patients held out for testing (80 / 20)"),
            Param("val_fraction", 0.1, "fraction of patients for validation (best weights)",
                  ours="the paper names no validation set"),
            *run_params("transfer"),
        ),
        augmentation=_augmentation,
        validation=lambda c: Holdout(c.val_fraction, c.test_fraction),
        datasets=("chest-xray-pneumonia", "covid-chestxray", "sars-cov2-ct"),
        validate=_validate,
        ours={"batch size": "the paper gives none: 32", "augmentation ranges": "the paper gives none"},
        reported=reported,
    )


_VARIANT = Param("variant", 121, "DenseNet depth", choices=(121, 169, 201), ours="the paper names no depth")

# Tables III (X-ray, 3 classes) and IV (CT, 2 classes).
DENSENET = _recipe("densenet", "densenet_classifier", 224, {"X-ray accuracy": 0.6356, "CT accuracy": 0.60},
                   lambda c: {"variant": c.variant}, (_VARIANT,))
NEW_DENSENET = _recipe("new_densenet", "new_densenet", 224, {"X-ray accuracy": 0.85, "CT accuracy": 0.9598},
                       lambda c: {"variant": c.variant}, (_VARIANT,))
INCEPTIONV3 = _recipe("inceptionv3", "inceptionv3_classifier", 299, {"X-ray accuracy": 0.9235, "CT accuracy": 0.8451})
