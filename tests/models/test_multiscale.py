"""Paper 001's multi-scale ResNet50, patient heads and ensemble."""

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.models import (
    bilstm_head,
    ensemble_mlp,
    maxpool_head,
    multiscale_resnet50,
    pad_sequences,
    weighted_features,
)


@pytest.fixture(scope="module")
def small_multiscale():
    return multiscale_resnet50(input_shape=(64, 64, 3), weights=None)


def test_multiscale_named_layers_and_widths(small_multiscale):
    m = small_multiscale
    assert m.name == "multiscale_resnet50"
    assert m.get_layer("stage3").output.shape[-1] == 512
    assert m.get_layer("stage4").output.shape[-1] == 1024
    assert m.get_layer("stage5").output.shape[-1] == 2048
    assert m.get_layer("multiscale_concat").output.shape == (None, 3584)
    assert m.get_layer("features").output.shape == (None, 1024)
    assert m.get_layer("probabilities").output.shape == (None, 3)
    assert m.get_layer("last_conv").output.shape[-1] == 2048
    # Flat: no nested Model among the layers (Grad-CAM needs it).
    import keras

    assert not any(isinstance(layer, keras.Model) for layer in m.layers)
    assert m.layers[1].name == "preprocess"  # takes raw pixels


def test_multiscale_contract(small_multiscale, model_contract):
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    model_contract(small_multiscale, x, gradcam_layers=("stage3", "stage4", "stage5", "last_conv"))


def test_multiscale_bad_arguments():
    with pytest.raises(errors.ConfigurationError, match="input_shape"):
        multiscale_resnet50(input_shape=(64, 64, 1), weights=None)
    with pytest.raises(errors.ConfigurationError, match="`weights` must be one of"):
        multiscale_resnet50(input_shape=(64, 64, 3), weights=3)
    with pytest.raises(errors.WeightsError, match="no such weights file"):
        multiscale_resnet50(input_shape=(64, 64, 3), weights="/nonexistent.weights.h5")


def test_multiscale_imagenet_offline_is_a_clear_error(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(errors.WeightsError, match="ResNet50 could not be downloaded.*weights=None"):
        multiscale_resnet50(input_shape=(64, 64, 3), weights="imagenet")


def test_multiscale_weights_file_round_trip(small_multiscale, tmp_path):
    path = str(tmp_path / "w.weights.h5")
    small_multiscale.save_weights(path)
    again = multiscale_resnet50(input_shape=(64, 64, 3), weights=path)
    x = np.full((1, 64, 64, 3), 100.0, "float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), small_multiscale.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_multiscale_full_size_build():
    m = multiscale_resnet50(weights=None)
    assert m.input_shape == (None, 224, 224, 3)
    assert m.get_layer("stage5").output.shape == (None, 7, 7, 2048)
    # ResNet50 base 23,587,712 + features 3584*1024+1024 + probabilities 1024*3+3.
    assert m.count_params() == 23_587_712 + 3_671_040 + 3_075


# --------------------------------------------------------------------------
# Patient heads
# --------------------------------------------------------------------------


@pytest.mark.parametrize("builder,dim", [(maxpool_head, 1024), (maxpool_head, 3072),
                                         (bilstm_head, 1024), (bilstm_head, 3072)])
def test_heads_padding_never_changes_the_answer(builder, dim):
    rng = np.random.default_rng(1)
    studies = [rng.normal(size=(n, dim)).astype("float32") for n in (3, 7, 10)]
    head = builder(feature_dim=dim)
    short = head.predict(list(pad_sequences(studies, max_slices=10)), verbose=0)
    long = head.predict(list(pad_sequences(studies, max_slices=50)), verbose=0)
    np.testing.assert_allclose(short, long, atol=1e-5)
    # Garbage in the padded positions is ignored too.
    x, m = pad_sequences(studies, max_slices=50)
    x[~m] = 1e3
    np.testing.assert_allclose(head.predict([x, m], verbose=0), long, atol=1e-5)


def test_head_sizes_and_regularisation():
    mp = maxpool_head(feature_dim=3072)
    assert mp.name == "maxpool_weighted_head"
    assert mp.get_layer("hidden").units == 512 and mp.get_layer("probabilities").units == 3
    bl = bilstm_head(feature_dim=1024)
    assert bl.name == "bilstm_head"
    assert bl.get_layer("bilstm").output.shape[-1] == 1024  # 512 per direction
    assert bl.get_layer("hidden").units == 1024
    reg = bl.get_layer("hidden").kernel_regularizer.get_config()
    assert reg == {"l1": pytest.approx(1e-5), "l2": pytest.approx(1e-4)}


@pytest.mark.parametrize("builder", [maxpool_head, bilstm_head])
def test_heads_contract(builder, model_contract):
    head = builder(feature_dim=16)
    x, m = pad_sequences([np.ones((2, 16), "float32"), np.full((4, 16), 0.5, "float32"),
                          np.full((6, 16), -0.5, "float32")], max_slices=6)
    model_contract(head, [x, m], gradcam_layers=())


def test_ensemble_contract(model_contract):
    x = np.random.default_rng(0).dirichlet(np.ones(3), size=(3, 4)).reshape(3, 12).astype("float32")
    model_contract(ensemble_mlp(), x, gradcam_layers=())


def test_weighted_features():
    f = np.arange(6, dtype="float32").reshape(2, 3)
    p = np.array([[1.0, 0.0], [0.25, 0.75]], "float32")
    np.testing.assert_allclose(weighted_features(f, p), [[0, 1, 2, 0, 0, 0], [0.75, 1, 1.25, 2.25, 3, 3.75]])
    assert weighted_features(np.ones((5, 1024)), np.ones((5, 3)) / 3).shape == (5, 3072)
    with pytest.raises(errors.ConfigurationError):
        weighted_features(np.ones((5, 4)), np.ones((4, 3)))


def test_pad_sequences_refuses_truncation():
    with pytest.raises(errors.ConfigurationError, match="masking, not truncation"):
        pad_sequences([np.ones((5, 4))], max_slices=3)


def test_ensemble_mlp():
    e = ensemble_mlp()
    assert e.input_shape == (None, 12)
    assert e.get_layer("hidden").units == 10 and e.output_shape == (None, 3)
    assert e.count_params() == 12 * 10 + 10 + 10 * 3 + 3
