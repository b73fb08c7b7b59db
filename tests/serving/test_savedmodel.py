"""SavedModel export for TF Serving: layout, versions, signatures, input checks, patient pipeline.

Exports are shared per module (a ResNet50-sized export takes seconds); the
models are small (64 x 64 inputs). Loading in a fresh process is what TF
Serving does, so the key checks run ``tf.saved_model.load`` in a subprocess.
"""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from covid_keras import errors, serving

# The module, not the function serving.export that shadows its name.
export_module = importlib.import_module("covid_keras.serving.savedmodel")

SIZE = 64
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
CT3 = ["Normal", "CAP", "COVID-19"]
XRAY = {"pipeline": "xray"}

_FRESH_PREDICT = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures[sys.argv[2]]
x = np.load(sys.argv[3])
out = signature(**{sys.argv[4]: tf.constant(x)})
print(json.dumps(out["probabilities"].numpy().tolist()))
"""

_FRESH_WRONG_RANK = """
import sys
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
signature(image=tf.zeros([64, 64, 3]))  # rank 3 instead of [batch, 64, 64, 3]
print("no error")
"""


def _images(n, seed=0, size=SIZE):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _fresh_predict(version_dir, x, tmp_path, signature="serving_default", input_name="image"):
    """Probabilities from the SavedModel loaded in a new Python process."""
    path = tmp_path / f"x_{len(x)}_{input_name}.npy"
    np.save(path, x)
    proc = subprocess.run([sys.executable, "-c", _FRESH_PREDICT, version_dir, signature, str(path), input_name],
                          capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.array(json.loads(proc.stdout.strip().splitlines()[-1]), dtype="float32")


def _saved_model_cli(version_dir):
    exe = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(exe):
        import shutil

        exe = shutil.which("saved_model_cli")
    assert exe, "saved_model_cli is not installed beside python"
    proc = subprocess.run([exe, "show", "--dir", version_dir, "--all"], capture_output=True, text=True,
                          timeout=180, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _signature_block(cli_text, name):
    start = cli_text.index(f"signature_def['{name}']")
    end = cli_text.index("Method name is:", start)
    return cli_text[start:end]


def _stored_values(version_dir):
    """Numbers of weight values in a SavedModel's checkpoint."""
    import tensorflow as tf

    prefix = os.path.join(version_dir, "variables", "variables")
    return sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(prefix)
               if name.endswith("VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved_models"))


def _slice_recipe_record():
    """What recipe multiscale_resnet50 records of a 64 x 64 slice classifier (Recipe.export_metadata)."""
    from covid_keras import recipes

    recipe = recipes.get("multiscale_resnet50")
    return recipe.export_metadata(recipes.config_class(recipe, "SliceConfig")(image_size=SIZE, weights=None))


@pytest.fixture(scope="module")
def slice_export(root):
    """(multiscale_resnet50 at 64 x 64, its version folder): classes and preprocessing from the recipe record."""
    from covid_keras import models

    model = models.multiscale_resnet50(input_shape=(SIZE, SIZE, 3), weights=None)
    return model, serving.export(model, root, metadata={"trained_on": "phantoms", "recipe": _slice_recipe_record()})


@pytest.fixture(scope="module")
def xray_export(root):
    """(xray_cnn with 3 classes, its exported version folder)."""
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    return model, serving.export(model, root, class_names=["normal", "bacterial", "viral"], preprocessing=XRAY)


@pytest.fixture(scope="module")
def pipeline(root, slice_export):
    """(slice model, heads dict, ensemble, exported patient pipeline folder)."""
    from covid_keras import models

    slice_model, _ = slice_export
    heads = {
        "maxpool": models.maxpool_head(feature_dim=1024),
        "maxpool_weighted": models.maxpool_head(feature_dim=3072),
        "bilstm": models.bilstm_head(feature_dim=1024),
        "bilstm_weighted": models.bilstm_head(feature_dim=3072),
    }
    ensemble = models.ensemble_mlp()
    path = serving.export_patient_pipeline(slice_model, heads, ensemble, root, slice_batch_size=4, class_names=CT3,
                                           preprocessing={"pipeline": "ct_slices"})
    return slice_model, heads, ensemble, path


