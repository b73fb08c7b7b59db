"""Grad-CAM heat maps of an exported image model's answer, as PNG (paper 004's figures).

:func:`gradcam_png` explains what :func:`covid_keras.serving.predict_study`
answered for one image file (PNG, JPEG, DICOM) given to an ``image``
export: an X-ray model, or a CT slice model given one slice image.

* The input is the one the SavedModel got: the image is read and
  preprocessed by the very function ``predict_study`` uses (the export's
  ``covid_keras.json`` says how), a deterministic step, so the Keras model
  sees the same float32 [1, H, W, C] array as the signature did.
* The model explained is the export's own Keras model
  (``assets.extra/<keras_files["model"]>``), which holds the SavedModel's
  weights. A two-step export (``kind == "two_step"``, ``keras_files``
  ``{"step1": ..., "step2": ...}``) is explained with step 2's model when
  its answer was routed to step 2 (the ``routed`` flag of the answer's
  ``steps``, or a finite ``step2`` entry; an answer that says neither is routed as the
  export routes, by step 1's Keras model's top class being ``viral``),
  else with step 1's.
* The map is :func:`covid_keras.explain.gradcam` at ``last_conv`` for the
  predicted class: the pre-softmax class score's gradients, averaged over
  space, weight the layer's channels; the ReLU of the sum is upsampled to
  the input size and normalised to [0, 1]. For a two-step export the class
  is the explained step model's own top class (reported as ``step_class``;
  ``class`` stays the answer's 4-class label).
* The picture is :func:`covid_keras.explain.overlay`: the map scaled to
  0-255, coloured with the jet colour map and blended (alpha 0.4) over the
  grey image as the model saw it (its 0-255 input), at the model's input
  size. It is then enlarged by the smallest integer factor that makes its
  shorter side at least ``min_side`` (256) pixels, nearest-neighbour, so
  each model pixel is a k x k block and the PNG shows exactly the values
  computed (a 64 x 64 model: 256 x 256; 224: 448; 299: 299). The PNG is
  8-bit RGB and holds no DICOM data.

CT series folders and volume or patient-pipeline exports get no heat map:
their answer is for a whole study, not for one picture
(:class:`~covid_keras.errors.ConfigurationError`).

    python -m covid_keras.predict chest.png --model saved_models/xray_cnn --gradcam chest_gradcam.png
"""

import dataclasses
import math
import os

import numpy as np

from covid_keras import errors
from covid_keras.serving.savedmodel import ASSETS_EXTRA

#: The layer every covid_keras image model names its last convolution output.
LAYER = "last_conv"
#: Shorter side, in pixels, the PNG is enlarged to at least.
MIN_SIDE = 256
#: Export kinds whose answer is for one picture.
KINDS = ("image", "two_step")
#: Blend weight of the coloured map over the image (paper 004's display).
ALPHA = 0.4


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """A Grad-CAM heat map written by :func:`gradcam_png`.

    Attributes:
        path: the PNG written.
        layer: the layer explained (``last_conv``).
        class_name: the answer's predicted class.
        class_index: the class explained, an index of the explained Keras
            model's softmax.
        step: the ``keras_files`` role explained: ``"model"``, or
            ``"step1"`` / ``"step2"`` for a two-step export.
        step_class: for a two-step export, the explained step's name for
            ``class_index`` (from the metadata's ``output_classes``), else None.
        cam: float32 [H, W] in [0, 1], the map at the model's input size.
        inputs: float32 [1, H, W, C], the model's input.
        scale: the integer factor the picture was enlarged by.
        picture: uint8 [H * scale, W * scale, 3], the RGB picture (written
            to ``path`` by :func:`gradcam_png`).
    """

    path: str | None
    layer: str
    class_name: str
    class_index: int
    step: str
    step_class: str | None
    cam: np.ndarray
    inputs: np.ndarray
    scale: int
    picture: np.ndarray | None = None

    def record(self):
        """The answer's ``"gradcam"`` JSON entry.

        Returns:
            ``{"path", "layer", "class"}``; for a two-step export also
            ``"step"`` and (when the metadata names the step's classes)
            ``"step_class"``.
        """
        out = {"path": self.path, "layer": self.layer, "class": self.class_name}
        if self.step != "model":
            out["step"] = self.step
        if self.step_class is not None:
            out["step_class"] = self.step_class
        return out


