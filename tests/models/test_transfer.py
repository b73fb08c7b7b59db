"""Paper 002's transfer models: DenseNet, InceptionV3 and New-DenseNet (small shapes, weights=None)."""

import keras
import numpy as np
import pytest

from covid_keras import errors
from covid_keras.models import transfer
from covid_keras.models.layers import ImageNetPreprocessing

OFFLINE = Exception(
    "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- [Errno -3] Temporary failure in name resolution"
)


def _pixels(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def densenet():
    return transfer.densenet_classifier(input_shape=(64, 64, 3), num_classes=3, weights=None)


@pytest.fixture(scope="module")
def new_densenet():
    return transfer.new_densenet(input_shape=(64, 64, 3), num_classes=2, weights=None)


def _assert_flat(model):
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    assert nested == []


def test_densenet_classifier(densenet, model_contract):
    assert densenet.name == "densenet_classifier"
    assert densenet.output_shape == (None, 3)
    _assert_flat(densenet)
    pre = densenet.layers[1]
    assert isinstance(pre, ImageNetPreprocessing) and pre.mode == "torch"
    assert [layer.name for layer in densenet.layers[-4:]] == ["relu", "last_conv", "avg_pool", "probabilities"]
    assert densenet.get_layer("last_conv").output.shape == (None, 2, 2, 1024)
    assert "dropout" not in [layer.name for layer in densenet.layers]
    assert densenet.get_layer("probabilities").activation is keras.activations.softmax
    model_contract(densenet, _pixels(2, 64))


def test_densenet169_with_dropout():
    model = transfer.densenet_classifier(input_shape=(64, 64, 3), num_classes=2, variant=169,
                                         weights=None, dropout=0.25)
    names = [layer.name for layer in model.layers]
    assert "conv5_block32_concat" in names  # 169 = 6 + 12 + 32 + 32 blocks
    assert names[-3:] == ["avg_pool", "dropout", "probabilities"]
    assert model.get_layer("dropout").rate == 0.25
    assert model.get_layer("last_conv").output.shape[-1] == 1664
    assert model.output_shape == (None, 2)


@pytest.mark.parametrize("builder", [transfer.densenet_classifier, transfer.new_densenet])
def test_densenet201_is_selected(builder, monkeypatch):
    calls = []

    class Built(Exception):
        pass

    def fake(**kwargs):
        calls.append(kwargs)
        raise Built

    monkeypatch.setattr(keras.applications, "DenseNet201", fake)
    with pytest.raises(Built):
        builder(input_shape=(64, 64, 3), variant=201, weights=None)
    assert calls[0]["include_top"] is False and calls[0]["weights"] is None
    assert calls[0]["input_tensor"] is not None


@pytest.mark.parametrize("builder", [transfer.densenet_classifier, transfer.new_densenet])
def test_bad_variant(builder):
    with pytest.raises(errors.ConfigurationError, match=r"variant=150") as info:
        builder(variant=150, weights=None)
    assert isinstance(info.value, ValueError)
    assert "(121, 169, 201)" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"num_classes": 1}, "num_classes=1"),
        ({"input_shape": (16, 16, 3)}, "input_shape=(16, 16, 3)"),
        ({"input_shape": (64, 64, 1)}, "input_shape=(64, 64, 1)"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"weights": "resnet"}, None),
    ],
)
def test_bad_arguments(kwargs, shown):
    with pytest.raises((errors.ConfigurationError, errors.WeightsError)) as info:
        transfer.densenet_classifier(**{"weights": None, **kwargs})
    if shown:
        assert shown in str(info.value)
    else:
        assert "resnet" in str(info.value)


def test_inception_bad_input_shape():
    with pytest.raises(errors.ConfigurationError, match=r"at least 75.*input_shape=\(64, 64, 3\)"):
        transfer.inceptionv3_classifier(input_shape=(64, 64, 3), weights=None)


