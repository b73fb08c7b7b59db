"""Exporting models as versioned SavedModels for TF Serving.

Layout (TF Serving serves the integer-named folders under a model's folder,
the highest by default, and ignores other names, so a half-written export
in a hidden temporary folder never goes live)::

    saved_models/multiscale_resnet50/       <- TF Serving's --model_base_path
        1/  saved_model.pb  variables/
            assets.extra/multiscale_resnet50.keras   (the Keras model)
            assets.extra/covid_keras.json            (metadata, see load_metadata)
        2/  ...

Signatures (method ``tensorflow/serving/predict``: use TF Serving's
``:predict`` REST call or the Predict gRPC; Classify/Regress need a
tf.Example input these models do not take):

* ``serving_default``: ``image`` float32 [batch, H, W, C], raw pixel values
  in [0, 255] as :mod:`covid_keras.preprocess` makes them (each model holds
  its own ``preprocess_input`` as a layer) -> ``probabilities`` float32
  [batch, classes].
* ``serving_bytes``: ``image_bytes`` string [batch] of PNG or JPEG files ->
  ``probabilities``. Each image is decoded to C channels, its 0-255 pixel
  values (16-bit PNGs scaled to 0-255) cast to float32 and resized to H x W
  (bilinear, antialiased). This is the ``{"b64": ...}`` form of the REST
  API. It does not redo a paper's preprocessing (body crop, brightness):
  send images that already went through it, as for ``serving_default``.

A volume model (paper 000's :func:`covid_keras.models.resnet50_3d`, one
[batch, D, H, W, 1] input, ``kind == "volume"``) has one
``serving_default``: ``volume`` float32 [batch, D, H, W, 1], cubes (D == H
== W) of grey values in [0, 1] as the Volume3D pipeline makes them
(:func:`covid_keras.preprocess.volume3d`, then the cache's 8-bit grey
levels: :func:`~covid_keras.preprocess.lung_volume.quantize` and
``dequantize``) -> ``probabilities`` float32 [batch, classes]. It has no
``serving_bytes``: a volume is no PNG or JPEG.

A patient pipeline (:func:`export_patient_pipeline`) has one
``serving_default``: ``slices`` float32 [n, H, W, 3], the n slices of ONE
study -> ``probabilities`` float32 [1, classes], the patient's answer.

Paper 004's two-step X-ray diagnosis (:func:`export_two_step`, ``kind ==
"two_step"``) has ``serving_default`` on ``image`` float32 [batch, H, W, 3]
(0-255) and ``serving_bytes`` on ``image_bytes``, both returning a dict:
``step1`` [batch, 3], ``step2`` [batch, 3] (NaN rows where step 1 did not
route the image to step 2), ``routed`` bool [batch] and ``probabilities``
[batch, 4], the combined answer over ``CLASS_NAMES["xraycnn_4class"]``.

Class names and preprocessing are never guessed: they come from the
arguments, or from what the caller's ``metadata`` records (a training run's
``classes`` and ``pipeline``, or a recipe's
:meth:`covid_keras.recipes.Recipe.export_metadata` under ``"recipe"``).

REST requests (``curl -d @request.json
http://host:8501/v1/models/multiscale_resnet50:predict``)::

    {"instances": [<H x W x C nested list>, ...]}
    {"signature_name": "serving_bytes", "instances": [{"b64": "iVBORw0KGgo..."}]}
    {"inputs": {"slices": <n x H x W x 3 nested list>}}        (patient pipeline)
    {"instances": [<D x H x W x 1 nested list>, ...]}             (volume model)
    {"inputs": {"volume": <batch x D x H x W x 1 nested list>}}   (volume model, columnar)
    {"instances": [<H x W x 3 nested list>, ...]}   (two-step: each prediction holds step1, step2, routed
                                                     and probabilities)

The patient pipeline takes the columnar ``inputs`` form: its n slices are one
example, and its output has a batch of 1, not n. A volume is one example
of D x H x W x 1 numbers (224^3: 11 million, about 100 MB of JSON): for
full-size volumes TF Serving's Predict gRPC with a float32 TensorProto
(``tf.make_tensor_proto``) is the practical form.

Every endpoint checks its input inside the graph with ``tf.ensure_shape``
and ``tf.debugging.assert_all_finite``: a loaded signature checks a
request's dtype but not its shape, and a wrong-rank tensor aborted the
whole server process under oneDNN (tensorflow#111453); with the checks a
wrong-shaped or NaN request fails alone with an InvalidArgumentError.

An export is written to a hidden temporary folder beside the versions
(``.export-*``) and renamed to its integer name only when complete, so an
interrupted export never leaves a version TF Serving would try to load;
the temporary folder is removed on errors (a killed process may leave one,
which TF Serving and :func:`next_version` ignore).

Each weight is stored once: the archive does not ``track()`` the models,
which in Keras 3.15 would store every weight twice (keras#23553); the
endpoint functions capture the variables they use.
"""

import dataclasses
import datetime
import json
import numbers
import os
import re
import shutil
import tempfile

from covid_keras import errors

#: The metadata file inside ``assets.extra/``.
METADATA_FILE = "covid_keras.json"
#: TF Serving leaves this folder of a version alone (files for the user).
ASSETS_EXTRA = "assets.extra"
#: Version of the metadata layout.
METADATA_FORMAT = 1
#: Output key of every signature.
OUTPUT_KEY = "probabilities"
SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
#: Pipelines of :mod:`covid_keras.preprocess` a served 2-D model can take.
SERVED_PIPELINES = ("ct_slices", "xray")
#: Pipelines a served volume model ([batch, D, H, W, 1]) can take.
VOLUME_PIPELINES = ("volume3d",)
#: Slices the patient pipeline runs through the slice model at a time
#: (bounds the memory of a 300-slice study).
SLICE_BATCH_SIZE = 32
#: Kinds of export, as written in the metadata.
KINDS = ("image", "patient_pipeline", "volume", "two_step")

#: Keras files of a patient pipeline besides its heads' (a head may not take these names).
PIPELINE_PARTS = ("slice_model", "ensemble")

_TMP_PREFIX = ".export-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_INTEGER = re.compile(r"[0-9]+")


# --------------------------------------------------------------------------
# Versions and metadata (no TensorFlow needed)
# --------------------------------------------------------------------------


def _integer_entries(model_dir):
    """Integer-named entries of ``model_dir`` (folders and stray files alike)."""
    try:
        names = os.listdir(model_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if _INTEGER.fullmatch(n))