def check_supported(path, model, out_path):
    """Refuses, before the model runs, a heat map the answer cannot have.

    Args:
        path: the input given to ``predict_study``.
        model: a :class:`covid_keras.serving.ServedModel`.
        out_path: the PNG to write.

    Raises:
        ConfigurationError: ``out_path`` does not end in ``.png``; the
            export is not an image model (a volume model or a patient
            pipeline); ``path`` is a folder (a CT series).
    """
    out_path = os.fspath(out_path)
    if not out_path.lower().endswith(".png"):
        raise errors.ConfigurationError(
            f"{out_path}: a Grad-CAM heat map is written as PNG; give a file name ending in .png."
        )
    if model.kind not in KINDS:
        raise errors.ConfigurationError(
            f"{path}: model {model.name} (version {model.version}) is a {model.kind} export, which answers "
            "for a whole CT study, so it has no Grad-CAM heat map; leave out --gradcam."
        )
    if os.path.isdir(path):
        raise errors.ConfigurationError(
            f"{path}: is a folder (a CT series), and a Grad-CAM heat map is made for one image file; "
            "leave out --gradcam or pass one image."
        )


def routed_to_step2(prediction):
    """Whether a two-step answer went on to step 2, as the answer says it.

    Args:
        prediction: ``predict_study``'s answer for one image; a two-step
            answer holds ``steps``: ``{"step1": {...}, "step2": {...} or
            None, "routed": bool}``.

    Returns:
        The ``routed`` flag of its ``steps`` (or of the answer itself) when
        it has one; else True when it has a ``step2`` entry of finite
        probabilities (False for None or NaN ones: step 2 not run); None
        when it says neither.

    Example:
        >>> routed_to_step2({"steps": {"routed": True}}), routed_to_step2({"step2": {"COVID-19": float("nan")}})
        (True, False)
    """
    steps = prediction.get("steps")
    if isinstance(steps, dict):
        prediction = steps
    routed = prediction.get("routed")
    if routed is not None:
        return bool(np.any(routed))
    if "step2" not in prediction:
        return None
    step2 = prediction["step2"]
    if step2 is None:
        return False
    values = list(step2.values()) if isinstance(step2, dict) else step2
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return bool(values.size) and bool(np.isfinite(values).all())


def _step1_routes(model, inputs):
    """Whether step 1's Keras model sends ``inputs`` on to step 2: its top class is ``viral``."""
    from covid_keras.models import xraycnn

    names = (model.metadata.get("output_classes") or {}).get("step1") or list(xraycnn.STEP1_CLASSES)
    step1 = load_keras_model(model, "step1")
    return names[int(np.argmax(_scores(step1, inputs)))] == "viral"


def keras_role(metadata, routed=False):
    """The ``keras_files`` role whose model made the answer: ``model``, ``step1`` or ``step2``.

    Args:
        metadata: the export's :func:`covid_keras.serving.load_metadata`.
        routed: for a two-step export, whether the answer went on to step 2
            (:func:`routed_to_step2`).

    Returns:
        ``"model"`` for an image export; for a two-step export ``"step2"``
        when ``routed``, else ``"step1"``.

    Raises:
        ServingError: the metadata names no Keras file for that role.

    Example:
        >>> keras_role({"kind": "two_step", "keras_files": {"step1": "a.keras", "step2": "b.keras"}}, True)
        'step2'
    """
    if metadata.get("kind") == "two_step":
        role = "step2" if routed else "step1"
    else:
        role = "model"
    if role not in (metadata.get("keras_files") or {}):
        raise errors.ServingError(
            f"export {metadata.get('name')} (version {metadata.get('version')}): its metadata names no "
            f"Keras file for {role!r}, so its answer cannot be explained; export it again."
        )
    return role


