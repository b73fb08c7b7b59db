"""Paper 003's DETL CNN and its domain extension (64 x 64 inputs)."""

import keras
import numpy as np
import pytest

from covid_keras import errors
from covid_keras.models import detl

SHAPE = (64, 64, 3)

SEQUENCE = [
    ("image", keras.layers.InputLayer),
    ("rescale", keras.layers.Rescaling),
    ("block1_conv1", keras.layers.Conv2D),
    ("block1_conv2", keras.layers.Conv2D),
    ("block1_pool", keras.layers.MaxPooling2D),
    ("block2_conv1", keras.layers.Conv2D),
    ("block2_conv2", keras.layers.Conv2D),
    ("block2_pool", keras.layers.MaxPooling2D),
    ("block3_conv1", keras.layers.Conv2D),
    ("block3_conv2", keras.layers.Conv2D),
    ("last_conv", keras.layers.Identity),
    ("block3_pool", keras.layers.MaxPooling2D),
    ("flatten", keras.layers.Flatten),
    ("fc1", keras.layers.Dense),
    ("fc2", keras.layers.Dense),
    ("probabilities", keras.layers.Dense),
]

# At 64 x 64: 64 -> 62 -> 60 -> 30 -> 28 -> 26 -> 13 -> 11 -> 9 -> 4; 4 * 4 * 128 = 2048.
PARAM_SHAPES = {
    "block1_conv1": [(3, 3, 3, 32), (32,)],
    "block1_conv2": [(3, 3, 32, 32), (32,)],
    "block2_conv1": [(3, 3, 32, 64), (64,)],
    "block2_conv2": [(3, 3, 64, 64), (64,)],
    "block3_conv1": [(3, 3, 64, 128), (128,)],
    "block3_conv2": [(3, 3, 128, 128), (128,)],
    "fc1": [(2048, 256), (256,)],
    "fc2": [(256, 128), (128,)],
    "probabilities": [(128, 2), (2,)],
}

FROZEN = {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}
TRAINABLE = {"block3_conv1", "block3_conv2", "fc1", "fc2", "probabilities"}


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + SHAPE).astype("float32")


@pytest.fixture(scope="module")
def source():
    keras.utils.set_random_seed(3)
    return detl.detl_cnn(input_shape=SHAPE, num_classes=2)