def next_version(model_dir):
    """The version an export into ``model_dir`` gets: one more than the highest.

    Only integer names count (TF Serving's rule): ``1``, ``2``, ``10`` give
    11; ``latest``, ``.export-*`` or ``3.keras`` are ignored.

    Args:
        model_dir: a model's folder, ``<base_dir>/<name>`` (may not exist).

    Returns:
        An int, 1 for an empty or missing folder.

    Example:
        >>> next_version("/nonexistent/model")
        1
    """
    versions = _integer_entries(os.fspath(model_dir))
    return versions[-1] + 1 if versions else 1


def resolve_version_dir(path):
    """A version folder, or a model folder -> the version folder to load.

    ``saved_models/<name>/<version>`` is returned as it is;
    ``saved_models/<name>`` gives its highest integer version holding a
    ``saved_model.pb`` (TF Serving's default "latest" policy).

    Raises:
        ServingError: the folder is missing or holds no SavedModel.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "is a file, not a folder" if os.path.exists(path) else "does not exist"
        raise errors.ServingError(
            f"{path}: the model folder {what}; pass a version folder written by "
            "covid_keras.serving.export, such as saved_models/<name>/1."
        )
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    for version in reversed(_integer_entries(path)):
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise errors.ServingError(
        f"{path}: holds no saved_model.pb, nor a version folder with one; pass a version folder "
        "written by covid_keras.serving.export, such as saved_models/<name>/1."
    )


def load_metadata(version_dir):
    """Reads ``assets.extra/covid_keras.json`` of an exported version.

    Keys: ``format``, ``name``, ``version``, ``kind`` (``image``,
    ``patient_pipeline``, ``volume`` or ``two_step``), ``class_names`` (softmax order), ``input``
    (signature input name, shape with None for open dimensions, dtype,
    value range), ``output``, ``signatures``, ``preprocessing`` (the
    :mod:`covid_keras.preprocess` pipeline and its arguments, e.g.
    ``{"pipeline": "ct_slices", "size": 224, "brightness": 2.0,
    "normalization": "minmax"}`` or ``{"pipeline": "volume3d", "size": 224,
    "normalization": "minmax"}``), ``keras_files`` (role -> file name in
    ``assets.extra``), ``versions`` (covid_keras, tensorflow, keras),
    ``created`` (UTC) and ``metadata`` (the caller's own). A patient
    pipeline also has ``head_order`` (the heads, in the ensemble's input
    order), ``head_features`` (head -> ``"features"`` or ``"weighted"``)
    and ``slice_batch_size``. A two-step export (:func:`export_two_step`)
    also has ``outputs`` (output -> shape and dtype), ``output_classes``
    (``step1``, ``step2`` and ``probabilities`` -> class list; the last is
    ``class_names``) and ``unrouted_covid_fraction``.

    Args:
        version_dir: ``<base_dir>/<name>/<version>``.

    Returns:
        The metadata dict.

    Raises:
        ServingError: the file is missing or unreadable.
    """
    version_dir = os.fspath(version_dir)
    path = os.path.join(version_dir, ASSETS_EXTRA, METADATA_FILE)
    if not os.path.isfile(path):
        raise errors.ServingError(
            f"{version_dir}: has no {ASSETS_EXTRA}/{METADATA_FILE}, so its classes and preprocessing "
            "are unknown; export the model with covid_keras.serving.export."
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise errors.ServingError(
            f"{path}: cannot be read as JSON ({type(e).__name__}); export the model again."
        ) from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS or not meta.get("class_names"):
        raise errors.ServingError(
            f"{path}: is not covid_keras serving metadata (no kind or class_names); export the model again."
        )
    return meta


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_name(name):
    if not isinstance(name, str) or not _NAME.fullmatch(name) or _INTEGER.fullmatch(name):
        raise errors.ConfigurationError(
            "`name` must be a folder name of letters, digits, '.', '_' or '-', not a bare integer "
            f"(TF Serving would take it for a version). Received: name={name!r}"
        )
    return name


def _check_version(version):
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise errors.ConfigurationError(
            f"`version` must be a positive integer or None (the next free one). Received: version={version!r}"
        )
    return int(version)


def _split_version_dir(base_dir, name, version):
    """``export(model, "saved_models/<name>/<int>")`` (the version folder itself) -> its parts."""
    base_dir = os.fspath(base_dir)
    head, tail = os.path.split(os.path.normpath(base_dir))
    if name is None and version is None and _INTEGER.fullmatch(tail) and os.path.basename(head):
        return os.path.dirname(head), os.path.basename(head), int(tail)
    return base_dir, name, version


def _model_input(model, what="model"):
    """(H, W, C) of a model with one [batch, H, W, C] input, or (D, H, W, 1) of a volume model."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        count = "no known input" if not inputs else f"{len(inputs)} inputs"
        raise errors.ConfigurationError(
            f"The {what} {model.name!r} has {count}; export serves models with one image input "
            "[batch, H, W, C] (build it with the functional API; export patient heads with "
            "export_patient_pipeline)."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) not in (4, 5) or any(d is None for d in shape[1:]) or (len(shape) == 5 and shape[-1] != 1):
        raise errors.ConfigurationError(
            f"The {what} {model.name!r} takes input of shape {shape}; export serves 2-D image models "
            "with a fixed [batch, H, W, C] input and volume models with a fixed [batch, D, H, W, 1] input."
        )
    return tuple(int(d) for d in shape[1:])


def _image_input(model, what="model"):
    """(H, W, C) of a model with one [batch, H, W, C] input."""
    shape = _model_input(model, what)
    if len(shape) != 3:
        raise errors.ConfigurationError(
            f"The {what} {model.name!r} takes input of shape {(None, *shape)}; it must be a 2-D image model "
            "with a fixed [batch, H, W, C] input."
        )
    return shape


def _num_classes(model, what="model"):
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        shapes = [tuple(o.shape) for o in outputs or ()]
        raise errors.ConfigurationError(
            f"The {what} {model.name!r} must have one [batch, classes] output (probabilities). "
            f"Received: output shapes {shapes}"
        )
    return int(outputs[0].shape[-1])


def _class_names(class_names, model_name, num_classes):
    """The export's class names: ``class_names`` checked against the output count, never guessed."""
    if class_names is None:
        raise errors.ConfigurationError(
            f"The classes of model {model_name!r} are unknown; pass class_names= (softmax order) or "
            "metadata={'recipe': recipe.export_metadata(config)} (covid_keras.recipes)."
        )
    names = [str(c) for c in class_names]
    if len(names) != num_classes or len(set(names)) != len(names):
        raise errors.ConfigurationError(
            f"`class_names` must name each of the model's {num_classes} outputs once, in softmax "
            f"order. Received: class_names={list(class_names)}"
        )
    return names


def _preprocessing(preprocessing, model_name, size, channels, volume=False):
    """The preprocessing record of the metadata (what predict_study redoes), never guessed.

    ``volume``: the model takes [batch, D, H, W, 1] cubes of side ``size``;
    only :data:`VOLUME_PIPELINES` fit it, and only 2-D models take
    :data:`SERVED_PIPELINES`.
    """
    if preprocessing is None:
        raise errors.ConfigurationError(
            f"The preprocessing of model {model_name!r} is unknown; pass preprocessing= (e.g. "
            "{'pipeline': 'xray'}) or metadata={'recipe': recipe.export_metadata(config)} (covid_keras.recipes)."
        )
    if dataclasses.is_dataclass(preprocessing):  # preprocess.pipelines.PipelineOptions
        preprocessing = dataclasses.asdict(preprocessing)
    if not isinstance(preprocessing, dict):
        raise errors.ConfigurationError(
            "`preprocessing` must be a dict like {'pipeline': 'ct_slices', 'brightness': 2.0}, a "
            f"PipelineOptions or None. Received: {type(preprocessing).__name__}"
        )
    pipeline = preprocessing.get("pipeline")
    if volume:
        return _volume_preprocessing(preprocessing, model_name, size)
    if pipeline not in SERVED_PIPELINES:
        raise errors.ConfigurationError(
            f"`preprocessing['pipeline']` must be one of {SERVED_PIPELINES} for a served 2-D model. "
            f"Received: pipeline={pipeline!r}"
        )
    _check_size(preprocessing, size)
    record = {"pipeline": pipeline, "size": int(size)}
    if pipeline == "ct_slices":
        if channels != 3:
            raise errors.ConfigurationError(
                f"The ct_slices pipeline feeds 3-channel models (the grey slice repeated); this one "
                f"takes {channels} channels."
            )
        record["brightness"] = float(preprocessing.get("brightness", 2.0))
        record["normalization"] = str(preprocessing.get("normalization", "minmax"))
        if "window" in preprocessing:
            record["window"] = [float(v) for v in preprocessing["window"]]
    return record


def _check_size(preprocessing, size):
    given = preprocessing.get("size") or size
    if given != size:
        raise errors.ConfigurationError(
            f"`preprocessing['size']` ({given}) differs from the model's input side ({size})."
        )


def _volume_preprocessing(preprocessing, model_name, size):
    """The record of a volume model: ``{"pipeline": "volume3d", "size": D, "normalization": ...}``."""
    from covid_keras.preprocess.lung_volume import NORMALIZATIONS

    pipeline = preprocessing.get("pipeline")
    if pipeline not in VOLUME_PIPELINES:
        raise errors.ConfigurationError(
            f"`preprocessing['pipeline']` must be one of {VOLUME_PIPELINES} for a served volume model "
            f"({model_name!r} takes [batch, D, H, W, 1] volumes). Received: pipeline={pipeline!r}"
        )
    _check_size(preprocessing, size)
    normalization = str(preprocessing.get("normalization", "minmax"))
    if normalization not in NORMALIZATIONS:
        raise errors.ConfigurationError(
            f"`preprocessing['normalization']` must be one of {NORMALIZATIONS} for the volume3d pipeline. "
            f"Received: normalization={normalization!r}"
        )
    if "window" in preprocessing:
        raise errors.ConfigurationError(
            "`preprocessing['window']` is not a volume3d option: the Volume3D cache always uses "
            "lung_volume.HU_WINDOW for normalization='window'; leave it out."
        )
    return {"pipeline": pipeline, "size": int(size), "normalization": normalization}


def _from_metadata(metadata, class_names, preprocessing):
    """Class names and preprocessing a caller put in ``metadata`` instead of the arguments.

    Used when the argument is None, so that what predict_study redoes is
    what training did, in this order: ``metadata["class_names"]`` or
    ``metadata["classes"]`` (a list), else ``metadata["recipe"]["classes"]``
    (:meth:`covid_keras.recipes.Recipe.export_metadata`); and
    ``metadata["preprocessing"]`` or ``metadata["pipeline"]`` (a dict with a
    ``"pipeline"`` key, e.g. ``dataclasses.asdict(PipelineOptions)``), else
    ``metadata["recipe"]["pipeline"]``.
    """
    recipe = metadata.get("recipe") if isinstance(metadata.get("recipe"), dict) else {}
    if class_names is None:
        for value in (metadata.get("class_names"), metadata.get("classes"), recipe.get("classes")):
            if isinstance(value, (list, tuple)):
                class_names = value
                break
    if preprocessing is None:
        for value in (metadata.get("preprocessing"), metadata.get("pipeline"), recipe.get("pipeline")):
            if isinstance(value, dict) and "pipeline" in value:
                preprocessing = value
                break
    return class_names, preprocessing


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise errors.ConfigurationError(
            f"`metadata` must be a JSON-serialisable dict. Received: {type(metadata).__name__}"
        )
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise errors.ConfigurationError(f"`metadata` must be JSON-serialisable: {e}") from None
    return metadata


# --------------------------------------------------------------------------
# Graph pieces (TensorFlow)
# --------------------------------------------------------------------------


def _checked_images(images, shape, what, values="pixel values in [0, 255]"):
    """Rank, shape and finiteness checks that run inside the serving graph.

    ``shape``: the input's shape without its batch, (H, W, C) or (D, H, W, 1);
    ``values``: what the error message asks for instead.
    """
    import tensorflow as tf

    images = tf.ensure_shape(images, [None, *shape])
    return tf.debugging.assert_all_finite(
        images, f"`{what}` holds NaN or infinite values; send finite {values}"
    )


def _decode_images(image_bytes, shape):
    """string [batch] PNG/JPEG -> float32 [batch, H, W, C], 0-255, resized to H x W."""
    import tensorflow as tf

    height, width, channels = shape

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.cast(image, tf.float32)
        return tf.image.resize(image, [height, width], method="bilinear", antialias=True)

    image_bytes = tf.ensure_shape(image_bytes, [None])
    return tf.map_fn(decode, image_bytes,
                     fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))


