"""train.slice_level reads recipe multiscale_resnet50 and runs what it ran before the recipes.

The values pinned here were recorded from the command line before its
settings moved into the recipe: the settings of the phantom run and of a
``--data`` run (and so their run folders' names), and the default phantom
run's patient split.
"""

import os
import subprocess
import sys

import pytest

from covid_keras.recipes import MULTISCALE_RESNET50
from covid_keras.training.runs import config_hash

# Recorded before the move onto the recipe (runs/slice_level/<dataset>-<hash>).
PHANTOM_RUN_HASH = "df7e4496"
DATA_RUN_HASH = "d37b8099"
PHANTOM_SETTINGS = {
    "data": None, "dataset": "covid-ct-md", "pretrain_data": None, "pretrain_dataset": "covidx-ct",
    "weights": None, "image_size": 64, "brightness": 2.0, "interpolate": 1, "batch_size": 16,
    "stages": ("pretrain", "last_layers", "finetune", "pseudo_label"),
    "pretrain_lr": 1e-3, "pretrain_epochs": 10, "last_layers_lr": 1e-4, "last_layers_epochs": 2,
    "finetune_lr": 1e-5, "finetune_epochs": 2, "pseudo_lr": 1e-5, "pseudo_epochs": 2, "pseudo_threshold": 0.5,
    "dropout": 0.5, "bn_momentum": 0.9, "augment": False, "val_fraction": 0.2, "test_fraction": 0.2,
    "slice_stride": 2, "phantom_patients_per_class": 10, "phantom_size": 128, "seed": 0, "runs_root": "runs",
}
PHANTOM_SPLIT = {
    "train": ["P002", "P003", "P004", "P006", "P009", "P010", "cap002", "cap003", "cap004", "cap007", "cap009",
              "cap010", "normal001", "normal003", "normal004", "normal005", "normal006", "normal009"],
    "val": ["P001", "P007", "cap005", "cap008", "normal002", "normal007"],
    "test": ["P005", "P008", "cap001", "cap006", "normal008", "normal010"],
}


def _parse(*argv):
    from train.slice_level import parse_args

    return parse_args(list(argv))


def test_phantom_run_settings_and_folder_are_unchanged():
    config = _parse()
    assert config.settings() == PHANTOM_SETTINGS
    assert config_hash(config.settings()) == PHANTOM_RUN_HASH


def test_data_run_uses_the_papers_settings():
    config = _parse("--data", "/x", "--dataset", "covid-ct-md")  # as recorded
    assert config_hash(config.settings()) == DATA_RUN_HASH
    assert (config.weights, config.image_size, config.batch_size, config.interpolate, config.augment) == (
        "imagenet", 224, 64, 2, True)
    stages = [(s.name, s.trainable, s.optimizer.name, s.learning_rate, s.epochs, s.schedule.kind)
              for s in config.stage_list()]
    assert stages == [("pretrain", "all", "adam", 1e-3, 10, "constant"),
                      ("last_layers", "last2", "adam", 1e-4, 10, "constant"),
                      ("finetune", "all_but_bn", "adam", 1e-5, 10, "constant"),
                      ("pseudo_label", "all_but_bn", "adam", 1e-5, 25, "constant")]


def test_typed_values_win_over_the_preset_and_reach_the_stage_records():
    config = _parse("--finetune-lr", "3e-5", "--pseudo-epochs", "4", "--stages", "finetune", "pseudo_label",
                    "--image-size", "96")
    assert config.image_size == 96 and config.batch_size == 16  # typed; preset
    assert [(s.name, s.learning_rate, s.epochs) for s in config.stage_list()] == [
        ("finetune", 3e-5, 2), ("pseudo_label", 1e-5, 4)]
    assert MULTISCALE_RESNET50.builder_args(config)["input_shape"] == (96, 96, 3)


