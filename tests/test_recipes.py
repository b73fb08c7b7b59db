"""The recipes: every one resolves, the paper's values are pinned, ours is marked, the printer needs no TensorFlow."""

import inspect
import json
import subprocess
import sys

import pytest

from covid_keras import cli, errors, recipes
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.recipes import __main__ as recipes_cli

#: The paper recipes, in paper order.
NAMES = ["resnet50_3d", "multiscale_resnet50", "patient_heads", "ensemble_mlp", "densenet", "new_densenet",
         "inceptionv3", "detl_cnn", "xray_cnn"]


def test_the_paper_recipes_come_first_in_paper_order():
    assert list(recipes.RECIPES)[:len(NAMES)] == NAMES


def _stages(name):
    """(name, optimizer, momentum, schedule kind, rate, epochs) of each stage at the paper's settings."""
    recipe = recipes.get(name)
    return [(s.name, s.optimizer.name, s.optimizer.momentum, s.schedule.kind, s.learning_rate, s.epochs)
            for s in recipe.stages_for(recipes_cli.make_config(recipe))]


# --------------------------------------------------------------------------
# Every recipe resolves
# --------------------------------------------------------------------------


@pytest.mark.parametrize("phantom", [False, True], ids=["paper", "phantom"])
@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_resolves_and_its_classes_come_from_class_names(name, phantom):
    recipe = recipes.get(name)
    config = recipes_cli.make_config(recipe, phantom)
    view = recipes_cli.describe(recipe, phantom)
    assert view["recipe"] == name and view["preset"] == ("phantom" if phantom else "paper")
    assert view["classes"] == list(CLASS_NAMES[recipe.class_key(config)])
    for key, value in recipe.phantom_preset().items():
        assert getattr(config, key) == (value if phantom else recipe.defaults()[key])
    assert len(view["stage_details"]) == len(view["stages"]) >= 1
    assert [s["name"] for s in view["settings"]] == [p.name for p in recipe.all_params()]
    json.dumps(view, allow_nan=False)


def test_the_phantom_preset_changes_what_resolves():
    paper = recipes_cli.describe(recipes.get("multiscale_resnet50"))
    phantom = recipes_cli.describe(recipes.get("multiscale_resnet50"), phantom=True)
    size = recipes.get("multiscale_resnet50").phantom_preset()["image_size"]
    assert paper["input_shape"] == [224, 224, 3] and phantom["input_shape"] == [size, size, 3]
    assert paper["builder_args"]["weights"] == "imagenet" and phantom["builder_args"]["weights"] is None
    assert paper["batch_size"] == 64 and phantom["batch_size"] == 16
    assert [s["epochs"] for s in phantom["stage_details"]] == [10, 2, 2, 2]
    assert paper["augmentation"] and phantom["augmentation"] == {}


# --------------------------------------------------------------------------
# The paper's values
# --------------------------------------------------------------------------


def test_paper_001_slice_stages():
    assert _stages("multiscale_resnet50") == [
        ("pretrain", "adam", 0.0, "constant", 1e-3, 10),
        ("last_layers", "adam", 0.0, "constant", 1e-4, 10),
        ("finetune", "adam", 0.0, "constant", 1e-5, 10),
        ("pseudo_label", "adam", 0.0, "constant", 1e-5, 25),
    ]
    assert [s.trainable for s in recipes.get("multiscale_resnet50").stages] == [
        "all", "last2", "all_but_bn", "all_but_bn"]


@pytest.mark.parametrize("name, epochs", [("patient_heads", 25), ("ensemble_mlp", 200)])
def test_paper_001_heads_and_ensemble(name, epochs):
    assert _stages(name) == [(_stages(name)[0][0], "adam", 0.0, "constant", 1e-3, epochs)]
    assert recipes.get(name).defaults()["batch_size"] == 64


def test_paper_000_step_schedule_and_four_folds():
    recipe = recipes.get("resnet50_3d")
    (stage,) = recipe.stages
    assert (stage.optimizer.name, stage.epochs) == ("adam", 120)
    assert (stage.schedule.kind, stage.schedule.initial, stage.schedule.factor, stage.schedule.every_epochs) == (
        "step", 2e-4, 0.5, 40)
    assert recipe.validation(recipes_cli.make_config(recipe)).k == 4


@pytest.mark.parametrize("name", ["densenet", "new_densenet", "inceptionv3"])
def test_paper_002_adam_50_epochs_and_a_fifth_held_out(name):
    recipe = recipes.get(name)
    assert _stages(name) == [("train", "adam", 0.0, "constant", 1e-4, 50)]
    assert recipe.validation(recipes_cli.make_config(recipe)).test_fraction == 0.2


