"""What the app shows for one upload, computed without gradio: probabilities, heat maps, the slice curve.

Every answer goes through :func:`covid_keras.serving.answer_study`, the same
reading, preprocessing and SavedModel signature as ``covid_keras.predict``
and TF Serving; the heat maps use the Keras models the export keeps
(``assets.extra``), loaded once per model (:class:`KerasModels`).

* :func:`answer_image` — an X-ray (PNG, JPEG, DICOM) for an X-ray export
  (``preprocessing.pipeline == "xray"``, kinds ``image`` and ``two_step``):
  the class probabilities (a two-step export: the combined four classes,
  and each step's), the Grad-CAM overlay at ``last_conv`` for the answer
  (:func:`covid_keras.serving.heatmap.explain_image`: paper 004's 0-255 jet
  overlay; a two-step answer is explained with the step that answered and,
  when step 2 answered, also with step 1, as Fig. 3a-b show both), and the
  image as the model saw it, all enlarged alike.
* :func:`answer_study` — a CT series folder for a CT export (a slice
  classifier with ``ct_slices`` preprocessing, a patient pipeline, a volume
  model): the patient answer, a per-slice curve along z, and the three
  most suspicious slices with their Grad-CAM:

  - slice classifier (paper 001): the curve is each slice's class
    probabilities (the answer is their mean); the suspicious slices are the
    three with the highest probability of the answer's class (for a normal
    answer, the lowest probability of normal); each is explained at
    ``stage5`` (``last_conv`` for a model without stages) for the answer's
    class, or, when the answer is normal, for the slice's own most probable
    other class;
  - patient pipeline (paper 001's heads and ensemble): the answer is the
    pipeline's; the curve and the slices come from its slice model, run a
    second time in Keras (the pipeline's signature gives the patient answer
    only), so it takes about twice a slice classifier's time;
  - volume model (paper 000): the model answers for the whole volume, so
    there is no per-slice probability: the curve is the share of the 3-D
    Grad-CAM map (``last_conv``, the answer's class) in each axial cut, and
    the suspicious slices are the three axial cuts holding most of it. The
    cuts are of the model's input: the series' lung range resampled to a
    cube (paper 000's pipeline), so cut numbers are not series slices.

Nothing returned names the patient: no PatientName, PatientID or birth
date, not even the pseudonymous id (the page has one study at a time).
"""

import dataclasses
import io
import threading
import time

import numpy as np

from covid_keras import errors

#: Suspicious slices shown for a CT study.
TOP_SLICES = 3
#: The multi-scale model's deepest stage (paper 001's Grad-CAM layer for the app).
CT_LAYER = "stage5"
#: Every other model's Grad-CAM layer.
LAST_CONV = "last_conv"
#: Shorter side, in pixels, of the pictures shown.
MIN_SIDE = 256
#: X-ray preprocessing: exports with it take images; the others take CT studies.
XRAY_PIPELINE = "xray"


def input_kind(served):
    """``"xray"`` for an export that takes one X-ray image, ``"ct"`` for one that takes a CT study.

    Raises:
        ServingError: the export's preprocessing is neither (the app cannot redo it).
    """
    pipeline = served.preprocessing.get("pipeline")
    if pipeline == XRAY_PIPELINE and served.kind in ("image", "two_step"):
        return "xray"
    if pipeline in ("ct_slices", "volume3d") and served.kind in ("image", "patient_pipeline", "volume"):
        return "ct"
    raise errors.ServingError(
        f"export {served.name} (version {served.version}) has preprocessing {pipeline!r} and kind "
        f"{served.kind!r}, which the app does not serve; export an X-ray, slice, patient or volume model."
    )