def _probabilities(model, images):
    import tensorflow as tf

    return tf.cast(model(images, training=False), tf.float32)


def _archive():
    """A ``keras.export.ExportArchive`` whose endpoints track their own variables.

    ``ExportArchive.track(model)`` is left out on purpose: with Keras 3.15 on
    TensorFlow it stores every weight twice (once as the Keras variable it
    tracks, once as the ``tf.Variable`` the endpoint captures), doubling the
    SavedModel and the memory of every server that loads it (keras#23553).
    The endpoints' functions capture every variable they use, which is all
    a served model needs (``track`` matters for lookup tables, which these
    models do not have, and for ``.variables`` on the reloaded object).
    """
    import keras

    return keras.export.ExportArchive()


def _save_keras(model, folder, file_name):
    model.save(os.path.join(folder, ASSETS_EXTRA, file_name))
    return file_name


def _versions_record():
    import keras
    import tensorflow as tf

    import covid_keras

    return {"covid_keras": covid_keras.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def _publish(model_dir, version, build, meta):
    """Builds a version in a temporary folder, then renames it into place.

    Args:
        model_dir: ``<base_dir>/<name>``.
        version: the requested version, or None for the next free one.
        build: ``build(folder)`` writes the SavedModel and assets.extra.
        meta: metadata without ``version`` (added here).

    Returns:
        ``(version_dir, version)``.
    """
    os.makedirs(model_dir, exist_ok=True)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise errors.ConfigurationError(
            f"{os.path.join(model_dir, str(version))}: version {version} exists already; TF Serving "
            "versions are immutable, so pass another version or version=None for the next one."
        )
    tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=model_dir)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server may run as another user
        build(tmp)
        while True:
            chosen = version if version is not None else next_version(model_dir)
            final = os.path.join(model_dir, str(chosen))
            with open(os.path.join(tmp, ASSETS_EXTRA, METADATA_FILE), "w", encoding="utf-8") as f:
                json.dump({**meta, "version": chosen}, f, indent=2, allow_nan=False)
                f.write("\n")
            if not os.path.exists(final):
                try:
                    os.rename(tmp, final)  # atomic within one file system
                    return final, chosen
                except OSError:
                    if not os.path.exists(final):
                        raise
            if version is not None:  # another export took it meanwhile
                raise errors.ConfigurationError(
                    f"{final}: version {version} was written by another export meanwhile; pass "
                    "another version or version=None."
                )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _base_meta(name, kind, class_names, preprocessing, metadata):
    return {
        "format": METADATA_FORMAT,
        "name": name,
        "kind": kind,
        "class_names": class_names,
        "preprocessing": preprocessing,
        "versions": _versions_record(),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": metadata,
    }


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def export(model, base_dir, name=None, version=None, metadata=None, image_bytes_endpoint=None, *,
           class_names=None, preprocessing=None):
    """Exports an image or volume classifier as ``<base_dir>/<name>/<version>/`` for TF Serving.

    A 2-D model (``kind`` ``image``) gets the signatures ``serving_default``
    (``image`` float32 [batch, H, W, C], raw pixels in [0, 255] ->
    ``probabilities``) and, unless ``image_bytes_endpoint`` is False,
    ``serving_bytes`` (``image_bytes`` string [batch] of PNG/JPEG files ->
    ``probabilities``). A volume model (one [batch, D, H, W, 1] input with
    D == H == W, paper 000's :func:`covid_keras.models.resnet50_3d`; ``kind``
    ``volume``) gets ``serving_default`` only: ``volume`` float32 [batch,
    D, H, W, 1], grey values in [0, 1] as the ``volume3d`` pipeline makes
    them -> ``probabilities``. Every signature checks its input in the
    graph (see the module docstring). The ``.keras`` model and
    ``covid_keras.json`` (:func:`load_metadata`) go in ``assets.extra/``.
    Written to a temporary folder and renamed when complete.

    Args:
        model: a functional ``keras.Model`` with one [batch, H, W, C] or
            [batch, D, H, W, 1] input and one [batch, classes] probability
            output.
        base_dir: the folder of served models (``saved_models``). A version
            folder ``saved_models/<name>/<int>`` is accepted too when
            ``name`` and ``version`` are None.
        name: the model's folder name (default ``model.name``).
        version: a positive integer, or None for one more than the highest
            existing integer folder (1 for the first).
        metadata: a JSON-serialisable dict stored as ``metadata`` in
            ``covid_keras.json`` (training data, metrics, git commit ...).
            Never put patient identifiers in it. Its ``class_names`` /
            ``classes`` and ``preprocessing`` / ``pipeline`` entries, or
            those of its ``recipe`` record
            (:meth:`covid_keras.recipes.Recipe.export_metadata`), stand in
            for the arguments below when those are None.
        image_bytes_endpoint: add ``serving_bytes``: None (the default)
            adds it for 2-D models and not for volume models, True adds it
            (refused for a volume model), False leaves it out.
        class_names: names of the outputs in softmax order (default: from
            ``metadata``; never guessed).
        preprocessing: what turns a study or image into the model's input:
            a dict such as ``{"pipeline": "ct_slices", "brightness": 2.0,
            "normalization": "minmax"}`` or ``{"pipeline": "xray"}`` (2-D
            models), ``{"pipeline": "volume3d", "normalization":
            "minmax"}`` (volume models, the only pipeline they take), or a
            ``PipelineOptions`` (default: from ``metadata``; never
            guessed). The size is the model's input side.

    Returns:
        The version folder's path.

    Raises:
        ConfigurationError: the model does not have one image or volume
            input and one probability output, a volume that is not a cube,
            ``image_bytes_endpoint=True`` for a volume model, a pipeline
            that does not fit the model (``volume3d`` for a 2-D model, a 2-D
            pipeline for a volume model), a bad name / version / metadata /
            preprocessing, class names or preprocessing that neither the
            arguments nor ``metadata`` give, or the version exists already.

    Example:
        >>> from covid_keras import models
        >>> m = models.xray_cnn(num_classes=3)
        >>> export(m, "/tmp/saved_models", version=1, class_names=["normal", "bacterial", "viral"],
        ...        preprocessing={"pipeline": "xray"})         # doctest: +SKIP
        '/tmp/saved_models/xray_cnn/1'
    """
    base_dir, name, version = _split_version_dir(base_dir, name, version)
    shape = _model_input(model)
    if len(shape) == 4:
        return _export_volume(model, base_dir, name, version, metadata, image_bytes_endpoint, shape,
                              class_names, preprocessing)
    if image_bytes_endpoint is None:
        image_bytes_endpoint = True
    num_classes, name, version, metadata, names, prep = _checked_export(
        model, name, version, metadata, class_names, preprocessing, shape[0], shape[2])
    if shape[0] != shape[1]:
        raise errors.ConfigurationError(
            f"The preprocessing pipelines make square images; model {model.name!r} takes {shape[:2]}."
        )

    import tensorflow as tf

    height, width, channels = shape
    keras_file = f"{name}.keras"

    def build(folder):
        archive = _archive()

        image_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="image")

        @tf.function(input_signature=[image_spec], autograph=False)
        def serving_default(image):
            return {OUTPUT_KEY: _probabilities(model, _checked_images(image, shape, "image"))}

        archive.add_endpoint(SERVING_DEFAULT, serving_default)
        if image_bytes_endpoint:
            bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")

            @tf.function(input_signature=[bytes_spec], autograph=False)
            def serving_bytes(image_bytes):
                return {OUTPUT_KEY: _probabilities(model, _decode_images(image_bytes, shape))}

            archive.add_endpoint(SERVING_BYTES, serving_bytes)
        archive.write_out(folder, verbose=False)
        os.makedirs(os.path.join(folder, ASSETS_EXTRA), exist_ok=True)
        _save_keras(model, folder, keras_file)

    signatures = {
        SERVING_DEFAULT: f"image float32 [batch, {height}, {width}, {channels}] in [0, 255] -> "
                         f"probabilities float32 [batch, {num_classes}]",
    }
    if image_bytes_endpoint:
        signatures[SERVING_BYTES] = (f"image_bytes string [batch] PNG/JPEG -> decoded to {channels} channels, "
                                     f"resized to {height}x{width} (bilinear, antialiased) -> "
                                     f"probabilities float32 [batch, {num_classes}]")
    meta = _base_meta(name, "image", names, prep, metadata)
    meta.update({
        "input": {"name": "image", "shape": [None, height, width, channels], "dtype": "float32",
                  "range": [0.0, 255.0]},
        "output": {"name": OUTPUT_KEY, "shape": [None, num_classes], "dtype": "float32"},
        "signatures": signatures,
        "keras_files": {"model": keras_file},
        "models": {"model": model.name},
    })
    final, _ = _publish(os.path.join(base_dir, name), version, build, meta)
    return final


