"""Paper 004's two-step SavedModel (export_two_step) and its predictions (predict_study, the CLI).

The reference is :class:`HierarchicalXrayClassifier` (NumPy routing and
:func:`combine`), which the graph must equal. The step models are
``xray_cnn(num_classes=3)`` at 64 x 64 with random weights; step 1's output
layer is set so that routing is known: in the ``mixed`` export black
images stay with step 1 (normal wins) and noisy images go to step 2, and
the ``routed`` / ``unrouted`` exports send every image one way.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from covid_keras import errors, serving
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.models.xraycnn import (
    HierarchicalXrayClassifier,
    combine,
    combine_tensors,
    route,
)

SIZE = 64
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
COMBINED = list(CLASS_NAMES["xraycnn_4class"])
STEP1 = list(CLASS_NAMES["xraycnn_step1"])
STEP2 = list(CLASS_NAMES["xraycnn_step2"])
OUTPUTS = ("step1", "step2", "routed", "probabilities")
KEYS = {"probabilities", "predicted_class", "steps", "model", "model_version", "kind", "aggregation"}

_FRESH_TWO_STEP = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = {k: v.numpy().tolist() for k, v in signature(image=tf.constant(np.load(sys.argv[2]))).items()}
try:
    signature(image=tf.zeros([64, 64, 3]))  # rank 3 instead of [batch, 64, 64, 3]
    out["rank_error"] = None
except tf.errors.InvalidArgumentError as e:
    out["rank_error"] = type(e).__name__
print(json.dumps(out))
"""


def _noise(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _mixed_batch():
    """Noisy images (routed in the mixed export) and black ones (not routed)."""
    x = _noise(4, seed=1)
    x[1] = 0.0
    x[3] = 0.0
    return x


def _features(model, x):
    import keras

    return keras.Model(model.inputs, model.get_layer("dropout").output).predict(x, verbose=0)


def _set_step1_output(model, bias, viral_weight=0.0):
    """Step 1's logits become ``bias + [0, 0, viral_weight * sum(features)]``."""
    layer = model.get_layer("probabilities")
    kernel = np.zeros(layer.kernel.shape, "float32")
    kernel[:, 2] = viral_weight
    layer.set_weights([kernel, np.asarray(bias, "float32")])
    return model


def _step_models():
    from covid_keras import models

    step1, step2 = models.xray_cnn(num_classes=3), models.xray_cnn(num_classes=3)
    # Black images give all-zero features (zero biases): logits [1, 0.5, 0], normal wins. Noisy
    # images have features summing to at least s > 0: viral's logit is at least 3.
    s = _features(step1, _noise(8, seed=1)).sum(axis=1).min()
    assert s > 0
    return _set_step1_output(step1, [1.0, 0.5, 0.0], 3.0 / s), step2


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved_models"))


@pytest.fixture(scope="module")
def mixed(root):
    """(step1, step2, version folder): routing depends on the image."""
    step1, step2 = _step_models()
    return step1, step2, serving.export_two_step(step1, step2, root, unrouted_covid_fraction=0.3)


@pytest.fixture(scope="module")
def forced(root, mixed):
    """{"routed" | "unrouted": (step1, step2, version folder)}: step 1 answers the same for every image."""
    from covid_keras import models

    _, step2, _ = mixed
    out = {}
    for key, bias in (("routed", [0.5, 0.0, 2.0]), ("unrouted", [0.0, 2.0, 0.5])):
        step1 = _set_step1_output(models.xray_cnn(num_classes=3), bias)
        out[key] = step1, step2, serving.export_two_step(step1, step2, root, name=f"xray_cnn_{key}")
    return out


@pytest.fixture(scope="module")
def mixed_signatures(mixed):
    import tensorflow as tf

    loaded = tf.saved_model.load(mixed[2])
    return loaded, loaded.signatures


def _expected(step1, step2, x, fraction=0.5):
    return HierarchicalXrayClassifier(step1, step2, fraction).predict(x)


def _compare(out, expected):
    """Signature outputs against HierarchicalXrayClassifier.predict's."""
    np.testing.assert_array_equal(np.asarray(out["routed"], bool), expected["routed"])
    np.testing.assert_allclose(np.asarray(out["step1"], "float32"), expected["step1"], atol=1e-5)
    step2 = np.asarray(out["step2"], "float32")
    np.testing.assert_array_equal(np.isnan(step2), np.isnan(expected["step2"]))
    np.testing.assert_allclose(step2, expected["step2"], atol=1e-5)  # NaN where NaN
    np.testing.assert_allclose(np.asarray(out["probabilities"], "float32"), expected["combined"], atol=1e-5)


# --------------------------------------------------------------------------
# The graph's combination is combine()
# --------------------------------------------------------------------------


HAND_STEP1 = np.array([
    [0.2, 0.2, 0.6],    # routed
    [0.5, 0.3, 0.2],    # not routed
    [0.1, 0.1, 0.8],    # routed
    [0.0, 0.0, 0.0],    # nothing: the uniform answer
    [0.4, 0.2, 0.4],    # a tie with normal: argmax is normal, not routed
    [0.25, 0.25, 0.5],  # routed, step 2 all zeros
], "float32")
HAND_STEP2 = np.array([
    [0.5, 0.25, 0.25],
    [np.nan, np.nan, np.nan],
    [0.1, 0.7, 0.2],
    [np.nan, np.nan, np.nan],
    [0.9, 0.05, 0.05],  # ignored: not routed
    [0.0, 0.0, 0.0],
], "float32")


@pytest.mark.parametrize("fraction", [0.5, 0.0, 0.3, 1.0])
def test_graph_combination_equals_combine(fraction):
    import tensorflow as tf

    routed = np.argmax(HAND_STEP1, axis=-1) == 2
    assert routed.tolist() == [True, False, True, False, False, True]
    np.testing.assert_array_equal(np.asarray(route(HAND_STEP1)), routed)
    expected = combine(HAND_STEP1, HAND_STEP2, routed, fraction)
    graph = tf.function(lambda p1, p2: combine_tensors(p1, p2, route(p1), fraction), autograph=False)
    out = graph(tf.constant(HAND_STEP1), tf.constant(HAND_STEP2)).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.asarray(combine_tensors(HAND_STEP1, HAND_STEP2, routed, fraction)), expected)


