"""predict_study and ``python -m covid_keras.predict``: DICOM study or image -> JSON.

The exported models are small (xray_cnn at 64 x 64, and a patient pipeline
over a tiny slice model with an 8-wide ``features`` layer) so that the
tests check the plumbing, not ResNet50's speed. What the models are fed is
checked against a preprocessing cache built from the export's own metadata
(the training path: covid_keras.preprocess.cache), not against the function
predict calls.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from covid_keras import cli, errors, serving
from covid_keras import predict as predict_cli

SIZE = 64
CT3 = ["Normal", "CAP", "COVID-19"]
KEYS = {"probabilities", "predicted_class", "slices", "model", "model_version", "kind", "aggregation", "input"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
PHI = ("SECRET-ID-123", "DOE", "JANE", "19450203")


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "covid_keras.predict", *args], capture_output=True, text=True,
                          timeout=180, env=ENV)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved_models"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 12-slice phantom CT series written as DICOM, with made-up identifiers."""
    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=12, size=96, slice_spacing=5.0, seed=2)
    folder = str(tmp_path_factory.mktemp("study") / "series")
    synthetic.write_ct_series(hu, spacing, folder, seed=2, patient_name="DOE^JANE", patient_id="SECRET-ID-123",
                              birth_date="19450203")
    return folder


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    import cv2

    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=16, size=64, seed=4)
    image = synthetic.drr(hu, spacing, size=100)
    path = str(tmp_path_factory.mktemp("xray") / "chest.png")
    assert cv2.imwrite(path, np.clip(image * 255, 0, 255).astype(np.uint8))
    return path


#: Not the defaults (2.0, minmax): a predict that ignored the metadata would be seen.
CT_PREPROCESSING = {"pipeline": "ct_slices", "brightness": 1.5, "normalization": "window"}


@pytest.fixture(scope="module")
def ct_model(root):
    """A slice classifier (xray_cnn, 3 classes) exported with a ct_slices preprocessing."""
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    path = serving.export(model, root, name="ct_slice_cnn", class_names=CT3, preprocessing=CT_PREPROCESSING)
    return model, path


@pytest.fixture(scope="module")
def xray_model(root):
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    # Step 1 and step 2 both have 3 classes: the names must be given.
    return model, serving.export(model, root, class_names=["normal", "bacterial", "viral"],
                                 preprocessing={"pipeline": "xray"})


@pytest.fixture(scope="module")
def tiny_pipeline(root):
    """A patient pipeline over a tiny slice model (features 8 wide, heads on 8 and 24)."""
    import keras

    from covid_keras import models

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(8, activation="relu", name="features")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probabilities")(features)
    slice_model = keras.Model(inputs, out, name="tiny_slices")
    heads = {
        "maxpool": models.maxpool_head(feature_dim=8, hidden_units=4),
        "maxpool_weighted": models.maxpool_head(feature_dim=24, hidden_units=4),
        "bilstm": models.bilstm_head(feature_dim=8, lstm_units=4, hidden_units=4),
        "bilstm_weighted": models.bilstm_head(feature_dim=24, lstm_units=4, hidden_units=4),
    }
    ensemble = models.ensemble_mlp()
    path = serving.export_patient_pipeline(slice_model, heads, ensemble, root, name="tiny_pipeline", class_names=CT3,
                                           preprocessing={**CT_PREPROCESSING, "brightness": 1.0})
    return slice_model, heads, ensemble, path


def _slices_as_trained(folder, version_dir, out):
    """The study through a training cache built with the export's recorded options: float32 [n, H, W, 3].

    The training path (covid_keras.preprocess.cache -> TFRecord shards),
    independent of the code predict runs.
    """
    from covid_keras.data.datasets import Record
    from covid_keras.preprocess.cache import build_cache
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import pipelines

    prep = serving.load_metadata(version_dir)["preprocessing"]
    options = PipelineOptions(prep["pipeline"], size=prep["size"], brightness=prep["brightness"],
                              normalization=prep["normalization"])
    build_cache([Record("p", "COVID-19", (folder,), "test")], str(out), options, classes=CT3, workers=1,
                progress=False)
    (_, _, _, slices, _, _), = pipelines.study_slices(str(out))
    return np.repeat(slices[..., None], 3, axis=-1).astype("float32")


def _model_inputs(monkeypatch, *args, **kwargs):
    """predict_study's result and the inputs it fed the SavedModel."""
    fed = []
    call = serving.ServedModel.__call__

    def spy(self, inputs):
        fed.append(np.array(inputs))
        return call(self, inputs)

    with monkeypatch.context() as patch:
        patch.setattr(serving.ServedModel, "__call__", spy)
        result = serving.predict_study(*args, **kwargs)
    return result, np.concatenate(fed)


def _no_phi(*texts):
    for text in texts:
        for value in PHI:
            assert value not in text