def _checked_export(model, name, version, metadata, class_names, preprocessing, size, channels, volume=False):
    """What every export checks first: ``(num_classes, name, version, metadata, class names, preprocessing record)``."""
    num_classes = _num_classes(model)
    name = _check_name(model.name if name is None else name)
    version = _check_version(version)
    metadata = _check_metadata(metadata)
    class_names, preprocessing = _from_metadata(metadata, class_names, preprocessing)
    names = _class_names(class_names, model.name, num_classes)
    prep = _preprocessing(preprocessing, model.name, size, channels, volume=volume)
    return num_classes, name, version, metadata, names, prep


def _export_volume(model, base_dir, name, version, metadata, image_bytes_endpoint, shape, class_names,
                   preprocessing):
    """:func:`export` of a volume model: ``serving_default`` on ``volume`` [batch, D, H, W, 1] in [0, 1]."""
    if image_bytes_endpoint:
        raise errors.ConfigurationError(
            f"Model {model.name!r} takes volumes [batch, D, H, W, 1]; `image_bytes_endpoint` (a PNG/JPEG "
            "serving_bytes signature) exists for 2-D image models only: leave it None or False."
        )
    depth, height, width, channels = shape
    if not depth == height == width:
        raise errors.ConfigurationError(
            f"The volume3d pipeline makes cubes; model {model.name!r} takes volumes of {shape[:3]}."
        )
    num_classes, name, version, metadata, names, prep = _checked_export(
        model, name, version, metadata, class_names, preprocessing, depth, channels, volume=True)

    import tensorflow as tf

    keras_file = f"{name}.keras"

    def build(folder):
        archive = _archive()

        volume_spec = tf.TensorSpec([None, depth, height, width, channels], tf.float32, name="volume")

        @tf.function(input_signature=[volume_spec], autograph=False)
        def serving_default(volume):
            volume = _checked_images(volume, shape, "volume",
                                     "grey values in [0, 1] (the volume3d pipeline's output)")
            # A volume in HU or 0-255 would still get a confident answer: refuse it instead.
            message = ("`volume` holds values outside [0, 1]; send the volume3d pipeline's grey values, "
                       "not HU or 0-255 pixels")
            with tf.control_dependencies([tf.debugging.assert_less_equal(volume, 1.0, message=message),
                                          tf.debugging.assert_greater_equal(volume, 0.0, message=message)]):
                volume = tf.identity(volume)
            return {OUTPUT_KEY: _probabilities(model, volume)}

        archive.add_endpoint(SERVING_DEFAULT, serving_default)
        archive.write_out(folder, verbose=False)
        os.makedirs(os.path.join(folder, ASSETS_EXTRA), exist_ok=True)
        _save_keras(model, folder, keras_file)

    meta = _base_meta(name, "volume", names, prep, metadata)
    meta.update({
        "input": {"name": "volume", "shape": [None, depth, height, width, channels], "dtype": "float32",
                  "range": [0.0, 1.0]},
        "output": {"name": OUTPUT_KEY, "shape": [None, num_classes], "dtype": "float32"},
        "signatures": {
            SERVING_DEFAULT: f"volume float32 [batch, {depth}, {height}, {width}, {channels}] in [0, 1] -> "
                             f"probabilities float32 [batch, {num_classes}]",
        },
        "keras_files": {"model": keras_file},
        "models": {"model": model.name},
    })
    final, _ = _publish(os.path.join(base_dir, name), version, build, meta)
    return final