def test_default_phantom_split_is_unchanged(tmp_path, monkeypatch):
    from covid_keras.training.slice_level import load_records, split_patients

    monkeypatch.setenv("COVID_KERAS_CACHE", str(tmp_path / "cache"))
    config = _parse()
    _, records = load_records(config.data, config.dataset, config.phantom_patients_per_class, config.seed,
                              config.phantom_size)
    protocol = MULTISCALE_RESNET50.validation(config)
    assert split_patients(records, protocol.val_fraction, protocol.test_fraction, config.seed) == PHANTOM_SPLIT


@pytest.mark.parametrize("argv, message", [
    (["--stages", "pretrain", "warmup"], "invalid choice: 'warmup'"),
    (["--dataset", "covidx"], "invalid choice: 'covidx'"),
])
def test_choices_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _help_entries(text):
    """``{flag: its help text}`` of argparse's ``--help`` output (entries start with ``  --flag``)."""
    entries, flag = {}, None
    for line in text.splitlines():
        if line.startswith("  --"):
            flag = line.split()[0]
            entries[flag] = line
        elif flag and line.startswith("    "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_help_shows_the_phantom_presets_values(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "train.slice_level", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=120)
    assert proc.returncode == 0, proc.stderr
    entries = _help_entries(proc.stdout)
    for flag, paper, phantom in (("--image-size", "224", "64"), ("--batch-size", "64", "16"),
                                 ("--finetune-epochs", "10", "2"), ("--weights", "imagenet", "none")):
        entry = entries[flag]
        assert f"default: {paper};" in entry and f"without --data, phantom preset: {phantom})" in entry, entry
    assert "ours: the paper gives no factor" in entries["--interpolate"]
    assert "phantom preset" not in entries["--brightness"]  # the same in both
    assert "phantom preset" not in entries["--pretrain-epochs"]


def test_stage_named_twice_is_refused():
    from covid_keras import errors

    with pytest.raises(errors.ConfigurationError, match="names a stage twice"):
        _parse("--stages", "finetune", "finetune")


def test_a_slice_recipe_must_keep_paper_001s_stages():
    """--backbone takes a recipe that changes the builder only: other stages would run unseen by --help."""
    import dataclasses

    from covid_keras import errors, recipes
    from covid_keras.training.slice_level import slice_recipe

    shorter = dataclasses.replace(MULTISCALE_RESNET50, name="test_shorter",
                                  stages=MULTISCALE_RESNET50.stages[:2])
    recipes.register(shorter)
    try:
        with pytest.raises(errors.ConfigurationError, match="changes paper 001's stages or settings"):
            slice_recipe("test_shorter")
        recipes.register(dataclasses.replace(MULTISCALE_RESNET50, name="test_same", builder=lambda **kw: None))
        assert slice_recipe("test_same").name == "test_same"
        with pytest.raises(errors.ConfigurationError, match="not a slice model"):
            slice_recipe("xray_cnn")
    finally:
        recipes.RECIPES.pop("test_shorter", None)
        recipes.RECIPES.pop("test_same", None)


def test_the_recipes_augmentation_is_paper_001s_fused_layer():
    """The slice model trains behind augment.RandomAffine with paper 001's six transforms (translation scaled)."""
    from covid_keras.augment import RandomAffine
    from covid_keras.models import multiscale_resnet50
    from covid_keras.training.slice_level import _augmenting

    config = _parse("--data", "/x", "--image-size", "112")
    model = multiscale_resnet50(input_shape=(112, 112, 3), weights=None)
    trainer = _augmenting(model, 112, 0, MULTISCALE_RESNET50.augmentation(config))
    layer = trainer.get_layer("augmentation")
    paper = RandomAffine(rotation=25.0, translation=10.0, zoom=(0.8, 1.2), shear=0.2, horizontal_flip=True,
                         brightness=(0.8, 1.2), seed=0, name="augmentation")
    assert layer.get_config() == paper.get_config()
    assert MULTISCALE_RESNET50.augmentation(_parse()) == {}  # the phantom preset trains without it
