"""``python -m covid_keras.predict IMAGE --model DIR --gradcam OUT.png``: the answer's Grad-CAM heat map.

The map is checked against a plain ``tf.GradientTape`` Grad-CAM written
here (not tf-keras-vis), computed with the exported Keras model object
itself on the very array the SavedModel's signature was fed (recorded by a
spy on ``ServedModel``'s signature call). The PNG is checked against the colouring
the module documents, done here with OpenCV directly.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from covid_keras import cli, errors, serving
from covid_keras import predict as predict_cli
from covid_keras.serving import heatmap

SIZE = 64
XRAY3 = ["normal", "bacterial", "viral"]
CT3 = ["Normal", "CAP", "COVID-19"]
STEP2 = ["non-viral pneumonia", "COVID-19", "other viral"]


def reference_gradcam(model, images, class_index, layer="last_conv"):
    """Plain GradientTape Grad-CAM at ``layer``, normalised to [0, 1]: float32 [n, H, W]."""
    import keras

    head = model.get_layer("probabilities")
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, head.input])
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        activation, features = probe(images, training=False)
        logits = tf.matmul(features, head.kernel) + head.bias  # the class score before the softmax
        score = tf.reduce_sum(logits[:, class_index])
    grads = tape.gradient(score, activation).numpy()
    activation = activation.numpy()
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((activation * weights).sum(axis=-1), 0.0)
    factors = (1.0,) + tuple(t / f for t, f in zip(images.shape[1:-1], cam.shape[1:]))
    cam = scipy.ndimage.zoom(cam, factors, order=1)
    low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    return ((cam - low) / (high - low + 1e-7)).astype(np.float32)


def expected_picture(image, cam, scale):
    """The documented display: jet(cam * 255) blended 0.4 over the grey 0-255 image, k x k blocks."""
    import cv2

    grey = np.repeat(np.asarray(image, np.float32)[..., :1], 3, axis=-1)
    jet = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    small = np.uint8(np.clip(0.6 * grey + 0.4 * jet, 0, 255))
    return np.repeat(np.repeat(small, scale, axis=0), scale, axis=1)


def read_png(path):
    """The PNG as written: uint8 RGB (no conversion by the reader)."""
    import cv2

    out = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert out is not None, path
    assert out.ndim == 3 and out.shape[-1] == 3 and out.dtype == np.uint8
    return out[..., ::-1]


def _xray_cnn(seed, num_classes=3):
    import keras

    from covid_keras import models

    keras.utils.set_random_seed(seed)
    return models.xray_cnn(input_shape=(SIZE, SIZE, 3), num_classes=num_classes)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved_models"))


@pytest.fixture(scope="module")
def xray_model(root):
    model = _xray_cnn(seed=5)
    return model, serving.export(model, root, class_names=XRAY3, preprocessing={"pipeline": "xray", "size": SIZE},
                                 image_bytes_endpoint=False)


@pytest.fixture(scope="module")
def ct_model(root):
    """A CT slice classifier: a CT series folder or one slice image."""
    model = _xray_cnn(seed=6)
    return model, serving.export(model, root, name="ct_slice_cnn", class_names=CT3,
                                 preprocessing={"pipeline": "ct_slices", "size": SIZE}, image_bytes_endpoint=False)


@pytest.fixture(scope="module")
def phantom_png():
    from covid_keras.data import synthetic

    records = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=1, size=64))
    return records[0].paths[0]


@pytest.fixture(scope="module")
def monochrome1():
    """pydicom-data's MONOCHROME1 chest radiograph (1955 x 1841)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None or not os.path.exists(path):
        pytest.fail("RG1_UNCR.dcm is missing: install pydicom-data (requirements-dev.txt)")
    return path


@pytest.fixture(scope="module")
def ct_slice_png(tmp_path_factory):
    """One phantom CT slice as a COVIDx-CT-style 8-bit PNG."""
    import cv2

    from covid_keras.data import synthetic

    hu, _, _ = synthetic.phantom_volume("covid", n_slices=8, size=96, seed=3)
    grey = np.clip((hu[4] + 1350.0) / 1500.0, 0, 1)  # lung window -600 / 1500
    path = str(tmp_path_factory.mktemp("ct_slice") / "slice.png")
    assert cv2.imwrite(path, np.uint8(np.rint(grey * 255)))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=8, size=96, slice_spacing=5.0, seed=2)
    folder = str(tmp_path_factory.mktemp("study") / "series")
    synthetic.write_ct_series(hu, spacing, folder, seed=2)
    return folder


