"""SaltAndPepper (paper 004): inference identity, noise statistics, channels, seeds, saving, fit."""

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from covid_keras import errors
from covid_keras.augment import SaltAndPepper


def _images(n=2, size=16, channels=3, seed=0):
    """Pixels in [1, 254]: never equal to salt (255) or pepper (0), so every change is seen."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 255, (n, size, size, channels)).astype("float32")


def _grey(n=1, size=512, seed=0):
    """A grey image repeated over 3 channels, as the xray pipeline makes it."""
    grey = _images(n, size, 1, seed)
    return np.repeat(grey, 3, axis=-1)


def _noised(layer, x):
    return np.asarray(layer(x, training=True))


# --------------------------------------------------------------------------
# Inference is the identity
# --------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda layer, x: layer(x),
    lambda layer, x: layer(x, training=False),
    lambda layer, x: layer(x, training=None),
])
def test_inference_is_bitwise_identity(call):
    x = _images()
    x[0, 0, 0, 0] = 0.123456789  # any float, not only integers
    layer = SaltAndPepper(density=0.5, seed=0)
    out = np.asarray(call(layer, x))
    assert out.dtype == x.dtype and out.tobytes() == x.tobytes()


def test_predict_is_identity_and_training_call_is_not():
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, SaltAndPepper(density=0.5, seed=1)(inputs))
    x = _images(4)
    assert np.array_equal(model.predict(x, verbose=0), x)
    assert np.array_equal(np.asarray(model(x, training=False)), x)
    assert not np.array_equal(np.asarray(model(x, training=True)), x)


# --------------------------------------------------------------------------
# The noise: how much, salt against pepper, per pixel across channels
# --------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_fraction_of_changed_pixels_is_the_density(density):
    x = _grey()  # 262,144 pixels
    out = _noised(SaltAndPepper(density=density, seed=3), x)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    changed = (out != x).any(axis=-1)
    pepper = (out == 0).all(axis=-1)
    salt = (out == 255).all(axis=-1)
    assert np.array_equal(changed, pepper | salt)  # a changed pixel is salt or pepper, nothing else
    assert np.array_equal(out[~changed], x[~changed])
    # Binomial counts: 6 standard deviations (a false failure about once in 10^9 runs).
    for observed, p in ((changed.mean(), density), (pepper.mean(), density / 2), (salt.mean(), density / 2)):
        assert abs(observed - p) < 6 * math.sqrt(p * (1 - p) / n), (observed, p)


def test_salt_and_pepper_split_evenly():
    out = _noised(SaltAndPepper(density=0.2, seed=4), _grey())
    salt, pepper = int((out[..., 0] == 255).sum()), int((out[..., 0] == 0).sum())
    # Given a noised pixel, salt has probability 1/2: 6 standard deviations of that binomial.
    total = salt + pepper
    assert abs(salt - total / 2) < 6 * math.sqrt(total / 4), (salt, pepper)


def test_configured_salt_and_pepper_values():
    x = np.full((1, 64, 64, 3), 0.5, "float32")
    out = _noised(SaltAndPepper(density=0.5, salt=1.0, pepper=-1.0, seed=5), x)
    assert set(np.unique(out).tolist()) == {-1.0, 0.5, 1.0}


def test_all_channels_of_a_pixel_agree():
    x = _grey(2, 64)
    out = _noised(SaltAndPepper(density=0.4, seed=6), x)
    assert np.array_equal(out, np.repeat(out[..., :1], 3, axis=-1))  # still grey
    # Different values in each channel: each channel changes exactly where the others do.
    colour = _images(2, 64, 3, seed=7)
    out = _noised(SaltAndPepper(density=0.4, seed=6), colour)
    changed = out != colour
    assert changed.any() and np.array_equal(changed, np.repeat(changed[..., :1], 3, axis=-1))


def test_one_image_and_integer_dtypes():
    layer = SaltAndPepper(density=0.5, seed=8)
    image = _images(1)[0]
    out = _noised(layer, image)
    assert out.shape == image.shape and (out != image).any()
    uint8 = _images(2).astype("uint8")
    out = _noised(layer, uint8)
    assert out.dtype == np.uint8 and set(np.unique(out[out != uint8]).tolist()) <= {0, 255}


def test_zero_density_changes_nothing():
    x = _images()
    assert np.array_equal(_noised(SaltAndPepper(density=0.0, seed=0), x), x)


# --------------------------------------------------------------------------
# Seeds, configuration, saving
# --------------------------------------------------------------------------


def test_seed_repeatability():
    x = _images(2, 64)
    first = _noised(SaltAndPepper(density=0.3, seed=11), x)
    assert np.array_equal(first, _noised(SaltAndPepper(density=0.3, seed=11), x))
    assert not np.array_equal(first, _noised(SaltAndPepper(density=0.3, seed=12), x))
    layer = SaltAndPepper(density=0.3, seed=11)
    assert np.array_equal(_noised(layer, x), first)
    assert not np.array_equal(_noised(layer, x), first)  # the generator moves on: new noise each batch


def test_config_round_trip():
    layer = SaltAndPepper(density=0.1, salt=200, pepper=10, seed=3, name="noise")
    config = layer.get_config()
    assert {k: config[k] for k in ("density", "salt", "pepper", "seed", "name")} == {
        "density": 0.1, "salt": 200.0, "pepper": 10.0, "seed": 3, "name": "noise"}
    assert SaltAndPepper.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is SaltAndPepper and restored.get_config() == config
    assert SaltAndPepper().density == 0.05


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = SaltAndPepper(density=0.2, seed=2, name="noise")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("noise").get_config() == model.get_layer("noise").get_config()
    x = _images(3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    noise = keras.Model(loaded.inputs, loaded.get_layer("noise").output)
    assert np.array_equal(noise.predict(x, verbose=0), x)


@pytest.mark.parametrize("kwargs", [
    {"density": 1.0}, {"density": -0.1}, {"density": 1.5}, {"density": "0.1"}, {"density": True},
    {"density": float("nan")}, {"salt": "white"}, {"pepper": float("inf")}, {"seed": 1.5},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(errors.ConfigurationError, match="Received"):
        SaltAndPepper(**kwargs)


# --------------------------------------------------------------------------
# In tf.data and under fit
# --------------------------------------------------------------------------


def test_dataset_map():
    layer = SaltAndPepper(density=0.3, seed=9)
    x = _images(8)
    batched = tf.data.Dataset.from_tensor_slices(x).batch(4).map(lambda b: layer(b, training=True),
                                                                  num_parallel_calls=tf.data.AUTOTUNE)
    out = np.concatenate([b.numpy() for b in batched])
    assert out.shape == x.shape and (out != x).any()
    assert set(np.unique(out[out != x]).tolist()) <= {0.0, 255.0}
    unbatched = [b.numpy() for b in tf.data.Dataset.from_tensor_slices(x).map(lambda i: layer(i))]
    assert np.array_equal(np.stack(unbatched), x)


def test_one_fit_step_inside_a_model():
    inputs = keras.Input((16, 16, 3))
    x = SaltAndPepper(density=0.1, seed=10)(inputs)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(2, 3)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(_images(4), np.array([0, 1, 0, 1]), batch_size=4, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
