"""covid_keras.app.answers: what the page shows, checked against the package's own independent paths.

* probabilities: ``serving.predict_study`` on the same file or folder (the
  path ``covid_keras.predict`` takes);
* an X-ray's heat map: the PNG ``serving.heatmap.gradcam_png`` writes (the
  ``--gradcam`` path, itself pinned against a plain ``GradientTape``
  Grad-CAM in tests/serving/test_gradcam_predict.py), pixel for pixel;
* a study's suspicious slices and maps: the slice probabilities computed
  here by calling the signature, and ``explain.gradcam`` (a fresh
  tf-keras-vis copy per call, not the app's cached explainer);
* the cached :class:`covid_keras.explain.GradcamExplainer`: equal to
  ``explain.gradcam`` call after call, for different classes.
"""

import doctest

import numpy as np
import pytest

from covid_keras import errors, explain, serving
from covid_keras.app import answers
from covid_keras.serving import heatmap

SIZE = 64
XRAY3 = ["normal", "bacterial", "viral"]
CT3 = ["Normal", "CAP", "COVID-19"]


def test_doctests():
    failures, tried = doctest.testmod(answers)
    assert tried >= 5 and failures == 0


@pytest.fixture(scope="module")
def xray_export(tiny_xray_export):
    return serving.load_model(tiny_xray_export)


@pytest.fixture(scope="module")
def two_step_export(tiny_two_step_export):
    """conftest's two-step export, whose step 1 routes every image to step 2 (both maps are drawn)."""
    return serving.load_model(tiny_two_step_export)


@pytest.fixture(scope="module")
def ct_export(tiny_ct_export):
    return serving.load_model(tiny_ct_export)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved_models"))


@pytest.fixture(scope="module")
def xray_png():
    from covid_keras.data import synthetic

    records = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=1, size=96))
    return records[0].paths[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from covid_keras.data import synthetic

    folder = str(tmp_path_factory.mktemp("study") / "series")
    return synthetic.write_ct_phantom(folder, n_slices=10, size=96)


def _read_png(path):
    import cv2

    return cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]


@pytest.mark.parametrize("which", ["xray_export", "two_step_export"])
def test_image_answer_equals_predict_and_its_gradcam_png(request, which, xray_png, tmp_path):
    served = request.getfixturevalue(which)
    cache = answers.KerasModels()
    got = answers.answer_image(xray_png, served, cache)
    expected = serving.predict_study(xray_png, served)
    assert got.probabilities == pytest.approx(expected["probabilities"], abs=1e-6)
    assert got.predicted_class == expected["predicted_class"]
    assert got.steps == expected.get("steps")
    png = heatmap.gradcam_png(xray_png, served, str(tmp_path / "cam.png"), prediction=expected)
    np.testing.assert_array_equal(got.heatmap, _read_png(png.path))
    # the model's view: its 0-255 grey input, enlarged by the same integer factor
    grey = np.uint8(np.rint(heatmap.read_inputs(xray_png, served)[0, ..., 0]))
    assert got.model_view.shape == got.heatmap.shape
    np.testing.assert_array_equal(got.model_view[::png.scale, ::png.scale, 0], grey)
    assert (which == "two_step_export") == ("step" in got.explained)
    routed = bool(got.steps and got.steps["routed"])
    assert (got.step1_heatmap is not None) == routed
    if routed:  # step 1's own map, as the --gradcam path draws an answer step 1 kept
        unrouted = {**expected, "steps": {**expected["steps"], "routed": False}}
        first = heatmap.gradcam_png(xray_png, served, str(tmp_path / "step1.png"), prediction=unrouted)
        assert first.step == "step1"
        np.testing.assert_array_equal(got.step1_heatmap, _read_png(first.path))
    again = answers.answer_image(xray_png, served, cache)  # cached Keras model and explainer: the same answer
    np.testing.assert_array_equal(again.heatmap, got.heatmap)


def test_cached_explainer_equals_gradcam_for_every_call(make_xray_cnn):
    model = make_xray_cnn(11)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    explainer = explain.GradcamExplainer(model)
    for class_index in (0, 2, [1, 0]):
        np.testing.assert_allclose(explainer(x, class_index=class_index),
                                   explain.gradcam(model, x, class_index=class_index), atol=1e-6)
    with pytest.raises(errors.ConfigurationError, match="not a layer"):
        explainer(x, layer="stage5")


