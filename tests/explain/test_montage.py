"""evaluate.gradcam: Grad-CAM montages of hand-made runs (real caches and models, predictions files written here).

Each run folder holds what a training command writes: config.json,
summary.json (the cache and model paths), records.json, model.keras files
beside their predictions files. The caches are built from phantoms by the
package's own pipeline; the models are small and keep random weights; the
predictions files say, by construction, which cases are correct and which
are misclassified. The maps are checked against a plain ``tf.GradientTape``
Grad-CAM written here (not tf-keras-vis) on the inputs read back from the
cache here, and the pictures against paper 004's overlay of those maps.
"""

import json
import os
import shutil

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from PIL import Image

from covid_keras import cli, errors, models
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.evaluation.predictions import case_row, write_predictions
from covid_keras.explain import montage
from covid_keras.preprocess.pipelines import PipelineOptions
from covid_keras.serving.heatmap import picture
from covid_keras.training import pipelines
from covid_keras.training.runs import RunFolder, write_json, write_records
from evaluate import gradcam as command

STEP1 = list(CLASS_NAMES["xraycnn_step1"])
FOUR = list(CLASS_NAMES["xraycnn_4class"])
CT3 = list(CLASS_NAMES["ct3"])


def reference_gradcam(model, x, class_index, layer):
    """Plain GradientTape Grad-CAM of one input at ``layer``: pre-softmax score, spatial-mean weights, ReLU,
    linear zoom to the input size, min-max normalisation (explain.gradcam's documented steps)."""
    import keras

    head = model.get_layer("probabilities")
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, head.input])
    x = tf.convert_to_tensor(np.asarray(x, np.float32)[None])
    with tf.GradientTape() as tape:
        activation, features = probe(x, training=False)
        score = (tf.matmul(features, head.kernel) + head.bias)[0, class_index]
    grads, activation = tape.gradient(score, activation).numpy()[0], activation.numpy()[0]
    weights = grads.mean(axis=tuple(range(grads.ndim - 1)))
    cam = np.maximum((activation * weights).sum(axis=-1), 0.0)
    cam = scipy.ndimage.zoom(cam, [t / f for t, f in zip(x.shape[1:-1], cam.shape)], order=1)
    return ((cam - cam.min()) / (cam.max() - cam.min() + 1e-7)).astype(np.float32)


def _probabilities(classes, predicted, confidence=0.7):
    rest = (1 - confidence) / (len(classes) - 1)
    return [confidence if c == predicted else rest for c in classes]


def _wrong(classes, label, i):
    others = [c for c in classes if c != label]
    return others[i % len(others)]


def _run_folder(root, cache, **summary):
    run = RunFolder.open(str(root), {"data": None})
    write_json(run.file("summary.json"), {"cache": cache, "run": run.path, **summary})
    return run


def _read_png(path):
    with Image.open(path) as im:
        return im.size, im.mode


# --------------------------------------------------------------------------
# An X-ray run (papers 002-004): a 32 x 32 xray_cnn on a phantom xray cache
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xray_cache(tmp_path_factory):
    from covid_keras.data import synthetic

    recs = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=3, size=48))
    folder = pipelines.ensure_cache(recs, "synthetic-xray", PipelineOptions("xray", size=32), STEP1,
                                    root=str(tmp_path_factory.mktemp("xray-cache")), workers=1, progress=False)
    rows, _, _ = pipelines.image_rows(folder)
    return recs, folder, rows