def describe(served):
    """One line naming an export for the page: name, version, kind, recipe.

    Example:
        >>> class M: name, version, kind, recipe = "xray_cnn", 1, "two_step", "xray_cnn"
        >>> describe(M())
        'xray_cnn, version 1 (two-step X-ray diagnosis, recipe xray_cnn)'
    """
    kinds = {"image": "image classifier", "two_step": "two-step X-ray diagnosis",
             "patient_pipeline": "patient pipeline", "volume": "3-D volume classifier"}
    what = kinds.get(served.kind, served.kind)
    recipe = f", recipe {served.recipe}" if served.recipe else ""
    return f"{served.name}, version {served.version} ({what}{recipe})"


class KerasModels:
    """The Keras models of the exports (``assets.extra``) and their Grad-CAM explainers, each made once (thread-safe).

    Calling it loads (once) the Keras model of ``keras_files[role]``;
    :meth:`explainer` gives (once) the
    :class:`covid_keras.explain.GradcamExplainer` of a model it loaded.
    """

    def __init__(self):
        self._models = {}
        self._explainers = {}
        self._lock = threading.Lock()

    def explainer(self, keras_model):
        from covid_keras.explain import GradcamExplainer

        with self._lock:
            if id(keras_model) not in self._explainers:
                self._explainers[id(keras_model)] = (keras_model, GradcamExplainer(keras_model))
            return self._explainers[id(keras_model)][1]

    def __call__(self, served, role="model"):
        from covid_keras.serving.heatmap import load_keras_model

        key = (served.version_dir, role)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_keras_model(served, role)
            return self._models[key]


@dataclasses.dataclass
class ImageAnswer:
    """The app's answer for one X-ray.

    Attributes:
        probabilities: {class: p} (a two-step export: the combined classes).
        predicted_class: the answer.
        steps: a two-step export's ``{"step1": {...}, "step2": {...} or None,
            "routed": bool}``, else None.
        heatmap: uint8 RGB, the Grad-CAM overlay of the answer (a two-step
            export: of the step that answered).
        model_view: uint8 RGB, the image as the model saw it (same size).
        step1_heatmap: for a two-step answer that went on to step 2, step
            1's own map (for its top class, viral), as paper 004's Fig. 3a
            shows it beside step 2's (Fig. 3b); else None.
        explained: what the heat map explains, in words.
        seconds: wall-clock seconds of the answer and of the heat map.
    """

    probabilities: dict
    predicted_class: str
    steps: dict | None
    heatmap: np.ndarray
    model_view: np.ndarray
    explained: str
    seconds: dict
    step1_heatmap: np.ndarray | None = None


@dataclasses.dataclass
class StudyAnswer:
    """The app's answer for one CT study.

    Attributes:
        probabilities: {class: p}, the patient answer.
        predicted_class: the answer.
        slices: slices read.
        aggregation: how the answer was made (``mean_of_slices``,
            ``patient_pipeline``, ``volume``).
        curve: uint8 RGB, the per-slice curve along z.
        suspicious: ``[(uint8 RGB picture, caption)]``, the three slices.
        explained: what the heat maps explain, in words.
        seconds: wall-clock seconds of the answer and of the heat maps.
    """

    probabilities: dict
    predicted_class: str
    slices: int
    aggregation: str
    curve: np.ndarray
    suspicious: list
    explained: str
    seconds: dict


