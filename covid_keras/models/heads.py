"""The patient-head registry: paper 001's four heads and any a researcher adds.

A patient head turns the per-slice features of one study into the study's
class probabilities. It is a builder ``f(feature_dim, num_classes, **options)
-> keras.Model`` whose model has the two inputs of the paper's heads:

* ``slice_features``: float [batch, slices, feature_dim];
* ``slice_mask``: bool [batch, slices], False for padded slices;

and one output, [batch, num_classes] probabilities. Each head also says
which per-slice features it takes (:data:`FEATURE_KINDS`): ``"features"``,
the slice classifier's 1024-d penultimate ``features`` layer, or
``"weighted"``, the 3072-d probability-weighted features
(:func:`covid_keras.models.weighted_features`).

    >>> from covid_keras import models
    >>> sorted(models.registered_heads())[:2]
    ['bilstm', 'bilstm_weighted']
    >>> models.get_head("maxpool_weighted").features
    'weighted'

``train.patient_level --import my_heads --heads maxpool attention_mil``
trains a head that ``my_heads`` registers (docs/extending.md).
"""

import dataclasses
import inspect
import re
import warnings

from covid_keras import errors

#: The per-slice features a head can take.
FEATURE_KINDS = ("features", "weighted")
#: The input names every head model has.
INPUT_NAMES = ("slice_features", "slice_mask")
#: Options passed to a builder only when its signature names them.
OPTIONAL_OPTIONS = ("l1", "l2", "lstm_units")

# Head names become file names (heads/<name>.keras) and model names (<name>_head).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# The exported patient pipeline's other parts (serving.savedmodel.PIPELINE_PARTS): their .keras
# files sit beside the heads', so a head may not take their names.
_RESERVED = ("slice_model", "ensemble")
_REGISTRY = {}
# The package's own heads: their names are in run folders, exports and the recipes.
_BUILT_IN = set()


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One registered head.

    Attributes:
        name: the head's name (``--heads`` value, file and model name).
        builder: ``f(feature_dim, num_classes, **options) -> keras.Model``.
        features: which per-slice features it takes: ``"features"`` or
            ``"weighted"``.
    """

    name: str
    builder: object
    features: str = "features"

    @property
    def builder_path(self):
        """``module.qualname`` of the builder (what run summaries and exports record)."""
        return f"{getattr(self.builder, '__module__', '?')}.{getattr(self.builder, '__qualname__', self.builder)}"

    def options(self, **given):
        """The keyword arguments the builder gets: ``name`` always, the others if its signature names them."""
        try:
            accepted = set(inspect.signature(self.builder).parameters)
        except (TypeError, ValueError):  # some callables have no signature: pass the name only
            accepted = set()
        options = {"name": f"{self.name}_head"}
        options.update({k: v for k, v in given.items() if k in OPTIONAL_OPTIONS and k in accepted})
        return options

    def build(self, feature_dim, num_classes, **options):
        """Builds the head and checks its model.

        Args:
            feature_dim: width of its per-slice features.
            num_classes: classes of its output.
            **options: ``l1``, ``l2``, ``lstm_units``; each is passed only
                when the builder's signature names it.

        Returns:
            The ``keras.Model``.

        Raises:
            ConfigurationError: the model does not have the heads' inputs
                and output.
        """
        model = self.builder(feature_dim, num_classes, **self.options(**options))
        check_head_model(self.name, model, feature_dim, num_classes)
        return model


def register_head(name, builder, features="features"):
    """Registers a patient head, so ``--heads NAME`` trains it.

    The builder is called as ``builder(feature_dim, num_classes,
    name=f"{name}_head", **options)``: ``name`` always, and ``l1``, ``l2``
    (the kernel regularisation of ``--l1`` / ``--l2``) and ``lstm_units``
    (``--lstm-units``) only when the builder's signature names them (a
    ``**kwargs`` catch-all does not count). It must return a
    ``keras.Model`` with inputs named ``slice_features`` (float [batch,
    slices, feature_dim]) and ``slice_mask`` (bool [batch, slices], False
    for padded slices) and one [batch, num_classes] probability output;
    this is checked when the head is built. Custom layers must be
    registered with ``keras.saving.register_keras_serializable`` so that
    the saved head loads with ``safe_mode=True``.

    Registering a name again replaces the head, with a warning, unless the
    builder and features are the same (a module imported twice); the
    package's four heads (``maxpool``, ``maxpool_weighted``, ``bilstm``,
    ``bilstm_weighted``) cannot be replaced.

    Args:
        name: the head's name: a letter, then letters, digits or ``_``.
        builder: the builder function.
        features: ``"features"`` (the 1024-d ``features`` layer, default)
            or ``"weighted"`` (the 3072-d probability-weighted features).

    Returns:
        The :class:`HeadSpec`.

    Raises:
        ConfigurationError: a bad name, builder or features value, or one
            of the package's heads.

    Example:
        >>> from covid_keras import models
        >>> spec = models.register_head("my_maxpool", models.maxpool_head)
        >>> spec.build(8, 3).name
        'my_maxpool_head'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise errors.ConfigurationError(
            f"`name` must be a letter followed by letters, digits or '_' (it names files). Received: name={name!r}"
        )
    if name in _RESERVED:
        raise errors.ConfigurationError(
            f"head name {name!r} is taken by the patient pipeline's own parts ({', '.join(_RESERVED)}); choose another."
        )
    if not callable(builder):
        raise errors.ConfigurationError(
            f"`builder` of head {name!r} must be a function (feature_dim, num_classes, **options) -> keras.Model. "
            f"Received: {builder!r}"
        )
    if features not in FEATURE_KINDS:
        raise errors.ConfigurationError(
            f"`features` of head {name!r} must be one of {FEATURE_KINDS}. Received: features={features!r}"
        )
    spec = HeadSpec(name, builder, features)
    old = _REGISTRY.get(name)
    if old is not None and (old.builder_path, old.features) != (spec.builder_path, spec.features):
        if name in _BUILT_IN:
            raise errors.ConfigurationError(
                f"head {name!r} is one of the package's heads and cannot be replaced; register yours under "
                "another name."
            )
        warnings.warn(f"head {name!r} was registered already ({old.builder_path}); replacing it with "
                      f"{spec.builder_path}.", stacklevel=2)
    _REGISTRY[name] = spec
    return spec


