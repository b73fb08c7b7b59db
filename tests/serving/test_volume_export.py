"""Paper 000's volume model for TF Serving and predict_study: export, signature checks, prediction.

A tiny ``resnet50_3d`` (depth 18 on 16^3 volumes) is exported once per
module. The export is loaded in a fresh Python process with plain
TensorFlow, as TF Serving loads it; what predict_study feeds it is checked
against the Volume3D pipeline followed by the cache's 8-bit grey levels
(``lung_volume.quantize`` / ``dequantize``), which is what training reads.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from covid_keras import errors, serving

SIDE = 16
CT3 = ["Normal", "CAP", "COVID-19"]
VOLUME3D = {"pipeline": "volume3d", "size": SIDE}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
IDENTITY = {"patient_name": "DOE^JANE", "patient_id": "SECRET-ID-123", "birth_date": "19450203"}
PHI = ("SECRET-ID-123", "DOE", "JANE", "19450203")
KEYS = {"probabilities", "predicted_class", "slices", "model", "model_version", "kind", "aggregation", "input",
        "patient_id"}

_FRESH_PREDICT = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = signature(volume=tf.constant(np.load(sys.argv[2])))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=ENV,
                          check=False)


def _volumes(n, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, SIDE, SIDE, SIDE, 1)).astype("float32")


def _no_phi(*texts):
    for text in texts:
        for value in PHI:
            assert value not in text


@pytest.fixture(scope="module")
def volume_model():
    import keras

    from covid_keras import models

    keras.utils.set_random_seed(3)
    return models.resnet50_3d(input_shape=(SIDE, SIDE, SIDE, 1), depth=18, weights=None)


@pytest.fixture(scope="module")
def volume_export(volume_model, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("saved_models"))
    return serving.export(volume_model, root, class_names=CT3, preprocessing=VOLUME3D)


def _write_series(folder, **geometry):
    from covid_keras.data import synthetic

    pathology = "normal" if geometry else "covid"
    geom = synthetic.PhantomGeometry(**geometry) if geometry else None
    hu, _, spacing = synthetic.phantom_volume(pathology, n_slices=12, size=96, slice_spacing=5.0, seed=2,
                                              geometry=geom)
    synthetic.write_ct_series(hu, spacing, folder, seed=2, **IDENTITY)
    return folder


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 12-slice chest phantom series written as DICOM, with made-up identifiers."""
    return _write_series(str(tmp_path_factory.mktemp("study") / "series"))


@pytest.fixture(scope="module")
def lungless(tmp_path_factory):
    """A phantom series whose lungs never appear (the body, heart and spine only)."""
    return _write_series(str(tmp_path_factory.mktemp("study") / "lungless"), lung_start=2.0, lung_end=3.0)


def _as_trained(folder):
    """The series as the volume3d cache holds it, read back as training reads it: float32 [1, D, H, W, 1]."""
    from covid_keras import data
    from covid_keras.preprocess import lung_volume

    volume = lung_volume.volume3d(data.read_ct_series(folder), output_shape=(SIDE,) * 3)
    return lung_volume.dequantize(lung_volume.quantize(volume))[None, ..., None]


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def test_fresh_process_signature_equals_the_keras_model(volume_model, volume_export, tmp_path):
    x = _volumes(2, seed=1)
    path = tmp_path / "x.npy"
    np.save(path, x)
    proc = _run("-c", _FRESH_PREDICT, volume_export, str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), dtype="float32")
    expected = np.asarray(volume_model(x, training=False))
    assert served.shape == (2, 3)
    np.testing.assert_allclose(served, expected, atol=1e-5)


