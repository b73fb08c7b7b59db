"""Paper 001's three levels end to end on tiny phantoms, and repeatability by seed."""

import json
import os

import numpy as np
import pytest

from covid_keras.training import pipelines
from covid_keras.training.patient_level import EnsembleConfig, PatientLevelConfig, train_ensemble, train_patient_level
from covid_keras.training.slice_level import PHANTOM_PRESET, SliceLevelConfig, train_slice_level

TINY = {**PHANTOM_PRESET, "image_size": 32, "batch_size": 8, "phantom_patients_per_class": 5, "phantom_size": 64,
        "interpolate": 2,
        "pretrain_epochs": 1, "last_layers_epochs": 1, "finetune_epochs": 1, "pseudo_epochs": 1,
        "verbose": 0, "quiet": True}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Runs the slice level twice with one seed, then the heads and the ensemble."""
    root = tmp_path_factory.mktemp("chain")
    saved = os.environ.get("COVID_KERAS_CACHE")
    os.environ["COVID_KERAS_CACHE"] = str(root / "cache")
    try:
        first = train_slice_level(SliceLevelConfig(**TINY, runs_root=str(root / "runs"),
                                                   export_dir=str(root / "saved_models"),
                                                   run_dir=str(root / "runs" / "slice_level" / "a")))
        second = train_slice_level(SliceLevelConfig(**TINY, runs_root=str(root / "other"), export_dir=None,
                                                     run_dir=str(root / "other" / "slice_level" / "b")))
        heads = train_patient_level(PatientLevelConfig(slice_run=str(root / "runs" / "slice_level" / "a"),
                                                       epochs=2, lstm_units=8, runs_root=str(root / "runs"),
                                                       verbose=0, quiet=True))
        ensemble = train_ensemble(EnsembleConfig(epochs=3, runs_root=str(root / "runs"), verbose=0, quiet=True,
                                                 export_dir=str(root / "saved_models")))
    finally:
        if saved is None:
            os.environ.pop("COVID_KERAS_CACHE", None)
        else:
            os.environ["COVID_KERAS_CACHE"] = saved
    return root, first, second, heads, ensemble


@pytest.mark.slow
def test_slice_level_run_folder_and_export(chain):
    root, first, _, _, _ = chain
    run = root / "runs" / "slice_level" / "a"
    for name in ("config.json", "split.json", "summary.json", "model.keras"):
        assert (run / name).exists(), name
    for stage in ("pretrain", "last_layers", "finetune", "pseudo_label"):
        assert (run / "logs" / f"{stage}.csv").exists()
        assert (run / "stages" / f"{stage}.weights.h5").exists()
        assert (run / "tensorboard" / stage).is_dir()
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))
    assert first["exported"].endswith(os.path.join("multiscale_resnet50", "1"))
    assert os.path.exists(os.path.join(first["exported"], "saved_model.pb"))
    assert set(first["slice_report"]) == {"val", "test"}


@pytest.mark.slow
def test_only_training_patients_are_interpolated(chain):
    root, first, _, _, _ = chain
    split = json.loads((root / "runs" / "slice_level" / "a" / "split.json").read_text())
    plain, classes = pipelines.manifest_rows(first["cache"])
    finer, _ = pipelines.manifest_rows(first["training_cache"])
    assert {r.patient_id for r in finer} == set(split["train"])
    stride = TINY["slice_stride"]
    n_train = len(pipelines.select_slices(plain, split["train"], classes, stride=stride))
    n_val = len(pipelines.select_slices(plain, split["val"], classes, stride=stride))
    counts = first["slices"]["last_layers"]
    assert counts["val"] == n_val
    assert 1.5 * n_train < counts["train"] < 2 * n_train


@pytest.mark.slow
def test_same_seed_same_run(chain):
    _, first, second, _, _ = chain
    for stage in first["stages"]:
        assert first["stages"][stage]["best_val_accuracy"] == second["stages"][stage]["best_val_accuracy"]
    import keras

    a = keras.saving.load_model(first["model"], safe_mode=True)
    b = keras.saving.load_model(second["model"], safe_mode=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.slow
def test_heads_and_ensemble_report_and_export(chain):
    _, _, _, heads, ensemble = chain
    assert set(heads["heads"]) == {"maxpool", "maxpool_weighted", "bilstm", "bilstm_weighted"}
    assert set(ensemble["reports"]["test"]) >= {"accuracy", "sensitivity", "majority_rate"}
    assert os.path.exists(os.path.join(ensemble["exported"], "saved_model.pb"))