def _head_list(heads):
    """``[(name, model)]`` in the order given: a dict, or (name, model) pairs."""
    if isinstance(heads, dict):
        pairs = list(heads.items())
    else:
        pairs = list(heads)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            raise errors.ConfigurationError(
                "`heads` must be a dict {name: model} or a list of (name, model) pairs, in the ensemble's input "
                "order; the names say which features each head takes."
            )
    names = [key for key, _ in pairs]
    if not pairs or len(set(names)) != len(names):
        raise errors.ConfigurationError(f"`heads` must name at least one head, each once. Received: {names}")
    clash = [key for key in names if key in PIPELINE_PARTS or not _NAME.fullmatch(key)]
    if clash:
        raise errors.ConfigurationError(
            f"head names become file names beside {', '.join(PIPELINE_PARTS)}: use letters, digits, '.', '_' or "
            f"'-' and neither of those two. Received: {clash}"
        )
    return pairs


def _head_features(head_list, head_features):
    """``{name: "features" | "weighted"}``: ``head_features`` where given, else the head's registration."""
    from covid_keras.models import heads as registry

    head_features = dict(head_features or {})
    unknown = sorted(set(head_features) - {key for key, _ in head_list})
    if unknown:
        raise errors.ConfigurationError(f"`head_features` names heads that `heads` has not: {unknown}")
    out = {}
    for key, _ in head_list:
        if key not in head_features and key not in registry.registered_heads():
            raise errors.ConfigurationError(
                f"Head {key!r} is not registered (covid_keras.models.register_head); pass "
                f"head_features={{{key!r}: 'features' or 'weighted'}}."
            )
        kind = head_features.get(key) or registry.get_head(key).features
        if kind not in registry.FEATURE_KINDS:
            raise errors.ConfigurationError(
                f"`head_features[{key!r}]` must be one of {registry.FEATURE_KINDS}. Received: {kind!r}"
            )
        out[key] = kind
    return out