def test_combination_by_hand():
    out = np.asarray(combine_tensors(HAND_STEP1, HAND_STEP2, route(HAND_STEP1), 0.3))
    np.testing.assert_allclose(out[0], [0.2, 0.2 + 0.6 * 0.5, 0.6 * 0.25, 0.6 * 0.25], atol=1e-7)
    np.testing.assert_allclose(out[1], [0.5, 0.3, 0.2 * 0.3, 0.2 * 0.7], atol=1e-7)  # f = 0.3 of viral
    np.testing.assert_allclose(out[3], [0.25] * 4)
    np.testing.assert_allclose(out[4], [0.4, 0.2, 0.4 * 0.3, 0.4 * 0.7], atol=1e-7)
    np.testing.assert_allclose(out[5], [0.25 / 0.5, 0.25 / 0.5, 0.0, 0.0], atol=1e-7)  # renormalised


def test_graph_combination_equals_combine_on_random_rows():
    rng = np.random.default_rng(0)
    p1 = rng.dirichlet([1, 1, 1], 20000).astype("float32")
    p2 = rng.dirichlet([1, 1, 1], 20000).astype("float32")
    routed = np.argmax(p1, axis=-1) == 2
    p2[~routed] = np.nan
    np.testing.assert_array_equal(np.asarray(route(p1)), routed)
    np.testing.assert_array_equal(np.asarray(combine_tensors(p1, p2, routed, 0.5)), combine(p1, p2, routed, 0.5))


# --------------------------------------------------------------------------
# The SavedModel answers as HierarchicalXrayClassifier, in a fresh process
# --------------------------------------------------------------------------


def test_fresh_process_equals_the_hierarchical_classifier(mixed, tmp_path):
    step1, step2, path = mixed
    x = _mixed_batch()
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", _FRESH_TWO_STEP, path, str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=180, env=ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["routed"] == [True, False, True, False]  # both kinds of row
    expected = _expected(step1, step2, x, fraction=0.3)
    _compare(out, expected)
    assert np.isnan(out["step2"][1]).all() and not np.isnan(out["step2"][0]).any()
    # The unrouted rows use f = 0.3, not the default 0.5.
    p1 = expected["step1"][1]
    np.testing.assert_allclose(out["probabilities"][1], [p1[0], p1[1], 0.3 * p1[2], 0.7 * p1[2]], atol=1e-5)
    assert out["rank_error"] == "InvalidArgumentError"  # tensorflow#111453: an error, not an abort


@pytest.mark.parametrize("key", ["routed", "unrouted"])
def test_batches_routed_all_or_none(forced, key):
    import tensorflow as tf

    step1, step2, path = forced[key]
    x = _mixed_batch()
    out = tf.saved_model.load(path).signatures["serving_default"](image=tf.constant(x))
    assert out["routed"].numpy().tolist() == [key == "routed"] * len(x)
    _compare({k: v.numpy() for k, v in out.items()}, _expected(step1, step2, x))


