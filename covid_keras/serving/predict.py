"""One study (a DICOM series folder) or one image -> an exported model's answer.

:func:`predict_study` redoes the preprocessing the exported model was
trained with (its ``covid_keras.json`` says which) and runs the
SavedModel's ``serving_default`` signature, as TF Serving would:

* a CT series folder -> :func:`covid_keras.data.read_ct_series` ->
  :func:`covid_keras.preprocess.ct_slices` (size, brightness and
  normalisation from the metadata) -> uint8 [n, H, W] -> float32
  [n, H, W, 3] (the grey slice repeated); for a slice classifier the
  slices are made ``batch_size`` at a time in a worker thread while the
  model answers the ones before, the lung check beside them (see
  :func:`answer_study`'s ``overlap``: the same answer, bit for bit);
* for a volume model (preprocessing ``volume3d``, paper 000) a CT series
  folder -> :func:`covid_keras.data.read_ct_series` ->
  :func:`covid_keras.preprocess.volume3d` (normalisation from the
  metadata, a cube of the model's side) -> the cache's 8-bit grey levels
  (:func:`~covid_keras.preprocess.lung_volume.quantize`, then
  ``dequantize``: training read them from the cache, so the model sees
  exactly those values) -> float32 [1, D, H, W, 1];
* an image file (PNG, JPEG, DICOM) -> :func:`covid_keras.data.read_xray`
  -> :func:`covid_keras.preprocess.xray` for X-ray models, or
  :func:`covid_keras.preprocess.covidx_slice` (one CT slice, as COVIDx-CT)
  for CT slice models.

The study-level answer depends on the export:

* a slice classifier (``kind == "image"``) classifies every slice; its
  answer for the study is the mean of the slice probabilities
  (``"aggregation": "mean_of_slices"``), reported with the slice count;
* a patient pipeline (:func:`covid_keras.serving.export_patient_pipeline`)
  gives the patient answer directly (``"aggregation": "patient_pipeline"``);
* a volume model (``kind == "volume"``) answers for the series' one
  volume (``"aggregation": "volume"``); ``slices`` is the number of slices
  read from the series. It takes CT series folders only;
* paper 004's two-step X-ray diagnosis (``kind == "two_step"``,
  :func:`covid_keras.serving.export_two_step`) answers for one X-ray image
  (the ``xray`` path above) with its combined 4-class probabilities
  (``"aggregation": "two_step"``) and each step's answer under ``steps``.

Exports that record their recipe (``metadata["metadata"]["recipe"]``, see
:meth:`covid_keras.recipes.Recipe.export_metadata`) report its name as
``"recipe"``; when it names a known recipe, the export's class names are
checked against the recipe's class list, with a warning (not an error:
the export's own names are what its softmax was trained on) when they
differ. Older exports without it predict as before.

Only the pseudonymous ``patient_id`` of :class:`CTSeries` ever appears in
the result, never PatientName or PatientID. TensorFlow is imported only
once the input has been read, so bad paths fail fast.
"""

import concurrent.futures
import dataclasses
import os
import time
import warnings

import numpy as np

from covid_keras import errors
from covid_keras.serving.savedmodel import SERVING_DEFAULT, load_metadata, resolve_version_dir

#: Slices per signature call for a slice classifier.
BATCH_SIZE = 32