@pytest.fixture(scope="module")
def pipeline_signature(pipeline):
    """The patient pipeline's serving_default, loaded once."""
    import tensorflow as tf

    loaded = tf.saved_model.load(pipeline[-1])
    return loaded, loaded.signatures["serving_default"]


# --------------------------------------------------------------------------
# The exported model answers as the Keras model, in a fresh process
# --------------------------------------------------------------------------


def test_fresh_process_gives_the_keras_probabilities(slice_export, tmp_path):
    model, path = slice_export
    x = _images(3)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(_fresh_predict(path, x, tmp_path), expected, atol=1e-5)


def test_each_weight_is_stored_once(slice_export, pipeline):
    """keras#23553: ExportArchive.track() would store every weight twice."""
    model, path = slice_export
    assert _stored_values(path) == model.count_params()
    slice_model, heads, ensemble, pipeline_path = pipeline
    total = slice_model.count_params() + ensemble.count_params() + sum(h.count_params() for h in heads.values())
    assert _stored_values(pipeline_path) == total


def test_saved_model_cli_lists_open_batch_signatures(slice_export):
    _, path = slice_export
    text = _saved_model_cli(path)
    default = _signature_block(text, "serving_default")
    assert "inputs['image']" in default and "(-1, 64, 64, 3)" in default and "DT_FLOAT" in default
    assert "outputs['probabilities']" in default and "(-1, 3)" in default
    assert "tensorflow/serving/predict" in text
    raw = _signature_block(text, "serving_bytes")
    assert "inputs['image_bytes']" in raw and "DT_STRING" in raw and "(-1)" in raw


# --------------------------------------------------------------------------
# Layout, versions, metadata
# --------------------------------------------------------------------------


def test_layout_and_metadata(slice_export):
    model, path = slice_export
    assert os.path.basename(path) == "1" and os.path.basename(os.path.dirname(path)) == model.name
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))
    extra = sorted(os.listdir(os.path.join(path, "assets.extra")))
    assert extra == ["covid_keras.json", f"{model.name}.keras"]
    meta = serving.load_metadata(path)
    assert meta["name"] == model.name and meta["version"] == 1 and meta["kind"] == "image"
    assert meta["class_names"] == CT3  # the recipe record's
    assert meta["input"]["shape"] == [None, SIZE, SIZE, 3] and meta["input"]["name"] == "image"
    assert meta["preprocessing"] == {"pipeline": "ct_slices", "size": SIZE, "brightness": 2.0,
                                     "normalization": "minmax"}
    assert meta["metadata"] == {"trained_on": "phantoms", "recipe": _slice_recipe_record()}
    assert set(meta["versions"]) == {"covid_keras", "tensorflow", "keras"}
    assert set(meta["signatures"]) == {"serving_default", "serving_bytes"}


