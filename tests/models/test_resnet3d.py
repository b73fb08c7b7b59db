"""Paper 000's 3-D ResNet: shapes, names, head, parameter counts and I3D inflation.

Everything runs on small volumes with random weights: no ImageNet download.
The 2-D ResNet50 that is inflated gets random BatchNormalization statistics
so that BN is not the identity and the inflation checks cover it.
"""

import numpy as np
import pytest

import keras

from covid_keras import errors
from covid_keras.models import resnet3d
from covid_keras.models.resnet3d import inflate_from, resnet50_3d

S = 64  # 2-D image size and 3-D height/width: conv5 is then 2 x 2
D = 64  # 3-D depth: last_conv then has 2 depth positions


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c),
                               rng.uniform(-0.5, 0.5, c), rng.uniform(0.5, 2.0, c)])
    return model


def _resnet50_2d(size=S):
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))
    return _randomize_bn(model)


def _rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _inflated_param_count(model_2d):
    """Parameters a 3-D base inflated from ``model_2d`` must have, counted from the 2-D one."""
    total = 0
    for layer in model_2d.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            cin = 1 if layer.name == "conv1_conv" else cin  # grey CT: one input channel
            total += kh * kh * kw * cin * cout + (cout if layer.use_bias else 0)
        else:
            total += layer.count_params()
    return total


def _base(model):
    return keras.Model(model.input, model.get_layer("last_conv").output)


@pytest.fixture(scope="module")
def pair():
    """(random 2-D ResNet50 at S x S x 3 with non-trivial BN, 3-D resnet50_3d at D x S x S x 1)."""
    return _resnet50_2d(), resnet50_3d(input_shape=(D, S, S, 1))


@pytest.fixture(scope="module")
def small_models():
    return {depth: resnet50_3d(input_shape=(32, 32, 32, 1), depth=depth) for depth in (18, 34, 50)}