def _fed_inputs(monkeypatch, path, model_dir):
    """predict_study's answer and the array its SavedModel signature was fed."""
    fed = []
    # The signature's one entry point: ServedModel.outputs where it has one (__call__ then goes through it).
    name = "outputs" if hasattr(serving.ServedModel, "outputs") else "__call__"
    call = getattr(serving.ServedModel, name)

    def spy(self, inputs):
        fed.append(np.array(inputs))
        return call(self, inputs)

    with monkeypatch.context() as patch:
        patch.setattr(serving.ServedModel, name, spy)
        result = serving.predict_study(path, model_dir)
    assert len(fed) == 1
    return result, fed[0]


def _one_error_line(stderr, *fragments):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0]


# --------------------------------------------------------------------------
# The map is Grad-CAM at last_conv on the SavedModel's own input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["xray_phantom", "xray_monochrome1", "ct_slice_image"])
def test_heat_map_is_the_gradcam_of_what_the_savedmodel_got(case, request, monkeypatch, tmp_path):
    fixture, image = {"xray_phantom": ("xray_model", "phantom_png"),
                      "xray_monochrome1": ("xray_model", "monochrome1"),
                      "ct_slice_image": ("ct_model", "ct_slice_png")}[case]
    model, path = request.getfixturevalue(fixture)
    image = request.getfixturevalue(image)
    names = XRAY3 if fixture == "xray_model" else CT3
    result, fed = _fed_inputs(monkeypatch, image, path)
    out = str(tmp_path / "heat.png")
    heat = heatmap.gradcam_png(image, path, out, prediction=result)

    np.testing.assert_array_equal(heat.inputs, fed)  # the SavedModel's input, bit for bit
    predicted = names.index(result["predicted_class"])
    assert int(np.argmax(model.predict(fed, verbose=0)[0])) == predicted
    assert heat.class_index == predicted and heat.layer == "last_conv" and heat.step == "model"
    expected = reference_gradcam(model, fed, predicted)[0]
    assert heat.cam.shape == (SIZE, SIZE) and heat.cam.dtype == np.float32
    assert expected.max() > 0.5, "an all-zero map would check nothing: choose another seed"
    np.testing.assert_allclose(heat.cam, expected, atol=1e-5, rtol=0)

    picture = read_png(out)
    assert heat.scale == 4 and picture.shape == (256, 256, 3)
    np.testing.assert_array_equal(picture, expected_picture(fed[0], heat.cam, 4))
    assert heat.record() == {"path": out, "layer": "last_conv", "class": result["predicted_class"]}


def test_picture_size_is_an_integer_enlargement_to_256():
    for side, scale in ((64, 4), (224, 2), (299, 1), (100, 3)):
        rgb, got = heatmap.picture(np.full((side, side + 10, 3), 128.0), np.zeros((side, side + 10)))
        assert got == scale and rgb.shape == (side * scale, (side + 10) * scale, 3) and rgb.dtype == np.uint8
    # A dark 0-255 image (maximum 1) is not taken for a [0, 1] one.
    rgb, _ = heatmap.picture(np.ones((64, 64, 1)), np.ones((64, 64)))
    np.testing.assert_array_equal(rgb, expected_picture(np.ones((64, 64, 1)), np.ones((64, 64)), 4))


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["phantom_png", "monochrome1"])
def test_cli_writes_the_png_and_reports_it(image, request, xray_model, tmp_path, capsys):
    image = request.getfixturevalue(image)
    out = str(tmp_path / "figures" / "heat.png")  # the folder is made
    status = cli.run(predict_cli.main, [image, "--model", xray_model[1], "--gradcam", out])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-3000:]
    result = json.loads(captured.out)
    assert result["aggregation"] == "image" and result["predicted_class"] in XRAY3
    assert result["gradcam"] == {"path": out, "layer": "last_conv", "class": result["predicted_class"]}
    assert read_png(out).shape == (256, 256, 3)


