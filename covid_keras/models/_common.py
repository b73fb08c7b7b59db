"""Weights handling and argument checks shared by every model builder."""

import numbers
import os

import keras

from covid_keras import errors

#: What ``weights=`` accepts everywhere (plus a file path).
WEIGHTS_CHOICES = (None, "imagenet")


def check_choice(name, value, choices):
    """Raises ConfigurationError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise errors.ConfigurationError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def check_image_shape(input_shape, min_size, channels=None):
    """Raises ConfigurationError unless ``input_shape`` is (H, W, C) with H, W >= ``min_size``.

    Args:
        input_shape: the builder's ``input_shape``.
        min_size: the smallest height and width the network accepts.
        channels: the required channel count, or None for any.
    """
    ok = (
        isinstance(input_shape, (tuple, list))
        and len(input_shape) == 3
        and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in input_shape)
        and input_shape[0] >= min_size and input_shape[1] >= min_size
        and (channels is None or input_shape[2] == channels)
    )
    if not ok:
        shape = f"(height, width, {channels})" if channels else "(height, width, channels)"
        raise errors.ConfigurationError(
            f"`input_shape` must be {shape} with height and width at least {min_size}. "
            f"Received: input_shape={input_shape!r}"
        )


def check_num_classes(num_classes):
    """Raises ConfigurationError unless ``num_classes`` is an integer >= 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise errors.ConfigurationError(f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}")


def check_positive_int(name, value):
    """Raises ConfigurationError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise errors.ConfigurationError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def check_rate(name, value):
    """Raises ConfigurationError unless ``value`` is a rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise errors.ConfigurationError(f"`{name}` must be a rate in [0, 1). Received: {name}={value!r}")


def check_weights(weights, allowed=WEIGHTS_CHOICES):
    """Validates ``weights``: one of ``allowed`` or an existing file.

    Returns:
        ``(application_weights, file)``: what to pass to a
        ``keras.applications`` constructor (None or "imagenet"), and a file
        to load after building (or None).
    """
    if weights in allowed:
        return weights, None
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise errors.WeightsError(
                f"{path}: no such weights file; pass a .weights.h5 or .keras file, "
                f"or one of {tuple(a for a in allowed)}."
            )
        return None, path
    raise errors.ConfigurationError(
        f"`weights` must be one of {allowed} or a file path. Received: weights={weights!r}"
    )


def imagenet_application(constructor, name, **kwargs):
    """Calls a ``keras.applications`` constructor, explaining a failed download.

    Keras downloads ImageNet weights once into ``~/.keras/models/``; with no
    network the download fails with a bare URL error. This says where to put
    the file instead.
    """
    try:
        return constructor(**kwargs)
    except Exception as e:  # noqa: BLE001 - keras raises plain Exception on fetch failure
        if kwargs.get("weights") != "imagenet" or not _looks_like_download_failure(e):
            raise
        cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")
        raise errors.WeightsError(
            f"ImageNet weights for {name} could not be downloaded ({type(e).__name__}); with no "
            f"network, copy the Keras weight file for {name} (include_top=False) into {cache}, "
            "or pass weights=None to train from scratch."
        ) from None


def _looks_like_download_failure(e):
    text = f"{type(e).__name__} {e}".lower()
    return any(word in text for word in ("url fetch", "urlopen", "http", "connection", "name resolution",
                                          "network", "temporary failure", "timed out", "getaddrinfo"))


def load_weights_file(model, path):
    """Loads a weights or ``.keras`` file into ``model``, naming the file on failure."""
    try:
        if path.endswith(".keras"):
            source = keras.saving.load_model(path, compile=False, safe_mode=True)
            model.set_weights(source.get_weights())
        else:
            model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        detail = " ".join(str(e).split())[:300]  # one line, whatever Keras wrapped it into
        raise errors.WeightsError(
            f"{path}: cannot be loaded into {model.name} ({type(e).__name__}: {detail}); "
            "use weights saved from the same builder with the same arguments."
        ) from None
    return model
