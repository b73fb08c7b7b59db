"""List every paper model with its paper, builder, input and parameter count.

    python -m covid_keras.models                  # the table (builds each model, ~1 min on 2 cores)
    python -m covid_keras.models --no-params      # without building
    python -m covid_keras.models --summary xray_cnn

One row per recipe that builds a model (covid_keras.recipes, named as
there), and one per paper 001 patient head; each built as its recipe
builds it at the paper's settings, with weights=None (nothing is
downloaded). ``python -m covid_keras.recipes`` prints the recipes'
training settings.
"""

import argparse
import dataclasses
import inspect
import sys
import typing

# covid_keras/models/__init__.py, imported before this module, has already
# muted TensorFlow's start-up lines (cli.quiet_tensorflow).
from covid_keras import cli, errors, models, recipes
from covid_keras.recipes.__main__ import make_config


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the listing: a model a recipe builds."""

    name: str
    paper: str
    builder: str
    inputs: str
    build: typing.Callable


def _no_download(builder):
    """``{"weights": None}`` for builders (functions) that take weights: the listing downloads nothing."""
    takes = "weights" in inspect.signature(builder).parameters
    return {"weights": None} if takes else {}


def _input_text(recipe, config):
    shape = recipe.input_shape(config)
    text = "x".join(map(str, shape))
    pipeline = recipe.pipeline(config).get("pipeline")
    # The pipeline makes images and volumes; a head's or the ensemble's input comes from other models.
    return f"{text} ({pipeline})" if pipeline and all(isinstance(n, int) for n in shape) else text


def _recipe_entry(recipe, config):
    shown = {k: v for k, v in recipe.builder_args(config).items() if k != "weights"}
    builder = f"{recipe.builder_name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"
    return Entry(recipe.name, recipe.paper, builder, _input_text(recipe, config),
                 lambda: recipe.build(config, **_no_download(recipe.builder_function())))


def _head_entries(recipe, config):
    """The patient heads of paper 001 (recipe ``patient_heads``), one row each.

    Their recipe's builder registers heads by name rather than building one
    model; the four paper heads are maxpool or BiLSTM heads over the slice
    model's ``features`` (features A) or over those times each class
    probability (``*_weighted``, features B: classes x features wide).
    """
    from covid_keras.models.multiscale import FEATURE_UNITS
    from covid_keras.recipes.multiscale import PAPER_HEADS

    args = recipe.builder_args(config)
    num_classes = len(recipe.class_names(config))
    for head in PAPER_HEADS:
        if head not in args["heads"]:
            continue
        spec = models.get_head(head)  # the head registry: builder and features kind
        feature_dim = FEATURE_UNITS * (num_classes if spec.features == "weighted" else 1)
        options = {"l1": args["l1"], "l2": args["l2"], "lstm_units": args["lstm_units"]}
        yield Entry(head, recipe.paper, f"{spec.builder.__name__}(feature_dim={feature_dim})",
                    f"slices x {feature_dim} features + mask",
                    lambda spec=spec, feature_dim=feature_dim, options=options:
                    spec.build(feature_dim, num_classes, **options))


def entries():
    """Every model the recipes build, in paper order, by name (:class:`Entry`)."""
    out = {}
    for recipe in recipes.RECIPES.values():
        config = make_config(recipe)
        if recipe.builder == "get_head":
            rows = list(_head_entries(recipe, config))
        elif callable(recipe.builder) or hasattr(models, recipe.builder):
            rows = [_recipe_entry(recipe, config)]
        else:  # names a builder this installation does not have
            rows = []
        out.update((row.name, row) for row in rows)
    return out


def parse_args(argv=None, names=()):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.models", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--summary", metavar="NAME", help=f"print the Keras summary of one model: {', '.join(names)}")
    parser.add_argument("--no-params", action="store_true", help="list without building (no parameter counts)")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    table = entries()
    args = parse_args(argv, table)
    if args.summary:
        if args.summary not in table:
            raise errors.ConfigurationError(
                f"Unknown model {args.summary!r}; use one of {', '.join(table)} with --summary."
            )
        table[args.summary].build().summary()
        return 0
    rows = [("model", "paper", "builder", "input", "parameters")]
    for name, entry in table.items():
        params = "-" if args.no_params else f"{entry.build().count_params():,}"
        rows.append((name, entry.paper, entry.builder, entry.inputs, params))
        if not args.no_params:
            print(f"built {name}", file=sys.stderr)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