def registered_heads():
    """``{name: HeadSpec}`` of every registered head, in registration order."""
    return dict(_REGISTRY)


def get_head(name):
    """The :class:`HeadSpec` registered as ``name``.

    Raises:
        ConfigurationError: no head has that name.
    """
    if name not in _REGISTRY:
        raise errors.ConfigurationError(
            f"unknown head {name!r}; registered heads: {', '.join(_REGISTRY)} (add yours with "
            "covid_keras.models.register_head in a module given to --import)."
        )
    return _REGISTRY[name]


def check_head_model(name, model, feature_dim, num_classes):
    """Checks that a head's model has the heads' two inputs and one [batch, num_classes] output.

    Raises:
        ConfigurationError: it does not; the sentence names the head.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise errors.ConfigurationError(
            f"head {name!r}: its builder must return a keras.Model. Received: {type(model).__name__}"
        )
    inputs = {t.name: t for t in getattr(model, "inputs", None) or []}
    shapes = {k: tuple(t.shape) for k, t in inputs.items()}
    features, mask = inputs.get("slice_features"), inputs.get("slice_mask")
    if (len(inputs) != 2 or features is None or mask is None or len(features.shape) != 3
            or features.shape[-1] != feature_dim or len(mask.shape) != 2 or mask.dtype != "bool"):
        raise errors.ConfigurationError(
            f"head {name!r} ({model.name}) must take two inputs, slice_features [batch, slices, {feature_dim}] "
            f"and bool slice_mask [batch, slices]. Received: {shapes}"
        )
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] != num_classes:
        raise errors.ConfigurationError(
            f"head {name!r} ({model.name}) must have one [batch, {num_classes}] probability output. Received: "
            f"{[tuple(o.shape) for o in outputs]}"
        )


def _register_paper_heads():
    from covid_keras.models.patient_heads import bilstm_head, maxpool_head

    for name, builder, features in (("maxpool", maxpool_head, "features"),
                                    ("maxpool_weighted", maxpool_head, "weighted"),
                                    ("bilstm", bilstm_head, "features"),
                                    ("bilstm_weighted", bilstm_head, "weighted")):
        register_head(name, builder, features)
        _BUILT_IN.add(name)


_register_paper_heads()