@pytest.mark.parametrize("depth, pooled", [(18, 512), (34, 512), (50, 2048)])
def test_output_shape_names_and_head(small_models, depth, pooled):
    model = small_models[depth]
    assert model.name == f"resnet{depth}_3d"
    x = np.random.default_rng(0).random((2, 32, 32, 32, 1)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    names = {layer.name for layer in model.layers}
    last_block = {18: 2, 34: 3, 50: 3}[depth]
    for name in ("conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool",
                 f"conv5_block{last_block}_out", "last_conv", "avg_pool", "fc1", "fc1_clipped_relu",
                 "probabilities"):
        assert name in names, name
    assert model.get_layer("last_conv").input is model.get_layer(f"conv5_block{last_block}_out").output
    assert model.get_layer("avg_pool").output.shape == (None, pooled)
    assert model.get_layer("fc1").output.shape == (None, 512)
    assert model.get_layer("fc1").kernel.shape == (pooled, 512)
    assert model.get_layer("probabilities").kernel.shape == (512, 3)
    assert model.get_layer("fc1_dropout").rate == 0.5
    assert isinstance(model.get_layer("pool1_pool"), keras.layers.MaxPooling3D)
    assert all(not isinstance(layer, keras.Model) for layer in model.layers)  # flat graph


def test_block_structure_mirrors_keras_resnet50(small_models):
    model, model_2d = small_models[50], _resnet50_2d(32)
    names_2d = [layer.name for layer in model_2d.layers[1:]]
    names_3d = [layer.name for layer in model.layers[1:]]
    assert names_3d[:len(names_2d)] == names_2d
    assert names_3d[len(names_2d):] == ["last_conv", "avg_pool", "fc1", "fc1_clipped_relu",
                                        "fc1_dropout", "probabilities"]
    for name in ("conv3_block1_0_conv", "conv3_block1_1_conv", "conv3_block1_2_conv", "conv1_conv"):
        conv2d, conv3d = model_2d.get_layer(name), model.get_layer(name)
        assert conv3d.strides == (conv2d.strides[0],) * 3
        assert conv3d.padding == conv2d.padding
        assert conv3d.use_bias == conv2d.use_bias
    assert model.get_layer("conv2_block1_1_bn").epsilon == pytest.approx(1.001e-5)
    basic = small_models[18]
    assert basic.get_layer("conv3_block1_1_conv").kernel.shape == (3, 3, 3, 64, 128)
    assert basic.get_layer("conv3_block1_1_conv").strides == (2, 2, 2)
    assert basic.get_layer("conv3_block1_0_conv").kernel.shape == (1, 1, 1, 64, 128)
    assert "conv2_block1_0_conv" not in {layer.name for layer in basic.layers}  # identity shortcut
    assert "conv2_block1_3_conv" not in {layer.name for layer in basic.layers}


def test_clipped_relu_clips_at_ten(small_models):
    layer = small_models[18].get_layer("fc1_clipped_relu")
    assert layer.ceiling == 10.0
    out = np.asarray(layer(np.array([[-5.0, 3.0, 10.0, 50.0]], "float32")))
    np.testing.assert_allclose(out, [[0.0, 3.0, 10.0, 10.0]])
    model = resnet50_3d(input_shape=(32, 32, 32, 1), depth=18, clip_ceiling=6.0)
    assert model.get_layer("fc1_clipped_relu").ceiling == 6.0


def test_argument_validation():
    with pytest.raises(errors.ConfigurationError, match=r"`depth` must be one of \(18, 34, 50\)\. Received: depth=101"):
        resnet50_3d(input_shape=(32, 32, 32, 1), depth=101)
    with pytest.raises(ValueError, match="depth=101"):  # also a ValueError, as Keras raises
        resnet50_3d(input_shape=(32, 32, 32, 1), depth=101)
    with pytest.raises(errors.ConfigurationError, match="input_shape=\\(224, 224, 1\\)"):
        resnet50_3d(input_shape=(224, 224, 1))
    with pytest.raises(errors.ConfigurationError, match="dropout"):
        resnet50_3d(input_shape=(32, 32, 32, 1), dropout=1.5)
    with pytest.raises(errors.ConfigurationError, match="num_classes"):
        resnet50_3d(input_shape=(32, 32, 32, 1), num_classes=0)
    with pytest.raises(errors.ConfigurationError, match="depth=50"):
        resnet50_3d(input_shape=(32, 32, 32, 1), depth=18, weights="imagenet-inflated")
    with pytest.raises(errors.ConfigurationError, match="weights"):
        resnet50_3d(input_shape=(32, 32, 32, 1), weights=3)


def test_parameter_count_matches_inflation(small_models):
    model_2d = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    model = small_models[50]
    expected = _inflated_param_count(model_2d)
    base = _base(model).count_params()
    assert base == expected == 46_234_752, (base, expected)
    head = 2048 * 512 + 512 + 512 * 3 + 3
    assert model.count_params() == base + head == 47_285_379
    # Basic-block depths: the same head on 512 pooled channels.
    for depth, base_count in ((18, 33_174_400), (34, 63_495_168)):
        m = small_models[depth]
        assert _base(m).count_params() == base_count
        assert m.count_params() == base_count + 512 * 512 + 512 + 512 * 3 + 3


def test_inflation_center_reproduces_2d_features(pair):
    """With centre taps, identical slices give the 2-D features at every depth position.

    Each inflated kernel reads only its own depth position; the stride-2
    convolutions and pool read even positions, never the zero padding
    (conv1: padded index 2o + 3 is original slice 2o), and pool1's max over
    depth sees ReLU outputs (>= 0) and padding zeros, so the max is the
    slice's value. So the pooled features match, and so does every position.
    """
    model_2d, model_3d = pair
    inflate_from(model_2d, model_3d, mode="center")
    rng = np.random.default_rng(1)
    slice_ = rng.random((S, S)).astype("float32")
    x3 = np.repeat(slice_[None, :, :, None], D, axis=0)[None]
    x2 = np.repeat(slice_[:, :, None], 3, axis=-1)[None]
    f3 = np.asarray(_base(model_3d)(x3, training=False))
    f2 = np.asarray(model_2d(x2, training=False))
    assert f3.shape == (1, D // 32, S // 32, S // 32, 2048)
    assert np.abs(f2).mean() > 1e-2  # features are not degenerate
    err = _rel_err(f3.mean(axis=(1, 2, 3)), f2.mean(axis=(1, 2)))
    assert err < 1e-4, err
    for d in range(f3.shape[1]):
        assert _rel_err(f3[:, d], f2) < 1e-4, d


@pytest.mark.parametrize("name, channels", [("conv1_conv", 1), ("conv3_block2_2_conv", 128),
                                            ("conv4_block1_1_conv", 512)])
def test_inflation_mean_reproduces_each_2d_conv(pair, name, channels):
    """Mean inflation: a depth-constant input gives each 2-D conv's output away from the borders."""
    model_2d, model_3d = pair
    inflate_from(model_2d, model_3d, mode="mean")
    layer_2d, layer_3d = model_2d.get_layer(name), model_3d.get_layer(name)
    k = layer_3d.kernel.shape[0]
    np.testing.assert_allclose(np.asarray(layer_3d.bias), np.asarray(layer_2d.bias))
    rng = np.random.default_rng(2)
    size = 24
    image = rng.standard_normal((1, size, size, channels)).astype("float32")
    x2 = np.repeat(image, 3, axis=-1) if name == "conv1_conv" else image  # grey in R, G and B
    x3 = np.repeat(image[:, None], 12, axis=1)
    y2 = np.asarray(layer_2d(x2))
    y3 = np.asarray(layer_3d(x3))
    assert y3.shape[2:] == y2.shape[1:]
    stride = layer_3d.strides[0]
    reach = (k // 2) if layer_3d.padding == "same" else 0  # output positions that read padding
    interior = range(-(-reach // stride), y3.shape[1] - -(-reach // stride))
    assert len(interior) >= 2
    for d in interior:
        err = _rel_err(y3[:, d], y2)
        assert err < 1e-5, (d, err)
    if reach:  # the border positions read zero padding over depth, so they differ (by 1/3 here)
        assert _rel_err(y3[:, 0], y2) > 0.1


def test_inflation_copies_batch_norm_and_kernels(pair):
    model_2d, model_3d = pair
    inflate_from(model_2d, model_3d, mode="center")
    for a, b in zip(model_2d.get_layer("conv4_block3_2_bn").get_weights(),
                    model_3d.get_layer("conv4_block3_2_bn").get_weights()):
        np.testing.assert_array_equal(a, b)
    k2 = np.asarray(model_2d.get_layer("conv2_block1_2_conv").kernel)
    k3 = np.asarray(model_3d.get_layer("conv2_block1_2_conv").kernel)
    np.testing.assert_array_equal(k3[1], k2)
    assert not k3[0].any() and not k3[2].any()
    c2 = np.asarray(model_2d.get_layer("conv1_conv").kernel)
    c3 = np.asarray(model_3d.get_layer("conv1_conv").kernel)
    np.testing.assert_allclose(c3[3], c2.sum(axis=2, keepdims=True), rtol=1e-6)
    inflate_from(model_2d, model_3d, mode="mean")
    np.testing.assert_allclose(np.asarray(model_3d.get_layer("conv2_block1_2_conv").kernel),
                               np.repeat(k2[None], 3, axis=0) / 3, rtol=1e-6)


def test_inflation_errors(pair, small_models):
    model_2d, model_3d = pair
    with pytest.raises(errors.ConfigurationError, match="`mode` must be one of .*Received: mode='edge'"):
        inflate_from(model_2d, model_3d, mode="edge")
    with pytest.raises(errors.ConfigurationError, match="conv2_block1_0_bn' of resnet50 has no counterpart in resnet34_3d"):
        inflate_from(model_2d, small_models[34])  # basic blocks: no projection in conv2
    two_channels = resnet50_3d(input_shape=(32, 32, 32, 2))
    with pytest.raises(errors.ConfigurationError, match=r"'conv1_conv' .*\(7, 7, 7, 3, 64\).* expects \[\(7, 7, 7, 2, 64\)"):
        inflate_from(model_2d, two_channels)  # RGB filters are summed for 1 channel only
    inputs = keras.Input((32, 32, 3))
    tiny = keras.Model(inputs, keras.layers.Conv2D(64, 7, name="conv1_conv")(inputs), name="tiny")
    with pytest.raises(errors.ConfigurationError, match="'conv1_bn' of resnet50_3d has no counterpart in tiny"):
        inflate_from(tiny, model_3d)


def test_model_contract_depth18(model_contract):
    model = resnet50_3d(input_shape=(64, 64, 64, 1), depth=18)
    x = np.random.default_rng(3).random((2, 64, 64, 64, 1)).astype("float32")
    model_contract(model, x, gradcam_layers=("last_conv",))


def test_imagenet_inflated_offline_is_a_weights_error(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
                        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(errors.WeightsError, match="ResNet50") as info:
        resnet50_3d(input_shape=(32, 32, 32, 1), weights="imagenet-inflated")
    message = str(info.value)
    assert "copy the Keras weight file" in message and "weights=None" in message


def test_imagenet_inflated_inflates_the_keras_resnet50(monkeypatch):
    calls, model_2d = [], _resnet50_2d(32)

    def fake_resnet50(**kwargs):
        calls.append(kwargs)
        return model_2d

    monkeypatch.setattr(keras.applications, "ResNet50", fake_resnet50)
    model = resnet50_3d(input_shape=(32, 32, 32, 1), weights="imagenet-inflated")
    assert calls == [dict(include_top=False, weights="imagenet", input_shape=(224, 224, 3))]
    kernel = np.asarray(model.get_layer("conv5_block3_2_conv").kernel)
    expected = np.asarray(model_2d.get_layer("conv5_block3_2_conv").kernel) / 3  # mean mode
    for tap in kernel:
        np.testing.assert_allclose(tap, expected, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras, on the mismatch
def test_weights_file(tmp_path):
    with pytest.raises(errors.WeightsError, match="missing.weights.h5"):
        resnet50_3d(input_shape=(32, 32, 32, 1), depth=18, weights=str(tmp_path / "missing.weights.h5"))
    model = resnet50_3d(input_shape=(32, 32, 32, 1), depth=18)
    path = str(tmp_path / "r18.weights.h5")
    model.save_weights(path)
    loaded = resnet50_3d(input_shape=(32, 32, 32, 1), depth=18, weights=path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(errors.WeightsError, match="r18.weights.h5"):
        resnet50_3d(input_shape=(32, 32, 32, 1), depth=34, weights=path)


def test_module_constants():
    assert resnet3d.DEPTHS == (18, 34, 50)
    assert resnet3d.INFLATION_MODES == ("mean", "center")
    assert resnet3d.WEIGHTS_CHOICES == (None, "imagenet-inflated")


@pytest.mark.slow
def test_full_size_build_parameter_count():
    model = resnet50_3d()
    assert model.input_shape == (None, 224, 224, 224, 1)
    model_2d = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    base, expected = _base(model).count_params(), _inflated_param_count(model_2d)
    assert base == expected, f"resnet50_3d base has {base:,} parameters, inflation predicts {expected:,}"
    total = model.count_params()
    assert total == expected + 2048 * 512 + 512 + 512 * 3 + 3, f"resnet50_3d has {total:,} parameters"
    assert model.get_layer("last_conv").output.shape == (None, 7, 7, 7, 2048)