def test_study_answer_curve_slices_and_maps(ct_export, study):
    cache = answers.KerasModels()
    calls = []
    got = answers.answer_study(study, ct_export, cache, progress=lambda f, text: calls.append((f, text)))
    expected = serving.predict_study(study, ct_export)
    assert got.probabilities == pytest.approx(expected["probabilities"], abs=1e-6)
    assert got.slices == expected["slices"] == 10 and got.aggregation == "mean_of_slices"
    run = serving.answer_study(study, ct_export)
    per_slice = ct_export(run.inputs)  # the signature on every slice, here
    predicted = CT3.index(got.predicted_class)
    score = 1.0 - per_slice[:, 0] if predicted == 0 else per_slice[:, predicted]  # Normal is class 0
    order = [int(i) for i in np.argsort(-score, kind="stable")[:3]]
    assert [int(c.split("slice ")[1].split(":")[0]) for _, c in got.suspicious] == order
    keras_model = cache(ct_export)
    for (picture, caption), i in zip(got.suspicious, order):
        cls = predicted if predicted != 0 else 1 + int(np.argmax(per_slice[i, 1:]))
        assert f"{CT3[cls]} map, p={per_slice[i, cls]:.2f}" in caption
        cam = explain.gradcam(keras_model, run.inputs[[i]], class_index=cls, layer="last_conv")[0]
        np.testing.assert_array_equal(picture, heatmap.picture(run.inputs[i], cam, min_side=answers.MIN_SIDE)[0])
    assert got.curve.ndim == 3 and got.curve.shape[-1] == 3 and got.curve.dtype == np.uint8
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_wrong_tab_and_unserved_exports_are_refused(xray_export, ct_export, study, xray_png):
    with pytest.raises(errors.ConfigurationError, match="takes CT studies"):
        answers.answer_image(xray_png, ct_export)
    with pytest.raises(errors.ConfigurationError, match="takes single X-ray images"):
        answers.answer_study(study, xray_export)

    class Odd:
        name, version, kind, preprocessing = "odd", 1, "image", {"pipeline": "something_else"}

    with pytest.raises(errors.ServingError, match="does not serve"):
        answers.input_kind(Odd())


def test_a_head_ct_is_refused_before_any_answer(ct_export, tmp_path, testdata):
    import shutil

    head = tmp_path / "head"
    head.mkdir()
    shutil.copy(testdata("693_UNCR.dcm"), head / "a.dcm")
    with pytest.raises(errors.NoLungError, match="no lungs found"):
        answers.answer_study(str(head), ct_export)


def test_normal_answers_explain_each_slice_s_own_disease_class():
    per_slice = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.4, 0.1, 0.5]])
    assert answers.suspicious_slices(per_slice, CT3, "Normal", k=2) == [1, 2]
    assert answers.suspicious_slices(per_slice, CT3, "CAP", k=2) == [1, 2]  # the answer's own class
    assert answers.suspicious_slices(per_slice, CT3, "COVID-19", k=1) == [2]
    assert answers.slice_classes(per_slice, CT3, "Normal", [1, 2]) == [1, 2]
    assert answers.slice_classes(per_slice, CT3, "COVID-19", [1, 2]) == [2, 2]
    # no class named normal: the answer's own probability ranks the slices
    assert answers.suspicious_slices(per_slice, ["a", "b", "c"], "c", k=2) == [2, 1]


@pytest.fixture(scope="module")
def volume_export(root):
    from covid_keras import models

    model = models.resnet50_3d(input_shape=(16, 16, 16, 1), depth=18, weights=None)
    return serving.load_model(serving.export(model, root, class_names=CT3,
                                             preprocessing={"pipeline": "volume3d", "size": 16}))


def test_volume_answer_cuts_where_the_3d_map_is(volume_export, study):
    cache = answers.KerasModels()
    got = answers.answer_study(study, volume_export, cache)
    expected = serving.predict_study(study, volume_export)
    assert got.probabilities == pytest.approx(expected["probabilities"], abs=1e-6)
    assert got.aggregation == "volume" and got.slices == 10
    run = serving.answer_study(study, volume_export)
    cls = CT3.index(got.predicted_class)
    cam = explain.gradcam(cache(volume_export), run.inputs, class_index=cls, layer="last_conv")[0]
    mass = cam.reshape(len(cam), -1).sum(axis=1)
    cuts = [int(i) for i in np.argsort(-mass, kind="stable")[:3]] if mass.sum() > 0 else [6, 7, 8]
    assert [int(c.split("lung-volume cut ")[1].split("/")[0]) for _, c in got.suspicious] == cuts
    for (picture, _), d in zip(got.suspicious, cuts):
        np.testing.assert_array_equal(
            picture, heatmap.picture(run.inputs[0, d, ..., 0] * 255.0, cam[d], min_side=answers.MIN_SIDE)[0])
