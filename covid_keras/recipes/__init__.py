"""One recipe per trainable model of the five papers: every setting in one place.

A recipe (:class:`Recipe`) holds the builder and its arguments, the class
list, the preprocessing pipeline, the input shape, the training stages
(optimizer, learning-rate schedule, epochs), the batch size, the
augmentation, the validation protocol, the datasets it accepts and the
small phantom preset, with the paper's values as defaults and what is
**ours** marked. Training command lines are generated from recipes, exports
record the recipe's name and builder arguments, and
``covid_keras.predict`` reads them back. ``python -m covid_keras.recipes``
prints them.

    >>> from covid_keras import recipes
    >>> recipes.get("multiscale_resnet50").stages[0].describe()
    'pretrain: Adam 0.001 constant, 10 epochs, trains all, data pretrain'
"""

from covid_keras import errors
from covid_keras.recipes.base import (
    ADAM,
    UNSET,
    Holdout,
    KFold,
    Optimizer,
    Param,
    Recipe,
    SameSplit,
    Schedule,
    Stage,
    constant,
)
from covid_keras.recipes.config import config_class, data_params, run_params
from covid_keras.recipes.detl import DETL_CNN
from covid_keras.recipes.multiscale import ENSEMBLE, MULTISCALE_RESNET50, PATIENT_HEADS
from covid_keras.recipes.transfer import DENSENET, INCEPTIONV3, NEW_DENSENET
from covid_keras.recipes.volume3d import RESNET50_3D
from covid_keras.recipes.xraycnn import XRAY_CNN

#: Every recipe by name, in paper order.
RECIPES = {r.name: r for r in (RESNET50_3D, MULTISCALE_RESNET50, PATIENT_HEADS, ENSEMBLE, DENSENET, NEW_DENSENET,
                               INCEPTIONV3, DETL_CNN, XRAY_CNN)}


#: The papers' own recipes, which register() does not replace.
_PAPERS = frozenset(RECIPES)


def get(name):
    """The recipe called ``name``.

    Raises:
        ConfigurationError: no recipe has that name.
    """
    if name not in RECIPES:
        raise errors.ConfigurationError(f"Unknown recipe {name!r}; use one of {', '.join(RECIPES)}.")
    return RECIPES[name]


def register(recipe):
    """Adds a recipe of your own (a new slice backbone, say); returns it."""
    if not isinstance(recipe, Recipe):
        raise errors.ConfigurationError(f"`recipe` must be a covid_keras.recipes.Recipe. Received: {recipe!r}")
    if recipe.name in _PAPERS and RECIPES.get(recipe.name) is not recipe:
        raise errors.ConfigurationError(
            f"recipe {recipe.name!r} is one of the papers' own; register yours under another name "
            "(dataclasses.replace(recipes.get(...), name=...))."
        )
    RECIPES[recipe.name] = recipe
    return recipe


__all__ = ["ADAM", "UNSET", "Holdout", "KFold", "Optimizer", "Param", "RECIPES", "Recipe", "SameSplit", "Schedule", "Stage",
           "config_class", "constant", "data_params", "get", "register", "run_params"]