@pytest.fixture(scope="module")
def xray_run(tmp_path_factory, xray_cache):
    """A transfer-like run: model.keras in the run folder, test rows 0, 2, 4, ... correct, the others wrong."""
    import keras

    recs, folder, rows = xray_cache
    run = _run_folder(tmp_path_factory.mktemp("runs") / "xray", folder, command="train.transfer")
    write_records(run, recs)
    keras.utils.set_random_seed(11)
    model = models.xray_cnn(input_shape=(32, 32, 3), num_classes=3)
    model.save(run.file("model.keras"))
    test, val = rows[:9], rows[9:]
    truth = {}
    out = []
    for i, r in enumerate(test):
        predicted = r.label if i % 2 == 0 else _wrong(STEP1, r.label, i)
        truth[r.key] = predicted == r.label
        out.append(case_row(r.key, r.patient_id, r.label, _probabilities(STEP1, predicted), STEP1))
    write_predictions(run.file("predictions_test.json"), out, classes=STEP1, level="image", answer="xray_cnn",
                      part="test")
    write_predictions(run.file("predictions_val.json"),
                      [case_row(r.key, r.patient_id, r.label, _probabilities(STEP1, r.label), STEP1) for r in val],
                      classes=STEP1, level="image", answer="xray_cnn", part="val")
    return run.path, truth, model


@pytest.fixture(scope="module")
def xray_result(xray_run):
    run, _, _ = xray_run
    return montage.run_montages(run, cases=3, seed=0)


def test_cases_follow_the_predictions_file(xray_run, xray_result):
    _, truth, _ = xray_run
    summary = xray_result.summary
    (group,) = summary["groups"]
    assert summary["part"] == "test" and group["answer"] == "xray_cnn"
    assert group["available"] == {"correct": 5, "misclassified": 4} and group["shown"] == {"correct": 3,
                                                                                          "misclassified": 3}
    for e in xray_result.explained:
        assert truth[e.case.key] is (e.case.group == "correct")
        assert (e.case.true == e.case.predicted) is (e.case.group == "correct")
        assert e.case.probability == pytest.approx(0.7)
    assert summary["notes"] == []


def test_the_draw_is_seeded(xray_run, xray_result):
    run, _, _ = xray_run
    keys = [e.case.key for e in xray_result.explained]
    again = montage.choose_cases(_test_predictions(run), 3, seed=0)[0]
    assert [row["key"] for g in montage.GROUPS for _, row in again[g]] == keys
    draws = {tuple(row["key"] for _, row in montage.choose_cases(_test_predictions(run), 3, seed=s)[0]["correct"])
             for s in range(6)}
    assert len(draws) > 1  # another seed, other cases


def _test_predictions(run):
    from covid_keras.evaluation.predictions import read_predictions

    return [read_predictions(os.path.join(run, "predictions_test.json"))]


def test_maps_are_gradcam_of_the_cached_input(xray_cache, xray_run, xray_result):
    _, folder, _ = xray_cache
    _, _, model = xray_run
    cached = dict(pipelines.iter_images(folder, {e.case.key: 0 for e in xray_result.explained}))
    informative = 0
    for e in xray_result.explained:
        grey = cached[e.case.key].astype(np.float32)
        for channel in range(3):
            np.testing.assert_array_equal(e.inputs[..., channel], grey)
        assert e.layers == ("last_conv",) and e.class_index == STEP1.index(e.case.predicted)
        expected = reference_gradcam(model, e.inputs, e.class_index, "last_conv")
        np.testing.assert_allclose(e.maps["last_conv"], expected, atol=1e-4)
        informative += int(expected.max() > 0.5)
        # The drawn row: the grey image, then paper 004's overlay of that very map.
        (image, title, _, _), (overlay, layer, _, _) = e.panels
        np.testing.assert_array_equal(image[..., 0], grey.astype(np.uint8))
        assert e.case.patient_id in title and f"true {e.case.true}" in title and f"pred {e.case.predicted}" in title
        assert np.abs(overlay.astype(int) - picture(grey, expected, min_side=1)[0].astype(int)).max() <= 1
        assert layer == "last_conv"
    assert informative >= 2


def test_pngs_and_gradcam_json(xray_cache, xray_result):
    recs, _, _ = xray_cache
    summary = xray_result.summary
    assert len(summary["montages"]) == 2
    for path in summary["montages"]:
        assert os.path.dirname(path).endswith(os.path.join("report", "gradcam"))
        size, _ = _read_png(path)
        assert size == montage.montage_size(rows=3, columns=2)
    with open(summary["json"]) as f:
        written = json.load(f)
    assert written["panels"] == summary["panels"] and len(written["panels"]) == 6
    by_key = {e.case.key: e for e in xray_result.explained}
    for panel in written["panels"]:
        case = by_key[panel["key"]].case
        assert panel["file"] == summary["montages"][0 if case.group == "correct" else 1]
        assert (panel["patient_id"], panel["true"], panel["predicted"], panel["layer"]) == (
            case.patient_id, case.true, case.predicted, "last_conv")
        assert panel["probability"] == pytest.approx(0.7) and panel["model"] == "model.keras"
    text = json.dumps(written)
    assert not any(path in text for r in recs for path in r.paths)  # pseudonymous ids and keys only