@pytest.mark.parametrize("kwargs", [{"conv_filters": 0}, {"dense_units": 2.5}, {"dropout": -0.1}])
def test_new_densenet_bad_head(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(errors.ConfigurationError, match=f"{name}={value}"):
        transfer.new_densenet(weights=None, **kwargs)


def test_new_densenet(new_densenet, model_contract):
    assert new_densenet.name == "new_densenet"
    assert new_densenet.output_shape == (None, 2)
    _assert_flat(new_densenet)
    assert new_densenet.layers[1].mode == "torch"
    tail = new_densenet.layers[-8:]
    assert [layer.name for layer in tail] == [
        "relu", "extra_conv", "last_conv", "avg_pool", "fc", "dropout", "fc_bn", "probabilities"]
    assert [type(layer) for layer in tail[1:]] == [
        keras.layers.Conv2D, keras.layers.Identity, keras.layers.GlobalAveragePooling2D, keras.layers.Dense,
        keras.layers.Dropout, keras.layers.BatchNormalization, keras.layers.Dense]
    conv = new_densenet.get_layer("extra_conv")
    assert (conv.filters, conv.kernel_size, conv.padding) == (256, (3, 3), "same")
    assert conv.activation is keras.activations.relu
    assert new_densenet.get_layer("last_conv").input is conv.output
    assert new_densenet.get_layer("fc").units == 256
    assert new_densenet.get_layer("fc").activation is keras.activations.relu
    assert new_densenet.get_layer("dropout").rate == 0.5
    model_contract(new_densenet, _pixels(2, 64, seed=1))


def test_inceptionv3_classifier(model_contract):
    model = transfer.inceptionv3_classifier(input_shape=(75, 75, 3), num_classes=2, weights=None)
    assert model.name == "inceptionv3_classifier"
    assert model.output_shape == (None, 2)
    _assert_flat(model)
    assert model.layers[1].mode == "tf"
    assert model.get_layer("last_conv").input is model.get_layer("mixed10").output
    assert [layer.name for layer in model.layers[-3:]] == ["last_conv", "avg_pool", "probabilities"]
    model_contract(model, _pixels(2, 75, seed=2))


def test_weights_file_round_trip(densenet, tmp_path):
    path = tmp_path / "densenet.weights.h5"
    densenet.save_weights(path)
    again = transfer.densenet_classifier(input_shape=(64, 64, 3), num_classes=3, weights=str(path))
    loaded, saved = again.get_weights(), densenet.get_weights()
    assert len(loaded) == len(saved)
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file(tmp_path):
    with pytest.raises(errors.WeightsError, match="no such weights file"):
        transfer.new_densenet(weights=str(tmp_path / "absent.weights.h5"))


@pytest.mark.parametrize(
    "builder, constructor",
    [
        (transfer.densenet_classifier, "DenseNet121"),
        (transfer.new_densenet, "DenseNet121"),
        (transfer.inceptionv3_classifier, "InceptionV3"),
    ],
)
def test_imagenet_offline(builder, constructor, monkeypatch):
    def offline(**kwargs):
        assert kwargs["weights"] == "imagenet"
        raise OFFLINE

    monkeypatch.setattr(keras.applications, constructor, offline)
    with pytest.raises(errors.WeightsError, match="weights=None") as info:
        builder()
    assert constructor in str(info.value)


@pytest.mark.slow
def test_full_size_builds():
    from covid_keras.models import detl

    densenet = transfer.densenet_classifier(weights=None)
    assert densenet.output_shape == (None, 3)
    assert densenet.get_layer("last_conv").output.shape == (None, 7, 7, 1024)
    assert densenet.count_params() == 7_040_579
    del densenet

    new = transfer.new_densenet(weights=None)
    assert new.output_shape == (None, 3)
    assert new.get_layer("extra_conv").output.shape == (None, 7, 7, 256)
    assert new.count_params() == 9_464_643
    del new

    inception = transfer.inceptionv3_classifier(weights=None)
    assert inception.output_shape == (None, 3)
    assert inception.get_layer("last_conv").output.shape == (None, 8, 8, 2048)
    assert inception.count_params() == 21_808_931
    del inception

    cnn = detl.detl_cnn()
    assert cnn.output_shape == (None, 2)
    assert cnn.get_layer("last_conv").output.shape == (None, 49, 49, 128)
    assert cnn.get_layer("flatten").output.shape == (None, 73_728)
    assert cnn.get_layer("fc1").count_params() == 73_728 * 256 + 256
    assert cnn.count_params() == 19_194_786
