"""A recipe's settings as a dataclass, and the run settings every command shares.

:func:`config_class` turns a :class:`~covid_keras.recipes.base.Recipe`'s
settings into a dataclass (``SliceLevelConfig``), one field per
:class:`~covid_keras.recipes.base.Param`, with the paper's values as
defaults; ``config.stage_list()`` gives the :class:`Stage` records it runs.
The command line (:func:`covid_keras.cli.parse_recipe`) has one flag per
field and shows the phantom preset's value beside the paper's.
"""

import dataclasses

from covid_keras import errors
from covid_keras.recipes.base import Param


def data_params(datasets, data_help="dataset folder (omit to use the built-in phantoms)", dataset_help=None):
    """``--data`` and ``--dataset`` (``choices=`` the recipe's datasets, the first the default)."""
    return (
        Param("data", None, data_help),
        Param("dataset", datasets[0], dataset_help or "layout of --data", choices=tuple(datasets)),
    )


def run_params(command_dir, *, export=True, workers=False, verbose=1, folder="<config hash>"):
    """The run settings every training command has (seed, run folder, export, output)."""
    params = [Param("seed", 0, "random seed (splits, shuffling, augmentation, initial weights): repeatable on CPU")]
    if workers:
        params.append(Param("workers", 0, "processes for building the preprocessing cache (0: every core)"))
    params += [
        Param("run_dir", None, f"run folder (none: RUNS_ROOT/{command_dir}/{folder})"),
        Param("runs_root", "runs", "where default run folders go"),
    ]
    if export:
        params.append(Param("export_dir", "saved_models",
                            "TF Serving base folder for the exported model (none: do not export)"))
    params.append(Param(
        "strategy", "default",
        "tf.distribute strategy: default (one device), mirrored (every GPU of this machine), multi-worker "
        "(the machines TF_CONFIG names, each running this command; only worker 0 writes). --batch-size stays "
        "the global batch, split across the replicas; the learning rate is not rescaled",
        choices=("default", "mirrored", "multi-worker")))
    params += [
        Param("fresh", False, "delete an earlier run in the run folder and start over"),
        Param("verbose", verbose, "Keras progress output: 0 silent, 1 bar, 2 one line per epoch", choices=(0, 1, 2)),
        Param("quiet", False, "hide progress and messages"),
    ]
    return tuple(params)


#: Settings that do not change what a run computes (left out of its folder's hash). ``final`` adds
#: the final model to the same folds, so ``--no-final`` and a later run with it share the folder;
#: ``strategy`` trains the same global batches (in other orders, see README "Scaling out"), so a
#: run may resume under another one.
NOT_HASHED = ("run_dir", "fresh", "verbose", "quiet", "workers", "export_dir", "final", "strategy")


def config_class(recipe, class_name, doc=None):
    """A dataclass with one field per setting of ``recipe`` (paper defaults).

    Its ``__post_init__`` turns lists into tuples, checks ``choices``, that
    epochs and batch sizes are at least 1 and that a tuple field with
    choices (``stages``) names only known values, then runs
    ``recipe.validate``. ``config.stage_list()`` gives the stage records,
    ``config.settings()`` the dict the run folder's hash is taken over,
    and the class attribute ``recipe`` the recipe.
    """
    params = recipe.all_params()
    fields = [(p.name, p.type if p.default is not None else p.type | None, dataclasses.field(default=p.default))
              for p in params]

    def __post_init__(self):
        for p in params:
            value = getattr(self, p.name)
            if isinstance(p.default, tuple) and isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, p.name, value)
            if p.choices is None or value is None:
                continue
            values = value if isinstance(p.default, tuple) else (value,)
            unknown = [v for v in values if v not in p.choices]
            if unknown:
                raise errors.ConfigurationError(
                    f"unknown {p.name} {unknown if isinstance(p.default, tuple) else unknown[0]!r}; "
                    f"{p.option} takes {'some' if isinstance(p.default, tuple) else 'one'} of "
                    f"{', '.join(map(str, p.choices))}."
                )
        counts = {p.name: getattr(self, p.name) for p in params
                  if p.name.endswith("epochs") or p.name == "batch_size"}
        low = {k: v for k, v in counts.items() if v is not None and v < 1}
        if low:
            raise errors.ConfigurationError(
                f"epochs and --batch-size must be at least 1. Received: "
                f"{', '.join(f'{k}={v}' for k, v in low.items())}"
            )
        if recipe.validate is not None:
            recipe.validate(self)

    def stage_list(self):
        return recipe.stages_for(self)

    def settings(self):
        unhashed = {p.name for p in params if not p.hash_default and getattr(self, p.name) == p.default}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_HASHED and k not in unhashed}

    cls = dataclasses.make_dataclass(
        class_name, fields,
        namespace={"__post_init__": __post_init__, "stage_list": stage_list, "settings": settings,
                   "recipe": recipe, "__doc__": doc or f"Every setting of recipe {recipe.name!r} (paper defaults)."},
    )
    cls.__module__ = "covid_keras.recipes"
    return cls