def export_patient_pipeline(slice_model, heads, ensemble, base_dir, name="patient_pipeline", version=None,
                            metadata=None, *, class_names=None, preprocessing=None, head_features=None,
                            slice_batch_size=SLICE_BATCH_SIZE):
    """Exports paper 001's whole patient-level model as ONE SavedModel.

    ``serving_default``: ``slices`` float32 [n, H, W, 3], the n >= 1 slices
    of one study as :func:`covid_keras.preprocess.ct_slices` makes them (the
    grey slice repeated over 3 channels, values 0-255) -> ``probabilities``
    float32 [1, classes]. Inside: the slice model gives per-slice
    ``features`` (F, 1024 in paper 001) and probabilities (C), run
    ``slice_batch_size`` slices at a time; the weighted features are
    ``concat(features * p_c)`` (C * F, as
    :func:`covid_keras.models.weighted_features`); each head takes
    ``{"slice_features": x[None], "slice_mask": all-True mask[None]}`` with
    ``x`` the features or the weighted features, as it was trained; the
    heads' probabilities, concatenated in the order of ``heads`` (paper 001:
    maxpool, maxpool_weighted, bilstm, bilstm_weighted, 12 values), go
    through the ensemble MLP. Input checks as for :func:`export`. Every
    ``.keras`` model goes in ``assets.extra/``; the metadata records
    ``head_order`` and ``head_features``.

    Args:
        slice_model: :func:`covid_keras.models.multiscale_resnet50` (a model
            with a ``features`` layer and a probability output).
        heads: dict ``{name: head model}`` in the ensemble's input order, or
            a list of ``(name, model)`` pairs. Each model has the inputs
            ``slice_features`` and ``slice_mask`` and one probability output
            (:func:`covid_keras.models.register_head`).
        ensemble: :func:`covid_keras.models.ensemble_mlp` with
            ``num_heads=len(heads)``.
        base_dir, name, version, metadata: as for :func:`export`.
        class_names: the ensemble's classes in softmax order (default: from
            ``metadata``, as for :func:`export`; never guessed).
        preprocessing: the slices' ``ct_slices`` preprocessing (default:
            from ``metadata``, as for :func:`export`).
        head_features: ``{name: "features" | "weighted"}``, which per-slice
            features each head takes; a head left out takes what its
            registration says (:func:`covid_keras.models.get_head`).
        slice_batch_size: slices per slice-model call inside the graph.

    Returns:
        The version folder's path.

    Raises:
        ConfigurationError: the models do not fit together (feature widths,
            class counts, head names, an unregistered head without
            ``head_features``), or bad arguments as for :func:`export`.
    """
    from covid_keras.models.heads import check_head_model

    base_dir, name, version = _split_version_dir(base_dir, name, version)
    shape = _image_input(slice_model, "slice model")
    num_classes = _num_classes(slice_model, "slice model")
    try:
        features_layer = slice_model.get_layer("features")
    except ValueError:
        raise errors.ConfigurationError(
            f"The slice model {slice_model.name!r} has no layer named 'features'; build it with "
            "covid_keras.models.multiscale_resnet50."
        ) from None
    feature_dim = int(features_layer.output.shape[-1])
    head_list = _head_list(heads)
    kinds = _head_features(head_list, head_features)
    widths = {"features": feature_dim, "weighted": feature_dim * num_classes}
    for key, head in head_list:
        check_head_model(key, head, widths[kinds[key]], num_classes)
    ensemble_inputs = getattr(ensemble, "inputs", None) or []
    if len(ensemble_inputs) != 1 or ensemble_inputs[0].shape[-1] != len(head_list) * num_classes:
        raise errors.ConfigurationError(
            f"The ensemble {ensemble.name!r} must take one [batch, {len(head_list) * num_classes}] input "
            f"({len(head_list)} heads x {num_classes} probabilities). Received: input shapes "
            f"{[tuple(t.shape) for t in ensemble_inputs]}"
        )
    out_classes = _num_classes(ensemble, "ensemble")
    name = _check_name(name)
    version = _check_version(version)
    metadata = _check_metadata(metadata)
    if isinstance(slice_batch_size, bool) or not isinstance(slice_batch_size, numbers.Integral) \
            or slice_batch_size < 1:
        raise errors.ConfigurationError(
            f"`slice_batch_size` must be a positive integer. Received: slice_batch_size={slice_batch_size!r}"
        )
    slice_batch_size = int(slice_batch_size)
    class_names, preprocessing = _from_metadata(metadata, class_names, preprocessing)
    names = _class_names(class_names, name, out_classes)
    prep = _preprocessing(preprocessing, name, shape[0], shape[2])

    import keras
    import tensorflow as tf

    height, width, channels = shape
    extractor = keras.Model(slice_model.inputs, [features_layer.output, slice_model.outputs[0]],
                            name=f"{slice_model.name}_features")
    feature_spec = tf.TensorSpec([slice_batch_size, feature_dim], tf.float32)
    prob_spec = tf.TensorSpec([slice_batch_size, num_classes], tf.float32)

    def slice_outputs(slices):
        """[n, H, W, C] -> features [n, F], probabilities [n, C], slice_batch_size at a time."""
        n = tf.shape(slices)[0]
        chunks = (n + slice_batch_size - 1) // slice_batch_size
        padded = tf.pad(slices, [[0, chunks * slice_batch_size - n], [0, 0], [0, 0], [0, 0]])
        padded = tf.reshape(padded, [chunks, slice_batch_size, height, width, channels])

        def run(batch):
            features, probs = extractor(batch, training=False)
            return tf.cast(features, tf.float32), tf.cast(probs, tf.float32)

        features, probs = tf.map_fn(run, padded, fn_output_signature=(feature_spec, prob_spec),
                                    parallel_iterations=1)
        return (tf.reshape(features, [-1, feature_dim])[:n],
                tf.reshape(probs, [-1, num_classes])[:n])

    def build(folder):
        archive = _archive()  # the endpoint's function tracks every model's variables, once

        slices_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="slices")

        @tf.function(input_signature=[slices_spec], autograph=False)
        def serving_default(slices):
            slices = _checked_images(slices, shape, "slices")
            n = tf.shape(slices)[0]
            check = tf.debugging.assert_positive(n, message="`slices` is empty; send the study's slices (n >= 1)")
            with tf.control_dependencies([check]):
                slices = tf.identity(slices)
            features, probs = slice_outputs(slices)
            weighted = tf.concat([features * probs[:, c:c + 1] for c in range(num_classes)], axis=-1)
            mask = tf.ones([1, n], tf.bool)
            head_probs = []
            for key, head in head_list:
                x = weighted if kinds[key] == "weighted" else features
                # By input name: a researcher's head may list its two inputs in either order.
                head_out = head({"slice_features": x[None], "slice_mask": mask}, training=False)
                head_probs.append(tf.cast(head_out, tf.float32))
            return {OUTPUT_KEY: _probabilities(ensemble, tf.concat(head_probs, axis=-1))}

        archive.add_endpoint(SERVING_DEFAULT, serving_default)
        archive.write_out(folder, verbose=False)
        os.makedirs(os.path.join(folder, ASSETS_EXTRA), exist_ok=True)
        _save_keras(slice_model, folder, "slice_model.keras")
        for key, head in head_list:
            _save_keras(head, folder, f"{key}.keras")
        _save_keras(ensemble, folder, "ensemble.keras")

    keras_files = {"slice_model": "slice_model.keras", **{key: f"{key}.keras" for key, _ in head_list},
                   "ensemble": "ensemble.keras"}
    meta = _base_meta(name, "patient_pipeline", names, prep, metadata)
    meta.update({
        "input": {"name": "slices", "shape": [None, height, width, channels], "dtype": "float32",
                  "range": [0.0, 255.0]},
        "output": {"name": OUTPUT_KEY, "shape": [1, out_classes], "dtype": "float32"},
        "signatures": {
            SERVING_DEFAULT: f"slices float32 [n, {height}, {width}, {channels}] (one study) -> "
                             f"probabilities float32 [1, {out_classes}]",
        },
        "keras_files": keras_files,
        "models": {"slice_model": slice_model.name, **{key: head.name for key, head in head_list},
                   "ensemble": ensemble.name},
        "head_order": [key for key, _ in head_list],
        "head_features": kinds,
        "slice_batch_size": slice_batch_size,
    })
    final, _ = _publish(os.path.join(base_dir, name), version, build, meta)
    return final