def test_layer_sequence(source):
    assert source.name == "detl_cnn"
    assert [(layer.name, type(layer)) for layer in source.layers] == SEQUENCE
    convs = [layer for layer in source.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    for conv in convs:
        assert conv.padding == "valid" and conv.kernel_size == (3, 3)
        assert conv.activation is keras.activations.relu
    pools = [layer for layer in source.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 3 and all(p.pool_size == (2, 2) and p.padding == "valid" for p in pools)
    assert [source.get_layer(n).units for n in ("fc1", "fc2")] == [256, 128]
    assert source.get_layer("fc1").activation is keras.activations.relu
    assert source.get_layer("probabilities").activation is keras.activations.softmax
    assert source.get_layer("last_conv").input is source.get_layer("block3_conv2").output
    assert source.get_layer("rescale").scale == pytest.approx(1 / 255)
    assert source.get_layer("flatten").output.shape == (None, 2048)


def test_parameter_shapes(source):
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in source.layers if layer.weights}
    assert shapes == PARAM_SHAPES


def test_contract(source, model_contract):
    assert source.output_shape == (None, 2)
    model_contract(source, _pixels(2))


@pytest.mark.parametrize(
    "kwargs, shown",
    [({"num_classes": 1}, "num_classes=1"), ({"input_shape": (32, 32, 3)}, "input_shape=(32, 32, 3)"),
     ({"weights": "imagenet"}, "imagenet")],
)
def test_bad_arguments(kwargs, shown):
    with pytest.raises(errors.CovidKerasError) as info:
        detl.detl_cnn(**kwargs)
    assert shown in str(info.value)


def test_weights_file(source, tmp_path):
    path = tmp_path / "detl.weights.h5"
    source.save_weights(path)
    again = detl.detl_cnn(input_shape=SHAPE, weights=str(path))
    x = _pixels(2, seed=1)
    np.testing.assert_array_equal(again.predict(x, verbose=0), source.predict(x, verbose=0))


def test_extend_structure(source, model_contract):
    extended = detl.detl_extend(source, num_classes=4)
    assert extended.name == "detl_extend"
    assert extended.output_shape == (None, 4)
    assert [layer.name for layer in extended.layers] == [name for name, _ in SEQUENCE]
    assert extended.get_layer("probabilities").activation is keras.activations.softmax
    assert extended.get_layer("probabilities").input is extended.get_layer("fc2").output
    # A copy: new layer objects holding the source's weights.
    for name in PARAM_SHAPES:
        if name == "probabilities":
            continue
        assert extended.get_layer(name) is not source.get_layer(name)
        for a, b in zip(extended.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with_weights = {layer.name for layer in extended.layers if layer.weights}
    assert {n for n in with_weights if extended.get_layer(n).trainable} == TRAINABLE
    assert {n for n in with_weights if not extended.get_layer(n).trainable} == FROZEN
    assert not extended.get_layer("rescale").trainable
    assert all(layer.trainable for layer in source.layers)
    probs = model_contract(extended, _pixels(2, seed=2))
    assert probs.shape == (2, 4)


def test_extend_trains_only_the_last_block(source):
    x = _pixels(4, seed=4)
    before_source = [w.copy() for w in source.get_weights()]
    source_probs = source.predict(x, verbose=0)

    extended = detl.detl_extend(source, num_classes=4)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in extended.layers if layer.weights}
    from covid_keras.recipes import DETL_CNN
    from covid_keras.training.schedules import build_optimizer

    phase2 = DETL_CNN.stages[1]
    paper = build_optimizer(phase2.optimizer, phase2.schedule)
    assert isinstance(paper, keras.optimizers.SGD)
    assert (float(paper.learning_rate), paper.momentum) == (pytest.approx(1e-4), 0.9)
    assert phase2.trainable == f"from:{detl.DEFAULT_FREEZE_UNTIL}"  # the recipe trains what detl_extend leaves free
    # A larger step than the paper's 1e-4, so every trainable weight visibly moves.
    extended.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                     loss="categorical_crossentropy")
    y = keras.utils.to_categorical([0, 1, 2, 3], 4)
    extended.train_on_batch(x, y)
    extended.train_on_batch(x, y)

    for name, weights in before.items():
        after = extended.get_layer(name).get_weights()
        if name in FROZEN:
            for a, b in zip(after, weights):
                np.testing.assert_array_equal(a, b)
        else:
            assert name in TRAINABLE
            assert not np.array_equal(after[0], weights[0]), name
    # The source is untouched and still predicts as before.
    for a, b in zip(source.get_weights(), before_source):
        np.testing.assert_array_equal(a, b)
    assert all(layer.trainable for layer in source.layers)
    np.testing.assert_array_equal(source.predict(x, verbose=0), source_probs)


def test_extend_freeze_until(source):
    everything = detl.detl_extend(source, num_classes=3, freeze_until=None)
    assert everything.output_shape == (None, 3)
    assert all(layer.trainable for layer in everything.layers)
    fc_only = detl.detl_extend(source, freeze_until="fc1")
    assert {layer.name for layer in fc_only.layers if layer.weights and layer.trainable} == {
        "fc1", "fc2", "probabilities"}


@pytest.mark.parametrize(
    "kwargs, shown",
    [({"freeze_until": "block9_conv1"}, "freeze_until='block9_conv1'"), ({"num_classes": 0}, "num_classes=0")],
)
def test_extend_bad_arguments(source, kwargs, shown):
    with pytest.raises(errors.ConfigurationError) as info:
        detl.detl_extend(source, **kwargs)
    assert shown in str(info.value)


def test_extend_needs_a_detl_model():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
    with pytest.raises(errors.ConfigurationError, match="probabilities"):
        detl.detl_extend(plain)
    with pytest.raises(errors.ConfigurationError, match="source_model=str"):
        detl.detl_extend("model.keras")
