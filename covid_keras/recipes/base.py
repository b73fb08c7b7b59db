"""What a recipe is made of: settings, stages, schedules, validation protocols.

A :class:`Recipe` is one trainable model of one paper, the way keras-hub's
presets are: every value the paper gives, as a default, in one place, with
what we chose ourselves marked **ours**. Command lines are generated from
it (one flag per :class:`Param`, two per :class:`Stage`), training reads the
:class:`Stage` records it yields, and exports record its name and the
builder arguments it gave.

Nothing here imports TensorFlow: ``python -m covid_keras.recipes`` and
``--help`` stay fast. The Keras objects (optimizers, learning-rate
schedules) are built by :mod:`covid_keras.training.schedules`.
"""

import dataclasses
import typing

from covid_keras import errors

#: Marks a :class:`Param` without a phantom-preset value.
UNSET = object()

#: Stage trainability modes (:func:`covid_keras.training.stages.set_trainable`).
#: ``"from:<layer>"`` trains ``<layer>`` and every layer after it.
TRAINABLE_MODES = ("all", "last2", "all_but_bn")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning rate over one stage, built as a Keras object at fit time.

    Kinds:

    * ``constant``: ``initial`` throughout (paper 001's stages);
    * ``step``: ``initial * factor ** (epoch // every_epochs)``, built as
      ``ExponentialDecay(initial, every_epochs * steps_per_epoch, factor,
      staircase=True)``, exact at every step (paper 000: 2e-4, x0.5 every
      40 epochs);
    * ``cosine``: ``initial * (alpha + (1 - alpha) * (1 + cos(pi t)) / 2)``
      over the whole stage (t from 0 to 1), built as ``CosineDecay``
      (paper 003).
    """

    kind: str
    initial: float
    every_epochs: int = 0
    factor: float = 1.0
    alpha: float = 0.0

    def __post_init__(self):
        if self.kind not in ("constant", "step", "cosine"):
            raise errors.ConfigurationError(
                f"`kind` must be constant, step or cosine. Received: kind={self.kind!r}"
            )
        if not self.initial > 0:
            raise errors.ConfigurationError(
                f"a learning rate must be positive. Received: initial={self.initial!r}"
            )
        if self.kind == "step" and (self.every_epochs < 1 or not 0 < self.factor <= 1):
            raise errors.ConfigurationError(
                "a step schedule needs every_epochs >= 1 and 0 < factor <= 1. Received: "
                f"every_epochs={self.every_epochs}, factor={self.factor}"
            )

    def shape(self):
        """How the rate moves from ``initial``: ``constant``, ``x0.5 every 40 epochs``, ``cosine to 0 ...``."""
        if self.kind == "constant":
            return "constant"
        if self.kind == "step":
            return f"x{self.factor:g} every {self.every_epochs} epochs"
        end = f" to {self.alpha * self.initial:g}" if self.alpha else " to 0"
        return f"cosine{end} over the stage"

    def describe(self):
        return f"{self.initial:g} {self.shape()}"


def constant(rate):
    return Schedule("constant", rate)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The optimizer of a stage: ``adam`` or ``sgd`` (with ``momentum``)."""

    name: str = "adam"
    momentum: float = 0.0

    def __post_init__(self):
        if self.name not in ("adam", "sgd"):
            raise errors.ConfigurationError(f"`name` must be adam or sgd. Received: name={self.name!r}")

    def describe(self):
        return "SGD" + (f" momentum {self.momentum:g}" if self.momentum else "") if self.name == "sgd" else "Adam"


ADAM = Optimizer("adam")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage: which layers train, with what, for how long, on what.

    Attributes:
        name: the stage's name (file names in the run folder).
        trainable: ``all``, ``last2`` (``features`` + ``probabilities``),
            ``all_but_bn`` (BatchNormalization frozen, in inference mode),
            or ``from:<layer>`` (that layer and every later one).
        epochs: epochs of the stage.
        schedule: its learning rate (:class:`Schedule`).
        optimizer: its :class:`Optimizer`.
        data: which examples it trains on, in the words of the recipe's
            runner (paper 001: ``pretrain``, ``train``, ``train+pseudo``).
        flag: prefix of its command-line flags ``--<flag>-lr`` and
            ``--<flag>-epochs`` (default: the name; ``""`` gives plain
            ``--learning-rate`` / ``--epochs``).
        help: what the stage does, for ``--help``.
        ours: what of the stage the paper does not give (empty: all the
            paper's); ``ours_rate`` / ``ours_epochs``: why its learning
            rate / epoch count is ours (shown on those flags).
        phantom_epochs: its epochs in the small phantom preset (None: as
            the paper).
        phantom_rate: its learning rate in the phantom preset (None: as
            the paper).
    """

    name: str
    trainable: str
    epochs: int
    schedule: Schedule
    optimizer: Optimizer = ADAM
    data: str = "train"
    flag: str | None = None
    help: str = ""
    ours: str = ""
    ours_rate: str = ""
    ours_epochs: str = ""
    phantom_epochs: int | None = None
    phantom_rate: float | None = None

    def __post_init__(self):
        if self.trainable not in TRAINABLE_MODES and not self.trainable.startswith("from:"):
            raise errors.ConfigurationError(
                f"`trainable` must be one of {TRAINABLE_MODES} or 'from:<layer>'. Received: {self.trainable!r}"
            )
        if self.epochs < 1:
            raise errors.ConfigurationError(
                f"stage {self.name}: epochs must be at least 1. Received: epochs={self.epochs}"
            )

    @property
    def lr_field(self):
        prefix = self.name if self.flag is None else self.flag
        return f"{prefix}_lr" if prefix else "learning_rate"

    @property
    def epochs_field(self):
        prefix = self.name if self.flag is None else self.flag
        return f"{prefix}_epochs" if prefix else "epochs"

    @property
    def learning_rate(self):
        return self.schedule.initial

    def describe(self):
        return (f"{self.name}: {self.optimizer.describe()} {self.schedule.describe()}, {self.epochs} epochs, "
                f"trains {self.trainable}, data {self.data}")


@dataclasses.dataclass(frozen=True)
class Holdout:
    """Patient-grouped hold-out: ``val_fraction`` for validation, ``test_fraction`` held out."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def describe(self):
        test = f", {self.test_fraction:.0%} held-out test" if self.test_fraction else ""
        return f"hold-out by patient: {self.val_fraction:.0%} validation{test}"


@dataclasses.dataclass(frozen=True)
class SameSplit:
    """The patient split of the run this one builds on (paper 001's heads and ensemble)."""

    of: str = "the slice-level run"

    def describe(self):
        return f"{self.of}'s patient split (best weights on its validation patients, reports on its test patients)"


@dataclasses.dataclass(frozen=True)
class KFold:
    """``k`` patient-grouped stratified folds, then (``final``) a model on all training patients."""

    k: int = 5
    final: bool = True

    def describe(self):
        final = ", then a final model on all training patients" if self.final else ""
        return f"{self.k}-fold cross-validation by patient (StratifiedGroupKFold){final}"


@dataclasses.dataclass(frozen=True)
class Param:
    """One setting of a recipe, and its command-line flag ``--<name>``.

    Attributes:
        name: the field name (``image_size`` -> ``--image-size``).
        default: the paper's value (or ours, then ``ours`` says why).
        help: one line for ``--help``.
        phantom: the small preset's value on the built-in phantoms (no
            ``--data``), or :data:`UNSET` when it is the default.
        choices: the values the flag accepts, or None.
        ours: why the value is our choice (empty: the paper's).
        kind: the Python type of a value (default: that of ``default``,
            ``str`` for None). Booleans become ``--x`` / ``--no-x``;
            tuples take several values.
        flag: the command-line flag when it is not ``--<name>``.
        hash_default: False for a setting added after run folders were
            first named: at its default it is left out of the run folder's
            hash, so that earlier runs keep their folders and resume.
    """

    name: str
    default: typing.Any
    help: str
    phantom: typing.Any = UNSET
    choices: tuple | None = None
    ours: str = ""
    kind: type | None = None
    flag: str | None = None
    hash_default: bool = True

    @property
    def option(self):
        """The command-line flag: ``flag`` or ``--`` + the name with dashes."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def type(self):
        if self.kind is not None:
            return self.kind
        return str if self.default is None else type(self.default)

    @property
    def has_phantom(self):
        return self.phantom is not UNSET


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One trainable model of one paper: every setting, the paper's values as defaults.

    Attributes:
        name: the recipe's name (``python -m covid_keras.recipes NAME``);
            also the export's folder name.
        paper: ``"001 MultiScale (Garg et al.)"``.
        command: the training command (``train.slice_level``), or None
            when none is built yet.
        builder: the builder's name in :mod:`covid_keras.models`, or the
            builder itself (a callable: a model of your own, see
            docs/extending.md).
        builder_args: ``config -> dict`` of the builder's arguments.
        classes: key of ``covid_keras.data.datasets.CLASS_NAMES``, or
            ``config -> key`` when a setting chooses it.
        pipeline: ``config -> dict`` of the preprocessing pipeline and its
            parameters (``{"pipeline": "ct_slices", "size": 224, ...}``).
        input_shape: ``config -> tuple``, one example's model input.
        stages: the paper's :class:`Stage` records, in order.
        params: the other settings (:class:`Param`), in ``--help`` order.
        augmentation: ``config -> dict`` of ``augment.RandomAffine``'s
            arguments, the fused augmentation layer in front of the model
            in training (an empty dict: none).
        validation: ``config -> Holdout | KFold``.
        datasets: the ``--dataset`` names it accepts (first: default).
        ours: ``{what: why}`` for choices the paper does not make.
        reported: the paper's reported figures ({name: value}).
        validate: ``config -> None``, raising ConfigurationError on bad
            combinations the types cannot catch.
        notes: anything else a reader needs.
    """

    name: str
    paper: str
    command: str | None
    builder: typing.Any
    builder_args: typing.Callable
    classes: typing.Any
    pipeline: typing.Callable
    input_shape: typing.Callable
    stages: tuple
    params: tuple
    augmentation: typing.Callable = lambda config: {}
    validation: typing.Callable = lambda config: Holdout()
    datasets: tuple = ()
    ours: dict = dataclasses.field(default_factory=dict)
    reported: dict = dataclasses.field(default_factory=dict)
    validate: typing.Callable | None = None
    notes: str = ""

    # ---------------------------------------------------------------- settings

    def stage_params(self):
        """Two :class:`Param` per stage: its learning rate and its epochs."""
        out = []
        for stage in self.stages:
            label = stage.name if stage.flag != "" else "training"
            out.append(Param(stage.lr_field, stage.learning_rate,
                             f"{label}: {stage.optimizer.describe()} learning rate"
                             + (f" ({stage.schedule.shape()})" if stage.schedule.kind != "constant" else ""),
                             ours=stage.ours_rate,
                             phantom=UNSET if stage.phantom_rate is None else stage.phantom_rate))
            out.append(Param(stage.epochs_field, stage.epochs, f"{label}: epochs", ours=stage.ours_epochs,
                             phantom=UNSET if stage.phantom_epochs is None else stage.phantom_epochs))
        return tuple(out)

    def all_params(self):
        """Every setting in ``--help`` order: the recipe's params, then the stages'."""
        own = list(self.params)
        names = {p.name for p in own}
        stage_params = [p for p in self.stage_params() if p.name not in names]
        # Stage flags go after the `stages` param (or at the end).
        at = next((i + 1 for i, p in enumerate(own) if p.name == "stages"), len(own))
        return tuple(own[:at] + stage_params + own[at:])

    def defaults(self, phantom=False):
        """``{name: value}`` of every setting: the paper's, or the phantom preset's."""
        values = {}
        for p in self.all_params():
            values[p.name] = p.phantom if phantom and p.has_phantom else p.default
        return values

    def phantom_preset(self):
        """``{name: value}`` of the settings the phantom preset changes."""
        return {p.name: p.phantom for p in self.all_params() if p.has_phantom and p.phantom != p.default}

    def stages_for(self, config):
        """The :class:`Stage` records a config runs: its chosen stages, its rates and epochs."""
        values = _values(config)
        chosen = values.get("stages", tuple(s.name for s in self.stages))
        out = []
        for stage in self.stages:
            if stage.name not in chosen:
                continue
            schedule = dataclasses.replace(stage.schedule, initial=float(values[stage.lr_field]))
            out.append(dataclasses.replace(stage, schedule=schedule, epochs=int(values[stage.epochs_field])))
        return tuple(out)

    def class_key(self, config=None):
        return self.classes(config) if callable(self.classes) else self.classes

    def class_names(self, config=None):
        from covid_keras.data.datasets.records import CLASS_NAMES

        return list(CLASS_NAMES[self.class_key(config)])

    def resolved(self, config):
        """The recipe's structured view of one config (what ``python -m covid_keras.recipes`` prints)."""
        return {
            "recipe": self.name,
            "paper": self.paper,
            "command": self.command,
            "builder": self.builder_name,
            "builder_args": self.builder_args(config),
            "classes": self.class_names(config),
            "pipeline": self.pipeline(config),
            "input_shape": list(self.input_shape(config)),
            "batch_size": _values(config).get("batch_size"),
            "stages": [s.describe() for s in self.stages_for(config)],
            "augmentation": self.augmentation(config),
            "validation": self.validation(config).describe(),
            "datasets": list(self.datasets),
        }

    def build(self, config, **overrides):
        """Builds the model: ``covid_keras.models.<builder>(**builder_args(config), **overrides)``."""
        return self.builder_function()(**{**self.builder_args(config), **overrides})

    def builder_function(self):
        """The builder: ``covid_keras.models.<builder>``, or the callable given."""
        if callable(self.builder):
            return self.builder
        from covid_keras import models

        return getattr(models, self.builder)

    @property
    def builder_name(self):
        """``multiscale_resnet50``, or ``module.function`` for a builder of your own."""
        if callable(self.builder):
            return f"{self.builder.__module__}.{self.builder.__qualname__}"
        return self.builder

    def export_metadata(self, config):
        """What an export records of the recipe: its name, builder, builder arguments, classes, pipeline."""
        args = dict(self.builder_args(config))
        if isinstance(args.get("weights"), str) and ("/" in args["weights"] or "\\" in args["weights"]):
            # A weights file: its name, not the training machine's folders, goes to the serving hosts.
            args["weights"] = "file:" + args["weights"].replace("\\", "/").rsplit("/", 1)[-1]
        return {
            "recipe": self.name,
            "builder": self.builder_name,
            "builder_args": _jsonable(args),
            "classes": self.class_names(config),
            "pipeline": self.pipeline(config),
        }


def _values(config):
    if isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return vars(config)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