def test_keras_file_loads_with_safe_mode(slice_export):
    import keras

    model, path = slice_export
    loaded = keras.saving.load_model(os.path.join(path, "assets.extra", f"{model.name}.keras"), safe_mode=True)
    x = _images(2, seed=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_versions_increment_and_ignore_other_names(tmp_path):
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    base = str(tmp_path / "models")
    names = ["normal", "bacterial", "viral"]
    first = serving.export(model, base, name="cnn", image_bytes_endpoint=False, class_names=names, preprocessing=XRAY)
    second = serving.export(model, base, name="cnn", image_bytes_endpoint=False, class_names=names,
                            preprocessing=XRAY)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    model_dir = os.path.join(base, "cnn")
    for other in ("latest", "3.bak", ".export-leftover"):
        os.makedirs(os.path.join(model_dir, other))
    assert serving.next_version(model_dir) == 3
    assert serving.next_version(str(tmp_path / "nothing_here")) == 1
    assert serving.export(model, base, name="cnn", version=7, image_bytes_endpoint=False, class_names=names,
                          preprocessing=XRAY).endswith(os.path.join("cnn", "7"))
    assert serving.load_metadata(os.path.join(model_dir, "7"))["version"] == 7
    assert serving.next_version(model_dir) == 8
    # The version folder itself as the target.
    assert serving.export(model, os.path.join(base, "cnn", "9"), image_bytes_endpoint=False, class_names=names,
                          preprocessing=XRAY) == os.path.join(base, "cnn", "9")
    with pytest.raises(errors.ConfigurationError, match="exists already"):
        serving.export(model, base, name="cnn", version=2, class_names=names, preprocessing=XRAY)
    # A model folder resolves to its latest version, as TF Serving's default policy.
    assert serving.resolve_version_dir(model_dir) == os.path.join(model_dir, "9")
    assert sorted(n for n in os.listdir(model_dir) if n.startswith(".export-") and n != ".export-leftover") == []


def test_class_names_and_preprocessing_from_arguments_or_metadata(tmp_path):
    from covid_keras import models
    from covid_keras.preprocess.pipelines import PipelineOptions

    cnn = models.xray_cnn(num_classes=3)
    path = serving.export(cnn, str(tmp_path), image_bytes_endpoint=False, class_names=["a", "b", "c"],
                          preprocessing=PipelineOptions("ct_slices", size=SIZE, brightness=1.5))
    meta = serving.load_metadata(path)
    assert meta["class_names"] == ["a", "b", "c"]
    assert meta["preprocessing"] == {"pipeline": "ct_slices", "size": SIZE, "brightness": 1.5,
                                     "normalization": "minmax"}
    # What a training run records in its metadata counts when the arguments are left out.
    trained = {"classes": ["Normal", "CAP", "COVID-19"],
               "pipeline": {"pipeline": "ct_slices", "size": SIZE, "brightness": 1.0, "normalization": "window",
                            "interpolate": 2, "seed": 0}}
    meta = serving.load_metadata(serving.export(cnn, str(tmp_path), image_bytes_endpoint=False, metadata=trained))
    assert meta["class_names"] == trained["classes"] and meta["metadata"] == trained
    assert meta["preprocessing"] == {"pipeline": "ct_slices", "size": SIZE, "brightness": 1.0,
                                     "normalization": "window"}
    with pytest.raises(errors.ConfigurationError, match="size"):
        serving.export(cnn, str(tmp_path), class_names=["a", "b", "c"], preprocessing={"pipeline": "xray", "size": 224})
    # A recipe record (Recipe.export_metadata) supplies both when the run recorded nothing else.
    recipe = {"recipe": "xray_cnn", "builder": "xray_cnn", "builder_args": {"num_classes": 3},
              "classes": ["normal", "bacterial", "viral"], "pipeline": {"pipeline": "xray"}}
    meta = serving.load_metadata(serving.export(cnn, str(tmp_path), name="from_recipe", image_bytes_endpoint=False,
                                                metadata={"recipe": recipe}))
    assert meta["class_names"] == recipe["classes"]
    assert meta["preprocessing"] == {"pipeline": "xray", "size": cnn.input_shape[1]}


def test_class_names_and_preprocessing_are_never_guessed(slice_export, tmp_path):
    """xray_cnn's 3 outputs fit two paper class lists (steps 1 and 2): nothing but the caller may say which."""
    from covid_keras import models

    cnn = models.xray_cnn(num_classes=3)
    base = str(tmp_path / "models")
    with pytest.raises(errors.ConfigurationError, match=r"pass class_names="):
        serving.export(cnn, base, preprocessing=XRAY)
    with pytest.raises(errors.ConfigurationError, match=r"pass class_names="):
        serving.export(cnn, base, preprocessing=XRAY, metadata={"recipe": {"recipe": "xray_cnn"}})
    with pytest.raises(errors.ConfigurationError, match=r"pass preprocessing="):
        serving.export(cnn, base, class_names=["normal", "bacterial", "viral"])
    with pytest.raises(errors.ConfigurationError, match=r"pass preprocessing="):
        serving.export(slice_export[0], base, class_names=CT3)  # no pipeline guessed from the builder's name
    assert not os.path.exists(base) or os.listdir(base) == []  # nothing written for a refused export


def test_an_interrupted_export_leaves_no_version(tmp_path, monkeypatch):
    from covid_keras import models

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_save_keras", fail)
    base = str(tmp_path / "models")
    with pytest.raises(KeyboardInterrupt):
        serving.export(models.xray_cnn(), base, name="cnn", class_names=["a", "b"], preprocessing=XRAY)
    assert os.listdir(os.path.join(base, "cnn")) == []


def test_bad_models_and_arguments_are_configuration_errors(tmp_path):
    import keras

    from covid_keras import models

    base = str(tmp_path)
    with pytest.raises(errors.ConfigurationError, match="2 inputs"):
        serving.export(models.maxpool_head(feature_dim=8), base)
    inputs = keras.Input((4, 4, 4, 4, 1))  # 6-D: neither an image nor a volume (tests/serving/test_volume_export.py)
    hyper = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    with pytest.raises(errors.ConfigurationError, match="2-D image models"):
        serving.export(hyper, base)
    cnn = models.xray_cnn()
    with pytest.raises(errors.ConfigurationError, match="`name`"):
        serving.export(cnn, base, name="../escape")
    with pytest.raises(errors.ConfigurationError, match="`version`"):
        serving.export(cnn, base, version=0)
    with pytest.raises(errors.ConfigurationError, match="class_names"):
        serving.export(cnn, base, class_names=["one"])
    with pytest.raises(errors.ConfigurationError, match="JSON"):
        serving.export(cnn, base, class_names=["a", "b"], metadata={"x": object()})
    with pytest.raises(errors.ConfigurationError, match="pipeline"):
        serving.export(cnn, base, class_names=["a", "b"], preprocessing={"pipeline": "volume3d"})
    assert os.listdir(base) == []  # nothing written for a refused export


def test_missing_metadata_or_savedmodel_is_a_serving_error(tmp_path):
    with pytest.raises(errors.ServingError, match="does not exist"):
        serving.resolve_version_dir(tmp_path / "missing")
    with pytest.raises(errors.ServingError, match="saved_model.pb"):
        serving.resolve_version_dir(tmp_path)
    with pytest.raises(errors.ServingError, match="covid_keras.json"):
        serving.load_metadata(tmp_path)


# --------------------------------------------------------------------------
# Bad requests are errors, not process aborts
# --------------------------------------------------------------------------


def test_nan_and_wrong_shape_requests_raise(xray_export):
    import tensorflow as tf

    _, path = xray_export
    signature = tf.saved_model.load(path).signatures["serving_default"]
    x = _images(2)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        signature(image=tf.constant(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        signature(image=tf.zeros([1, 32, 32, 3]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        signature(image=tf.zeros([1, SIZE, SIZE, 3], tf.int32))


def test_wrong_rank_request_is_a_python_exception_not_an_abort(xray_export):
    """tensorflow#111453: without the in-graph check this aborts the process (SIGABRT)."""
    _, path = xray_export
    proc = subprocess.run([sys.executable, "-c", _FRESH_WRONG_RANK, path], capture_output=True, text=True,
                          timeout=180, env=ENV)
    assert proc.returncode > 0, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" in proc.stderr and "InvalidArgumentError" in proc.stderr
    assert "no error" not in proc.stdout


# --------------------------------------------------------------------------
# The PNG/JPEG bytes endpoint
# --------------------------------------------------------------------------


def _png(image_rgb):
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))  # OpenCV writes BGR
    assert ok
    return data.tobytes()


def test_bytes_endpoint_equals_the_float_endpoint(xray_export):
    import tensorflow as tf

    _, path = xray_export
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(3)
    same_size = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    raw = loaded.signatures["serving_bytes"](image_bytes=tf.constant([_png(im) for im in same_size]))
    floats = loaded.signatures["serving_default"](image=tf.constant(same_size.astype("float32")))
    np.testing.assert_allclose(raw["probabilities"].numpy(), floats["probabilities"].numpy(), atol=1e-4)

    # Another size: resized inside the graph as tf.image.resize(bilinear, antialias) does it.
    other = rng.integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    import cv2

    grey_png = cv2.imencode(".png", grey)[1].tobytes()
    raw = loaded.signatures["serving_bytes"](image_bytes=tf.constant([_png(im) for im in other] + [grey_png]))
    batch = np.concatenate([other, np.repeat(grey[None, ..., None], 3, axis=-1)]).astype("float32")
    resized = tf.image.resize(batch, [SIZE, SIZE], method="bilinear", antialias=True)
    floats = loaded.signatures["serving_default"](image=resized)
    np.testing.assert_allclose(raw["probabilities"].numpy(), floats["probabilities"].numpy(), atol=1e-4)

    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))


# --------------------------------------------------------------------------
# The patient pipeline: one SavedModel, one study in, the patient's answer out
# --------------------------------------------------------------------------


def _step_by_step(slice_model, heads, ensemble, slices):
    """The pipeline computed with the Keras models and NumPy, as training did."""
    import keras

    from covid_keras import models

    extractor = keras.Model(slice_model.input, [slice_model.get_layer("features").output, slice_model.output])
    features, probs = (np.asarray(a) for a in extractor(slices, training=False))
    weighted = models.weighted_features(features, probs)
    batch_a, mask = models.pad_sequences([features])
    batch_b, _ = models.pad_sequences([weighted])
    head_probs = [
        heads["maxpool"]([batch_a, mask], training=False),
        heads["maxpool_weighted"]([batch_b, mask], training=False),
        heads["bilstm"]([batch_a, mask], training=False),
        heads["bilstm_weighted"]([batch_b, mask], training=False),
    ]
    return np.asarray(ensemble(np.concatenate([np.asarray(p) for p in head_probs], axis=-1), training=False))


@pytest.mark.parametrize("n_slices", [7, 3])
def test_patient_pipeline_equals_the_step_by_step_computation(pipeline, pipeline_signature, n_slices):
    """7 slices: two slice batches of 4 (the second padded); 3 slices: one padded batch."""
    import tensorflow as tf

    slice_model, heads, ensemble, _ = pipeline
    slices = _images(n_slices, seed=n_slices)
    got = pipeline_signature[1](slices=tf.constant(slices))["probabilities"].numpy()
    assert got.shape == (1, 3)
    np.testing.assert_allclose(got, _step_by_step(slice_model, heads, ensemble, slices), atol=1e-5)


def test_patient_pipeline_signature_and_metadata(pipeline, pipeline_signature):
    import tensorflow as tf

    _, _, _, path = pipeline
    signature = pipeline_signature[1]
    assert signature.structured_input_signature == (
        (), {"slices": tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="slices")})
    assert signature.structured_outputs["probabilities"].shape.as_list() == [1, 3]
    assert list(pipeline_signature[0].signatures) == ["serving_default"]
    meta = serving.load_metadata(path)
    assert meta["kind"] == "patient_pipeline" and meta["name"] == "patient_pipeline"
    assert meta["head_order"] == ["maxpool", "maxpool_weighted", "bilstm", "bilstm_weighted"]
    assert meta["head_features"] == {"maxpool": "features", "maxpool_weighted": "weighted", "bilstm": "features",
                                     "bilstm_weighted": "weighted"}
    assert meta["class_names"] == CT3
    assert sorted(os.listdir(os.path.join(path, "assets.extra"))) == sorted(
        ["covid_keras.json", "slice_model.keras", "maxpool.keras", "maxpool_weighted.keras",
         "bilstm.keras", "bilstm_weighted.keras", "ensemble.keras"])


