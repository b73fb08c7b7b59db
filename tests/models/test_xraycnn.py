"""Paper 004's XrayCNN (Table 1) and the two-step hierarchical classifier."""

import keras
import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.models import xraycnn as xc

# Table 1, row by row (ReLU and pooling rows have no parameters).
TABLE1 = [
    ("conv1", (64, 64, 32), 896), ("conv1_relu", (64, 64, 32), 0), ("pool1", (32, 32, 32), 0),
    ("conv2", (32, 32, 64), 18_496), ("conv2_relu", (32, 32, 64), 0), ("pool2", (16, 16, 64), 0),
    ("conv3", (16, 16, 128), 73_856), ("conv3_relu", (16, 16, 128), 0), ("pool3", (8, 8, 128), 0),
    ("flatten", (8192,), 0),
    ("dense1", (16,), 131_088), ("dense1_relu", (16,), 0),
    ("dense2", (64,), 1_088), ("dense2_relu", (64,), 0),
    ("dense3", (128,), 8_320), ("dense3_relu", (128,), 0),
    ("probabilities", (2,), 258),
]


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 64, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return xc.xray_cnn()


def test_table1(model):
    assert model.name == "xray_cnn"
    for name, shape, params in TABLE1:
        layer = model.get_layer(name)
        assert tuple(layer.output.shape[1:]) == shape, name
        assert layer.count_params() == params, name
    assert model.count_params() == sum(p for _, _, p in TABLE1) == 234_002
    table_names = [name for name, _, _ in TABLE1]
    names = [layer.name for layer in model.layers if layer.name in table_names]
    assert names == table_names
    for i in (1, 2, 3):
        conv = model.get_layer(f"conv{i}")
        assert (conv.kernel_size, conv.padding) == ((3, 3), "same")


def test_named_layers(model):
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["image", "rescale"]
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)
    assert model.get_layer("last_conv").input is model.get_layer("conv3_relu").output
    assert names[-2:] == ["dropout", "probabilities"]
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("probabilities").activation is keras.activations.softmax


def test_contract(model, model_contract):
    assert model.output_shape == (None, 2)
    model_contract(model, _pixels(2))


def test_three_classes_and_dropout():
    model = xc.xray_cnn(num_classes=3, dropout=0.2)
    assert model.output_shape == (None, 3)
    assert model.get_layer("probabilities").count_params() == 128 * 3 + 3
    assert model.get_layer("dropout").rate == 0.2


@pytest.mark.parametrize(
    "kwargs, shown",
    [({"num_classes": 1}, "num_classes=1"), ({"dropout": 1}, "dropout=1"),
     ({"input_shape": (4, 4, 3)}, "input_shape=(4, 4, 3)"), ({"weights": "imagenet"}, "imagenet")],
)
def test_bad_arguments(kwargs, shown):
    with pytest.raises(errors.CovidKerasError) as info:
        xc.xray_cnn(**kwargs)
    assert shown in str(info.value)


def test_class_names_are_the_datasets():
    assert xc.STEP1_CLASSES == CLASS_NAMES["xraycnn_step1"] == ("normal", "bacterial", "viral")
    assert xc.STEP2_CLASSES == CLASS_NAMES["xraycnn_step2"]
    assert xc.COMBINED_CLASSES == CLASS_NAMES["xraycnn_4class"]