class ServedModel:
    """An exported version loaded for prediction: its signature and metadata.

    Args:
        model_dir: a version folder (``saved_models/<name>/<version>``) or a
            model folder (its highest version is taken).

    Attributes:
        version_dir: the version folder loaded.
        metadata: :func:`covid_keras.serving.load_metadata`'s dict.
        name, version, kind, class_names, preprocessing: from the metadata.
        output_classes: output name -> class list (a two-step export's
            ``step1``, ``step2`` and ``probabilities``; else only
            ``probabilities``).
        recipe: the name of the recipe the export records
            (``metadata["metadata"]["recipe"]["recipe"]``), or None for an
            export that records none.

    Raises:
        ServingError: no SavedModel or no covid_keras metadata there.

    Warns:
        UserWarning: the export's class names are not the class list of
            the recipe it records (for its recorded classes).
    """

    def __init__(self, model_dir):
        self.version_dir = resolve_version_dir(model_dir)
        self.metadata = load_metadata(self.version_dir)
        self.name = self.metadata.get("name")
        self.version = self.metadata.get("version")
        self.kind = self.metadata["kind"]
        self.class_names = list(self.metadata["class_names"])
        self.preprocessing = dict(self.metadata.get("preprocessing") or {})
        self.input_name = self.metadata.get("input", {}).get("name", "image")
        self.input_shape = self.metadata.get("input", {}).get("shape")
        self.output_classes = dict(self.metadata.get("output_classes") or {"probabilities": self.class_names})
        self._recipe_record = _recipe_record(self.metadata)
        self.recipe = self._recipe_record["recipe"] if self._recipe_record else None
        self._signature = None
        _check_recipe_classes(self)

    @property
    def signature(self):
        """The loaded ``serving_default`` (loaded on first use)."""
        if self._signature is None:
            import tensorflow as tf

            loaded = tf.saved_model.load(self.version_dir)
            if SERVING_DEFAULT not in loaded.signatures:
                raise errors.ServingError(
                    f"{self.version_dir}: the SavedModel has no {SERVING_DEFAULT} signature; export it "
                    "with covid_keras.serving.export."
                )
            self._loaded = loaded  # keeps the variables alive
            self._signature = loaded.signatures[SERVING_DEFAULT]
        return self._signature

    def __call__(self, inputs):
        """float32 [n, H, W, C] (a volume model: [n, D, H, W, 1]) -> probabilities as a NumPy array."""
        return self.outputs(inputs)["probabilities"]

    def outputs(self, inputs):
        """float32 [n, H, W, C] (a volume model: [n, D, H, W, 1]) -> every output of the signature.

        Returns:
            A dict of NumPy arrays: ``probabilities``, and for a two-step
            export also ``step1``, ``step2`` and ``routed``.
        """
        import tensorflow as tf

        out = self.signature(**{self.input_name: tf.constant(inputs, tf.float32)})
        return {key: value.numpy() for key, value in out.items()}


def _recipe_record(metadata):
    """The export's recipe record (``{"recipe": name, "classes": ..., ...}``), or None."""
    own = metadata.get("metadata")
    record = own.get("recipe") if isinstance(own, dict) else None
    if isinstance(record, str):  # a bare name
        return {"recipe": record}
    if isinstance(record, dict) and isinstance(record.get("recipe"), str):
        return record
    return None


def _recipe_class_lists(recipe):
    """Every class list ``recipe`` gives: one, or one per value of the setting that chooses it (``task``)."""
    from covid_keras import recipes

    config = recipes.config_class(recipe, "ExportedConfig")()
    lists = [recipe.class_names(config)]
    if not callable(recipe.classes):
        return lists
    for param in recipe.all_params():
        if not param.choices or isinstance(param.default, tuple):
            continue
        for choice in param.choices:
            try:
                names = recipe.class_names(dataclasses.replace(config, **{param.name: choice}))
            except errors.ConfigurationError:  # a combination the recipe refuses
                continue
            if names not in lists:
                lists.append(names)
    return lists


def _check_recipe_classes(model):
    """Warns when the export's class names are not its recorded recipe's classes.

    Compared with the classes the export recorded for its config when the
    recipe gives that list, else with every list the recipe gives. A
    recipe this installation does not know is not checked.
    """
    from covid_keras import recipes

    if model.recipe not in recipes.RECIPES:
        return
    lists = _recipe_class_lists(recipes.RECIPES[model.recipe])
    if model.kind == "two_step":  # the recipe trains each step: its lists are the steps' classes
        _check_step_classes(model, lists)
        return
    recorded = model._recipe_record.get("classes")
    expected = [list(recorded)] if isinstance(recorded, list) and list(recorded) in lists else lists
    if model.class_names not in expected:
        wanted = " or ".join(str(names) for names in expected)
        warnings.warn(
            f"{model.version_dir}: its class names {model.class_names} are not those of recipe "
            f"{model.recipe!r} ({wanted}); the answer uses the export's names, check that they are "
            "the model's softmax order.",
            stacklevel=3,
        )


