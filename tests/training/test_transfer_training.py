"""Paper 002's ``python -m train.transfer``: the DenseNet chain, its export and predictions, flags and bad input.

The chain runs once per module (:func:`chain`, slow: DenseNet121's training
graph takes a minute to build on a CPU even at 32 x 32): the command on 6
phantom radiographs per pathology, ``--weights none``, 2 epochs. The held-out
report is recomputed by hand from the per-image predictions; the export,
run in a process that imports TensorFlow only, must equal the run's
``model.keras``; ``python -m covid_keras.predict`` must answer as that
model. ``--all-models`` is checked through :func:`configs_for_all_models`
(each model's own defaults and phantom preset) without training: the three
models together take several minutes on a CPU.
"""

import os
import re

import numpy as np
import pytest
from image_chain_helpers import (
    assert_report_matches,
    cached_images,
    fresh_outputs,
    layouts,
    module,
    modules_side_by_side,
    no_identifiers,
    ok_json,
    one_error_line,
    probe_images,
    read_json,
    read_rows,
    row_probabilities,
)

from covid_keras import errors
from covid_keras.training import transfer

SIDE = 32
CLASSES = ["COVID-19", "Pneumonia", "Normal"]
# 18 images: the default 10 % of validation patients would be fewer than the 3 classes to stratify.
ARGS = ("--phantom-images", "6", "--epochs", "2", "--image-size", str(SIDE), "--weights", "none",
        "--val-fraction", "0.2", "--verbose", "0")


