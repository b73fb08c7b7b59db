"""RandomAffine: config, saving, training semantics, ranges, known transforms."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from covid_keras.augment import (  # noqa: E402
    PAPER001_AUGMENTATION,
    RandomAffine,
    paper001_augmentation,
    separate_layers_augmentation,
)

# Everything off: the identity warp, so one transform can be switched on at a time.
IDENTITY = {"rotation": 0.0, "translation": 0.0, "zoom": (1.0, 1.0), "shear": 0.0,
            "horizontal_flip": False, "brightness": (1.0, 1.0)}


def _images(n=4, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels)).astype("float32")


def _transformation(n, **values):
    """An explicit transformation dict (identity unless overridden)."""
    base = {"angle": 0.0, "tx": 0.0, "ty": 0.0, "zoom": 1.0, "shear": 0.0, "flip": False,
            "brightness": 1.0}
    base.update(values)
    return {k: np.full((n,), v, dtype=bool if k == "flip" else "float32") for k, v in base.items()}


def _layer(**overrides):
    return RandomAffine(**{**IDENTITY, **overrides})


# --- configuration and saving -----------------------------------------------

def test_config_round_trip():
    layer = RandomAffine(rotation=(-10, 30), translation=5, zoom=0.1, shear=(0.0, 0.3),
                         horizontal_flip=False, brightness=(0.5, 1.5), fill_mode="reflect",
                         fill_value=7.0, interpolation="nearest", value_range=(0, 1), seed=3,
                         name="aug")
    config = layer.get_config()
    clone = RandomAffine.from_config(config)
    assert clone.get_config() == config
    assert config["name"] == "aug" and config["zoom"] == 0.1 and config["rotation"] == (-10, 30)
    # A JSON round trip turns tuples into lists; the layer turns them back.
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == config


def test_paper001_defaults():
    layer = paper001_augmentation(seed=0)
    config = layer.get_config()
    assert {k: config[k] for k in PAPER001_AUGMENTATION} == PAPER001_AUGMENTATION
    assert (layer.fill_mode, layer.fill_value, layer.interpolation) == ("constant", 0.0, "bilinear")
    assert RandomAffine().get_config()["rotation"] == 25.0  # the class defaults are the paper's


@pytest.mark.parametrize("kwargs", [
    {"rotation": (30, 10)}, {"rotation": "25"}, {"translation": (1, 2, 3)}, {"zoom": (0.0, 1.0)},
    {"brightness": (-0.5, 1.0)}, {"fill_mode": "mirror"}, {"interpolation": "bicubic"},
    {"value_range": (255, 0)}, {"shear": True},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError, match="Received"):
        RandomAffine(**kwargs)


def test_keras_save_load_safe_mode(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = paper001_augmentation(seed=1)(inputs)
    x = keras.layers.Conv2D(2, 3)(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("augmentation"), RandomAffine)
    assert loaded.get_layer("augmentation").get_config() == model.get_layer("augmentation").get_config()
    images = _images()
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)


# --- training semantics ---------------------------------------------------------

def test_training_false_is_identity():
    layer = paper001_augmentation(seed=0)
    images = _images()
    assert np.array_equal(np.asarray(layer(images, training=False)), images)
    uint8 = images.astype("uint8")
    out = layer(uint8, training=False)
    assert out.dtype == "uint8" and np.array_equal(np.asarray(out), uint8)


def test_model_augments_in_fit_only():
    inputs = keras.Input((16, 16, 3))
    outputs = paper001_augmentation(seed=0)(inputs)
    model = keras.Model(inputs, outputs)
    images = _images()
    assert np.array_equal(model.predict(images, verbose=0), images)
    assert not np.allclose(np.asarray(model(images, training=True)), images)

    # One fit step in graph mode, the augmentation in front of a tiny classifier.
    x = keras.layers.Flatten()(paper001_augmentation(seed=0)(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    classifier.compile("adam", "sparse_categorical_crossentropy")
    history = classifier.fit(images, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_shape_dtype_and_range_preserved():
    layer = paper001_augmentation(seed=0)
    images = _images(n=8, size=32)
    out = np.asarray(layer(images, training=True))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, images)

    uint8 = layer(images.astype("uint8"), training=True)
    assert uint8.dtype == "uint8" and tuple(uint8.shape) == images.shape

    single = layer(images[0], training=True)  # one unbatched image
    assert tuple(single.shape) == images.shape[1:]


def test_dataset_map():
    layer = paper001_augmentation(seed=0)
    images = _images(n=8, size=24)
    batched = (tf.data.Dataset.from_tensor_slices(images).batch(4)
               .map(lambda x: layer(x, training=True), num_parallel_calls=tf.data.AUTOTUNE))
    out = np.concatenate([b.numpy() for b in batched])
    assert out.shape == images.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0
    assert not np.allclose(out, images)
    # Two epochs draw different augmentations (the seed generator advances in the graph).
    again = np.concatenate([b.numpy() for b in batched])
    assert not np.allclose(out, again)

    unbatched = tf.data.Dataset.from_tensor_slices(images).map(lambda x: layer(x, training=True))
    assert [tuple(x.shape) for x in unbatched.take(2)] == [(24, 24, 3)] * 2


def test_seeded_determinism():
    images = _images()
    first = np.asarray(paper001_augmentation(seed=42)(images, training=True))
    second = np.asarray(paper001_augmentation(seed=42)(images, training=True))
    other = np.asarray(paper001_augmentation(seed=43)(images, training=True))
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


# --- drawn parameters -------------------------------------------------------------

def test_drawn_parameters_follow_the_ranges():
    layer = paper001_augmentation(seed=0)
    drawn = {k: np.asarray(v) for k, v in layer.get_random_transformation(2000).items()}
    expected = {"angle": (-25.0, 25.0), "tx": (-20.0, 20.0), "ty": (-20.0, 20.0),
                "zoom": (0.8, 1.2), "shear": (-0.2, 0.2), "brightness": (0.8, 1.2)}
    for name, (low, high) in expected.items():
        values = drawn[name]
        assert values.shape == (2000,), name
        assert low <= values.min() and values.max() <= high, name
        span = high - low  # uniform: 2000 draws reach within 2 % of both ends
        assert values.min() < low + 0.02 * span and values.max() > high - 0.02 * span, name
        assert abs(values.mean() - (low + high) / 2) < 0.05 * span, name
    assert drawn["flip"].dtype == bool and 0.45 < drawn["flip"].mean() < 0.55
    # The columns are independent draws, not one number reused.
    assert abs(np.corrcoef(drawn["angle"], drawn["tx"])[0, 1]) < 0.1

    no_flip = _layer(rotation=(5, 5), seed=0).get_random_transformation(100)
    assert not np.asarray(no_flip["flip"]).any()
    assert np.all(np.asarray(no_flip["angle"]) == 5.0)


def test_range_conventions():
    layer = RandomAffine(rotation=10, translation=(-3, 7), zoom=0.25, shear=(0.1, 0.1),
                         brightness=0.5, seed=0)
    drawn = {k: np.asarray(v) for k, v in layer.get_random_transformation(500).items()}
    assert -10 <= drawn["angle"].min() and drawn["angle"].max() <= 10 and drawn["angle"].min() < -9
    assert -3 <= drawn["tx"].min() and drawn["ty"].max() <= 7
    assert 0.75 <= drawn["zoom"].min() and drawn["zoom"].max() <= 1.25
    assert np.all(drawn["shear"] == np.float32(0.1))
    assert 0.5 <= drawn["brightness"].min() and drawn["brightness"].max() <= 1.5


# --- known transforms -------------------------------------------------------------

def _square(size=8, channels=2):
    return np.arange(size * size * channels, dtype="float32").reshape(size, size, channels)


def test_rotation_90_is_rot90():
    image = _square()
    nearest = _layer(rotation=(90, 90), interpolation="nearest", seed=0)
    np.testing.assert_array_equal(np.asarray(nearest(image[None], training=True))[0],
                                  np.rot90(image, 1, axes=(0, 1)))
    bilinear = _layer(rotation=(-90, -90), seed=0)
    np.testing.assert_allclose(np.asarray(bilinear(image[None], training=True))[0],
                               np.rot90(image, -1, axes=(0, 1)), atol=1e-3)


def test_translation_shifts():
    image = _square()
    layer = _layer(seed=0)
    out = np.asarray(layer.transform_images(image[None], _transformation(1, tx=5.0, ty=0.0)))[0]
    expected = np.zeros_like(image)
    expected[:, 5:] = image[:, :-5]  # content moves 5 px right, black fill
    np.testing.assert_array_equal(out, expected)

    collapsed = _layer(translation=(-2, -2), seed=0)  # x and y both -2: left and up
    out = np.asarray(collapsed(image[None], training=True))[0]
    expected = np.zeros_like(image)
    expected[:-2, :-2] = image[2:, 2:]
    np.testing.assert_array_equal(out, expected)


def test_zoom_2_is_centre_crop_upsampled():
    image = _square()
    layer = _layer(zoom=(2, 2), interpolation="nearest", seed=0)
    out = np.asarray(layer(image[None], training=True))[0]
    crop = image[2:6, 2:6]  # the centre half
    np.testing.assert_array_equal(out, np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1))


def test_flip_and_brightness():
    image = _square()
    layer = _layer(seed=0)
    out = np.asarray(layer.transform_images(
        np.stack([image, image]), {**_transformation(2), "flip": np.array([True, False])}))
    np.testing.assert_array_equal(out[0], image[:, ::-1])
    np.testing.assert_array_equal(out[1], image)

    bright = _layer(brightness=(2, 2), seed=0)
    np.testing.assert_array_equal(np.asarray(bright(image[None] * 2, training=True))[0],
                                  np.clip(image * 4, 0, 255))

    flips = _layer(horizontal_flip=True, seed=0)
    outs = np.asarray(flips(np.stack([image] * 64), training=True))
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, image) for f, o in zip(flipped, outs))
    assert 0 < sum(flipped) < 64


def test_composed_transform_matches_numpy():
    """Rotation, translation, zoom, shear and flip together, against an independent numpy model.

    The image is a linear ramp, which bilinear interpolation reproduces exactly,
    so wherever the pre-image lies inside the input the output equals the ramp there.
    """
    size = 32
    ys, xs = np.mgrid[0:size, 0:size].astype("float64")
    ramp = lambda x, y: 3.0 * x + 5.0 * y + 10.0  # noqa: E731
    image = ramp(xs, ys)[..., None].astype("float32")
    params = {"angle": 20.0, "tx": 3.0, "ty": -2.0, "zoom": 1.3, "shear": 0.15, "flip": True}
    out = _layer(seed=0).transform_images(image[None], _transformation(1, **params))
    out = np.asarray(out)[0, ..., 0]

    c = (size - 1) / 2.0
    theta = np.deg2rad(params["angle"])

    def move(dx, dy):
        return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype="float64")

    # Counter-clockwise on screen, y pointing down.
    rotate = np.array([[np.cos(theta), np.sin(theta), 0],
                       [-np.sin(theta), np.cos(theta), 0],
                       [0, 0, 1]])
    shear = np.array([[1, params["shear"], 0], [0, 1, 0], [0, 0, 1]])
    zoom = np.diag([params["zoom"], params["zoom"], 1.0])
    flip = np.diag([-1.0, 1.0, 1.0])
    forward = move(c + params["tx"], c + params["ty"]) @ rotate @ shear @ zoom @ flip @ move(-c, -c)
    pre = np.linalg.inv(forward) @ np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])
    x_in, y_in = pre[0].reshape(size, size), pre[1].reshape(size, size)
    inside = (x_in >= 0) & (x_in <= size - 1) & (y_in >= 0) & (y_in <= size - 1)
    assert inside.mean() > 0.4
    np.testing.assert_allclose(out[inside], ramp(x_in, y_in)[inside], atol=0.05)
    far_outside = (x_in < -1) | (x_in > size) | (y_in < -1) | (y_in > size)
    assert far_outside.any() and np.all(out[far_outside] == 0.0)


# --- against the stock Keras layers ----------------------------------------------

@pytest.mark.parametrize("ours, theirs", [
    ({"rotation": (30, 30)}, lambda: keras.layers.RandomRotation(
        (30 / 360, 30 / 360), fill_mode="constant", seed=0)),
    ({"zoom": (1.25, 1.25)}, lambda: keras.layers.RandomZoom(
        (1 / 1.25 - 1, 1 / 1.25 - 1), fill_mode="constant", seed=0)),
    ({"translation": (4, 4)}, lambda: keras.layers.RandomTranslation(
        (4 / 24, 4 / 24), (4 / 24, 4 / 24), fill_mode="constant", seed=0)),
])
def test_matches_keras_layer_with_fixed_parameter(ours, theirs):
    images = _images(n=2, size=24)
    expected = np.asarray(theirs()(images, training=True))
    out = np.asarray(_layer(**ours, seed=0)(images, training=True))
    np.testing.assert_allclose(out, expected, atol=0.05)


def test_separate_layers_baseline():
    model = separate_layers_augmentation(seed=0, image_size=(32, 32))
    names = [type(layer).__name__ for layer in model.layers]
    assert names == ["RandomRotation", "RandomTranslation", "RandomZoom", "RandomShear",
                     "RandomBrightness", "RandomFlip"]
    rotation, translation, zoom = model.layers[:3]
    assert np.allclose(rotation.factor, (-25 / 360, 25 / 360))
    assert np.allclose((translation.width_lower, translation.width_upper), (-20 / 32, 20 / 32))
    # RandomZoom's sampling factor 1 + f is the inverse of our magnification 0.8-1.2.
    assert np.allclose(1 / (1 + np.array(zoom.height_factor)), (1.2, 0.8))
    images = _images(n=4, size=32)
    out = np.asarray(model(images, training=True))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 255
    assert np.array_equal(np.asarray(model(images, training=False)), images)
    # Same ranges, so the geometric layers leave about as much black fill as the
    # fused warp (not RandomBrightness: it adds to the fill too). A loose bound:
    # the baseline shears about the corner, not the centre.
    many = np.full((64, 32, 32, 1), 128.0, "float32")
    geometric = keras.Sequential(separate_layers_augmentation(seed=1, image_size=(32, 32)).layers[:4])
    fill = [np.mean(np.asarray(aug(many, training=True)) == 0.0)
            for aug in (geometric, paper001_augmentation(seed=1))]
    assert 0.1 < fill[1] < 0.9 and 0.5 < fill[0] / fill[1] < 2.0, fill