def _check_step_classes(model, lists):
    """Warns when a two-step export's step class lists are not among its recipe's class lists."""
    for step in ("step1", "step2"):
        names = model.output_classes.get(step)
        if names not in lists:
            warnings.warn(
                f"{model.version_dir}: its {step} class names {names} are not among those of recipe "
                f"{model.recipe!r} ({' or '.join(str(n) for n in lists)}); the answer uses the export's "
                "names, check that they are the step model's softmax order.",
                stacklevel=4,
            )


def load_model(model_dir):
    """Loads an exported version for :func:`predict_study` (reuse it for many studies)."""
    return ServedModel(model_dir)


def _channels(grey, channels):
    """float32 [..., H, W] -> [..., H, W, channels] (the grey repeated)."""
    grey = np.asarray(grey, dtype=np.float32)
    return np.repeat(grey[..., None], channels, axis=-1)


def _naming(path, error):
    """``error`` again, its message starting with ``path`` when it did not name it."""
    message = str(error)
    if path in message:
        return error
    return type(error)(f"{path}: {message[:1].lower()}{message[1:]}")


def _input_geometry(model):
    """(side, channels) of the model's input, as its preprocessing makes it."""
    size = int(model.preprocessing.get("size") or model.input_shape[1])
    channels = int(model.input_shape[-1]) if model.input_shape else 3
    return size, channels


def _is_series(path, pipeline):
    """Whether ``path`` is read as a CT series folder (a missing path is, for a CT pipeline)."""
    return os.path.isdir(path) or (not os.path.exists(path) and pipeline in ("ct_slices", "volume3d"))


def _ct_slices_options(model):
    """The export's keyword arguments of :func:`covid_keras.preprocess.ct_slices` (besides ``size``)."""
    prep = model.preprocessing
    options = {k: prep[k] for k in ("brightness", "normalization") if k in prep}
    if "window" in prep:
        options["window"] = tuple(prep["window"])
    return options


def _read_and_preprocess(path, model, seconds, check_lungs=True, series_uid=None):
    """Returns (inputs float32 [n, H, W, C] or [1, D, H, W, 1], what, patient_id, slices read).

    Every error names ``path``: the preprocessing steps see only the study
    (``series se-... of patient pt-...``), so their errors get it prefixed.
    """
    try:
        return _read_and_preprocess_unnamed(path, model, seconds, check_lungs, series_uid)
    except errors.CovidKerasError as e:
        raise _naming(path, e) from None


def _read_and_preprocess_unnamed(path, model, seconds, check_lungs, series_uid):
    from covid_keras import data, preprocess

    prep = model.preprocessing
    pipeline = prep.get("pipeline")
    size, channels = _input_geometry(model)
    if pipeline not in ("ct_slices", "xray", "volume3d"):
        raise errors.ServingError(
            f"{model.version_dir}: its metadata names preprocessing {pipeline!r}, which predict_study "
            "cannot redo; export it with covid_keras.serving.export."
        )
    is_series = _is_series(path, pipeline)
    if pipeline == "volume3d":
        if not is_series:
            raise errors.ConfigurationError(
                f"{path}: is an image file, but model {model.name} (version {model.version}) is a volume "
                "model that takes CT series folders; pass the folder of a DICOM series."
            )
        return _read_volume(path, model, seconds, size, series_uid)
    if is_series:
        if pipeline != "ct_slices":
            raise errors.ConfigurationError(
                f"{path}: is a folder, but model {model.name} (version {model.version}) takes single "
                "X-ray images; pass an image file."
            )
        start = time.perf_counter()
        ct = data.read_ct_series(path, series_uid=series_uid)
        seconds["read"] = time.perf_counter() - start
        start = time.perf_counter()
        if check_lungs:
            # A chest model would still answer for a head CT: refuse it instead.
            from covid_keras.preprocess.lung_volume import require_lungs

            require_lungs(ct)
        slices = preprocess.ct_slices(ct, size=size, **_ct_slices_options(model))
        inputs = _channels(slices, channels)
        seconds["preprocess"] = time.perf_counter() - start
        return inputs, "ct_series", ct.patient_id, len(inputs)
    if series_uid is not None:
        raise errors.ConfigurationError(
            f"{path}: is an image file, but a series UID was given; --series-uid / series_uid= "
            "chooses a series of a CT study folder, leave it unset for an image."
        )
    start = time.perf_counter()
    img = data.read_xray(path)
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    if pipeline == "xray":
        # The xray cache holds 8-bit grey levels (preprocess.pipelines): the model sees exactly those values.
        x = np.rint(preprocess.xray(img, size=size))  # [size, size, 3]
        inputs = x[None] if channels == 3 else x[None, ..., :channels]
    else:  # one CT slice image, e.g. a COVIDx-CT PNG
        inputs = _channels(preprocess.covidx_slice(img, size=size)[None], channels)
    seconds["preprocess"] = time.perf_counter() - start
    return inputs, "image", None, len(inputs)