def test_paper_003_two_phases_and_five_folds():
    recipe = recipes.get("detl_cnn")
    assert _stages("detl_cnn") == [("phase1", "adam", 0.0, "cosine", 1e-3, 100),
                                   ("phase2", "sgd", 0.9, "constant", 1e-4, 30)]
    assert recipe.validation(recipes_cli.make_config(recipe)).k == 5


def test_paper_004_input_is_64_by_64():
    recipe = recipes.get("xray_cnn")
    assert tuple(recipe.input_shape(recipes_cli.make_config(recipe))) == (64, 64, 3)


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


@pytest.mark.parametrize("phantom", [False, True], ids=["paper", "phantom"])
@pytest.mark.parametrize("name", NAMES)
def test_each_builder_exists_and_takes_the_recipes_arguments(name, phantom):
    from covid_keras import models

    recipe = recipes.get(name)
    if recipe.builder == "get_head":
        # It registers heads by name (models.heads); its builder_args are the patient-level flags, not its own.
        pytest.skip("the patient heads recipe builds one model per registered head (models.get_head)")
    assert isinstance(recipe.builder, str)  # a paper recipe names a covid_keras.models builder
    builder = getattr(models, recipe.builder)
    args = recipe.builder_args(recipes_cli.make_config(recipe, phantom))
    inspect.signature(builder).bind(**args)  # TypeError on an argument the builder does not take


def test_the_models_listing_is_the_recipes_plus_the_paper_heads():
    from covid_keras import models
    from covid_keras.models import __main__ as models_cli

    table = models_cli.entries()
    assert list(table)[:12] == [
        "resnet50_3d", "multiscale_resnet50", "maxpool", "maxpool_weighted", "bilstm", "bilstm_weighted",
        "ensemble_mlp", "densenet", "new_densenet", "inceptionv3", "detl_cnn", "xray_cnn"]
    assert models_cli._no_download(models.multiscale_resnet50) == {"weights": None}
    assert models_cli._no_download(models.ensemble_mlp) == {}
    assert table["xray_cnn"].inputs == "64x64x3 (xray)"
    built = table["xray_cnn"].build()
    assert built.count_params() == models.xray_cnn(num_classes=3).count_params()
    head = table["maxpool_weighted"].build()
    assert head.inputs[0].shape[-1] == 3072


# --------------------------------------------------------------------------
# The printed listing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ours_is_marked_for_every_setting_and_stage(name, capsys):
    recipe = recipes.get(name)
    assert cli.run(recipes_cli.main, [name]) == 0
    lines = capsys.readouterr().out.splitlines()
    for param in recipe.all_params():
        row = [line for line in lines if line.split()[:1] == [param.option]]
        assert len(row) == 1, param.name
        if param.ours:
            assert row[0].endswith(f"**ours**: {param.ours}"), row[0]
        else:
            assert "**ours**" not in row[0], row[0]
    for i, stage in enumerate(recipe.stages, 1):
        row = [line for line in lines if f"{i}. {stage.name}: " in line]
        assert len(row) == 1
        assert row[0].endswith(f"**ours**: {stage.ours}") if stage.ours else "**ours**" not in row[0]
    for what, why in recipe.ours.items():
        assert any(line.endswith(f"{what}: {why}") for line in lines)


def test_command_and_builder_are_printed(capsys):
    assert cli.run(recipes_cli.main, ["multiscale_resnet50", "detl_cnn"]) == 0
    out = capsys.readouterr().out
    assert "python -m train.slice_level" in out and "python -m train.detl" in out
    assert "multiscale_resnet50(input_shape=(224, 224, 3), weights='imagenet', dropout=0.5)" in out


def test_json_with_the_phantom_preset(capsys):
    assert cli.run(recipes_cli.main, ["--json", "--phantom", "resnet50_3d"]) == 0
    (view,) = json.loads(capsys.readouterr().out).values()
    assert view["builder_args"] == {"input_shape": [32, 32, 32, 1], "depth": 18, "weights": None}
    weights = next(s for s in view["settings"] if s["name"] == "weights")
    assert weights["default"] == "imagenet-inflated" and weights["phantom"] is None
    batch = next(s for s in view["settings"] if s["name"] == "batch_size")
    assert batch["phantom"] == 4 and batch["ours"].startswith("the paper gives none")
    rate = next(s for s in view["settings"] if s["name"] == "learning_rate")
    assert rate["default"] == 2e-4 and rate["phantom"] == 5e-4
    assert view["command"] == "train.volume3d"