def _two_step_input(step1, step2):
    """(H, W, C) that both steps take; each must give [batch, 3] probabilities."""
    shape = _image_input(step1, "step 1 model")
    other = _image_input(step2, "step 2 model")
    if other != shape:
        raise errors.ConfigurationError(
            f"Both steps classify the same image: the step 1 model takes {shape} and the step 2 model {other}."
        )
    if shape[0] != shape[1]:
        raise errors.ConfigurationError(
            f"The xray pipeline makes square images; the step models take {shape[:2]}."
        )
    for what, model in (("step 1 model", step1), ("step 2 model", step2)):
        count = _num_classes(model, what)
        if count != 3:
            raise errors.ConfigurationError(
                f"The {what} {model.name!r} must give 3 probabilities (paper 004's step classes); it gives {count}."
            )
    return shape


def _two_step_preprocessing(preprocessing, metadata, name, shape):
    """The xray preprocessing record: from the argument, else ``metadata``, else ``{"pipeline": "xray"}``."""
    _, preprocessing = _from_metadata(metadata, None, preprocessing)
    if preprocessing is None:
        preprocessing = {"pipeline": "xray"}  # the hierarchy classifies X-rays: nothing else to choose
    prep = _preprocessing(preprocessing, name, shape[0], shape[2])
    if prep["pipeline"] != "xray":
        raise errors.ConfigurationError(
            f"A two-step export classifies chest X-rays: `preprocessing['pipeline']` must be 'xray'. "
            f"Received: pipeline={prep['pipeline']!r}"
        )
    return prep


def _two_step_outputs(step1, step2, images, unrouted_covid_fraction):
    """The two-step graph: step 1 on every image, step 2 on the routed ones, the 4-class combination."""
    import tensorflow as tf

    from covid_keras.models.xraycnn import combine_tensors, route

    p1 = _probabilities(step1, images)
    routed = route(p1)
    index = tf.where(routed)  # [k, 1]: the routed rows; step 2 sees only them, as HierarchicalXrayClassifier
    # Step 2 runs only when k > 0: an empty batch failed in its second convolution (TF 2.21 on CPU,
    # "input depth must be evenly divisible by filter depth").
    p2_routed = tf.cond(tf.size(index) > 0,
                        lambda: _probabilities(step2, tf.gather_nd(images, index)),
                        lambda: tf.zeros([0, 3], tf.float32))
    unrouted = tf.fill(tf.stack([tf.shape(images)[0], 3]), float("nan"))
    p2 = tf.tensor_scatter_nd_update(unrouted, index, p2_routed)
    return {"step1": p1, "step2": p2, "routed": routed,
            OUTPUT_KEY: combine_tensors(p1, p2, routed, unrouted_covid_fraction)}