def _read_volume(path, model, seconds, size, series_uid):
    """A CT series folder -> float32 [1, size, size, size, 1], as the volume3d cache holds it.

    :func:`~covid_keras.preprocess.volume3d` itself refuses a series without
    lungs (NoLungError): its lung segmentation chooses the slices, so there
    is no lung check to skip.
    """
    from covid_keras import data
    from covid_keras.preprocess import lung_volume

    start = time.perf_counter()
    ct = data.read_ct_series(path, series_uid=series_uid)
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    volume = lung_volume.volume3d(ct, normalization=model.preprocessing.get("normalization", "minmax"),
                                  output_shape=(size,) * 3)
    # Training reads the cache's uint8 grey levels: the model sees exactly those values.
    volume = lung_volume.dequantize(lung_volume.quantize(volume))
    seconds["preprocess"] = time.perf_counter() - start
    return volume[None, ..., None], "ct_series", ct.patient_id, int(np.shape(ct.hu)[0])


def _steps(model, outputs):
    """A two-step export's answer for its one image, step by step (JSON-ready)."""
    routed = bool(outputs["routed"][0])

    def named(step):
        return {c: float(p) for c, p in zip(model.output_classes[step], outputs[step][0])}

    return {"step1": named("step1"), "step2": named("step2") if routed else None, "routed": routed}


def predict_study(path, model_dir, *, batch_size=BATCH_SIZE, timings=False, check_lungs=True, series_uid=None):
    """Classifies one study (a DICOM series folder) or one image with an exported model.

    Args:
        path: a CT series folder, or an image file (PNG, JPEG, DICOM).
        model_dir: an exported version folder (``saved_models/<name>/<v>``),
            a model folder (its latest version), or a :class:`ServedModel`
            from :func:`load_model`.
        batch_size: slices per call of a slice classifier (and, for a CT
            series, per chunk preprocessed beside the model).
        timings: add ``"seconds"``: ``load``, ``read``, ``preprocess``,
            ``model`` and ``total`` wall-clock seconds (with
            ``"overlapped": True`` when preprocessing ran beside the model;
            see :func:`answer_study` for what they mean then).
        check_lungs: refuse a CT series without lungs (a head or abdomen
            CT) with :class:`NoLungError` before the model answers for it.
            A volume model always refuses one: its ``volume3d`` pipeline
            needs the lungs to choose its slices, so False changes nothing.
        series_uid: the series to read from a study folder holding several
            (see :func:`covid_keras.data.read_ct_series`); by default the
            largest axial CT series.

    Returns:
        A JSON-ready dict: ``probabilities`` ({class: p}), ``predicted_class``,
        ``slices`` (slices or images run; for a volume model the slices
        read from the series), ``model``, ``model_version``, ``kind``
        (``image``, ``patient_pipeline``, ``volume`` or ``two_step``),
        ``aggregation`` (``mean_of_slices``, ``patient_pipeline``,
        ``volume``, ``image`` or ``two_step``), ``input`` (``ct_series`` or
        ``image``), for a two-step export ``steps`` (``{"step1": {class:
        p}, "step2": {class: p} or None when step 1 did not route the
        image to step 2, "routed": bool}``), ``recipe``
        (the recipe's name, when the export records one) and, for a CT
        series, the pseudonymous ``patient_id``.

    Raises:
        ServingError: ``model_dir`` holds no exported model.
        NoDicomError, DicomReadError, SeriesGeometryError, ModalityError,
        ImageReadError, PreprocessingError: the study cannot be read or
            preprocessed (each one sentence naming the path).
        NoLungError: the CT series shows no lungs (``check_lungs``, and
            always for a volume model).
        ConfigurationError: a folder given to an X-ray model, an image
            file given to a volume model, a bad
            ``batch_size``, a ``series_uid`` the folder does not hold, or one
            given with an image file.

        Every error's message names ``path``.

    Example:
        >>> predict_study("study_dir", "saved_models/multiscale_resnet50/1")   # doctest: +SKIP
        {'probabilities': {'Normal': 0.2, 'CAP': 0.1, 'COVID-19': 0.7}, 'predicted_class': 'COVID-19', ...}
    """
    return answer_study(path, model_dir, batch_size=batch_size, timings=timings, check_lungs=check_lungs,
                        series_uid=series_uid).result