@pytest.mark.parametrize("case", ["wrong_shape", "nan", "hu", "pixels_0_255", "negative"])
def test_bad_volumes_raise_invalid_argument(volume_export, case):
    import tensorflow as tf

    signature = tf.saved_model.load(volume_export).signatures["serving_default"]
    outside = "`volume` holds values outside \\[0, 1\\]"
    if case == "wrong_shape":
        x, message = np.zeros((1, SIDE, SIDE, SIDE - 1, 1), np.float32), "shape"
    elif case == "hu":
        x, message = (_volumes(1) * 1400 - 1000).astype(np.float32), outside
    elif case == "pixels_0_255":
        x, message = (_volumes(1) * 255).astype(np.float32), outside
    elif case == "negative":
        x, message = _volumes(1), outside
        x[0, 1, 1, 1, 0] = -0.01
    else:
        x, message = _volumes(1), "`volume` holds NaN or infinite values; send finite grey values in \\[0, 1\\]"
        x[0, 3, 4, 5, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signature(volume=tf.constant(x))


def test_metadata_records_a_volume_export(volume_export):
    meta = serving.load_metadata(volume_export)
    assert meta["kind"] == "volume" and meta["class_names"] == CT3
    assert meta["input"] == {"name": "volume", "shape": [None, SIDE, SIDE, SIDE, 1], "dtype": "float32",
                             "range": [0.0, 1.0]}
    assert meta["output"] == {"name": "probabilities", "shape": [None, 3], "dtype": "float32"}
    assert meta["preprocessing"] == {"pipeline": "volume3d", "size": SIDE, "normalization": "minmax"}
    assert list(meta["signatures"]) == ["serving_default"]
    assert meta["signatures"]["serving_default"].startswith(f"volume float32 [batch, {SIDE}, {SIDE}, {SIDE}, 1]")
    assert os.path.isfile(os.path.join(volume_export, "assets.extra", meta["keras_files"]["model"]))


def test_pipelines_that_do_not_fit_the_model_are_refused(volume_model, tmp_path):
    from covid_keras import models

    base = str(tmp_path)
    with pytest.raises(errors.ConfigurationError, match=r"one of \('ct_slices', 'xray'\) for a served 2-D model"):
        serving.export(models.xray_cnn(), base, class_names=["a", "b"], preprocessing=VOLUME3D)
    with pytest.raises(errors.ConfigurationError, match=r"one of \('volume3d',\) for a served volume model"):
        serving.export(volume_model, base, class_names=CT3, preprocessing={"pipeline": "ct_slices"})
    with pytest.raises(errors.ConfigurationError, match="image_bytes_endpoint"):
        serving.export(volume_model, base, class_names=CT3, preprocessing=VOLUME3D, image_bytes_endpoint=True)
    assert os.listdir(base) == []  # nothing written for a refused export


# --------------------------------------------------------------------------
# predict_study and the command line
# --------------------------------------------------------------------------


def test_predict_study_feeds_the_cached_grey_levels(volume_model, volume_export, phantom, monkeypatch):
    fed = []
    call = serving.ServedModel.__call__

    def spy(self, inputs):
        fed.append(np.array(inputs))
        return call(self, inputs)

    monkeypatch.setattr(serving.ServedModel, "__call__", spy)
    result = serving.predict_study(phantom, volume_export)
    x = _as_trained(phantom)
    assert len(fed) == 1 and fed[0].dtype == np.float32
    np.testing.assert_array_equal(fed[0], x)
    expected = np.asarray(volume_model(x, training=False))[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CT3], expected, atol=1e-5)
    assert set(result) == KEYS and list(result["probabilities"]) == CT3
    assert result["kind"] == "volume" and result["aggregation"] == "volume" and result["input"] == "ct_series"
    assert result["slices"] == 12 and result["predicted_class"] == CT3[int(np.argmax(expected))]
    assert result["patient_id"].startswith("pt-")
    _no_phi(json.dumps(result))


def test_a_series_without_lungs_is_refused_naming_the_folder(volume_export, lungless):
    for check_lungs in (True, False):  # the pipeline itself needs the lungs
        with pytest.raises(errors.NoLungError, match=f"^{lungless}: .*no lungs found"):
            serving.predict_study(lungless, volume_export, check_lungs=check_lungs)


def test_an_image_file_is_refused(volume_export, tmp_path):
    import cv2

    png = str(tmp_path / "slice.png")
    assert cv2.imwrite(png, np.zeros((SIDE, SIDE), np.uint8))
    with pytest.raises(errors.ConfigurationError, match=f"^{png}: .*takes CT series folders"):
        serving.predict_study(png, volume_export)


def test_cli_on_a_series_without_lungs_exits_2(volume_export, lungless):
    proc = _run("-m", "covid_keras.predict", lungless, "--model", volume_export)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {lungless}: "), proc.stderr[-3000:]
    assert "no lungs found" in lines[0]
    _no_phi(proc.stderr)


def test_cli_prints_the_volume_answer(volume_model, volume_export, phantom):
    model_folder = os.path.dirname(volume_export)  # a model folder: its latest version
    proc = _run("-m", "covid_keras.predict", phantom, "--model", model_folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # one JSON object, nothing else
    assert set(result) == KEYS
    assert result["kind"] == "volume" and result["aggregation"] == "volume" and result["input"] == "ct_series"
    assert result["slices"] == 12 and result["model"] == volume_model.name and result["model_version"] == 1
    expected = np.asarray(volume_model(_as_trained(phantom), training=False))[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CT3], expected, atol=1e-5)
    _no_phi(proc.stdout, proc.stderr)