class Stub:
    """A model stand-in returning fixed probability rows and recording its inputs."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype="float32")
        self.calls = []

    def predict(self, x, batch_size=None, verbose=None):
        self.calls.append((np.array(x), batch_size))
        return self.rows[: len(x)]


def _numbered_images(n):
    # Image i is filled with the value i, so routed images can be identified.
    return np.arange(n, dtype="float32").reshape(n, 1, 1, 1) * np.ones((1, 8, 8, 3), "float32")


def test_hierarchy_routing_and_arithmetic():
    step1 = Stub([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]])
    step2 = Stub([[0.1, 0.7, 0.2], [0.1, 0.2, 0.7]])
    out = xc.HierarchicalXrayClassifier(step1, step2).predict(_numbered_images(4), batch_size=7)

    assert len(step1.calls) == 1 and step1.calls[0][1] == 7
    assert len(step2.calls) == 1 and step2.calls[0][1] == 7
    np.testing.assert_array_equal(step2.calls[0][0][:, 0, 0, 0], [1, 3])
    np.testing.assert_array_equal(out["routed"], [False, True, False, True])
    np.testing.assert_array_equal(out["step1"], step1.rows)
    assert np.isnan(out["step2"][[0, 2]]).all()
    np.testing.assert_allclose(out["step2"][[1, 3]], step2.rows)
    expected = [
        [0.7, 0.2, 0.05, 0.05],                        # not routed: viral mass split evenly
        [0.1, 0.3 + 0.6 * 0.1, 0.6 * 0.7, 0.6 * 0.2],  # non-viral share of step 2 -> bacterial
        [0.2, 0.5, 0.15, 0.15],
        [0.25, 0.25 + 0.5 * 0.1, 0.5 * 0.2, 0.5 * 0.7],
    ]
    np.testing.assert_allclose(out["combined"], expected, atol=1e-6)
    np.testing.assert_allclose(out["combined"].sum(axis=-1), 1.0, atol=1e-6)
    assert list(out["labels"]) == ["Normal", "COVID-19", "bacterial", "other viral"]


def test_hierarchy_unrouted_fraction_and_no_step2_call():
    step1 = Stub([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    step2 = Stub([[1.0, 0.0, 0.0]])
    out = xc.HierarchicalXrayClassifier(step1, step2, unrouted_covid_fraction=0.0).predict(_numbered_images(2))
    assert step2.calls == []
    assert not out["routed"].any() and np.isnan(out["step2"]).all()
    np.testing.assert_allclose(out["combined"], [[0.7, 0.2, 0.0, 0.1], [0.2, 0.5, 0.0, 0.3]], atol=1e-6)
    assert list(out["labels"]) == ["Normal", "bacterial"]


def test_hierarchy_renormalises():
    combined = xc.combine([[0.2, 0.2, 0.8]], [[0.0, 0.5, 0.7]], [True])
    np.testing.assert_allclose(combined.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(combined, [[0.2, 0.2, 0.4, 0.56]] / np.float32(1.36), atol=1e-6)


def test_hierarchy_with_models():
    keras.utils.set_random_seed(0)
    clf = xc.HierarchicalXrayClassifier(xc.xray_cnn(num_classes=3), xc.xray_cnn(num_classes=3))
    out = clf.predict(_pixels(5, seed=5), batch_size=2)
    assert out["step1"].shape == out["step2"].shape == (5, 3)
    assert out["combined"].shape == (5, 4) and out["combined"].dtype == np.float32
    assert out["routed"].shape == (5,) and out["routed"].dtype == bool
    np.testing.assert_allclose(out["combined"].sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(out["step2"]).any(axis=-1), ~out["routed"])
    assert len(out["labels"]) == 5 and set(out["labels"]) <= set(xc.COMBINED_CLASSES)


def test_hierarchy_bad_models():
    with pytest.raises(errors.ConfigurationError, match="step2=str"):
        xc.HierarchicalXrayClassifier(Stub([[1, 0, 0]]), "model.keras")
    with pytest.raises(errors.ConfigurationError, match="unrouted_covid_fraction=2"):
        xc.HierarchicalXrayClassifier(Stub([[1, 0, 0]]), Stub([[1, 0, 0]]), unrouted_covid_fraction=2)
    binary = xc.HierarchicalXrayClassifier(Stub([[0.5, 0.5]]), Stub([[1, 0, 0]]))
    with pytest.raises(errors.ConfigurationError, match=r"step1.*\(1, 2\)"):
        binary.predict(_numbered_images(1))