@pytest.fixture(scope="module")
def basetemp(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def chain(basetemp, tmp_path_factory):
    """``python -m train.transfer`` (DenseNet121), run once: stdout JSON, run folder, summary and export."""
    root = tmp_path_factory.mktemp("transfer_chain")
    printed = ok_json(module(basetemp, "train.transfer", *ARGS, "--runs-root", str(root / "runs"),
                             "--export-dir", str(root / "saved_models")))
    return {"printed": printed, "run": printed["run"], "summary": read_json(printed["run"], "summary.json"),
            "split": read_json(printed["run"], "split.json"), "exported": printed["exported"]}


@pytest.fixture(scope="module")
def keras_model(chain):
    """The run's ``model.keras``, loaded once; called eagerly (``predict`` would trace DenseNet again)."""
    import keras

    import covid_keras.models  # noqa: F401 - registers the package's layers

    model = keras.saving.load_model(chain["printed"]["model"], safe_mode=True)
    return lambda x: np.asarray(model(np.asarray(x, np.float32), training=False))


# --------------------------------------------------------------------------
# The chain: run folder, report, export, predict
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_run_folder_split_and_held_out_report(chain):
    from covid_keras.training import pipelines

    run, summary = chain["run"], chain["summary"]
    assert os.path.basename(os.path.dirname(run)) == "transfer" and os.path.basename(run).startswith("densenet-")
    for name in ("config.json", "split.json", "summary.json", "model.keras", "predictions_val.json",
                 "predictions_test.json", "logs/train.csv", "stages/train.json"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert chain["printed"]["model"] == os.path.join(run, "model.keras")
    assert summary["classes"] == CLASSES and summary["recipe"]["recipe"] == "densenet"
    split = chain["split"]
    assert not (set(split["train"]) & set(split["test"]) or set(split["val"]) & set(split["test"]))
    rows, classes, _ = pipelines.image_rows(summary["cache"])
    assert classes == CLASSES
    report = chain["printed"]["report"]
    assert report == summary["report"] and set(report) == {"val", "test"}
    for part in ("val", "test"):
        predictions = read_rows(run, f"predictions_{part}.json")
        assert sorted(p["key"] for p in predictions) == sorted(r.key for r in rows if r.patient_id in split[part])
        assert_report_matches(report[part], predictions, CLASSES)


@pytest.mark.slow
def test_export_in_a_fresh_process_equals_its_model_keras(chain, keras_model, tmp_path):
    from covid_keras import serving

    exported = chain["exported"]
    assert os.path.basename(os.path.dirname(exported)) == "densenet"
    meta = serving.load_metadata(exported)
    assert meta["kind"] == "image" and meta["class_names"] == CLASSES
    assert meta["preprocessing"] == {"pipeline": "xray", "size": SIDE}
    assert meta["metadata"]["recipe"]["recipe"] == "densenet"
    assert meta["metadata"]["test_report"] == chain["printed"]["report"]["test"]
    rows = read_rows(chain["run"], "predictions_test.json")
    held_out = cached_images(chain["summary"]["cache"], [r["key"] for r in rows])
    keys = sorted(held_out)
    x = np.concatenate([np.stack([held_out[k] for k in keys]), probe_images(SIDE)])
    out = fresh_outputs(exported, x, tmp_path)
    assert set(out) == {"probabilities"}
    np.testing.assert_allclose(out["probabilities"], keras_model(x), atol=1e-5)
    by_key = {r["key"]: r for r in rows}
    np.testing.assert_allclose(out["probabilities"][:len(keys)],
                               [row_probabilities(by_key[k], CLASSES) for k in keys], atol=1e-5)


@pytest.mark.slow
def test_predict_prints_the_densenet_answer_on_a_png_and_a_monochrome1_dicom(chain, keras_model, basetemp, testdata):
    from covid_keras import data, preprocess
    from covid_keras.preprocess.cache import record_key
    from covid_keras.training import image_level

    # A held-out phantom (predict must feed what the training cache holds) and pydicom-data's radiograph.
    _, recs = image_level.phantom_records("transfer_xray", 6)
    rec = next(r for r in recs if r.patient_id in chain["split"]["test"])
    dicom = testdata("RG1_UNCR.dcm")
    inputs = {rec.paths[0]: cached_images(chain["summary"]["cache"], [record_key(rec)])[record_key(rec)],
              dicom: np.rint(preprocess.xray(data.read_xray(dicom), size=SIDE))}
    procs = modules_side_by_side(basetemp, *(("covid_keras.predict", path, "--model", chain["exported"])
                                             for path in inputs))
    for (path, x), proc in zip(inputs.items(), procs):
        printed = ok_json(proc)
        expected = keras_model(x[None])[0]
        assert printed["kind"] == printed["aggregation"] == printed["input"] == "image"
        assert printed["recipe"] == "densenet" and printed["model"] == "densenet" and "steps" not in printed
        assert list(printed["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(printed["probabilities"].values()), expected, atol=1e-5)
        assert printed["predicted_class"] == CLASSES[int(np.argmax(expected))]
    no_identifiers(procs[1].stdout, dicom)


# --------------------------------------------------------------------------
# --model / --all-models
# --------------------------------------------------------------------------


def test_help_lists_model_and_all_models(capsys):
    from train import transfer as command

    with pytest.raises(SystemExit) as exited:
        command.parse_args(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    options = shown[shown.index("options:"):]  # the flags, not the usage examples above them
    assert re.search(r"^  --model \{densenet,new_densenet,inceptionv3\}$", options, re.MULTILINE), options
    assert re.search(r"^  --all-models +train the three models on the same patient split", options, re.MULTILINE)
    assert re.search(r"^  --variant \{121,169,201\}$", options, re.MULTILINE)  # --model densenet's flags


def test_configs_for_all_models_give_each_model_its_own_defaults():
    phantom = transfer.configs_for_all_models({"epochs": 1}, phantom=True)
    real = transfer.configs_for_all_models({"data": "/data/chest_xray"}, phantom=False)
    assert list(phantom) == list(real) == ["densenet", "new_densenet", "inceptionv3"]
    for name, recipe in transfer.RECIPES.items():
        defaults = {p.name: p.default for p in recipe.all_params()}
        assert type(phantom[name]) is type(real[name]) is transfer.CONFIGS[name]
        assert phantom[name].recipe is real[name].recipe is recipe
        # Without --data each model's own phantom preset, under the typed flags; with --data its defaults.
        assert phantom[name].image_size == recipe.phantom_preset()["image_size"] and phantom[name].weights is None
        assert phantom[name].epochs == 1 and phantom[name].data is None
        assert real[name].image_size == defaults["image_size"] and real[name].weights == "imagenet"
        assert real[name].epochs == 50 and real[name].data == "/data/chest_xray"
    assert [c.image_size for c in phantom.values()] == [64, 64, 75]
    assert [c.image_size for c in real.values()] == [224, 224, 299]
    assert [getattr(c, "variant", None) for c in real.values()] == [121, 121, None]
    same = transfer.configs_for_all_models({"image_size": 96, "seed": 5}, phantom=True)
    assert {(c.image_size, c.seed) for c in same.values()} == {(96, 5)}


def test_all_models_refuse_a_setting_one_model_lacks():
    with pytest.raises(errors.ConfigurationError, match=r"^--all-models: inceptionv3 has no setting 'variant' "
                                                        r"\(--variant\); leave it out to train the three models\.$"):
        transfer.configs_for_all_models({"variant": 169}, phantom=True)
    from train import transfer as command

    with pytest.raises(errors.ConfigurationError, match="inceptionv3 has no setting 'variant'"):
        command.parse_args(["--all-models", "--variant", "169"])
    configs, all_models = command.parse_args(["--all-models", "--epochs", "1"])
    assert all_models and [c.image_size for c in configs.values()] == [64, 64, 75]
    config, all_models = command.parse_args(["--model", "inceptionv3"])
    assert not all_models and config.recipe.name == "inceptionv3" and config.image_size == 75


# --------------------------------------------------------------------------
# Bad input: one sentence, exit status 2
# --------------------------------------------------------------------------


def test_a_ct_task_with_an_x_ray_dataset_is_one_sentence(basetemp, tmp_path):
    data = layouts().build_chest_xray(tmp_path / "kermany")
    proc = module(basetemp, "train.transfer", "--task", "transfer_ct", "--dataset", "chest-xray-pneumonia",
                  "--data", data, "--runs-root", str(tmp_path / "runs"), "--export-dir", "none")
    one_error_line(proc, "--task transfer_ct does not go with --dataset chest-xray-pneumonia",
                   "--dataset sars-cov2-ct")
    assert not (tmp_path / "runs").exists()  # refused before any run folder


@pytest.mark.slow
def test_evaluate_report_on_the_run(chain):
    """Test and validation sections; the paper's X-ray figure is matched, its CT figure is another task's."""
    from report_checks import check_report

    metrics = check_report(chain["run"])
    assert [s["name"] for s in metrics["sections"]] == ["densenet test (image)", "densenet val (image)"]
    rows = {r["figure"]: r for r in metrics["comparison"]["rows"]}
    assert rows["X-ray accuracy"]["this run"] == metrics["sections"][0]["accuracy"]["value"]
    assert rows["CT accuracy"]["this run"] is None