@dataclasses.dataclass
class StudyAnswer:
    """What :func:`answer_study` computed for one study or image.

    Attributes:
        result: :func:`predict_study`'s JSON-ready answer.
        inputs: float32, the model's input exactly as the signature got it:
            [n, H, W, C] slices or one [1, H, W, C] image, or a volume model's
            [1, D, H, W, 1].
        per_slice: float32 [n, classes], the slice probabilities of a slice
            classifier given a CT series (their mean is the answer), else None.
    """

    result: dict
    inputs: np.ndarray
    per_slice: np.ndarray | None = None


def _report(progress, stage, done, total):
    if progress is not None:
        progress(stage, done, total)


def answer_study(path, model_dir, *, batch_size=BATCH_SIZE, timings=False, check_lungs=True, series_uid=None,
                 progress=None, overlap=True):
    """:func:`predict_study`, keeping the model's input and the per-slice probabilities.

    For callers that show more than the answer (the app,
    :mod:`covid_keras.app`: the slice curve and the slices' heat maps).

    With ``overlap`` (the default), a slice classifier given a CT series
    folder does not wait for the whole study to be preprocessed: once the
    series is read (the min-max normalisation needs all of it), a worker
    thread makes the slices ``batch_size`` at a time (grey levels, body
    RoI, brightness, resize:
    :func:`covid_keras.preprocess.body_slices.ct_slice_chunks`) while the
    SavedModel answers those already made, and a second one runs the lung
    check beside them; loading the SavedModel overlaps the first chunks.
    The answer, ``inputs`` and ``per_slice`` are the same, bit for bit, as
    without it, and so are the errors (type and message; a lung check
    failure still wins over any later error, as it comes first without
    overlap); only a study that fails may have reported some ``"model"``
    progress first. Other inputs and models run in order whatever
    ``overlap`` says.

    Args:
        path, model_dir, batch_size, timings, check_lungs, series_uid: as
            for :func:`predict_study`.
        progress: None, or a callable ``progress(stage, done, total)``,
            called from the calling thread as the work goes on: ``stage``
            ``"read"`` (0 of 1 before reading, 1 of 1 once read and
            preprocessed; with overlap, once read and the first slices are
            ready) and ``"model"`` (slices answered so far of all of them,
            after each batch).
        overlap: run the preprocessing of a CT series beside the model
            (see above); False runs read, lung check, preprocessing and
            model one after the other.

    Returns:
        A :class:`StudyAnswer`. With ``timings`` and overlap, its
        ``"seconds"`` also hold ``"overlapped": True``, and ``preprocess``
        is the time spent preprocessing, summed over the threads that did
        it (the lung check, the volume's grey range and every chunk: most
        of it beside the model), ``model`` the time from the first batch
        given to the model to its last answer (waits for a chunk
        included), ``load`` loading the model (beside the first chunks);
        ``read`` and ``total`` are as without overlap.

    Raises:
        As :func:`predict_study`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise errors.ConfigurationError(f"`batch_size` must be a positive integer. Received: {batch_size!r}")
    total_start = time.perf_counter()
    seconds = {}
    path = os.fspath(path)
    start = time.perf_counter()
    model = model_dir if isinstance(model_dir, ServedModel) else ServedModel(model_dir)
    seconds["load"] = time.perf_counter() - start
    _report(progress, "read", 0, 1)
    if overlap and _overlaps(path, model):
        inputs, patient_id, per_slice = _overlapped_series(path, model, seconds, check_lungs, series_uid,
                                                           batch_size, progress)
        seconds["total"] = time.perf_counter() - total_start
        seconds["overlapped"] = True
        return _study_answer(model, seconds, timings, inputs, "ct_series", patient_id, len(inputs),
                             per_slice.mean(axis=0), "mean_of_slices", per_slice=per_slice)
    inputs, what, patient_id, slices = _read_and_preprocess(path, model, seconds, check_lungs, series_uid)
    _report(progress, "read", 1, 1)
    start = time.perf_counter()
    model.signature  # noqa: B018 - load the SavedModel (timed apart from the model run)
    seconds["load"] += time.perf_counter() - start
    start = time.perf_counter()
    steps = per_slice = None
    _report(progress, "model", 0, len(inputs))
    if model.kind == "two_step":
        outputs = model.outputs(inputs)
        probabilities = outputs["probabilities"][0]
        steps = _steps(model, outputs)
        aggregation = model.kind
    elif model.kind in ("patient_pipeline", "volume"):
        probabilities = model(inputs)[0]
        aggregation = model.kind
    else:
        per_slice = _per_slice(model, inputs, batch_size, progress)
        probabilities = per_slice.mean(axis=0)
        aggregation = "mean_of_slices" if what == "ct_series" else "image"
    _report(progress, "model", len(inputs), len(inputs))
    seconds["model"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - total_start
    return _study_answer(model, seconds, timings, inputs, what, patient_id, slices, probabilities, aggregation,
                         steps=steps, per_slice=per_slice if what == "ct_series" else None)


def _study_answer(model, seconds, timings, inputs, what, patient_id, slices, probabilities, aggregation, *,
                  steps=None, per_slice=None):
    """The :class:`StudyAnswer` of :func:`answer_study` from what it computed."""
    result = {
        "probabilities": {c: float(p) for c, p in zip(model.class_names, probabilities)},
        "predicted_class": model.class_names[int(np.argmax(probabilities))],
        "slices": int(slices),
        "model": model.name,
        "model_version": model.version,
        "kind": model.kind,
        "aggregation": aggregation,
        "input": what,
    }
    if steps is not None:
        result["steps"] = steps
    if model.recipe:
        result["recipe"] = model.recipe
    if patient_id:
        result["patient_id"] = patient_id
    if timings:
        result["seconds"] = {k: v if isinstance(v, bool) else round(v, 3) for k, v in seconds.items()}
    return StudyAnswer(result=result, inputs=inputs, per_slice=per_slice)


def _per_slice(model, inputs, batch_size, progress):
    """A slice classifier's probabilities for every slice, ``batch_size`` slices per call."""
    out = []
    for i in range(0, len(inputs), batch_size):
        out.append(model(inputs[i:i + batch_size]))
        _report(progress, "model", min(i + batch_size, len(inputs)), len(inputs))
    return np.concatenate(out)