def test_bytes_endpoint_equals_the_float_endpoint(mixed_signatures):
    import cv2
    import tensorflow as tf

    _, signatures = mixed_signatures
    images = np.round(_mixed_batch()).astype(np.uint8)
    pngs = [cv2.imencode(".png", np.ascontiguousarray(im[..., ::-1]))[1].tobytes() for im in images]
    raw = signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    floats = signatures["serving_default"](image=tf.constant(images.astype("float32")))
    assert set(raw) == set(floats) == set(OUTPUTS)
    np.testing.assert_array_equal(raw["routed"].numpy(), floats["routed"].numpy())
    for key in ("step1", "step2", "probabilities"):
        np.testing.assert_allclose(raw[key].numpy(), floats[key].numpy(), atol=1e-4)


def test_nan_and_wrong_shape_requests_raise(mixed_signatures):
    import tensorflow as tf

    _, signatures = mixed_signatures
    x = _mixed_batch()
    x[2, 5, 6, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        signatures["serving_default"](image=tf.constant(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        signatures["serving_default"](image=tf.zeros([1, 32, 32, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible"):
        signatures["serving_default"](image=tf.zeros([1, SIZE, SIZE, 1]))


# --------------------------------------------------------------------------
# Layout and metadata
# --------------------------------------------------------------------------


def test_metadata_and_files(mixed):
    import keras

    step1, step2, path = mixed
    assert serving.resolve_version_dir(os.path.dirname(path)) == path
    assert os.path.basename(os.path.dirname(path)) == "xray_cnn"
    meta = serving.load_metadata(path)
    assert meta["kind"] == "two_step" and meta["name"] == "xray_cnn" and meta["version"] == 1
    assert meta["class_names"] == COMBINED == ["Normal", "bacterial", "COVID-19", "other viral"]
    assert meta["output_classes"] == {"step1": STEP1, "step2": STEP2, "probabilities": COMBINED}
    assert meta["unrouted_covid_fraction"] == 0.3
    assert meta["preprocessing"] == {"pipeline": "xray", "size": SIZE}
    assert meta["input"] == {"name": "image", "shape": [None, SIZE, SIZE, 3], "dtype": "float32",
                             "range": [0.0, 255.0]}
    assert set(meta["outputs"]) == set(OUTPUTS) and set(meta["signatures"]) == {"serving_default", "serving_bytes"}
    assert meta["keras_files"] == {"step1": "step1.keras", "step2": "step2.keras"}
    assert sorted(os.listdir(os.path.join(path, "assets.extra"))) == ["covid_keras.json", "step1.keras", "step2.keras"]
    x = _mixed_batch()
    for key, model in (("step1", step1), ("step2", step2)):
        loaded = keras.saving.load_model(os.path.join(path, "assets.extra", meta["keras_files"][key]), safe_mode=True)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_each_weight_is_stored_once(mixed):
    import tensorflow as tf

    step1, step2, path = mixed
    prefix = os.path.join(path, "variables", "variables")
    stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(prefix)
                 if name.endswith("VARIABLE_VALUE"))
    assert stored == step1.count_params() + step2.count_params()


def test_preprocessing_from_metadata_and_recipe_without_warning(mixed, tmp_path):
    from covid_keras import recipes

    step1, step2, _ = mixed
    recipe = recipes.get("xray_cnn")
    record = recipe.export_metadata(recipes.config_class(recipe, "ExportedConfig")(image_size=SIZE))
    path = serving.export_two_step(step1, step2, tmp_path, metadata={"recipe": record})
    assert serving.load_metadata(path)["preprocessing"] == {"pipeline": "xray", "size": SIZE}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert serving.ServedModel(path).recipe == "xray_cnn"
    # Step classes that are not the recipe's are pointed out.
    meta_file = os.path.join(path, "assets.extra", "covid_keras.json")
    with open(meta_file) as f:
        meta = json.load(f)
    meta["output_classes"]["step2"] = ["a", "b", "c"]
    with open(meta_file, "w") as f:
        json.dump(meta, f)
    with pytest.warns(UserWarning, match="step2 class names"):
        serving.ServedModel(path)


def test_bad_arguments_are_configuration_errors(mixed, tmp_path):
    from covid_keras import models

    step1, step2, _ = mixed
    bad = [
        ((models.xray_cnn(num_classes=2), step2), {}, "3 probabilities"),
        ((step1, models.xray_cnn(input_shape=(32, 32, 3), num_classes=3)), {}, "same image"),
        ((models.xray_cnn(input_shape=(64, 32, 3), num_classes=3),) * 2, {}, "square"),
        ((step1, step2), {"unrouted_covid_fraction": 1.5}, "unrouted_covid_fraction"),
        ((step1, step2), {"preprocessing": {"pipeline": "ct_slices"}}, "'xray'"),
        ((step1, step2), {"preprocessing": {"pipeline": "xray", "size": 128}}, "size"),
        ((step1, step2), {"name": "7"}, "name"),
        ((step1, "not a model"), {}, "predict method"),
    ]
    for models_, kwargs, match in bad:
        with pytest.raises(errors.ConfigurationError, match=match):
            serving.export_two_step(*models_, tmp_path, **kwargs)
    assert not os.path.exists(tmp_path / "xray_cnn") or not os.listdir(tmp_path / "xray_cnn")


# --------------------------------------------------------------------------
# predict_study and the command line
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def png():
    """A phantom radiograph PNG (covid_keras.data.synthetic)."""
    from covid_keras.data import synthetic

    records = synthetic.xray_dataset(config=synthetic.XrayPhantomConfig(images_per_pathology=1, size=96))
    return records[0].paths[0]


def _run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "covid_keras.predict", *args], capture_output=True, text=True,
                          timeout=180, env=ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _predict_in_process(monkeypatch, path, model_dir):
    """predict_study's result and the image it fed the SavedModel."""
    fed = []
    outputs = serving.ServedModel.outputs

    def spy(self, inputs):
        fed.append(np.array(inputs))
        return outputs(self, inputs)

    with monkeypatch.context() as patch:
        patch.setattr(serving.ServedModel, "outputs", spy)
        result = serving.predict_study(path, model_dir)
    assert len(fed) == 1
    return result, fed[0]


def _check_answer(result, step1, step2, image, model_dir):
    """The JSON answer against HierarchicalXrayClassifier on the image predict fed."""
    expected = _expected(step1, step2, image, serving.load_metadata(model_dir)["unrouted_covid_fraction"])
    assert KEYS <= set(result)
    assert result["kind"] == "two_step" and result["aggregation"] == "two_step" and result["input"] == "image"
    assert list(result["probabilities"]) == COMBINED
    np.testing.assert_allclose(list(result["probabilities"].values()), expected["combined"][0], atol=1e-5)
    assert result["predicted_class"] == expected["labels"][0]
    steps = result["steps"]
    assert steps["routed"] is bool(expected["routed"][0])
    assert list(steps["step1"]) == STEP1
    np.testing.assert_allclose(list(steps["step1"].values()), expected["step1"][0], atol=1e-5)
    if steps["routed"]:
        assert list(steps["step2"]) == STEP2
        np.testing.assert_allclose(list(steps["step2"].values()), expected["step2"][0], atol=1e-5)
    else:
        assert steps["step2"] is None


@pytest.mark.parametrize("key", ["routed", "unrouted"])
def test_cli_on_a_phantom_png(forced, png, key, monkeypatch):
    from covid_keras import data, preprocess

    step1, step2, path = forced[key]
    result, image = _predict_in_process(monkeypatch, png, path)
    # The image is the xray pipeline's (to its 8-bit grey levels).
    np.testing.assert_allclose(image[0], preprocess.xray(data.read_xray(png), size=SIZE), atol=0.5)
    _check_answer(result, step1, step2, image, path)
    assert result["steps"]["routed"] is (key == "routed")
    assert result["model"] == f"xray_cnn_{key}" and result["model_version"] == 1
    printed = _run_cli(png, "--model", path)
    assert printed["steps"]["routed"] is result["steps"]["routed"]
    assert printed["predicted_class"] == result["predicted_class"]
    np.testing.assert_allclose(list(printed["probabilities"].values()), list(result["probabilities"].values()),
                               atol=1e-6)
    if key == "unrouted":
        assert printed["steps"]["step2"] is None  # JSON null


def test_cli_on_a_monochrome1_chest_radiograph(mixed, testdata, monkeypatch):
    """pydicom-data's RG1_UNCR: a MONOCHROME1 chest radiograph (read_xray inverts it)."""
    import pydicom

    step1, step2, path = mixed
    dicom = testdata("RG1_UNCR.dcm")
    assert pydicom.dcmread(dicom, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    result, image = _predict_in_process(monkeypatch, dicom, path)
    _check_answer(result, step1, step2, image, path)
    printed = _run_cli(dicom, "--model", os.path.dirname(path))  # the model folder: its latest version
    assert printed["kind"] == "two_step" and printed["steps"]["routed"] is result["steps"]["routed"]
    np.testing.assert_allclose(list(printed["probabilities"].values()), list(result["probabilities"].values()),
                               atol=1e-6)


def test_a_folder_is_refused(mixed, tmp_path):
    with pytest.raises(errors.ConfigurationError, match="single X-ray images"):
        serving.predict_study(str(tmp_path), mixed[2])