def export_two_step(step1, step2, base_dir, name="xray_cnn", version=None, metadata=None, *,
                    unrouted_covid_fraction=0.5, preprocessing=None):
    """Exports paper 004's two-step X-ray diagnosis (XrayCNN) as ONE SavedModel.

    Follows Gao & Wang (paper 004), Fig. 4, as
    :class:`covid_keras.models.HierarchicalXrayClassifier` does: step 1
    classifies every image over ``CLASS_NAMES["xraycnn_step1"]`` (normal,
    bacterial, viral); where its argmax is viral, step 2 classifies it over
    ``CLASS_NAMES["xraycnn_step2"]`` (non-viral pneumonia, COVID-19, other
    viral); the two combine over ``CLASS_NAMES["xraycnn_4class"]`` by
    :func:`covid_keras.models.xraycnn.combine`'s rule, computed in the graph
    by :func:`~covid_keras.models.xraycnn.combine_tensors` (the same float32
    numbers). ``kind`` is ``two_step``.

    ``serving_default``: ``image`` float32 [batch, H, W, 3], raw pixels in
    [0, 255] as :func:`covid_keras.preprocess.xray` makes them -> a dict:
    ``step1`` float32 [batch, 3], ``step2`` float32 [batch, 3] (step 2's
    probabilities; rows of NaN where step 1 did not route the image to
    step 2, which then never ran on it), ``routed`` bool [batch] and
    ``probabilities`` float32 [batch, 4], the combined answer.
    ``serving_bytes``: ``image_bytes`` string [batch] of PNG/JPEG files,
    decoded as :func:`export`'s -> the same dict. Input checks as for
    :func:`export`. Both ``.keras`` models go in ``assets.extra/``
    (``keras_files`` ``{"step1": ..., "step2": ...}``); the metadata records
    ``output_classes`` (the class list of ``step1``, ``step2`` and
    ``probabilities``) and ``unrouted_covid_fraction``.

    Args:
        step1: the step 1 model, e.g. ``xray_cnn(num_classes=3)``: one
            [batch, H, W, C] input, [batch, 3] probabilities.
        step2: the step 2 model, with the same input.
        base_dir, name, version, metadata: as for :func:`export`.
        unrouted_covid_fraction: COVID-19's share of step 1's viral
            probability for images step 2 does not see, in [0, 1] (see
            :class:`~covid_keras.models.HierarchicalXrayClassifier`).
        preprocessing: the images' ``xray`` preprocessing (default: from
            ``metadata`` as for :func:`export`, else ``{"pipeline":
            "xray"}``: the hierarchy classifies X-rays). The size is the
            models' input side.

    Returns:
        The version folder's path.

    Raises:
        ConfigurationError: a step model without one square image input or
            without 3 probabilities, steps with different inputs, a
            pipeline other than ``xray``, ``unrouted_covid_fraction``
            outside [0, 1], or bad arguments as for :func:`export`.

    Example:
        >>> from covid_keras import models
        >>> step1, step2 = models.xray_cnn(num_classes=3), models.xray_cnn(num_classes=3)
        >>> export_two_step(step1, step2, "/tmp/saved_models", version=1)   # doctest: +SKIP
        '/tmp/saved_models/xray_cnn/1'
    """
    from covid_keras.data.datasets import CLASS_NAMES
    from covid_keras.models.xraycnn import HierarchicalXrayClassifier

    base_dir, name, version = _split_version_dir(base_dir, name, version)
    fraction = HierarchicalXrayClassifier(step1, step2, unrouted_covid_fraction).unrouted_covid_fraction
    shape = _two_step_input(step1, step2)
    name = _check_name(name)
    version = _check_version(version)
    metadata = _check_metadata(metadata)
    prep = _two_step_preprocessing(preprocessing, metadata, name, shape)
    classes = {"step1": list(CLASS_NAMES["xraycnn_step1"]), "step2": list(CLASS_NAMES["xraycnn_step2"]),
               OUTPUT_KEY: list(CLASS_NAMES["xraycnn_4class"])}

    import tensorflow as tf

    height, width, channels = shape
    keras_files = {"step1": "step1.keras", "step2": "step2.keras"}

    def build(folder):
        archive = _archive()  # the endpoints' functions track both models' variables, once

        image_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="image")
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")

        @tf.function(input_signature=[image_spec], autograph=False)
        def serving_default(image):
            return _two_step_outputs(step1, step2, _checked_images(image, shape, "image"), fraction)

        @tf.function(input_signature=[bytes_spec], autograph=False)
        def serving_bytes(image_bytes):
            return _two_step_outputs(step1, step2, _decode_images(image_bytes, shape), fraction)

        archive.add_endpoint(SERVING_DEFAULT, serving_default)
        archive.add_endpoint(SERVING_BYTES, serving_bytes)
        archive.write_out(folder, verbose=False)
        os.makedirs(os.path.join(folder, ASSETS_EXTRA), exist_ok=True)
        for role, model in (("step1", step1), ("step2", step2)):
            _save_keras(model, folder, keras_files[role])

    outputs = (f"step1 float32 [batch, 3], step2 float32 [batch, 3] (NaN rows where not routed), "
               f"routed bool [batch], probabilities float32 [batch, {len(classes[OUTPUT_KEY])}]")
    meta = _base_meta(name, "two_step", classes[OUTPUT_KEY], prep, metadata)
    meta.update({
        "input": {"name": "image", "shape": [None, height, width, channels], "dtype": "float32",
                  "range": [0.0, 255.0]},
        "output": {"name": OUTPUT_KEY, "shape": [None, len(classes[OUTPUT_KEY])], "dtype": "float32"},
        "outputs": {
            "step1": {"shape": [None, 3], "dtype": "float32"},
            "step2": {"shape": [None, 3], "dtype": "float32", "nan_where": "not routed"},
            "routed": {"shape": [None], "dtype": "bool"},
            OUTPUT_KEY: {"shape": [None, len(classes[OUTPUT_KEY])], "dtype": "float32"},
        },
        "output_classes": classes,
        "unrouted_covid_fraction": fraction,
        "signatures": {
            SERVING_DEFAULT: f"image float32 [batch, {height}, {width}, {channels}] in [0, 255] -> {outputs}",
            SERVING_BYTES: f"image_bytes string [batch] PNG/JPEG -> decoded to {channels} channels, resized to "
                           f"{height}x{width} (bilinear, antialiased) -> {outputs}",
        },
        "keras_files": keras_files,
        "models": {"step1": step1.name, "step2": step2.name},
    })
    final, _ = _publish(os.path.join(base_dir, name), version, build, meta)
    return final