def test_patient_pipeline_refuses_empty_and_nan_studies(pipeline_signature):
    import tensorflow as tf

    signature = pipeline_signature[1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        signature(slices=tf.zeros([0, SIZE, SIZE, 3]))
    slices = _images(2)
    slices[0, 0, 0, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        signature(slices=tf.constant(slices))


def test_patient_pipeline_checks_that_the_models_fit(pipeline, tmp_path):
    from covid_keras import models

    slice_model, heads, ensemble, _ = pipeline
    named = {"class_names": CT3, "preprocessing": {"pipeline": "ct_slices"}}
    swapped = {**heads, "maxpool": heads["maxpool_weighted"], "maxpool_weighted": heads["maxpool"]}
    with pytest.raises(errors.ConfigurationError, match="maxpool"):
        serving.export_patient_pipeline(slice_model, swapped, ensemble, str(tmp_path), **named)
    with pytest.raises(errors.ConfigurationError, match=r"ensemble .* \[batch, 3\] input \(1 heads"):
        serving.export_patient_pipeline(slice_model, {"maxpool": heads["maxpool"]}, ensemble, str(tmp_path),
                                        **named)
    with pytest.raises(errors.ConfigurationError, match="features"):
        serving.export_patient_pipeline(models.xray_cnn(num_classes=3), heads, ensemble, str(tmp_path), **named)
    with pytest.raises(errors.ConfigurationError, match="ensemble"):
        serving.export_patient_pipeline(slice_model, list(heads.items()), models.ensemble_mlp(num_heads=3),
                                        str(tmp_path), **named)
    with pytest.raises(errors.ConfigurationError, match=r"\(name, model\) pairs"):
        serving.export_patient_pipeline(slice_model, list(heads.values()), ensemble, str(tmp_path), **named)
    with pytest.raises(errors.ConfigurationError, match="head_features"):  # not registered, features not given
        serving.export_patient_pipeline(slice_model, {**heads, "unregistered": heads["maxpool"]},
                                        models.ensemble_mlp(num_heads=5), str(tmp_path), **named)
    with pytest.raises(errors.ConfigurationError, match="slice_model"):  # would overwrite slice_model.keras
        serving.export_patient_pipeline(slice_model, {"slice_model": heads["maxpool"]},
                                        models.ensemble_mlp(num_heads=1), str(tmp_path), **named,
                                        head_features={"slice_model": "features"})
    with pytest.raises(errors.ConfigurationError, match=r"pass class_names="):
        serving.export_patient_pipeline(slice_model, heads, ensemble, str(tmp_path),
                                        preprocessing={"pipeline": "ct_slices"})
    assert os.listdir(tmp_path) == []


def _head_with_inputs_reversed(feature_dim, name):
    """A researcher's head listing slice_mask before slice_features: masked mean -> Dense 3 softmax."""
    import keras

    mask = keras.Input((None,), dtype="bool", name="slice_mask")
    features = keras.Input((None, feature_dim), name="slice_features")
    pooled = keras.layers.GlobalAveragePooling1D()(features, mask=mask)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4, activation="relu")(pooled))
    return keras.Model([mask, features], out, name=name)


