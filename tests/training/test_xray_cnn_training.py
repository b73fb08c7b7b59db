"""Paper 004's ``python -m train.xray_cnn``: run folder, one split for both steps, reports, export, predict, bad input.

The chain runs once per module (:func:`chain`): the command on 6 phantom
radiographs per pathology at 32 x 32, 2 epochs, in a fresh process that
records every dataset the two steps are fed (``pipelines.image_dataset``),
so that the split check sees the very images each step trained on. The
held-out reports are recomputed by hand from the per-image predictions;
the two-step export, run in a process that imports TensorFlow only, must
equal :class:`HierarchicalXrayClassifier` on the run's two ``model.keras``
files; ``python -m covid_keras.predict`` must answer as the Keras models on
a held-out phantom PNG and on pydicom-data's MONOCHROME1 radiograph.
"""

import json
import os

import numpy as np
import pytest
from image_chain_helpers import (
    assert_report_matches,
    cached_images,
    command,
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

SIDE = 32
COMBINED = ["Normal", "bacterial", "COVID-19", "other viral"]
STEP1 = ["normal", "bacterial", "viral"]
STEP2 = ["non-viral pneumonia", "COVID-19", "other viral"]
#: Each step's class of a combined label (paper 004, Fig. 4); None: not one of the step's images.
STEP_OF = {"xraycnn_step1": {"Normal": "normal", "bacterial": "bacterial", "COVID-19": "viral",
                             "other viral": "viral"},
           "xraycnn_step2": {"Normal": None, "bacterial": "non-viral pneumonia", "COVID-19": "COVID-19",
                             "other viral": "other viral"}}
STEP_CLASSES = {"xraycnn_step1": STEP1, "xraycnn_step2": STEP2}
# 24 images: the default 10 % of validation patients would be fewer than the 4 classes to stratify.
ARGS = ("--phantom-images", "6", "--epochs", "2", "--image-size", str(SIDE), "--val-fraction", "0.2",
        "--verbose", "0", "--seed", "3")

#: Runs ``python -m train.xray_cnn`` with every ``pipelines.image_dataset`` call recorded to argv[1].
_RECORDING = """
import json, runpy, sys

from covid_keras.training import pipelines

calls, real = [], pipelines.image_dataset


def recording(folder, selection, **kwargs):
    calls.append({"training": kwargs["training"], "selection": dict(selection)})
    return real(folder, selection, **kwargs)


pipelines.image_dataset = recording
out, sys.argv = sys.argv[1], ["train.xray_cnn", *sys.argv[2:]]
try:
    runpy.run_module("train.xray_cnn", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as f:
        json.dump(calls, f)
"""


@pytest.fixture(scope="module")
def basetemp(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def chain(basetemp, tmp_path_factory):
    """The two-step chain, run once: stdout JSON, run folder, summary, export and the recorded datasets."""
    root = tmp_path_factory.mktemp("xray_cnn_chain")
    calls = root / "datasets.json"
    proc = command(basetemp, "-c", _RECORDING, str(calls), *ARGS, "--runs-root", str(root / "runs"),
                   "--export-dir", str(root / "saved_models"))
    printed = ok_json(proc)
    run = printed["run"]
    return {"printed": printed, "run": run, "summary": read_json(run, "summary.json"),
            "split": read_json(run, "split.json"), "calls": read_json(calls), "stderr": proc.stderr,
            "exported": printed["exported"]}


def _patient_of(chain):
    from covid_keras.training import pipelines

    rows, classes, _ = pipelines.image_rows(chain["summary"]["cache"])
    assert classes == COMBINED
    return {r.key: r.patient_id for r in rows}, {r.key: r.label for r in rows}


def _load(path):
    import keras

    import covid_keras.models  # noqa: F401 - registers the package's layers

    return keras.saving.load_model(path, safe_mode=True)


def _hierarchical(chain):
    from covid_keras.models.xraycnn import HierarchicalXrayClassifier

    models = chain["summary"]["models"]
    return HierarchicalXrayClassifier(_load(models["xraycnn_step1"]), _load(models["xraycnn_step2"]), 0.5)


# --------------------------------------------------------------------------
# The run folder, the shared split and the reports
# --------------------------------------------------------------------------


def test_run_folder_layout(chain):
    run = chain["run"]
    for name in ("config.json", "split.json", "summary.json", "predictions_test.json"):
        assert os.path.isfile(os.path.join(run, name)), name
    for step in STEP_CLASSES:
        for name in ("model.keras", "predictions_val.json", "predictions_test.json", "logs/train.csv",
                     "stages/train.json"):
            assert os.path.isfile(os.path.join(run, step, name)), (step, name)
        assert read_json(run, step, "config.json") == {"step": step}
    assert chain["summary"]["models"] == {s: os.path.join(run, s, "model.keras") for s in STEP_CLASSES}
    assert set(chain["printed"]) == {"combined_report", "reports", "exported", "run"}
    split = chain["split"]
    assert sorted(split) == ["test", "train", "val"] and all(split.values())
    assert not (set(split["train"]) & set(split["val"]) or set(split["train"]) & set(split["test"])
                or set(split["val"]) & set(split["test"]))


def test_both_steps_train_and_validate_on_the_one_split(chain):
    """The images each step was fed: its classes of the training patients' images; no held-out patient."""
    patient, label = _patient_of(chain)
    split = chain["split"]
    calls = chain["calls"]
    assert [c["training"] for c in calls] == [True, False, True, False]  # step 1 train / val, step 2 train / val
    for step, (train, val) in zip(STEP_CLASSES, (calls[0:2], calls[2:4])):
        classes = STEP_CLASSES[step]
        for fed, part in ((train, "train"), (val, "val")):
            expected = {k: classes.index(STEP_OF[step][label[k]]) for k in patient
                        if patient[k] in split[part] and STEP_OF[step][label[k]] is not None}
            assert fed["selection"] == expected, (step, part)
            assert not {patient[k] for k in fed["selection"]} & set(split["test"])
        # Held-out predictions: exactly the step's images of the test patients, and of the validation ones.
        for part in ("val", "test"):
            rows = read_rows(chain["run"], step, f"predictions_{part}.json")
            assert sorted(r["key"] for r in rows) == sorted(
                k for k in patient if patient[k] in split[part] and STEP_OF[step][label[k]] is not None)
            assert all(r["label"] == STEP_OF[step][label[r["key"]]] for r in rows)
    assert not [k for k in chain["calls"][2]["selection"] if label[k] == "Normal"]  # step 2: pneumonia only


def test_step_reports_are_their_predictions_by_hand(chain):
    reports = chain["printed"]["reports"]
    assert reports == chain["summary"]["reports"] and set(reports) == set(STEP_CLASSES)
    for step, classes in STEP_CLASSES.items():
        assert set(reports[step]) == {"val", "test"}
        for part in ("val", "test"):
            rows = read_rows(chain["run"], step, f"predictions_{part}.json")
            assert_report_matches(reports[step][part], rows, classes)


def test_combined_predictions_follow_the_two_steps_and_give_the_4_class_report(chain):
    patient, label = _patient_of(chain)
    rows = read_rows(chain["run"], "predictions_test.json")
    assert sorted(r["key"] for r in rows) == sorted(k for k in patient if patient[k] in chain["split"]["test"])
    for row in rows:
        assert row["label"] == label[row["key"]] and row["patient_id"] == patient[row["key"]]
        n, b, v = row_probabilities(row, STEP1, "step1")
        routed = int(np.argmax([n, b, v])) == 2
        assert (row["step2"] is not None) == routed
        if routed:  # models.xraycnn.combine's rule, written out
            nv, c, o = row_probabilities(row, STEP2, "step2")
            expected = np.asarray([n, b + v * nv, v * c, v * o])
        else:
            expected = np.asarray([n, b, 0.5 * v, 0.5 * v])
        np.testing.assert_allclose(row_probabilities(row, COMBINED), expected / expected.sum(), atol=2e-6)
    report = chain["printed"]["combined_report"]
    assert report == chain["summary"]["combined_report"]
    assert list(report["sensitivity"]) == COMBINED and np.shape(report["confusion"]) == (4, 4)
    assert_report_matches(report, rows, COMBINED)
    assert "[two-step] held-out 4-class accuracy" in chain["stderr"]


# --------------------------------------------------------------------------
# The export, in a fresh process, and python -m covid_keras.predict
# --------------------------------------------------------------------------


def test_two_step_export_in_a_fresh_process_equals_the_hierarchical_classifier(chain, tmp_path):
    from covid_keras import serving

    exported = chain["exported"]
    meta = serving.load_metadata(exported)
    assert meta["kind"] == "two_step" and meta["class_names"] == COMBINED
    assert meta["output_classes"] == {"step1": STEP1, "step2": STEP2, "probabilities": COMBINED}
    assert meta["preprocessing"] == {"pipeline": "xray", "size": SIDE}
    assert meta["metadata"]["test_report"] == chain["printed"]["combined_report"]
    assert meta["metadata"]["recipe"]["recipe"] == "xray_cnn"
    rows = read_rows(chain["run"], "predictions_test.json")
    held_out = cached_images(chain["summary"]["cache"], [r["key"] for r in rows])
    keys = sorted(held_out)
    x = np.concatenate([np.stack([held_out[k] for k in keys]), probe_images(SIDE)])
    out = fresh_outputs(exported, x, tmp_path)
    expected = _hierarchical(chain).predict(x)
    np.testing.assert_array_equal(out["routed"].astype(bool), expected["routed"])
    np.testing.assert_allclose(out["step1"], expected["step1"], atol=1e-5)
    np.testing.assert_array_equal(np.isnan(out["step2"]), np.isnan(expected["step2"]))
    np.testing.assert_allclose(out["step2"], expected["step2"], atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], expected["combined"], atol=1e-5)
    # ... and the held-out images answer as the run's combined predictions did.
    by_key = {r["key"]: r for r in rows}
    np.testing.assert_allclose(out["probabilities"][:len(keys)],
                               [row_probabilities(by_key[k], COMBINED) for k in keys], atol=1e-5)


def _held_out_png(chain):
    """A held-out phantom's PNG and its combined prediction row."""
    from covid_keras.preprocess.cache import record_key
    from covid_keras.training import image_level

    _, recs = image_level.phantom_records("xraycnn_4class", 6)
    rows = {r["key"]: r for r in read_rows(chain["run"], "predictions_test.json")}
    rec = next(r for r in recs if record_key(r) in rows)
    assert rec.patient_id in chain["split"]["test"]
    return rec.paths[0], rows[record_key(rec)]


def _check_two_step_answer(printed, expected):
    """predict's JSON against HierarchicalXrayClassifier's answer for the one image."""
    assert printed["kind"] == printed["aggregation"] == "two_step" and printed["input"] == "image"
    assert printed["recipe"] == "xray_cnn" and printed["model"] == "xray_cnn" and printed["model_version"] == 1
    assert list(printed["probabilities"]) == COMBINED
    np.testing.assert_allclose(list(printed["probabilities"].values()), expected["combined"][0], atol=1e-5)
    assert printed["predicted_class"] == COMBINED[int(np.argmax(expected["combined"][0]))]
    steps = printed["steps"]
    assert list(steps["step1"]) == STEP1 and steps["routed"] is bool(expected["routed"][0])
    np.testing.assert_allclose(list(steps["step1"].values()), expected["step1"][0], atol=1e-5)
    if steps["routed"]:
        assert list(steps["step2"]) == STEP2
        np.testing.assert_allclose(list(steps["step2"].values()), expected["step2"][0], atol=1e-5)
    else:
        assert steps["step2"] is None


def test_predict_prints_the_two_step_answer_on_a_png_and_a_monochrome1_dicom(chain, basetemp, testdata):
    import pydicom

    from covid_keras import data, preprocess

    png, row = _held_out_png(chain)
    dicom = testdata("RG1_UNCR.dcm")
    assert pydicom.dcmread(dicom, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    inputs = {png: cached_images(chain["summary"]["cache"], [row["key"]])[row["key"]],
              dicom: np.rint(preprocess.xray(data.read_xray(dicom), size=SIDE)).astype(np.float32)}
    model_folder = os.path.dirname(chain["exported"])  # its latest version
    procs = modules_side_by_side(basetemp, *(("covid_keras.predict", path, "--model", model_folder)
                                             for path in inputs))
    hierarchical = _hierarchical(chain)
    for x, proc in zip(inputs.values(), procs):
        _check_two_step_answer(ok_json(proc), hierarchical.predict(x[None]))
    # What predict fed the model for the PNG is what the training cache holds: the run's own answer.
    np.testing.assert_allclose(list(json.loads(procs[0].stdout)["probabilities"].values()),
                               row_probabilities(row, COMBINED), atol=1e-5)
    no_identifiers(procs[1].stdout, dicom)


# --------------------------------------------------------------------------
# One step alone, the seed, bad input
# --------------------------------------------------------------------------


@pytest.mark.slow  # a second training run
def test_step_1_alone_exports_an_image_model_with_step_1_classes(chain, basetemp, tmp_path):
    import tensorflow as tf

    from covid_keras import serving

    printed = ok_json(module(basetemp, "train.xray_cnn", *ARGS, "--step", "xraycnn_step1",
                             "--runs-root", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "saved")))
    run = printed["run"]
    assert set(printed["reports"]) == {"xraycnn_step1"} and "combined_report" not in printed
    assert os.path.isdir(os.path.join(run, "xraycnn_step1"))
    assert not os.path.exists(os.path.join(run, "xraycnn_step2"))
    assert not os.path.exists(os.path.join(run, "predictions_test.json"))  # no combined answer
    assert read_json(run, "split.json") == chain["split"]  # the same split as the two-step run's
    exported = printed["exported"]
    assert exported.startswith(str(tmp_path / "saved"))
    meta = serving.load_metadata(exported)
    assert meta["kind"] == "image" and meta["class_names"] == STEP1 and "output_classes" not in meta
    assert meta["metadata"]["recipe"]["classes"] == STEP1
    assert meta["metadata"]["test_report"] == printed["reports"]["xraycnn_step1"]["test"]
    summary = read_json(run, "summary.json")
    model = _load(summary["models"]["xraycnn_step1"])
    rows = read_rows(run, "xraycnn_step1", "predictions_test.json")
    x = np.concatenate([np.stack(list(cached_images(summary["cache"], [r["key"] for r in rows]).values())),
                        probe_images(SIDE)])
    served = tf.saved_model.load(exported).signatures["serving_default"](image=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow  # a second training run
def test_the_same_seed_gives_the_same_held_out_reports(chain, basetemp, tmp_path):
    """The command again (fresh process, fresh run folder): identical reports and per-image predictions."""
    printed = ok_json(module(basetemp, "train.xray_cnn", *ARGS, "--runs-root", str(tmp_path / "runs"),
                             "--export-dir", "none"))
    assert printed["run"] != chain["run"] and "exported" not in printed
    assert printed["reports"] == chain["printed"]["reports"]
    assert printed["combined_report"] == chain["printed"]["combined_report"]
    for parts in (("split.json",), ("predictions_test.json",), *((s, "predictions_test.json") for s in STEP_CLASSES),
                  *((s, "predictions_val.json") for s in STEP_CLASSES)):
        assert read_json(printed["run"], *parts) == read_json(chain["run"], *parts), parts


def test_kermany_data_without_covid_data_is_one_sentence(basetemp, tmp_path):
    data = layouts().build_chest_xray(tmp_path / "kermany")
    proc = module(basetemp, "train.xray_cnn", "--data", data, "--runs-root", str(tmp_path / "runs"),
                  "--export-dir", "none")
    one_error_line(proc, "step 2 needs COVID-19 X-rays: pass --covid-data", "--step xraycnn_step1")
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_a_dataset_of_one_class_is_one_sentence(basetemp, tmp_path):
    """A Kermany layout holding NORMAL images only (step 1 alone needs no --covid-data)."""
    writer = layouts()
    for i in range(6):
        writer.write_image(tmp_path / "normal_only" / "chest_xray" / "train" / "NORMAL" / f"IM-{i:04d}-0001.jpeg")
    proc = module(basetemp, "train.xray_cnn", "--data", str(tmp_path / "normal_only"), "--step", "xraycnn_step1",
                  *ARGS, "--runs-root", str(tmp_path / "runs"), "--export-dir", "none")
    one_error_line(proc, "only one class (Normal)", "at least two classes", "--data")


def test_predict_refuses_a_text_file_named_png(chain, basetemp, tmp_path):
    fake = tmp_path / "chest.png"
    fake.write_text("not an image\n")
    proc = module(basetemp, "covid_keras.predict", str(fake), "--model", chain["exported"])
    one_error_line(proc, str(fake), "PNG")


@pytest.mark.slow
def test_evaluate_report_on_the_run(chain):
    """The report has the two-step answer and each step, with paper 004's family-wise PPV / NPV and Fig. 5's 0.91."""
    from report_checks import check_report

    metrics = check_report(chain["run"])
    names = [s["name"] for s in metrics["sections"]]
    assert names == ["xray_cnn two-step test (image)", "xraycnn_step1 test (image)", "xraycnn_step1 val (image)",
                     "xraycnn_step2 test (image)", "xraycnn_step2 val (image)"]
    combined = metrics["sections"][0]
    assert combined["paper004"]["family"] == 4 and combined["accuracy"]["value"] == pytest.approx(
        chain["summary"]["combined_report"]["accuracy"], abs=5e-5)
    assert metrics["comparison"]["rows"] == [{"figure": "accuracy (Fig. 5, 4 classes)", "paper": 0.91,
                                              "this run": combined["accuracy"]["value"], "from": combined["name"]}]
