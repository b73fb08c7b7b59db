"""Print the recipes: every setting of every paper model, the paper's and ours.

    python -m covid_keras.recipes                          # every recipe, paper settings
    python -m covid_keras.recipes multiscale_resnet50 --phantom
    python -m covid_keras.recipes xray_cnn --json

Each recipe shows its paper, training command, builder and builder
arguments, classes, preprocessing pipeline, input shape, batch size,
stages, augmentation, validation protocol, datasets and its settings:
every flag with the paper's default, the phantom preset's value where it
differs, and **ours** with the reason where the value is our choice.
--phantom resolves the view (builder arguments, stages ...) with the
phantom preset applied; --json prints the same as one JSON object keyed by
recipe name. Nothing here imports TensorFlow.
Unknown names are one sentence on stderr and exit status 2.
"""

import argparse
import json
import sys

from covid_keras import cli, recipes

#: What marks a value the paper does not give (as README.md and --help do).
OURS = "**ours**"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.recipes", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"recipes to print (default: all): {', '.join(recipes.RECIPES)}")
    parser.add_argument("--import", dest="import_modules", action="append", default=[], metavar="MODULE",
                        help="a module (or .py file) to import first, which registers recipes of its own "
                             "(docs/extending.md); repeat for several")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--phantom", action="store_true",
                        help="resolve each recipe with its phantom preset (what a training command runs "
                             "without --data)")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def make_config(recipe, phantom=False):
    """A config of ``recipe``: the paper's defaults, or with the phantom preset applied."""
    class_name = "".join(part.title() for part in recipe.name.split("_")) + "Config"
    config_cls = recipes.config_class(recipe, class_name)
    return config_cls(**recipe.phantom_preset()) if phantom else config_cls()


def _stage_record(stage):
    schedule = stage.schedule
    record = {"name": stage.name, "optimizer": stage.optimizer.name, "schedule": schedule.kind,
              "learning_rate": schedule.initial, "epochs": stage.epochs, "trainable": stage.trainable,
              "data": stage.data}
    if stage.optimizer.momentum:
        record["momentum"] = stage.optimizer.momentum
    if schedule.kind == "step":
        record.update(every_epochs=schedule.every_epochs, factor=schedule.factor)
    if schedule.kind == "cosine":
        record["alpha"] = schedule.alpha
    if stage.ours:
        record["ours"] = stage.ours
    return record


def _setting_record(param):
    record = {"name": param.name, "flag": param.option, "default": param.default, "help": param.help}
    if param.has_phantom and param.phantom != param.default:
        record["phantom"] = param.phantom
    if param.choices:
        record["choices"] = list(param.choices)
    if param.ours:
        record["ours"] = param.ours
    return record


def describe(recipe, phantom=False):
    """The recipe's structured view (:meth:`Recipe.resolved`) plus its stages in detail and its settings.

    Args:
        recipe: a :class:`~covid_keras.recipes.Recipe`.
        phantom: resolve it with the phantom preset applied.

    Returns:
        A JSON-ready dict: ``Recipe.resolved``'s keys, ``preset``
        (``paper`` or ``phantom``), ``stage_details`` (one dict per stage
        run), ``settings`` (one dict per :class:`Param`), ``ours``,
        ``reported`` and ``notes``.
    """
    config = make_config(recipe, phantom)
    view = recipe.resolved(config)
    view["preset"] = "phantom" if phantom else "paper"
    view["stage_details"] = [_stage_record(s) for s in recipe.stages_for(config)]
    view["settings"] = [_setting_record(p) for p in recipe.all_params()]
    view["ours"] = dict(recipe.ours)
    view["reported"] = dict(recipe.reported)
    view["notes"] = recipe.notes
    # Through JSON once: tuples become lists, as --json prints them.
    return json.loads(json.dumps(view))


# ------------------------------------------------------------------- text


def _shown(value):
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(_shown, value)) if value else "nothing"
    return str(value)


def _literal(value):
    """A builder argument as Python would write it (JSON made tuples lists)."""
    if isinstance(value, list):
        return "(" + ", ".join(map(_literal, value)) + ("," if len(value) == 1 else "") + ")"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _call(name, args):
    return f"{name}({', '.join(f'{k}={_literal(v)}' for k, v in args.items())})"


def _mapping(d):
    return ", ".join(f"{k}={_shown(v)}" for k, v in d.items())


def _stage_line(described, stage):
    """``Stage.describe()``'s line, with what of the stage is ours."""
    return described + (f"  {OURS}: {stage['ours']}" if "ours" in stage else "")


def _settings_table(settings):
    rows = [("flag", "default", "phantom", "")]
    for s in settings:
        ours = f"{OURS}: {s['ours']}" if "ours" in s else ""
        rows.append((s["flag"], _shown(s["default"]), _shown(s["phantom"]) if "phantom" in s else "", ours))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip() for r in rows]


def format_text(view):
    """The lines ``python -m covid_keras.recipes`` prints for one :func:`describe` view."""
    command = f"python -m {view['command']}" if view["command"] else "no training command yet"
    fields = [
        ("command", [command]),
        ("builder", [_call(view["builder"], view["builder_args"])]),
        ("classes", [", ".join(view["classes"])]),
        ("pipeline", [_mapping(view["pipeline"])]),
        ("input shape", [" x ".join(map(str, view["input_shape"]))]),
        ("batch size", [_shown(view["batch_size"])]),
        ("stages", [f"{i}. {_stage_line(d, s)}"
                    for i, (d, s) in enumerate(zip(view["stages"], view["stage_details"]), 1)]),
        ("augmentation", [_mapping(view["augmentation"]) or "none"]),
        ("validation", [view["validation"]]),
        ("datasets", [", ".join(view["datasets"]) or "none"]),
    ]
    if view["reported"]:
        fields.append(("reported", [f"{k} {_shown(v)}" for k, v in view["reported"].items()]))
    if view["ours"]:
        fields.append((OURS, [f"{k}: {v}" for k, v in view["ours"].items()]))
    if view["notes"]:
        fields.append(("notes", [view["notes"]]))
    fields.append(("settings", _settings_table(view["settings"])))
    preset = "phantom preset" if view["preset"] == "phantom" else "paper settings"
    lines = [f"{view['recipe']} - {view['paper']} ({preset})"]
    width = max(len(label) for label, _ in fields)
    for label, values in fields:
        for i, value in enumerate(values):
            lines.append(f"  {(label if i == 0 else '').ljust(width)}  {value}".rstrip())
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.import_modules:
        from covid_keras.extensions import import_modules

        import_modules(args.import_modules, log=lambda message: None)
    chosen = [recipes.get(name) for name in args.names] if args.names else list(recipes.RECIPES.values())
    views = [describe(recipe, args.phantom) for recipe in chosen]
    if args.json:
        print(json.dumps({v["recipe"]: v for v in views}, indent=2))
        return 0
    print("\n\n".join("\n".join(format_text(v)) for v in views))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