# --------------------------------------------------------------------------
# The command line on a study and on an image
# --------------------------------------------------------------------------


def test_cli_on_a_dicom_study_prints_the_mean_of_slice_probabilities(study, ct_model, tmp_path):
    model, path = ct_model
    proc = _run_cli(study, "--model", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert KEYS <= set(result)
    assert result["slices"] == 12 and result["model"] == "ct_slice_cnn" and result["model_version"] == 1
    assert result["aggregation"] == "mean_of_slices" and result["input"] == "ct_series"
    assert list(result["probabilities"]) == CT3
    expected = model.predict(_slices_as_trained(study, path, tmp_path / "cache"), verbose=0).mean(axis=0)
    np.testing.assert_allclose([result["probabilities"][c] for c in CT3], expected, atol=1e-5)
    assert result["predicted_class"] == CT3[int(np.argmax(expected))]
    assert result["patient_id"].startswith("pt-")
    _no_phi(proc.stdout, proc.stderr)


def test_cli_on_a_png_prints_the_image_answer(png, xray_model):
    from covid_keras import data, preprocess

    model, path = xray_model
    proc = _run_cli(png, "--model", path, "--timings")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert KEYS <= set(result) and "patient_id" not in result
    assert result["slices"] == 1 and result["aggregation"] == "image" and result["model"] == "xray_cnn"
    names = ["normal", "bacterial", "viral"]  # the default class list of a 3-class xray_cnn
    assert list(result["probabilities"]) == names
    # Rounded to the xray cache's 8-bit grey levels, as training read them.
    expected = model.predict(np.rint(preprocess.xray(data.read_xray(png), size=SIZE))[None], verbose=0)[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in names], expected, atol=1e-5)
    assert set(result["seconds"]) == {"load", "read", "preprocess", "model", "total"}


# --------------------------------------------------------------------------
# predict_study in process
# --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [32, 5])
def test_predict_feeds_the_model_what_a_training_cache_holds(study, ct_model, tmp_path, monkeypatch, batch_size):
    """The slices predict runs are the ones a cache built with the export's options holds, in slice order."""
    _, path = ct_model
    result, fed = _model_inputs(monkeypatch, study, path, batch_size=batch_size)
    cached = _slices_as_trained(study, path, tmp_path / "cache")
    assert result["slices"] == len(cached) == 12
    assert fed.shape == cached.shape and fed.dtype == np.float32
    np.testing.assert_array_equal(fed, cached)


def test_patient_pipeline_answers_for_the_patient(study, tiny_pipeline, tmp_path, monkeypatch):
    import tensorflow as tf

    slice_model, heads, ensemble, path = tiny_pipeline
    result, fed = _model_inputs(monkeypatch, study, path)
    assert result["aggregation"] == "patient_pipeline" and result["kind"] == "patient_pipeline"
    assert result["slices"] == 12 and result["model"] == "tiny_pipeline"
    slices = _slices_as_trained(study, path, tmp_path / "cache")
    np.testing.assert_array_equal(fed, slices)
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    expected = loaded(slices=tf.constant(slices))["probabilities"].numpy()[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CT3], expected, atol=1e-6)
    # ... which is the pipeline computed step by step with the Keras models.
    from covid_keras import models

    import keras

    extractor = keras.Model(slice_model.input, [slice_model.get_layer("features").output, slice_model.output])
    features, probs = (np.asarray(a) for a in extractor(slices))
    weighted = models.weighted_features(features, probs)
    mask = np.ones((1, len(slices)), bool)
    head_probs = [np.asarray(heads[k]([f[None], mask])) for k, f in
                  (("maxpool", features), ("maxpool_weighted", weighted), ("bilstm", features),
                   ("bilstm_weighted", weighted))]
    step_by_step = np.asarray(ensemble(np.concatenate(head_probs, axis=-1)))[0]
    np.testing.assert_allclose(expected, step_by_step, atol=1e-5)


def test_a_model_folder_means_its_latest_version_and_a_loaded_model_is_reused(study, ct_model):
    _, path = ct_model
    model_dir = os.path.dirname(path)
    served = serving.load_model(model_dir)
    assert served.version_dir == path
    first = serving.predict_study(study, served, timings=True)
    second = serving.predict_study(study, served, batch_size=5)
    assert first["probabilities"] == pytest.approx(second["probabilities"], abs=1e-6)
    assert first["seconds"]["read"] > 0 and first["seconds"]["model"] > 0


# --------------------------------------------------------------------------
# Bad input: one sentence, exit status 2, no traceback
# --------------------------------------------------------------------------


def _one_error_line(stderr, *fragments):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_missing_study_folder_exits_2(tmp_path, ct_model):
    _, path = ct_model
    missing = str(tmp_path / "no_such_study")
    proc = _run_cli(missing, "--model", path)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc.stderr, missing, "does not exist")