def test_python_m_predict_with_gradcam(phantom_png, xray_model, tmp_path):
    out = str(tmp_path / "heat.png")
    proc = subprocess.run([sys.executable, "-m", "covid_keras.predict", phantom_png, "--model", xray_model[1],
                           "--gradcam", out], check=False, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["gradcam"]["path"] == out
    assert read_png(out).shape == (256, 256, 3)


def test_cli_without_the_flag_has_no_gradcam(phantom_png, xray_model, capsys):
    assert cli.run(predict_cli.main, [phantom_png, "--model", xray_model[1]]) == 0
    assert "gradcam" not in json.loads(capsys.readouterr().out)


def test_a_ct_folder_is_refused_before_the_model_runs(study, ct_model, tmp_path, capsys, monkeypatch):
    def never(self, inputs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(serving.ServedModel, "__call__", never)
    out = tmp_path / "heat.png"
    status = cli.run(predict_cli.main, [study, "--model", ct_model[1], "--gradcam", str(out)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == "" and not out.exists()
    _one_error_line(captured.err, study, "is a folder (a CT series)", "--gradcam")


@pytest.mark.parametrize("kind", ["volume", "patient_pipeline"])
def test_study_level_exports_are_refused(kind, phantom_png, ct_model, tmp_path):
    served = serving.load_model(ct_model[1])
    served.kind = kind
    with pytest.raises(errors.ConfigurationError, match=f"is a {kind} export.*no Grad-CAM heat map"):
        heatmap.gradcam_png(phantom_png, served, str(tmp_path / "heat.png"))
    assert not os.listdir(tmp_path)


def test_an_output_that_is_not_png_is_refused(phantom_png, xray_model, tmp_path, capsys):
    out = str(tmp_path / "heat.jpg")
    assert cli.run(predict_cli.main, [phantom_png, "--model", xray_model[1], "--gradcam", out]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, "heat.jpg", ".png")


def test_a_missing_keras_file_is_one_sentence(phantom_png, xray_model, tmp_path):
    copy = tmp_path / "copy" / "1"
    shutil.copytree(xray_model[1], copy)
    for name in os.listdir(copy / "assets.extra"):
        if name.endswith(".keras"):
            os.remove(copy / "assets.extra" / name)
    with pytest.raises(errors.ServingError, match="the Keras model a Grad-CAM heat map needs"):
        heatmap.gradcam_png(phantom_png, str(copy), str(tmp_path / "heat.png"))


# --------------------------------------------------------------------------
# Two-step exports: the step that answered is explained
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("prediction", "routed"), [
    ({"routed": True}, True), ({"routed": False}, False), ({"routed": [False]}, False),
    ({"routed": [True]}, True), ({"routed": np.bool_(True)}, True),
    ({"step2": {"COVID-19": 0.9, "other viral": 0.1}}, True), ({"step2": {"COVID-19": float("nan")}}, False),
    ({"step2": [0.2, 0.8]}, True), ({"step2": None}, False), ({}, None), ({"predicted_class": "Normal"}, None),
    # predict_study's two-step answer: each step's answer under "steps"
    ({"steps": {"step1": {"viral": 0.9}, "step2": {"COVID-19": 0.7}, "routed": True}}, True),
    ({"steps": {"step1": {"viral": 0.1}, "step2": None, "routed": False}}, False),
    ({"steps": {"step1": {"viral": 0.1}, "step2": None}}, False),
])
def test_two_step_routing_from_the_answer(prediction, routed):
    assert heatmap.routed_to_step2(prediction) is routed


@pytest.mark.parametrize(("routed", "role"), [(True, "step2"), (False, "step1")])
def test_two_step_role(routed, role):
    meta = {"kind": "two_step", "keras_files": {"step1": "a.keras", "step2": "b.keras"}}
    assert heatmap.keras_role(meta, routed) == role
    assert heatmap.keras_role({"kind": "image", "keras_files": {"model": "m.keras"}}, routed) == "model"
    with pytest.raises(errors.ServingError, match=f"no Keras file for '{role}'"):
        heatmap.keras_role({**meta, "keras_files": {}}, routed)


@pytest.fixture()
def two_step(xray_model, tmp_path, monkeypatch):
    """A hand-made two-step folder: the xray export's files and metadata, with a second Keras model."""
    from covid_keras.serving import savedmodel

    step1, path = xray_model
    folder = tmp_path / "two_step" / "1"
    shutil.copytree(path, folder)
    step2 = _xray_cnn(seed=11)
    step2.save(folder / "assets.extra" / "step2.keras")
    meta_path = folder / "assets.extra" / "covid_keras.json"
    meta = json.loads(meta_path.read_text())
    meta.update(kind="two_step", keras_files={"step1": meta["keras_files"]["model"], "step2": "step2.keras"},
                output_classes={"step1": XRAY3, "step2": STEP2, "probabilities": meta["class_names"]})
    meta_path.write_text(json.dumps(meta))
    if "two_step" not in savedmodel.KINDS:  # until savedmodel knows the kind
        monkeypatch.setattr(savedmodel, "KINDS", (*savedmodel.KINDS, "two_step"))
    return serving.load_model(str(folder)), step1, step2


@pytest.mark.parametrize("routed", [True, False, None])
def test_two_step_export_explains_the_step_that_answered(routed, two_step, phantom_png, xray_model, tmp_path,
                                                         monkeypatch):
    served, step1, step2 = two_step
    _, fed = _fed_inputs(monkeypatch, phantom_png, xray_model[1])  # the same preprocessing, by the plain export
    prediction = {"predicted_class": "COVID-19"}
    if routed is not None:
        prediction["steps"] = {"routed": routed}
    else:  # the answer does not say: step 1's own top class decides, as the export routes
        routed = XRAY3[int(np.argmax(step1.predict(fed, verbose=0)[0]))] == "viral"
    model, role, names = (step2, "step2", STEP2) if routed else (step1, "step1", XRAY3)
    out = str(tmp_path / "heat.png")
    heat = heatmap.gradcam_png(phantom_png, served, out, prediction=prediction)
    assert heat.step == role
    own = int(np.argmax(model.predict(fed, verbose=0)[0]))
    assert heat.class_index == own
    expected = reference_gradcam(model, fed, own)[0]
    assert expected.max() > 0.5
    np.testing.assert_allclose(heat.cam, expected, atol=1e-5, rtol=0)
    assert heat.record() == {"path": out, "layer": "last_conv", "class": "COVID-19", "step": role,
                             "step_class": names[own]}


@pytest.mark.skipif(not hasattr(serving, "export_two_step"), reason="serving.export_two_step is not there yet")
@pytest.mark.parametrize("routed", [True, False])
def test_cli_on_a_two_step_export(routed, phantom_png, root, tmp_path, capsys, monkeypatch):
    """serving.export_two_step's export: step 1's bias makes viral win (routed) or bacterial win (not)."""
    step1, step2 = _xray_cnn(seed=5), _xray_cnn(seed=11)
    head = step1.get_layer("probabilities")
    head.bias.assign([0.0, 0.0, 20.0] if routed else [0.0, 20.0, 0.0])
    path = serving.export_two_step(step1, step2, root, name=f"two_step_{routed}",
                                   preprocessing={"pipeline": "xray", "size": SIZE})
    _, fed = _fed_inputs(monkeypatch, phantom_png, path)
    out = str(tmp_path / "heat.png")
    assert cli.run(predict_cli.main, [phantom_png, "--model", path, "--gradcam", out]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"]["routed"] is routed
    model, role, names = (step2, "step2", STEP2) if routed else (step1, "step1", XRAY3)
    own = int(np.argmax(model.predict(fed, verbose=0)[0]))
    assert result["gradcam"] == {"path": out, "layer": "last_conv", "class": result["predicted_class"],
                                 "step": role, "step_class": names[own]}
    assert read_png(out).shape == (256, 256, 3)
    heat = heatmap.gradcam_png(phantom_png, path, out, prediction=result)
    expected = reference_gradcam(model, fed, own)[0]
    assert expected.max() > 0.5
    np.testing.assert_allclose(heat.cam, expected, atol=1e-5, rtol=0)


def test_an_unwritable_output_is_one_sentence(phantom_png, xray_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(errors.ConfigurationError, match="cannot be written there"):
        heatmap.gradcam_png(phantom_png, xray_model[1], str(blocker / "heat.png"))