def _run(*args):
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "covid_keras.recipes", *args],
                          capture_output=True, text=True, timeout=120)


def _imported(stderr):
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_command_prints_every_recipe_without_tensorflow():
    proc = _run()
    assert proc.returncode == 0
    headers = [line.split(" - ")[0] for line in proc.stdout.splitlines() if line and not line.startswith(" ")]
    assert headers == NAMES
    imported = _imported(proc.stderr)
    assert "covid_keras.recipes.base" in imported  # the import log is read
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}


def test_the_json_command_parses_and_an_unknown_name_exits_2():
    proc = _run("--json")
    assert proc.returncode == 0 and list(json.loads(proc.stdout)) == NAMES
    proc = _run("xray_cnn", "no_such_recipe")
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(errors) == 1 and errors[0].startswith("error: Unknown recipe 'no_such_recipe'")


def test_a_stages_ours_marks_the_flag_it_belongs_to():
    """Paper 003 gives phase 2's rate but no epoch count: only --phase2-epochs is marked ours."""
    params = {p.name: p for p in recipes.get("detl_cnn").all_params()}
    assert params["phase2_epochs"].ours and not params["phase2_lr"].ours
    params = {p.name: p for p in recipes.get("multiscale_resnet50").all_params()}
    assert params["pseudo_lr"].ours and not params["pseudo_epochs"].ours  # 25 epochs are the paper's


def test_reported_figures_are_the_papers_printed_ones():
    """The figures a report sets beside a run's are those docs/papers.md quotes from each paper."""
    assert recipes.get("multiscale_resnet50").reported == {
        "slice accuracy (validation)": 0.9576, "patient accuracy (validation)": 0.9490,
        "patient accuracy (SPGC test)": 0.8889}
    assert recipes.get("resnet50_3d").reported["COVID-19 specificity (4-fold)"] == 0.8988  # as printed
    assert recipes.get("detl_cnn").reported["5-fold accuracy"] == 0.953
    assert recipes.get("inceptionv3").reported == {"X-ray accuracy": 0.9235, "CT accuracy": 0.8451}
    import os

    papers = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                               "papers.md"), encoding="utf-8").read()
    for recipe in recipes.RECIPES.values():
        for name, value in recipe.reported.items():
            printed = f"{value * 100:.2f}".rstrip("0").rstrip(".")
            assert printed in papers, (recipe.name, name, printed)


def test_a_papers_recipe_is_not_replaced():
    import dataclasses

    with pytest.raises(errors.ConfigurationError, match="one of the papers' own"):
        recipes.register(dataclasses.replace(recipes.get("xray_cnn"), notes="mine"))


def test_the_listing_imports_a_users_recipe(tmp_path):
    (tmp_path / "my_recipes.py").write_text(
        "import dataclasses\n"
        "from covid_keras import recipes\n"
        "def tiny(**kwargs):\n"
        "    raise NotImplementedError\n"
        "recipes.register(dataclasses.replace(recipes.get('multiscale_resnet50'), name='tiny_slices', builder=tiny))\n")
    import os

    proc = subprocess.run([sys.executable, "-m", "covid_keras.recipes", "--import", "my_recipes", "tiny_slices"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tiny_slices") and "my_recipes.tiny(" in proc.stdout


def test_an_exports_record_names_a_weights_file_without_its_folders():
    recipe = recipes.get("multiscale_resnet50")
    config = recipes.config_class(recipe, "C")(weights="/home/someone/runs/best.weights.h5")
    assert recipe.export_metadata(config)["builder_args"]["weights"] == "file:best.weights.h5"
    assert recipe.export_metadata(recipes.config_class(recipe, "C")())["builder_args"]["weights"] == "imagenet"


def test_every_recipes_augmentation_builds_the_fused_layer():
    """A recipe's augmentation is augment.RandomAffine's arguments, every one given (no paper 001 default leaks in)."""
    import inspect

    from covid_keras.augment import RandomAffine

    transforms = {"rotation", "translation", "zoom", "shear", "horizontal_flip", "brightness"}
    assert transforms <= set(inspect.signature(RandomAffine).parameters)
    for recipe in recipes.RECIPES.values():
        config = recipes.config_class(recipe, "C")()
        augmentation = recipe.augmentation(config)
        if augmentation:
            assert set(augmentation) == transforms, recipe.name
            RandomAffine(**augmentation)