# --------------------------------------------------------------------------
# A CT series through a slice classifier, preprocessing beside the model
# --------------------------------------------------------------------------


def _overlaps(path, model):
    """Whether :func:`answer_study` can overlap preprocessing and model: a slice classifier given a CT series."""
    pipeline = model.preprocessing.get("pipeline")
    return model.kind == "image" and pipeline == "ct_slices" and _is_series(path, pipeline)


def _named_call(path, function, *args, **kwargs):
    """``function(*args, **kwargs)``, its covid_keras errors naming ``path`` (as :func:`_read_and_preprocess`)."""
    try:
        return function(*args, **kwargs)
    except errors.CovidKerasError as e:
        raise _naming(path, e) from None


class _Busy:
    """Seconds spent preprocessing, added up from any thread (``+=`` on a float is not atomic)."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self.seconds = 0.0

    def timed(self, function, *args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start


def _overlapped_series(path, model, seconds, check_lungs, series_uid, batch_size, progress):
    """Reads a CT series, then preprocesses it beside the model, chunk by chunk.

    Returns:
        (inputs float32 [n, H, W, C], patient_id, per-slice probabilities
        [n, classes]), equal to the sequential path's.
    """
    from covid_keras import data

    start = time.perf_counter()
    ct = _named_call(path, data.read_ct_series, path, series_uid=series_uid)
    seconds["read"] = time.perf_counter() - start
    busy = _Busy()
    # One single-thread pool per job: chunks are made in order (one
    # generator), the lung check beside them; both are joined when the
    # block ends, whatever happened.
    with (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="covid_keras-lungs") as lung_pool,
          concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="covid_keras-slices") as chunk_pool):
        lungs = lung_pool.submit(busy.timed, _named_call, path, _require_lungs, ct) if check_lungs else None
        try:
            inputs, per_slice = _model_beside_chunks(path, model, ct, chunk_pool, busy, lungs, seconds,
                                                     batch_size, progress)
        except Exception:
            _raise_lung_error(lungs, wait=True)  # it would have come first without overlap
            raise
        _raise_lung_error(lungs, wait=True)
    seconds["preprocess"] = busy.seconds
    return inputs, ct.patient_id, per_slice


def _require_lungs(ct):
    from covid_keras.preprocess.lung_volume import require_lungs

    require_lungs(ct)


def _raise_lung_error(lungs, wait):
    """Raises the lung check's error, if it failed (``wait``: once it has finished; else only if it has)."""
    if lungs is None or not (wait or lungs.done()):
        return
    error = lungs.exception()
    if error is not None:
        raise error from None