def _role(model, prediction, inputs):
    """:func:`keras_role` for the answer; a two-step answer silent on routing is routed by step 1's model."""
    routed = False
    if model.kind == "two_step":
        routed = routed_to_step2(prediction)
        if routed is None:
            routed = _step1_routes(model, inputs)
    return keras_role(model.metadata, routed)


def load_keras_model(model, role="model"):
    """The Keras model an export keeps in ``assets.extra`` for ``role``.

    Args:
        model: a :class:`covid_keras.serving.ServedModel`.
        role: a key of the metadata's ``keras_files``.

    Returns:
        The ``keras.Model`` (not compiled).

    Raises:
        ServingError: the file is missing.
    """
    import keras

    import covid_keras.models  # noqa: F401 - registers the custom layers the file may hold

    name = (model.metadata.get("keras_files") or {}).get(role)
    path = os.path.join(model.version_dir, ASSETS_EXTRA, name or "")
    if not name or not os.path.isfile(path):
        raise errors.ServingError(
            f"{model.version_dir}: has no {ASSETS_EXTRA}/{name or role + '.keras'}, the Keras model a "
            "Grad-CAM heat map needs; export the model again with covid_keras.serving.export."
        )
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _scores(keras_model, inputs):
    """The model's output for one image: a direct call (``predict`` builds a tf.data pipeline per call)."""
    return np.asarray(keras_model(np.asarray(inputs, np.float32), training=False))[0]


def _class_index(keras_model, model, inputs, prediction, role):
    """The class to explain: the answer's for an image export, the step model's own top class otherwise."""
    if role == "model":
        return model.class_names.index(prediction["predicted_class"])
    return int(np.argmax(_scores(keras_model, inputs)))


def _step_class(model, role, class_index):
    """A two-step export's name for the explained class of step ``role`` (None when unnamed)."""
    names = (model.metadata.get("output_classes") or {}).get(role) if role != "model" else None
    return str(names[class_index]) if names and class_index < len(names) else None


def picture(image, cam, min_side=MIN_SIDE):
    """The heat map over the image, enlarged to a readable size.

    Args:
        image: float32 [H, W, C] (C 1 or 3) or [H, W], 0-255 grey levels.
        cam: float32 [H, W] in [0, 1].
        min_side: the shorter side is enlarged, by an integer factor, to at
            least this many pixels.

    Returns:
        ``(rgb, scale)``: uint8 [H * scale, W * scale, 3] and the factor.

    Example:
        >>> rgb, scale = picture(np.zeros((64, 64, 3)), np.zeros((64, 64)))
        >>> rgb.shape, rgb.dtype.name, scale
        ((256, 256, 3), 'uint8', 4)
    """
    from covid_keras import explain

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    if image.max() <= 1.0:
        # overlay() reads an image whose maximum is at most 1 as [0, 1]; this one is 0-255 (a black picture).
        image = image / 255.0
    small = explain.overlay(image, cam, alpha=ALPHA)
    scale = max(1, math.ceil(min_side / min(small.shape[:2])))
    return np.repeat(np.repeat(small, scale, axis=0), scale, axis=1), scale