def _enlarge(rgb, scale):
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def _grey_rgb(image):
    """[H, W] or [H, W, C] 0-255 -> uint8 RGB."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    return np.repeat(np.uint8(np.clip(np.rint(image), 0, 255))[..., None], 3, axis=-1)


def _step_words(heat):
    return f"Grad-CAM at {heat.layer} of {heat.step.replace('step', 'step ')} for its class " \
           f"{heat.step_class or heat.class_index}"


def answer_image(path, served, keras_models=None):
    """The app's answer for one X-ray image file given to an X-ray export.

    Args:
        path: the image (PNG, JPEG, DICOM).
        served: a :class:`covid_keras.serving.ServedModel` whose
            :func:`input_kind` is ``"xray"``.
        keras_models: a :class:`KerasModels` (a new one by default).

    Returns:
        An :class:`ImageAnswer`.

    Raises:
        ImageReadError, PreprocessingError: the file is not a readable image.
        ConfigurationError: the export does not take X-rays.
    """
    from covid_keras.serving import answer_study as run
    from covid_keras.serving.heatmap import explain_image

    if input_kind(served) != "xray":
        raise errors.ConfigurationError(
            f"{describe(served)} takes CT studies, not single X-ray images; choose it under CT study."
        )
    keras_models = keras_models or KerasModels()
    start = time.perf_counter()
    answer = run(path, served)
    answered = time.perf_counter()
    result = answer.result
    heat = explain_image(served, answer.inputs, result, load=keras_models, explainer=keras_models.explainer,
                         min_side=MIN_SIDE)
    explained = f"Grad-CAM at {heat.layer} for {result['predicted_class']}"
    step1_heatmap = None
    if heat.step != "model":
        explained = _step_words(heat)
    if heat.step == "step2":  # paper 004's Fig. 3a: step 1's own map too, for its top class (viral)
        unrouted = {**result, "steps": {**result["steps"], "routed": False}}
        first = explain_image(served, answer.inputs, unrouted, load=keras_models, explainer=keras_models.explainer,
                              min_side=MIN_SIDE)
        step1_heatmap = first.picture
        explained += f"; the step 1 map: {_step_words(first)}"
    return ImageAnswer(
        probabilities=result["probabilities"], predicted_class=result["predicted_class"],
        steps=result.get("steps"), heatmap=heat.picture, step1_heatmap=step1_heatmap,
        model_view=_enlarge(_grey_rgb(answer.inputs[0]), heat.scale), explained=explained,
        seconds={"answer": answered - start, "heatmap": time.perf_counter() - answered},
    )


# --------------------------------------------------------------------------
# CT studies
# --------------------------------------------------------------------------


def normal_index(class_names):
    """The index of the class named normal (any case), or None.

    Example:
        >>> normal_index(["Normal", "CAP", "COVID-19"]), normal_index(["covid", "other"])
        (0, None)
    """
    lowered = [str(c).lower() for c in class_names]
    return lowered.index("normal") if "normal" in lowered else None


def suspicious_slices(per_slice, class_names, predicted, k=TOP_SLICES):
    """The ``k`` slices that most support the answer (for a normal answer: most suggest disease), first first.

    Args:
        per_slice: float [n, classes], slice probabilities.
        class_names: the classes.
        predicted: the study's answer (a class name).
        k: how many.

    Returns:
        Slice indices: the highest probability of ``predicted``; when
        ``predicted`` is the class named normal, the lowest probability of
        it (ties: the earlier slice first).

    Example:
        >>> p, names = np.array([[.9, .1, .0], [.2, .2, .6], [.4, .5, .1]]), ["Normal", "CAP", "COVID-19"]
        >>> suspicious_slices(p, names, "CAP", k=2), suspicious_slices(p, names, "Normal", k=2)
        ([2, 1], [1, 2])
    """
    per_slice = np.asarray(per_slice, dtype=np.float64)
    answer = list(class_names).index(predicted)
    score = 1.0 - per_slice[:, answer] if answer == normal_index(class_names) else per_slice[:, answer]
    return [int(i) for i in np.argsort(-score, kind="stable")[:k]]


def slice_classes(per_slice, class_names, predicted, indices):
    """The class each suspicious slice's heat map explains.

    The answer's class, unless the answer is the normal class: then each
    slice's own most probable other class (what makes it suspicious).
    """
    answer = list(class_names).index(predicted)
    normal = normal_index(class_names)
    if normal is None or answer != normal:
        return [answer] * len(indices)
    others = np.asarray(per_slice, dtype=np.float64)[indices].copy()
    others[:, normal] = -1.0
    return [int(c) for c in np.argmax(others, axis=1)]


def _layer(keras_model):
    names = {layer.name for layer in keras_model.layers}
    return CT_LAYER if CT_LAYER in names else LAST_CONV


def curve_picture(values, labels, marked, *, ylabel, title, xlabel="slice position in the series (from 0, in "
                  "the order of the slice positions; not InstanceNumber)"):
    """A line plot along z as uint8 RGB (matplotlib's Agg canvas, no pyplot).

    Args:
        values: float [n, m], one line per column.
        labels: the m line names.
        marked: slice indices to mark (the suspicious slices).
        ylabel, title: the axis label and title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(values, dtype=np.float64)
    fig = Figure(figsize=(7.0, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    z = np.arange(len(values))
    for j, label in enumerate(labels):
        ax.plot(z, values[:, j], label=str(label), linewidth=1.5)
    for rank, i in enumerate(marked, start=1):
        ax.axvline(i, color="0.3", linestyle=":", linewidth=1)
        ax.annotate(str(rank), (i, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                    fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=14)
    ax.set_xlim(-0.5, max(len(values) - 0.5, 0.5))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    import cv2

    bgr = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


def _slice_panels(explainer, inputs, indices, classes, class_names, per_slice):
    """The suspicious slices' Grad-CAM overlays and captions (2-D slice models)."""
    from covid_keras.serving.heatmap import picture

    layer = _layer(explainer.model)
    cams = explainer(inputs[indices], class_index=classes, layer=layer)
    panels = []
    for rank, (i, c, cam) in enumerate(zip(indices, classes, cams), start=1):
        rgb = picture(inputs[i], cam, min_side=MIN_SIDE)[0]
        # short: the gallery cuts long captions; the status names the layer
        panels.append((rgb, f"#{rank} slice {i}: {class_names[c]} map, p={per_slice[i, c]:.2f}"))
    return panels, layer


def volume_cuts(cam, k=TOP_SLICES):
    """The share of a 3-D map in each axial cut, and the ``k`` cuts holding most of it.

    Args:
        cam: float [D, H, W], a Grad-CAM map in [0, 1].

    Returns:
        ``(share float [D] summing to 1, or all zero for an all-zero map;
        cut indices)``; an all-zero map (the layer does not respond) gives
        the ``k`` central cuts.

    Example:
        >>> cam = np.zeros((5, 2, 2)); cam[3] = 1.0; cam[1, 0, 0] = 1.0
        >>> share, cuts = volume_cuts(cam, k=2)
        >>> share.round(2).tolist(), cuts
        ([0.0, 0.2, 0.0, 0.8, 0.0], [3, 1])
    """
    cam = np.asarray(cam, dtype=np.float64)
    mass = cam.reshape(len(cam), -1).sum(axis=1)
    if mass.sum() <= 0:
        first = max(0, (len(cam) - k) // 2)
        return np.zeros_like(mass), list(range(first, min(first + k, len(cam))))
    share = mass / mass.sum()
    return share, [int(i) for i in np.argsort(-share, kind="stable")[:k]]


def _volume_panels(explainer, inputs, class_index, class_names):
    """A volume model's curve values and its three axial cuts with most of the 3-D Grad-CAM map."""
    from covid_keras.serving.heatmap import picture

    cam = explainer(inputs, class_index=class_index, layer=LAST_CONV)[0]  # [D, H, W]
    share, indices = volume_cuts(cam)
    grey = inputs[0, ..., 0] * 255.0
    name = class_names[class_index]
    panels = []
    for rank, d in enumerate(indices, start=1):
        what = f"{share[d]:.0%} of the {name} map" if share.any() else f"centre, {name} map all zero"
        caption = f"#{rank} lung-volume cut {d}/{len(cam)}: {what}"
        panels.append((picture(grey[d], cam[d], min_side=MIN_SIDE)[0], caption))
    return share, indices, panels


def _progress_for(progress):
    """Turns :func:`covid_keras.serving.answer_study`'s progress calls into ``progress(fraction, text)``."""
    if progress is None:
        return None

    def report(stage, done, total):
        if stage == "read":
            progress(0.05 if done == 0 else 0.2, "Reading and preprocessing the study" if done == 0
                     else "Study read")
        else:
            progress(0.2 + 0.6 * done / max(total, 1), f"Model: {done} of {total} slices")

    return report


def answer_study(folder, served, keras_models=None, progress=None):
    """The app's answer for one CT study (a DICOM series folder) given to a CT export.

    Args:
        folder: the study's DICOM files (the largest axial CT series is read).
        served: a :class:`covid_keras.serving.ServedModel` whose
            :func:`input_kind` is ``"ct"``.
        keras_models: a :class:`KerasModels` (a new one by default).
        progress: None or ``progress(fraction, text)``.

    Returns:
        A :class:`StudyAnswer`.

    Raises:
        NoDicomError, DicomReadError, SeriesGeometryError, ModalityError:
            the folder holds no readable CT series.
        NoLungError: the series shows no lungs (a head or abdomen CT).
        ConfigurationError: the export does not take CT studies.
    """
    from covid_keras.serving import answer_study as run

    if input_kind(served) != "ct":
        raise errors.ConfigurationError(
            f"{describe(served)} takes single X-ray images, not CT studies; choose it under X-ray."
        )
    keras_models = keras_models or KerasModels()
    start = time.perf_counter()
    answer = run(folder, served, progress=_progress_for(progress))
    answered = time.perf_counter()
    result, inputs = answer.result, answer.inputs
    names = served.class_names
    predicted = result["predicted_class"]
    if progress is not None:
        progress(0.85, "Grad-CAM of the most suspicious slices")
    if served.kind == "volume":
        explainer = keras_models.explainer(keras_models(served))
        share, indices, panels = _volume_panels(explainer, inputs, names.index(predicted), names)
        curve = curve_picture(share[:, None], [f"{LAST_CONV} map share"], indices, ylabel="share of the map",
                              title="Grad-CAM of the volume, per axial cut (the model answers for the volume)",
                              xlabel=f"axial cut of the model's {len(share)}-cube (the lung range, resampled; "
                                     "not series slices)")
        explained = f"Grad-CAM of the 3-D model at {LAST_CONV} for {predicted}, cut axially"
    else:
        role = "slice_model" if served.kind == "patient_pipeline" else "model"
        keras_model = keras_models(served, role)
        per_slice = answer.per_slice
        if per_slice is None:  # a patient pipeline: its slice model, in Keras
            per_slice = np.asarray(keras_model.predict(inputs, batch_size=32, verbose=0), dtype=np.float32)
            if per_slice.shape[-1] != len(names):
                raise errors.ServingError(
                    f"export {served.name} (version {served.version}): its slice model answers "
                    f"{per_slice.shape[-1]} classes but the pipeline {len(names)}, so its slices cannot be "
                    "shown; export a pipeline whose slice model has the pipeline's classes."
                )
        indices = suspicious_slices(per_slice, names, predicted)
        classes = slice_classes(per_slice, names, predicted, indices)
        panels, layer = _slice_panels(keras_models.explainer(keras_model), inputs, indices, classes, names,
                                      per_slice)
        source = "its slice model" if served.kind == "patient_pipeline" else "the model"
        curve = curve_picture(per_slice, names, indices, ylabel="probability",
                              title=f"Slice probabilities from {source} (numbers: the suspicious slices)")
        which = "least likely normal" if names.index(predicted) == normal_index(names) else f"most likely {predicted}"
        explained = f"Grad-CAM at {layer} of the {len(indices)} slices {which}"
    if progress is not None:
        progress(1.0, "Done")
    return StudyAnswer(
        probabilities=result["probabilities"], predicted_class=predicted, slices=result["slices"],
        aggregation=result["aggregation"], curve=curve, suspicious=panels, explained=explained,
        seconds={"answer": answered - start, "heatmaps": time.perf_counter() - answered},
    )