def _model_beside_chunks(path, model, ct, pool, busy, lungs, seconds, batch_size, progress):
    """The model on each chunk as soon as ``pool`` has made it; returns (inputs, per-slice probabilities).

    Every chunk is queued at once: the worker makes them one after the
    other, straight into their rows of ``inputs`` (which holds them all
    anyway), while the model answers those made. On 2 cores this was
    faster than keeping only the next chunk ready (benchmarks/predict_study.py),
    the work being the same but done early, beside model loading and the
    first batches.
    """
    from covid_keras.preprocess import body_slices

    size, channels = _input_geometry(model)
    chunks = busy.timed(_named_call, path, body_slices.ct_slice_chunks, ct, batch_size, size=size,
                        **_ct_slices_options(model))
    n = int(np.shape(ct.hu)[0])
    inputs = np.empty((n, size, size, channels), dtype=np.float32)
    bounds = [(begin, min(begin + batch_size, n)) for begin in range(0, n, batch_size)]

    def make(begin, end):  # the next chunk, written into its rows of inputs (the grey repeated)
        inputs[begin:end] = _named_call(path, next, chunks)[..., None]

    made = []
    try:
        made.extend(pool.submit(busy.timed, make, begin, end) for begin, end in bounds)
        per_slice = _answer_chunks(model, inputs, bounds, made, lungs, seconds, progress)
    except Exception:
        for future in made:  # chunks not started yet are not made
            future.cancel()
        raise
    return inputs, per_slice


def _answer_chunks(model, inputs, bounds, made, lungs, seconds, progress):
    """Loads the model, then answers each chunk once its future in ``made`` is done."""
    n = len(inputs)
    start = time.perf_counter()
    model.signature  # noqa: B018 - load the SavedModel beside the first chunks
    seconds["load"] += time.perf_counter() - start
    made[0].result()
    _report(progress, "read", 1, 1)
    start = time.perf_counter()
    _report(progress, "model", 0, n)
    out = []
    for (begin, end), future in zip(bounds, made):
        future.result()  # re-raises the worker's error
        out.append(model(inputs[begin:end]))
        _report(progress, "model", end, n)
        _raise_lung_error(lungs, wait=False)  # no use answering for a study the check refused
    _report(progress, "model", n, n)
    seconds["model"] = time.perf_counter() - start
    return np.concatenate(out)