def _write_png(out_path, rgb):
    import cv2

    folder = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(folder, exist_ok=True)
        written = cv2.imwrite(out_path, np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    except (OSError, cv2.error):
        written = False
    if not written:
        raise errors.ConfigurationError(
            f"{out_path}: the Grad-CAM heat map cannot be written there; choose a writable folder."
        )


def gradcam_png(image_path, model_dir, out_path, *, layer=LAYER, prediction=None, min_side=MIN_SIDE):
    """Writes the Grad-CAM heat map of an exported model's answer for one image as a PNG.

    Args:
        image_path: an image file (PNG, JPEG, DICOM).
        model_dir: an export (version or model folder) or a
            :class:`covid_keras.serving.ServedModel`.
        out_path: the PNG to write (its folder is made when missing).
        layer: the layer explained.
        prediction: ``predict_study(image_path, model_dir)``'s answer when
            already computed; by default it is computed here.
        min_side: the PNG's shorter side is at least this (an integer
            enlargement of the model's input size).

    Returns:
        A :class:`Heatmap`: the path written, the class explained, and the
        map (``cam``, before colouring) and input (``inputs``) themselves.
        ``Heatmap.record()`` is the answer's ``"gradcam"`` entry.

    Raises:
        ConfigurationError: see :func:`check_supported`; ``layer`` is not a
            convolutional layer of the model; ``out_path`` cannot be written.
        ServingError: the export has no Keras model for the answer.
        ImageReadError, PreprocessingError: the image cannot be read or
            preprocessed (as for ``predict_study``).

    Example:
        >>> heat = gradcam_png("chest.png", "saved_models/xray_cnn/1", "chest_gradcam.png")  # doctest: +SKIP
        >>> heat.record()  # doctest: +SKIP
        {'path': 'chest_gradcam.png', 'layer': 'last_conv', 'class': 'viral'}
    """
    from covid_keras.serving.predict import ServedModel, predict_study

    image_path, out_path = os.fspath(image_path), os.fspath(out_path)
    model = model_dir if isinstance(model_dir, ServedModel) else ServedModel(model_dir)
    check_supported(image_path, model, out_path)
    if prediction is None:
        prediction = predict_study(image_path, model)
    heat = explain_image(model, read_inputs(image_path, model), prediction, layer=layer, min_side=min_side)
    _write_png(out_path, heat.picture)
    return dataclasses.replace(heat, path=out_path)


def read_inputs(image_path, model):
    """The float32 [1, H, W, C] input the export's signature gets for ``image_path``.

    ``predict_study``'s own reading and preprocessing: the Keras model
    explained gets exactly the SavedModel's input.
    """
    from covid_keras.serving.predict import _read_and_preprocess

    return _read_and_preprocess(os.fspath(image_path), model, {})[0]


def explain_image(model, inputs, prediction, *, layer=LAYER, min_side=MIN_SIDE, load=None, explainer=None):
    """The Grad-CAM heat map of an image export's answer, as a picture (nothing written).

    Args:
        model: a :class:`covid_keras.serving.ServedModel` of kind ``image``
            or ``two_step``.
        inputs: float32 [1, H, W, C], the signature's input
            (:func:`read_inputs`, or :func:`covid_keras.serving.answer_study`'s
            ``inputs``).
        prediction: the answer for ``inputs`` (``predict_study``'s dict).
        layer: the layer explained.
        min_side: the picture's shorter side is at least this.
        load: ``load(model, role)`` -> the Keras model of ``keras_files[role]``;
            :func:`load_keras_model` by default (pass a caching one to
            explain many images).
        explainer: ``explainer(keras_model)`` -> a
            :class:`covid_keras.explain.GradcamExplainer` for it; a new one
            per call by default (pass a caching one to explain many images).

    Returns:
        A :class:`Heatmap` with ``path`` None and its ``picture`` set.

    Raises:
        ConfigurationError: ``model`` is not an image export, or ``layer``
            is not a convolutional layer of it.
        ServingError: the export has no Keras model for the answer.
    """
    from covid_keras import explain

    if model.kind not in KINDS:
        raise errors.ConfigurationError(
            f"model {model.name} (version {model.version}) is a {model.kind} export, which answers for a whole "
            "CT study, so it has no Grad-CAM heat map of one image."
        )
    load = load or load_keras_model
    role = _role(model, prediction, inputs)
    keras_model = load(model, role)
    class_index = _class_index(keras_model, model, inputs, prediction, role)
    if explainer is None:
        cam = explain.gradcam(keras_model, inputs, class_index=class_index, layer=layer)[0]
    else:
        cam = explainer(keras_model)(inputs, class_index=class_index, layer=layer)[0]
    rgb, scale = picture(inputs[0], cam, min_side=min_side)
    return Heatmap(path=None, layer=layer, class_name=prediction["predicted_class"], class_index=class_index,
                   step=role, step_class=_step_class(model, role, class_index), cam=cam, inputs=inputs,
                   scale=scale, picture=rgb)