def test_cli_model_folder_without_savedmodel_exits_2(tmp_path, study):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    proc = _run_cli(study, "--model", str(empty))
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc.stderr, str(empty), "saved_model.pb")


@pytest.mark.parametrize("case", ["no_dicom", "folder_to_xray_model", "no_metadata", "missing_image"])
def test_other_bad_inputs_are_one_sentence(case, tmp_path, capsys, study, xray_model, ct_model):
    if case == "no_dicom":
        folder = tmp_path / "notes"
        folder.mkdir()
        (folder / "readme.txt").write_text("not DICOM")
        argv, fragment = [str(folder), "--model", ct_model[1]], "DICOM"
    elif case == "folder_to_xray_model":
        argv, fragment = [study, "--model", xray_model[1]], "image file"
    elif case == "no_metadata":
        copy = tmp_path / "copy" / "1"
        shutil.copytree(xray_model[1], copy)
        shutil.rmtree(copy / "assets.extra")
        argv, fragment = [study, "--model", str(copy)], "covid_keras.json"
    else:
        argv, fragment = [str(tmp_path / "missing.png"), "--model", xray_model[1]], "missing.png"
    status = cli.run(predict_cli.main, argv)
    err = capsys.readouterr().err
    assert status == 2
    _one_error_line(err, fragment)
    _no_phi(err)


def test_debug_shows_the_exception(tmp_path, ct_model):
    with pytest.raises(errors.NoDicomError):
        cli.run(predict_cli.main, [str(tmp_path / "nothing"), "--model", ct_model[1], "--debug"])


def test_ambiguous_class_list_is_not_guessed(tmp_path):
    from covid_keras import models

    # Step 1 and step 2 both have 3 classes: without class_names (or a recipe) the export is refused.
    with pytest.raises(errors.ConfigurationError, match="classes of model 'xray_cnn' are unknown"):
        serving.export(models.xray_cnn(num_classes=3), str(tmp_path), preprocessing={"pipeline": "xray"},
                       image_bytes_endpoint=False)
    assert not os.listdir(tmp_path)


def test_cli_study_without_lungs_exits_2(tmp_path, testdata, ct_model):
    """A head CT (pydicom-data's 693_UNCR) is refused before the chest model answers."""
    _, path = ct_model
    head = tmp_path / "head"
    head.mkdir()
    shutil.copy(testdata("693_UNCR.dcm"), head / "693_UNCR.dcm")
    proc = _run_cli(str(head), "--model", path)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc.stderr, "no lungs found")


# --------------------------------------------------------------------------
# Exports that record their recipe
# --------------------------------------------------------------------------


def _recipe_export(root, name, class_names, step="xraycnn_step1"):
    """xray_cnn built by its recipe and exported with the recipe record (metadata["metadata"]["recipe"])."""
    from covid_keras import recipes

    recipe = recipes.get("xray_cnn")
    config = recipes.config_class(recipe, "XrayCnnConfig")(step=step)
    return serving.export(recipe.build(config), root, name=name, class_names=class_names,
                          metadata={"recipe": recipe.export_metadata(config)}, image_bytes_endpoint=False)


def test_an_export_with_its_recipe_reports_it(png, root):
    path = _recipe_export(root, "xray_cnn_step2", ["non-viral pneumonia", "COVID-19", "other viral"],
                          step="xraycnn_step2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the class names are the recipe's: no warning
        served = serving.load_model(path)
    assert served.recipe == "xray_cnn"
    result = serving.predict_study(png, served)
    assert set(result) == KEYS | {"recipe"} and result["recipe"] == "xray_cnn"
    assert list(result["probabilities"]) == ["non-viral pneumonia", "COVID-19", "other viral"]


def test_an_older_export_without_a_recipe_still_predicts(png, xray_model):
    served = serving.load_model(xray_model[1])
    assert "recipe" not in (served.metadata.get("metadata") or {})
    assert served.recipe is None
    result = serving.predict_study(png, served)
    assert set(result) == KEYS and result["predicted_class"] in ("normal", "bacterial", "viral")


@pytest.mark.parametrize("names", [["non-viral pneumonia", "COVID-19", "other viral"], ["a", "b", "c"]],
                         ids=["the_other_steps_classes", "unknown_classes"])
def test_class_names_other_than_the_recipes_warn_but_predict(png, root, names):
    # Recorded step 1: step 2's names are a class list of the recipe, but not of the recorded config.
    path = _recipe_export(root, f"xray_cnn_mislabelled_{names[0][0]}", names)
    with pytest.warns(UserWarning, match=r"are not those of recipe 'xray_cnn' \(\['normal', 'bacterial', 'viral'\]\)"):
        served = serving.load_model(path)
    result = serving.predict_study(png, served)
    assert result["recipe"] == "xray_cnn" and list(result["probabilities"]) == names
