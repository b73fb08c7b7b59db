"""The image pipeline of papers 002-004: xray cache (uint8 grey) -> selection -> (RGB float image, label) batches."""

import hashlib

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data import read_xray, synthetic
from covid_keras.evaluation import classification_report
from covid_keras.preprocess import xray
from covid_keras.preprocess.pipelines import PipelineOptions
from covid_keras.training import image_level, pipelines

STEP1 = ["normal", "bacterial", "viral"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    recs = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=3, size=64))
    root = tmp_path_factory.mktemp("image-cache")
    folder = pipelines.ensure_cache(recs, "synthetic-xray", PipelineOptions("xray", size=32), STEP1, root=str(root),
                                    workers=1, progress=False)
    rows, classes, shape = pipelines.image_rows(folder)
    return recs, folder, rows, classes, shape


def _digest(grey):
    return hashlib.sha256(np.ascontiguousarray(grey, dtype=np.uint8).tobytes()).hexdigest()


def test_the_cache_holds_the_rounded_grey_channel_of_preprocess_xray(cache):
    recs, folder, rows, classes, shape = cache
    assert classes == STEP1 and shape == [32, 32] and len(rows) == len(recs)
    cached = dict(pipelines.iter_images(folder, {r.key: 0 for r in rows}))
    by_patient = {r.patient_id: r.key for r in rows}
    for record in recs[:4]:
        expected = np.rint(xray(read_xray(record.paths[0]), size=32)[..., 0]).astype(np.uint8)
        np.testing.assert_array_equal(cached[by_patient[record.patient_id]], expected)


def test_served_inputs_are_what_training_read(cache, tmp_path):
    """predict_study's X-ray input (rounded) equals the cached grey level in all three channels."""
    from covid_keras.serving.predict import _read_and_preprocess

    recs, folder, rows, _, _ = cache

    class _Model:  # what _read_and_preprocess reads of a loaded export
        preprocessing = {"pipeline": "xray", "size": 32}
        input_shape = [None, 32, 32, 3]
        name, version, version_dir = "m", 1, str(tmp_path)

    cached = dict(pipelines.iter_images(folder, {r.key: 0 for r in rows}))
    key = next(r.key for r in rows if r.patient_id == recs[0].patient_id)
    inputs = _read_and_preprocess(recs[0].paths[0], _Model(), {})[0]
    assert inputs.shape == (1, 32, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(inputs[0, ..., channel], cached[key].astype(np.float32))


def test_select_images_relabels_and_leaves_out(cache):
    _, _, rows, _, _ = cache
    patients = {r.patient_id for r in rows}
    binary = {"normal": "normal", "bacterial": None, "viral": "viral"}
    selection = pipelines.select_images(rows, patients, ["normal", "viral"], binary.get)
    labels = {r.key: r.label for r in rows}
    assert selection and all(labels[k] != "bacterial" for k in selection)
    assert {labels[k] for k, v in selection.items() if v == 1} == {"viral"}
    some = sorted(patients)[:2]
    assert {r.patient_id for r in rows if r.key in pipelines.select_images(rows, some, STEP1)} == set(some)


@pytest.mark.parametrize("memory_limit", [pipelines.IMAGE_MEMORY_LIMIT, 0], ids=["in_memory", "streamed"])
def test_batches_pair_each_image_with_its_label(cache, memory_limit):
    _, folder, rows, classes, shape = cache
    selection = pipelines.select_images(rows, {r.patient_id for r in rows}, classes)
    truth = {_digest(im): selection[k] for k, im in pipelines.iter_images(folder, selection)}
    ds = pipelines.image_dataset(folder, selection, training=True, batch_size=4, seed=3, shape=shape,
                                 memory_limit=memory_limit)
    seen = []
    for x, y in ds:
        x = x.numpy()
        assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3)
        assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
        seen += [truth[_digest(image[..., 0])] == label for image, label in zip(x, y.numpy())]
    assert len(seen) == len(selection) and all(seen)


def test_an_empty_selection_and_a_wrong_cache_are_one_sentence(cache, tmp_path):
    _, folder, _, _, _ = cache
    with pytest.raises(errors.ConfigurationError, match="no images selected"):
        pipelines.image_dataset(folder, {}, training=False, batch_size=2)
    ct = synthetic.ct_dataset(synthetic.CTPhantomConfig(patients_per_class=1, size=48, min_slices=12,
                                                        max_slices=12))[:1]
    other = pipelines.ensure_slice_cache(ct, "synthetic-ct", PipelineOptions("ct_slices", size=32),
                                         root=str(tmp_path), workers=1, progress=False)
    with pytest.raises(errors.CacheError, match="not xray images"):
        pipelines.image_rows(other)


def test_augmenting_model_is_the_model_outside_training(cache):
    import keras

    from covid_keras.models import xray_cnn

    model = xray_cnn(input_shape=(32, 32, 3), num_classes=3)
    assert image_level.augmenting_model(model, (32, 32, 3), 0, {}) is model
    affine = {"rotation": 10.0, "translation": 3.0, "zoom": (0.9, 1.1), "shear": 0.0, "horizontal_flip": True,
              "brightness": (1.0, 1.0)}
    trainer = image_level.augmenting_model(model, (32, 32, 3), 0, affine, salt_pepper=0.05)
    assert [layer.name for layer in trainer.layers[1:3]] == ["augmentation", "salt_and_pepper"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(trainer.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert trainer.layers[-1] is model and isinstance(trainer, keras.Model)


def test_report_per_class_figures_by_hand():
    """Fig. 5's columns on a confusion matrix worked out by hand (classification_report counts with scikit-learn)."""
    #            predicted: a  b  c   (d never occurs nor is predicted)
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    report = classification_report(y_true, np.eye(4)[y_pred], ["a", "b", "c", "d"])
    assert report["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    assert report["precision"] == {"a": round(2 / 3, 4), "b": 0.5, "c": 0.75, "d": None}
    assert report["recall"] == report["sensitivity"] == {"a": round(2 / 3, 4), "b": 0.5, "c": 0.75, "d": None}
    assert report["f1"] == {"a": round(2 / 3, 4), "b": 0.5, "c": 0.75, "d": None}
    # specificity of a: of the 6 non-a cases, 5 were not called a.
    assert report["specificity"] == {"a": round(5 / 6, 4), "b": round(6 / 7, 4), "c": 0.8, "d": 1.0}
    assert report["accuracy"] == round(6 / 9, 4) and report["majority_rate"] == round(4 / 9, 4)