def test_command_line_prints_one_json_line(xray_run, tmp_path, capsys):
    run, _, _ = xray_run
    out = tmp_path / "montages"
    assert cli.run(command.main, [run, "--cases", "1", "--seed", "3", "--out", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["panels"] == 2 and line["json"] == str(out / "gradcam.json") and len(line["montages"]) == 2
    assert line["groups"] == [{"answer": "xray_cnn", "shown": {"correct": 1, "misclassified": 1},
                               "available": {"correct": 5, "misclassified": 4}}]
    assert all(_read_png(p)[0] == montage.montage_size(1, 2) for p in line["montages"])


def test_val_part_and_fewer_cases_than_asked(xray_run, tmp_path):
    run, _, _ = xray_run
    result = montage.run_montages(run, cases=2, part="val", out_dir=tmp_path).summary
    (group,) = result["groups"]
    assert group["available"]["misclassified"] == 0 and group["shown"]["correct"] == 2
    assert "no misclassified case" in " ".join(result["notes"])
    assert list(group["files"]) == ["correct"]
    many = montage.run_montages(run, cases=10, out_dir=tmp_path / "all").summary
    assert many["groups"][0]["shown"] == {"correct": 5, "misclassified": 4}
    assert any("fewer than --cases 10" in n for n in many["notes"])


def test_layer_override_and_unknown_layer(xray_run, tmp_path, capsys):
    run, _, model = xray_run
    result = montage.run_montages(run, cases=1, layers=["conv2_relu", "last_conv"], out_dir=tmp_path)
    e = result.explained[0]
    assert e.layers == ("conv2_relu", "last_conv") and len(e.panels) == 3
    np.testing.assert_allclose(e.maps["conv2_relu"], reference_gradcam(model, e.inputs, e.class_index, "conv2_relu"),
                               atol=1e-4)
    with pytest.raises(errors.ConfigurationError,
                       match="'stage9' is not a layer of .*its Grad-CAM layers are last_conv"):
        montage.run_montages(run, cases=1, layers=["stage9"], out_dir=tmp_path)
    assert cli.run(command.main, [run, "--layer", "stage9", "--out", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    assert "error: --layer 'stage9' is not a layer" in capsys.readouterr().err


def test_bad_runs_are_one_sentence_errors(xray_run, tmp_path):
    run, _, _ = xray_run
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        command.main([str(tmp_path / "nowhere")])
    empty = tmp_path / "empty"
    RunFolder.open(str(empty), {})
    with pytest.raises(errors.ConfigurationError, match="holds no per-case predictions"):
        montage.run_montages(empty)
    no_model = tmp_path / "no_model"
    shutil.copytree(run, no_model, ignore=shutil.ignore_patterns("model.keras", "report"))
    with pytest.raises(errors.ConfigurationError, match="no model to explain its answers"):
        montage.run_montages(no_model, cases=1)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished, ignore=shutil.ignore_patterns("summary.json", "report"))
    with pytest.raises(errors.ConfigurationError, match="summary.json: not found; the run has not finished"):
        montage.run_montages(unfinished)
    with pytest.raises(errors.ConfigurationError, match="--cases must be a positive integer"):
        montage.run_montages(run, cases=0)
    with pytest.raises(errors.ConfigurationError, match="--images are explained with a model"):
        command.main([run, "--images", "x.png"])


def test_patient_level_runs_are_refused(tmp_path, xray_cache):
    _, folder, _ = xray_cache
    run = _run_folder(tmp_path / "heads", folder, command="train.patient_level")
    write_predictions(run.file("predictions_maxpool_test.json"),
                      [case_row("k", "p", "Normal", [0.8, 0.1, 0.1], CT3)], classes=CT3, level="study",
                      answer="maxpool", part="test")
    with pytest.raises(errors.ConfigurationError, match="no image, slice or volume answers .*patient-level heads"):
        montage.run_montages(run.path)


# --------------------------------------------------------------------------
# Paper 004's two-step answer: each image explained by the step that answered
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    import keras

    from covid_keras.data import synthetic

    recs = synthetic.xray_dataset("xraycnn_4class", synthetic.XrayPhantomConfig(images_per_pathology=2, size=48))
    folder = pipelines.ensure_cache(recs, "synthetic-xray4", PipelineOptions("xray", size=32), FOUR,
                                    root=str(tmp_path_factory.mktemp("xray4-cache")), workers=1, progress=False)
    rows, _, _ = pipelines.image_rows(folder)
    root = tmp_path_factory.mktemp("runs") / "two_step"
    steps = {}
    for seed, step in enumerate(("xraycnn_step1", "xraycnn_step2")):
        keras.utils.set_random_seed(20 + seed)
        steps[step] = models.xray_cnn(input_shape=(32, 32, 3), num_classes=3)
        os.makedirs(root / step)
        steps[step].save(str(root / step / "model.keras"))
    run = _run_folder(root, folder, command="train.xray_cnn",
                      models={s: str(root / s / "model.keras") for s in steps})
    out = []
    for i, r in enumerate(rows):
        predicted = r.label if i % 2 else _wrong(FOUR, r.label, i)
        row = case_row(r.key, r.patient_id, r.label, _probabilities(FOUR, predicted), FOUR)
        row["step1"] = dict(zip(CLASS_NAMES["xraycnn_step1"], [0.2, 0.2, 0.6]))
        row["step2"] = dict(zip(CLASS_NAMES["xraycnn_step2"], [0.1, 0.8, 0.1])) if i % 3 else None
        out.append(row)
    write_predictions(run.file("predictions_test.json"), out, classes=FOUR, level="image",
                      answer="xray_cnn two-step", part="test")
    return run.path, steps, {row["key"]: row["step2"] is not None for row in out}


def test_two_step_cases_are_explained_by_the_step_that_answered(two_step_run, tmp_path):
    run, steps, routed = two_step_run
    result = montage.run_montages(run, cases=3, seed=1, out_dir=tmp_path)
    assert {e.case.step for e in result.explained} == {"xraycnn_step1", "xraycnn_step2"}
    for e in result.explained:
        step = "xraycnn_step2" if routed[e.case.key] else "xraycnn_step1"
        assert e.case.step == step and e.case.model == os.path.join(run, step, "model.keras")
        own = int(np.argmax(steps[step].predict(e.inputs[None], verbose=0)[0]))
        assert e.class_index == own and e.case.predicted in FOUR
        np.testing.assert_allclose(e.maps["last_conv"], reference_gradcam(steps[step], e.inputs, own, "last_conv"),
                                   atol=1e-4)
        assert e.panels[1][1] == f"last_conv ({step}: {CLASS_NAMES[step][own]})"
    for panel in result.summary["panels"]:
        e = next(x for x in result.explained if x.case.key == panel["key"])
        assert panel["step"] == e.case.step and panel["explained_index"] == e.class_index
        assert panel["explained_class"] == CLASS_NAMES[e.case.step][e.class_index]
    assert {p["step"] for p in result.summary["panels"]} == {"xraycnn_step1", "xraycnn_step2"}


# --------------------------------------------------------------------------
# Images given to a model: a .keras file, an export
# --------------------------------------------------------------------------


def test_images_given_to_a_keras_model(xray_cache, xray_run, tmp_path):
    from covid_keras import data, preprocess

    recs, _, _ = xray_cache
    run, _, model = xray_run
    images = [recs[0].paths[0], recs[4].paths[0]]
    result = montage.model_montage(os.path.join(run, "model.keras"), images, tmp_path / "out")
    assert result.summary["montages"] == [str(tmp_path / "out" / "gradcam.png")]
    assert _read_png(result.summary["montages"][0])[0] == montage.montage_size(2, 2)
    for image, e in zip(images, result.explained):
        x = np.rint(preprocess.xray(data.read_xray(image), size=32))
        np.testing.assert_array_equal(e.inputs, x)
        p = model.predict(x[None], verbose=0)[0]
        assert e.class_index == int(np.argmax(p)) and e.case.predicted == STEP1[e.class_index]  # predictions' names
        np.testing.assert_allclose(e.maps["last_conv"], reference_gradcam(model, x, e.class_index, "last_conv"),
                                   atol=1e-4)
    with open(result.summary["json"]) as f:
        assert [p["image"] for p in json.load(f)["panels"]] == images


def test_images_given_to_an_export(xray_cache, xray_run, tmp_path, capsys):
    from covid_keras import serving
    from covid_keras.serving.predict import predict_study

    recs, _, _ = xray_cache
    _, _, model = xray_run
    exported = serving.export(model, str(tmp_path / "saved"), name="xray_small", class_names=STEP1,
                              preprocessing={"pipeline": "xray", "size": 32})
    image = recs[2].paths[0]
    argv = [str(exported), "--images", image, "--out", str(tmp_path / "out"), "--quiet"]
    assert cli.run(command.main, argv) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["images"] == 1 and line["panels"] == 1
    result = montage.model_montage(exported, [image], tmp_path / "again")
    (e,) = result.explained
    answer = predict_study(image, exported)
    assert e.case.predicted == answer["predicted_class"] and e.class_index == STEP1.index(answer["predicted_class"])
    np.testing.assert_allclose(e.maps["last_conv"], reference_gradcam(model, e.inputs, e.class_index, "last_conv"),
                               atol=1e-4)
    with pytest.raises(errors.ConfigurationError, match="pass the image files to explain with --images"):
        montage.model_montage(exported, [], tmp_path)
    with pytest.raises(errors.ConfigurationError, match="with --out DIR"):
        montage.model_montage(exported, [image], None)


def test_volume_models_take_no_images(tmp_path, xray_cache):
    recs, _, _ = xray_cache
    path = str(tmp_path / "v.keras")
    _tiny_3d_model().save(path)
    with pytest.raises(errors.ConfigurationError, match="not square 2-D images"):
        montage.model_montage(path, [recs[0].paths[0]], tmp_path / "out")


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def test_volume_cuts_at_the_maximum_or_the_centre():
    cam = np.zeros((6, 8, 10), np.float32)
    assert montage.volume_cuts(cam) == {"axial": 3, "coronal": 4, "at": "centre"}
    cam[1, 6, 2], cam[4, 1, 1] = 1.0, 0.5
    assert montage.volume_cuts(cam) == {"axial": 1, "coronal": 6, "at": "maximum"}


def test_montage_size_is_the_png_size(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    path = montage.draw_montage([[(rgb, "a"), (rgb, "b"), (rgb, "c")]] * 2, tmp_path / "m.png", "title")
    assert _read_png(path)[0] == montage.montage_size(2, 3) == (720, 660)


# --------------------------------------------------------------------------
# Paper 001: a multi-scale slice model, its stage3 / stage4 / stage5 maps per slice
# --------------------------------------------------------------------------


def _ct_records(root, **config):
    from covid_keras.data import synthetic
    from covid_keras.data.datasets import covid_ct_md

    synthetic.write_ct_dataset(str(root), synthetic.CTPhantomConfig(patients_per_class=1, **config))
    return covid_ct_md(str(root))


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    """A slice_level-like run at 64 x 64: labelled slices alternate correct / wrong; clean slices of the
    infected patients are unlabelled (label None) and must never be shown."""
    import keras

    base = tmp_path_factory.mktemp("slice")
    recs = _ct_records(base / "data", size=48, min_slices=6, max_slices=8, seed=2)
    folder = pipelines.ensure_slice_cache(recs, "covid-ct-md", PipelineOptions("ct_slices", size=64),
                                          root=str(base / "cache"), workers=1, progress=False)
    rows, classes = pipelines.manifest_rows(folder)
    assert classes == CT3
    run = _run_folder(base / "run", folder, command="train.slice_level")
    write_records(run, recs)
    keras.utils.set_random_seed(5)
    model = models.multiscale_resnet50(input_shape=(64, 64, 3), weights=None)
    model.save(run.file("model.keras"))
    out, labelled = [], {}
    for i, r in enumerate(rows):
        label = r.label if (r.label == "Normal" or r.slice_label == 1) else None
        predicted = r.label if i % 2 == 0 else _wrong(CT3, r.label, i)
        labelled[r.id] = label is not None
        out.append(case_row(r.key, r.patient_id, label, _probabilities(CT3, predicted), CT3,
                            slice_index=r.slice_index, study_label=r.label))
    write_predictions(run.file("predictions_test.json"), out, classes=CT3, level="slice",
                      answer="multiscale_resnet50", part="test")
    result = montage.run_montages(run.path, cases=2, seed=0)
    return run.path, folder, model, labelled, result


@pytest.mark.slow
def test_multiscale_rows_hold_the_three_stage_maps_of_the_cached_slice(slice_run):
    _, folder, model, labelled, result = slice_run
    assert [g["shown"] for g in result.summary["groups"]] == [{"correct": 2, "misclassified": 2}]
    studies = {key: dict(zip(idx.tolist(), slices))
               for key, _, _, slices, _, idx in pipelines.study_slices(folder)}
    compared = 0
    for e in result.explained:
        assert labelled[f"{e.case.key}#{e.case.slice_index}"], "an unlabelled slice was shown"
        assert (e.case.true == e.case.predicted) is (e.case.group == "correct")
        grey = studies[e.case.key][e.case.slice_index].astype(np.float32)
        np.testing.assert_array_equal(e.inputs, np.repeat(grey[..., None], 3, axis=-1))
        assert e.layers == montage.MULTISCALE_LAYERS
        assert [p[2] for p in e.panels] == [None, "stage3", "stage4", "stage5"]
        assert f"slice {e.case.slice_index}" in e.panels[0][1]
        maps = {}
        for layer in montage.MULTISCALE_LAYERS:
            maps[layer] = reference_gradcam(model, e.inputs, e.class_index, layer)
            np.testing.assert_allclose(e.maps[layer], maps[layer], atol=1e-4)
        for a, b in (("stage3", "stage4"), ("stage3", "stage5"), ("stage4", "stage5")):
            if maps[a].max() > 0.5 and maps[b].max() > 0.5:
                compared += 1
                assert np.abs(maps[a] - maps[b]).max() > 0.1, (a, b)
    assert compared >= 3, "the stage maps were too often all zero to compare"


@pytest.mark.slow
def test_multiscale_montages_and_json(slice_run):
    _, _, _, _, result = slice_run
    summary = result.summary
    assert [os.path.basename(p) for p in summary["montages"]] == [
        "multiscale_resnet50_test_correct.png", "multiscale_resnet50_test_misclassified.png"]
    for path in summary["montages"]:
        assert _read_png(path)[0] == montage.montage_size(rows=2, columns=4)
    assert len(summary["panels"]) == 4 * 3
    assert {p["layer"] for p in summary["panels"]} == set(montage.MULTISCALE_LAYERS)
    assert all("slice_index" in p for p in summary["panels"])


# --------------------------------------------------------------------------
# Paper 000: resnet50_3d k-fold run, axial and coronal cuts of the 3-D map
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """Two folds, each with its own model: fold 0 answers COVID-19 right and CAP wrong, fold 1 Normal right."""
    import keras

    base = tmp_path_factory.mktemp("volume")
    recs = _ct_records(base / "data", size=48, min_slices=20, max_slices=24, seed=1)
    folder = pipelines.ensure_cache(recs, "covid-ct-md", PipelineOptions("volume3d", size=64), CT3,
                                    root=str(base / "cache"), workers=1, progress=False)
    rows, _ = pipelines.volume_rows(folder)
    by_label = {r.label: r for r in rows if not r.augmented}
    run = _run_folder(base / "run", folder, command="train.volume3d")
    write_records(run, recs)
    fold_models = {}
    for fold, labels in enumerate((("COVID-19", "CAP"), ("Normal",))):
        keras.utils.set_random_seed(30 + fold)
        fold_models[fold] = models.resnet50_3d(input_shape=(64, 64, 64, 1), depth=18)
        fold_dir = base / "run" / "folds" / f"fold_{fold}"
        os.makedirs(fold_dir)
        fold_models[fold].save(str(fold_dir / "model.keras"))
        out = []
        for label in labels:
            r = by_label[label]
            predicted = label if label != "CAP" else "Normal"
            out.append(case_row(r.key, r.patient_id, label, _probabilities(CT3, predicted), CT3))
        write_predictions(str(fold_dir / "predictions_val.json"), out, classes=CT3, level="volume",
                          answer="resnet50_3d", part="val", fold=fold)
    result = montage.run_montages(run.path, cases=2, seed=0)
    return run.path, folder, rows, fold_models, result


@pytest.mark.slow
def test_volume_cuts_come_from_the_3d_map_of_each_folds_model(volume_run):
    from covid_keras.preprocess.lung_volume import dequantize

    run, folder, rows, fold_models, result = volume_run
    summary = result.summary
    assert summary["part"] == "val"
    (group,) = summary["groups"]
    assert group["folds"] == [0, 1] and group["shown"] == {"correct": 2, "misclassified": 1}
    cached = dict(pipelines.iter_volumes(folder, rows, {e.case.key: 0 for e in result.explained}))
    assert {e.case.fold for e in result.explained} == {0, 1}
    for e in result.explained:
        assert e.case.model == os.path.join(run, "folds", f"fold_{e.case.fold}", "model.keras")
        volume = dequantize(cached[e.case.key])
        np.testing.assert_array_equal(e.inputs[..., 0], volume)
        cam = reference_gradcam(fold_models[e.case.fold], e.inputs, e.class_index, "last_conv")
        assert cam.shape == (64, 64, 64)
        np.testing.assert_allclose(e.maps["last_conv"], cam, atol=1e-4)
        cut = e.cuts["last_conv"]
        assert cut == montage.volume_cuts(cam)
        d, h = cut["axial"], cut["coronal"]
        if cut["at"] == "maximum":
            assert cam[d].max() == pytest.approx(cam.max()) and cam[:, h, :].max() == pytest.approx(cam.max())
        (axial, _, layer, which), (coronal, _, _, which2) = e.panels
        assert (layer, which, which2) == ("last_conv", "axial", "coronal")
        assert np.abs(axial.astype(int) - picture(volume[d] * 255, cam[d], min_side=1)[0].astype(int)).max() <= 1
        assert np.abs(coronal.astype(int)
                      - picture(volume[:, h, :] * 255, cam[:, h, :], min_side=1)[0].astype(int)).max() <= 1
    entries = [p for p in summary["panels"] if p["cut"] == "axial"]
    assert sorted(p["fold"] for p in entries) == sorted(e.case.fold for e in result.explained)
    for p in summary["panels"]:
        e = next(x for x in result.explained if x.case.key == p["key"])
        assert p["index"] == e.cuts["last_conv"][p["cut"]]
    sizes = {os.path.basename(p): _read_png(p)[0] for p in summary["montages"]}
    assert sizes == {"resnet50_3d_val_correct.png": montage.montage_size(2, 2),
                     "resnet50_3d_val_misclassified.png": montage.montage_size(1, 2)}


def _tiny_3d_model():
    import keras

    inputs = keras.Input((8, 8, 8, 1))
    x = keras.layers.Conv3D(2, 3, padding="same", name="last_conv")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_help_explains_each_flag(capsys):
    with pytest.raises(SystemExit):
        command.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--cases", "--seed", "--part", "--layer", "--out", "--images", "RUN_DIR_OR_MODEL"):
        assert flag in text
    assert "stage3, stage4 and stage5" in text and "misclassified" in text