def test_patient_pipeline_takes_any_heads_in_the_order_given(pipeline, tmp_path):
    """Two heads, the weighted one first, one unregistered (its features given): the graph follows the dict."""
    import tensorflow as tf

    from covid_keras import models

    slice_model, heads, _, _ = pipeline
    mine = _head_with_inputs_reversed(1024, "mine_head")
    chosen = {"bilstm_weighted": heads["bilstm_weighted"], "mine": mine}
    ensemble = models.ensemble_mlp(num_heads=2)
    path = serving.export_patient_pipeline(slice_model, chosen, ensemble, str(tmp_path), class_names=CT3,
                                           preprocessing={"pipeline": "ct_slices"}, head_features={"mine": "features"},
                                           slice_batch_size=4)
    meta = serving.load_metadata(path)
    assert meta["head_order"] == ["bilstm_weighted", "mine"]
    assert meta["head_features"] == {"bilstm_weighted": "weighted", "mine": "features"}
    assert meta["keras_files"]["mine"] == "mine.keras"

    import keras

    slices = _images(5, seed=11)
    extractor = keras.Model(slice_model.input, [slice_model.get_layer("features").output, slice_model.output])
    features, probs = (np.asarray(a) for a in extractor(slices, training=False))
    batch_a, mask = models.pad_sequences([features])
    batch_b, _ = models.pad_sequences([models.weighted_features(features, probs)])
    expected = ensemble(np.concatenate([np.asarray(heads["bilstm_weighted"]([batch_b, mask], training=False)),
                                        np.asarray(mine([mask, batch_a], training=False))], axis=-1))
    got = tf.saved_model.load(path).signatures["serving_default"](slices=tf.constant(slices))["probabilities"]
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), atol=1e-5)
