"""Grad-CAM montages of a run's held-out cases, and of images given to a model (``python -m evaluate.gradcam``).

:func:`run_montages` reads what a training run wrote: its per-case
predictions files (:func:`covid_keras.evaluation.predictions.find_predictions`),
its ``summary.json`` (the preprocessing cache and model paths) and the
models beside the predictions (``model.keras`` of the run, of each
``xraycnn_step1`` / ``xraycnn_step2`` step folder, of each ``folds/fold_i``).
For each answer on the held-out test part (or, in a k-fold run, on the
folds' validation parts, each case explained by its own fold's model) it
picks ``cases`` correctly classified and ``cases`` misclassified cases
(seeded; the predictions file says which are which), reads each case's
input as the model saw it from the run's cache:

* an ``xray`` cache (papers 002-004): the uint8 grey image repeated to
  three channels, float32 in [0, 255]
  (:func:`covid_keras.training.pipelines.iter_images`);
* a ``ct_slices`` cache (paper 001): the row's slice, repeated to RGB
  (:func:`~covid_keras.training.pipelines.study_slices`);
* a ``volume3d`` cache (paper 000): the volume, ``v / 255``
  (:func:`~covid_keras.training.pipelines.iter_volumes`,
  :func:`~covid_keras.preprocess.lung_volume.dequantize`), [D, H, W, 1];

computes Grad-CAM (:func:`covid_keras.explain.gradcam`, at exactly the
named layer, for the predicted class) and draws:

* a multi-scale slice model (paper 001; layers ``stage3`` / ``stage4`` /
  ``stage5``): per slice, the slice and the three stage maps side by side,
  one row per slice;
* any other 2-D model: the slice or X-ray and its ``last_conv`` map as
  paper 004's 0-255 overlay (:func:`covid_keras.serving.heatmap.picture`:
  the map in [0, 1] scaled to 0-255, jet-coloured, blended at 0.4 over the
  image), one row per case;
* a volume model (``resnet50_3d``): the axial and the coronal cut through
  the 3-D map at its maximum (at the volume's centre when the map is all
  zero), over the same cuts of the volume.

A row's first panel is titled with the case's pseudonymous patient id
(and slice), its true class, the predicted class and its probability; the
other panels with their layer (and cut). Correct and misclassified cases
go to two montages, ``<answer>_<part>_correct.png`` and
``..._misclassified.png``, in ``RUN_DIR/report/gradcam/``, with
``gradcam.json`` listing every panel. A paper-004 two-step answer (the
``predictions_test.json`` of ``train.xray_cnn``) is explained, as
:mod:`covid_keras.serving.heatmap` explains it, with step 2's model where
step 1 routed the image on (its row's ``step2`` is set), else with step
1's, for that step model's own top class.

:func:`model_montage` draws the maps of image files (PNG, JPEG, DICOM)
given to an exported image model (``saved_models/<name>/<version>``:
read and preprocessed exactly as ``predict_study`` does, explained with
the Keras model the export keeps, as ``--gradcam`` of
``covid_keras.predict``) or to a ``.keras`` 2-D image model (read with
:func:`covid_keras.data.read_xray`, preprocessed as X-rays,
:func:`covid_keras.preprocess.xray` at the model's input size, rounded to
the 8-bit grey levels X-ray caches hold).

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas
(no pyplot), PNG, dropped once saved. Every panel is :data:`PANEL_INCHES`
square under a :data:`TITLE_INCHES` title at :data:`DPI`, below a
:data:`HEADER_INCHES` header, so a montage of ``r`` rows and ``c``
columns is ``c * 240`` by ``60 + r * 300`` pixels (:func:`montage_size`).
"""

import dataclasses
import json
import os
import re
import textwrap

import numpy as np

from covid_keras import errors

#: The multi-scale model's stage outputs (paper 001's Grad-CAM layers), in drawing order.
MULTISCALE_LAYERS = ("stage3", "stage4", "stage5")
#: The layer every other covid_keras model names its last convolution output.
LAST_CONV = "last_conv"
#: The two montages of each answer.
GROUPS = ("correct", "misclassified")
#: Parts of the split a run explains.
PARTS = ("test", "val")
#: Inches of a panel (square), of the title above it and of the montage's header, at :data:`DPI`.
PANEL_INCHES = 3.0
TITLE_INCHES = 0.75
HEADER_INCHES = 0.75
DPI = 80
#: Cases per Grad-CAM call: 2-D inputs, and volumes (a 224^3 3-D ResNet's gradients need gigabytes each).
IMAGE_BATCH = 8
VOLUME_BATCH = 1
#: Which cache pipeline holds the inputs of each predictions level.
LEVEL_PIPELINES = {"image": "xray", "slice": "ct_slices", "volume": "volume3d"}


@dataclasses.dataclass
class Case:
    """One case to explain: who it is, what the run answered, and which model answered.

    Attributes:
        key: the record key (the cache's study key).
        patient_id: the pseudonymous patient id.
        true: the true class (None for images given to a model).
        predicted: the predicted class; ``probability`` its probability.
        group: ``"correct"``, ``"misclassified"`` or None (given images).
        answer, part, fold: the predictions file the case comes from.
        slice_index: the slice of a slice model's case, else None.
        model: the ``.keras`` file (or export folder) that explains it.
        step: the export's ``keras_files`` role or the two-step run's step
            (``xraycnn_step1`` / ``xraycnn_step2``) explained, else None.
        class_index: the class explained, an index of the explaining
            model's softmax; None: that model's own top class.
        model_classes: the explaining model's class names (a two-step
            step's own), when known.
    """

    key: str
    patient_id: str
    true: str | None
    predicted: str
    probability: float
    group: str | None
    answer: str
    part: str | None
    fold: int | None = None
    slice_index: int | None = None
    model: str = ""
    step: str | None = None
    class_index: int | None = None
    model_classes: list | None = None

    def title(self):
        """The row's title: pseudonymous id (and slice), true class, predicted class and its probability."""
        who = self.patient_id + (f"  slice {self.slice_index}" if self.slice_index is not None else "")
        truth = f"true {self.true}  " if self.true is not None else ""
        return f"{who}\n{truth}pred {self.predicted} {self.probability:.2f}"


@dataclasses.dataclass
class Explained:
    """A case with its model input, its Grad-CAM maps and the pictures drawn of them.

    Attributes:
        case: the :class:`Case`.
        inputs: float32, the model's input for the case without the batch
            axis ([H, W, 3] in [0, 255], or [D, H, W, 1] in [0, 1]).
        layers: the layers explained, in drawing order.
        maps: layer -> float32 [H, W] (or [D, H, W]) in [0, 1], the
            values drawn (:func:`case_maps`).
        class_index: the class explained (an index of the model's softmax).
        cuts: 3-D only: layer -> ``{"axial": d, "coronal": h, "at":
            "maximum" or "centre"}`` (:func:`volume_cuts`).
        panels: the row drawn: ``(uint8 RGB [h, w, 3], title, layer or
            None, cut or None)`` per column.
    """

    case: Case
    inputs: np.ndarray
    layers: tuple
    maps: dict
    class_index: int
    cuts: dict = dataclasses.field(default_factory=dict)
    panels: list = dataclasses.field(default_factory=list)

    def class_name(self):
        """The name of the class explained (``class <i>`` when the model's class names are unknown)."""
        names = self.case.model_classes
        return str(names[self.class_index]) if names and self.class_index < len(names) else f"class {self.class_index}"


@dataclasses.dataclass
class GradcamResult:
    """What :func:`run_montages` / :func:`model_montage` wrote (``summary``, as in ``gradcam.json``) and drew."""

    summary: dict
    explained: list


# --------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------


def default_layers(model):
    """The layers a montage explains: the multi-scale model's three stages, else ``last_conv``.

    Example:
        >>> from covid_keras import models
        >>> default_layers(models.xray_cnn(input_shape=(32, 32, 3), num_classes=3))
        ('last_conv',)
    """
    names = {layer.name for layer in model.layers}
    return MULTISCALE_LAYERS if set(MULTISCALE_LAYERS) <= names else (LAST_CONV,)


def check_layers(model, layers, where):
    """Refuses, before any map is computed, a layer the model does not have.

    Raises:
        ConfigurationError: a name of ``layers`` is no layer of ``model``
            (loaded from ``where``); the sentence lists its Grad-CAM layers.
    """
    names = [layer.name for layer in model.layers]
    missing = [name for name in layers if name not in names]
    if missing:
        usable = [n for n in (*MULTISCALE_LAYERS, LAST_CONV) if n in names]
        raise errors.ConfigurationError(
            f"--layer {missing[0]!r} is not a layer of {model.name} ({where}); its Grad-CAM layers are "
            f"{', '.join(usable) or 'none of last_conv, stage3, stage4, stage5'}."
        )


def case_maps(model, inputs, class_index, layers, batch_size=IMAGE_BATCH):
    """The Grad-CAM maps a montage draws: :func:`covid_keras.explain.gradcam` at each layer, in batches.

    Args:
        model: a Keras model whose output layer is a softmax.
        inputs: float32 [n, H, W, C] (or [n, D, H, W, C]), the model's input.
        class_index: one class per case (ints), the class each map explains.
        layers: layer names.
        batch_size: cases per Grad-CAM call.

    Returns:
        ``{layer: float32 [n, H, W] (or [n, D, H, W]) in [0, 1]}``.

    Raises:
        ConfigurationError: a layer is not in the model or has no spatial axes.

    Example:
        >>> from covid_keras import models
        >>> m = models.xray_cnn(input_shape=(32, 32, 3), num_classes=3)
        >>> case_maps(m, np.zeros((2, 32, 32, 3), "float32"), [0, 1], ["last_conv"])["last_conv"].shape
        (2, 32, 32)
    """
    from covid_keras import explain

    inputs = np.asarray(inputs, dtype=np.float32)
    class_index = [int(c) for c in class_index]
    out = {}
    for layer in layers:
        parts = [explain.gradcam(model, inputs[i:i + batch_size], class_index=class_index[i:i + batch_size],
                                 layer=layer) for i in range(0, len(inputs), batch_size)]
        out[layer] = np.concatenate(parts) if parts else np.zeros((0, *inputs.shape[1:-1]), np.float32)
    return out


def volume_cuts(cam):
    """Where a 3-D map is cut: its maximum's axial slice and coronal row, or the centre of an all-zero map.

    Args:
        cam: float [D, H, W] (axial slices along D, rows along H).

    Returns:
        ``{"axial": d, "coronal": h, "at": "maximum" or "centre"}``: the
        axial cut is ``cam[d]``, the coronal one ``cam[:, h, :]``.

    Example:
        >>> cam = np.zeros((4, 5, 6)); cam[1, 3, 2] = 1.0
        >>> volume_cuts(cam)
        {'axial': 1, 'coronal': 3, 'at': 'maximum'}
    """
    cam = np.asarray(cam)
    if cam.size and float(cam.max()) > 0.0:
        d, h, _ = np.unravel_index(int(np.argmax(cam)), cam.shape)
        return {"axial": int(d), "coronal": int(h), "at": "maximum"}
    return {"axial": cam.shape[0] // 2, "coronal": cam.shape[1] // 2, "at": "centre"}


def _grey_rgb(image):
    """[H, W] or [H, W, C] 0-255 -> uint8 RGB [H, W, 3]."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    return np.repeat(np.uint8(np.clip(np.rint(image), 0, 255))[..., None], 3, axis=-1)


def case_panels(explained):
    """The row of one case: 2-D, the image then one overlay per layer; 3-D, axial and coronal overlays per layer.

    Overlays are :func:`covid_keras.serving.heatmap.picture` (paper 004's
    0-255 jet overlay) at the model's input size. Fills and returns
    ``explained.panels``; 3-D cases also get ``explained.cuts``.
    """
    from covid_keras.serving.heatmap import picture

    x, case = explained.inputs, explained.case
    step = f" ({case.step}: {explained.class_name()})" if case.step else ""
    panels = []
    if x.ndim == 3:  # [H, W, C]
        panels.append((_grey_rgb(x), case.title(), None, None))
        for layer in explained.layers:
            panels.append((picture(x, explained.maps[layer], min_side=1)[0], layer + step, layer, None))
    else:  # [D, H, W, 1] in [0, 1]
        grey = x[..., 0] * 255.0
        for i, layer in enumerate(explained.layers):
            cam = explained.maps[layer]
            cut = explained.cuts.setdefault(layer, volume_cuts(cam))
            where = "max" if cut["at"] == "maximum" else "centre"
            axial = picture(grey[cut["axial"]], cam[cut["axial"]], min_side=1)[0]
            coronal = picture(grey[:, cut["coronal"], :], cam[:, cut["coronal"], :], min_side=1)[0]
            first = case.title() + "\n" if i == 0 else ""
            panels.append((axial, f"{first}{layer}{step} axial d={cut['axial']} ({where})", layer, "axial"))
            panels.append((coronal, f"{layer} coronal h={cut['coronal']} ({where})", layer, "coronal"))
    explained.panels = panels
    return panels


# --------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------


def montage_size(rows, columns):
    """``(width, height)`` in pixels of a montage of ``rows`` x ``columns`` panels (see the module docstring)."""
    return (round(columns * PANEL_INCHES * DPI),
            round((HEADER_INCHES + rows * (PANEL_INCHES + TITLE_INCHES)) * DPI))


def draw_montage(rows, path, title):
    """Writes one PNG: a header line, then one row of titled panels per case.

    Args:
        rows: a list of rows, each a list of ``(uint8 RGB image, title, ...)``.
        path: the PNG written (its folder is made when missing).
        title: the header.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: the PNG cannot be written there.
    """
    from matplotlib.figure import Figure

    columns = max(len(row) for row in rows)
    width_in = columns * PANEL_INCHES
    height_in = HEADER_INCHES + len(rows) * (PANEL_INCHES + TITLE_INCHES)
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)  # Agg canvas on save; no pyplot
    # Two lines at most fit the header: wrapped to the montage's width (about 9 characters an inch at 10 pt).
    header = "\n".join(textwrap.wrap(title, width=max(20, int(width_in * 9)))[:2])
    fig.text(0.5, 1 - 0.5 * HEADER_INCHES / height_in, header, ha="center", va="center", fontsize=10,
             fontweight="bold")
    for r, row in enumerate(rows):
        top = HEADER_INCHES + r * (PANEL_INCHES + TITLE_INCHES) + TITLE_INCHES
        for c, (image, text, *_) in enumerate(row):
            ax = fig.add_axes([c * PANEL_INCHES / width_in + 0.02 / columns,
                               1 - (top + 0.98 * PANEL_INCHES) / height_in,
                               PANEL_INCHES / width_in * 0.96, PANEL_INCHES / height_in * 0.96])
            ax.imshow(image, interpolation="nearest")
            ax.set_title(text, fontsize=8)
            ax.set_axis_off()
    path = os.fspath(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    except OSError as e:
        raise errors.ConfigurationError(
            f"{path}: the Grad-CAM montage cannot be written there ({e.strerror or type(e).__name__}); "
            "choose a writable folder with --out."
        ) from None
    finally:
        fig.clear()
    return path


# --------------------------------------------------------------------------
# Choosing a run's cases
# --------------------------------------------------------------------------


def choose_cases(predictions, cases, seed):
    """``cases`` correct and ``cases`` misclassified labelled rows of one answer's predictions files.

    A row is correct when the class of its highest probability is its
    label; rows without a label (a slice model's unlabelled slices) are
    neither. Each group is drawn without replacement by
    ``numpy.random.default_rng(seed)`` (correct first, then misclassified)
    and kept in file order: the same files and seed, the same cases.

    Args:
        predictions: :class:`~covid_keras.evaluation.predictions.Predictions`
            of one answer (one file, or one per fold).
        cases: how many of each group.
        seed: the draw's seed.

    Returns:
        ``(chosen, available)``: ``{"correct": [(predictions, row), ...],
        "misclassified": [...]}`` and ``{"correct": n, "misclassified": m}``.
    """
    pools = {group: [] for group in GROUPS}
    for p in predictions:
        for row in p.rows:
            if row.get("label") is None:
                continue
            probs = [row["probabilities"][c] for c in p.classes]
            correct = p.classes[int(np.argmax(probs))] == row["label"]
            pools[GROUPS[0] if correct else GROUPS[1]].append((p, row))
    rng = np.random.default_rng(seed)
    chosen = {}
    for group in GROUPS:
        pool = pools[group]
        picked = rng.choice(len(pool), size=min(cases, len(pool)), replace=False) if pool else []
        chosen[group] = [pool[i] for i in sorted(int(i) for i in picked)]
    return chosen, {group: len(pools[group]) for group in GROUPS}


def _case(p, row, group, model, step=None, class_index=None, model_classes=None):
    probs = [row["probabilities"][c] for c in p.classes]
    best = int(np.argmax(probs))
    return Case(key=row["key"], patient_id=row["patient_id"], true=row["label"], predicted=p.classes[best],
                probability=float(probs[best]), group=group, answer=p.answer, part=p.part, fold=p.fold,
                slice_index=row.get("slice_index"), model=model, step=step, class_index=class_index,
                model_classes=list(model_classes or p.classes))


def _two_step(p):
    """Whether a predictions file is the two-step answer of ``train.xray_cnn`` (rows with step probabilities)."""
    return bool(p.rows) and "step1" in p.rows[0]


def _existing(path, run_dir, summary):
    """``path`` as written by the run, or moved with the run folder (its ``summary["run"]`` prefix replaced)."""
    if path and os.path.exists(path):
        return path
    old = summary.get("run")
    if path and old and os.path.normpath(path).startswith(os.path.normpath(old) + os.sep):
        moved = os.path.join(run_dir, os.path.relpath(path, old))
        if os.path.exists(moved):
            return moved
    return None


def _model_of(p, run_dir, summary):
    """The ``.keras`` file that wrote a predictions file's answers: beside it, or the run's ``model``.

    Raises:
        ConfigurationError: none exists.
    """
    beside = os.path.join(os.path.dirname(p.path), "model.keras")
    if os.path.isfile(beside):
        return beside
    # The run's model answered only for parts it did not train on: never a fold's validation patients.
    found = _existing(summary.get("model"), run_dir, summary) if p.fold is None else None
    if found:
        return found
    raise errors.ConfigurationError(
        f"{p.path}: no model to explain its answers ({beside} is missing and summary.json names no model that "
        "exists); the run has not finished or its model files were removed: run its training command again."
    )


def _step_models(p, run_dir, summary):
    """``{step: .keras}`` of a two-step answer (``summary["models"]``).

    Raises:
        ConfigurationError: a step's model is missing.
    """
    models = {step: _existing(path, run_dir, summary) for step, path in (summary.get("models") or {}).items()}
    for step in ("xraycnn_step1", "xraycnn_step2"):
        if not models.get(step):
            raise errors.ConfigurationError(
                f"{p.path}: the two-step answer needs {step}/model.keras, which the run does not hold; "
                "run train.xray_cnn again with --step both."
            )
    return models


def _run_cases(chosen, group, run_dir, summary):
    """The :class:`Case` of each chosen ``(predictions, row)`` of ``group``, with the model that explains it."""
    from covid_keras.data.datasets import CLASS_NAMES
    from covid_keras.serving.heatmap import routed_to_step2

    out = []
    for p, row in chosen:
        if _two_step(p):
            step = "xraycnn_step2" if routed_to_step2(row) else "xraycnn_step1"
            out.append(_case(p, row, group, _step_models(p, run_dir, summary)[step], step=step,
                             model_classes=CLASS_NAMES[step]))
        else:
            case = _case(p, row, group, _model_of(p, run_dir, summary))
            case.class_index = p.classes.index(case.predicted)
            out.append(case)
    return out


def _groups(predictions, part):
    """``[(answer, part, level, [Predictions])]`` to explain, in file order, and the levels left out.

    ``part`` None: the test part where the run has one, else the
    validation part (each fold's, in a k-fold run).
    """
    explainable = [p for p in predictions if p.level in LEVEL_PIPELINES]
    if part is None:
        part = "test" if any(p.part == "test" for p in explainable) else "val"
    grouped = {}
    for p in explainable:
        if p.part == part:
            grouped.setdefault((p.answer, p.part, p.level), []).append(p)
    left_out = sorted({p.level for p in predictions if p.level not in LEVEL_PIPELINES})
    return part, [(a, pt, lv, ps) for (a, pt, lv), ps in grouped.items()], left_out


# --------------------------------------------------------------------------
# Reading inputs from the cache
# --------------------------------------------------------------------------


def _cache_pipeline(folder):
    from covid_keras.data import records

    try:
        return records.read_manifest(folder).get("pipeline")
    except errors.CovidKerasError:
        return None


def read_inputs(folder, pipeline, cases):
    """The model's input of each case, read from the run's cache as training read it.

    Args:
        folder: the cache folder (the run's ``summary["cache"]``).
        pipeline: its manifest's pipeline (``xray``, ``ct_slices`` or ``volume3d``).
        cases: :class:`Case` list.

    Returns:
        A list, one per case: float32 [H, W, 3] in [0, 255] (images and
        slices: the cached uint8 grey repeated) or [D, H, W, 1] in [0, 1]
        (volumes: ``dequantize``), or None where the cache does not hold it.
    """
    from covid_keras.training import pipelines

    keys = {c.key for c in cases}
    if pipeline == "xray":
        found = {k: np.repeat(im[..., None], 3, axis=-1).astype(np.float32)
                 for k, im in pipelines.iter_images(folder, dict.fromkeys(keys, 0))}
        return [found.get(c.key) for c in cases]
    if pipeline == "ct_slices":
        studies = {key: dict(zip(indices.tolist(), slices))
                   for key, _, _, slices, _, indices in pipelines.study_slices(folder, keys)}
        out = []
        for c in cases:
            grey = studies.get(c.key, {}).get(c.slice_index)
            out.append(None if grey is None else np.repeat(grey[..., None], 3, axis=-1).astype(np.float32))
        return out
    if pipeline == "volume3d":
        from covid_keras.preprocess.lung_volume import dequantize

        rows, _ = pipelines.volume_rows(folder)
        found = {k: dequantize(v)[..., None] for k, v in pipelines.iter_volumes(folder, rows, dict.fromkeys(keys, 0))}
        return [found.get(c.key) for c in cases]
    raise errors.CacheError(f"{folder}: holds a {pipeline} cache, whose inputs have no Grad-CAM montage.")


# --------------------------------------------------------------------------
# Explaining
# --------------------------------------------------------------------------


class _Models:
    """Loads each ``.keras`` file once."""

    def __init__(self):
        self._loaded = {}

    def __call__(self, path):
        if path not in self._loaded:
            import keras

            import covid_keras.models  # noqa: F401 - registers the custom layers a model file may hold

            self._loaded[path] = keras.saving.load_model(path, compile=False, safe_mode=True)
        return self._loaded[path]

    def preload(self, path, model):
        """Keeps ``model`` as ``path``'s (an export's Keras model, loaded by :mod:`covid_keras.serving.heatmap`)."""
        self._loaded.setdefault(path, model)


def _check_input(model, x, where):
    expected = tuple(model.input_shape[1:])
    if len(expected) != x.ndim or any(e is not None and e != s for e, s in zip(expected, x.shape)):
        raise errors.ConfigurationError(
            f"{where}: takes inputs of shape {expected}, but the run's cache holds {tuple(x.shape)}; the model "
            "and the cache are not the run's own: run its training command again."
        )


def explain_cases(cases, inputs, load, layers=None):
    """Grad-CAM maps and panels of each case, its model loaded once for all its cases.

    Args:
        cases: :class:`Case` list. inputs: the model input of each (see :func:`read_inputs`).
        load: ``.keras`` path (``case.model``) -> Keras model.
        layers: the layers to explain, or None for each model's
            :func:`default_layers`.

    Returns:
        One :class:`Explained` per case, in order.

    Raises:
        ConfigurationError: a layer is not in a model; a model does not
            take the cached input's shape.
    """
    out = [None] * len(cases)
    for path in dict.fromkeys(c.model for c in cases):
        model = load(path)
        chosen = tuple(layers) if layers else default_layers(model)
        check_layers(model, chosen, path)
        index = [i for i, c in enumerate(cases) if c.model == path]
        x = np.stack([inputs[i] for i in index])
        _check_input(model, x[0], path)
        volume = x.ndim == 5
        batch = VOLUME_BATCH if volume else IMAGE_BATCH
        classes = [cases[i].class_index for i in index]
        if any(c is None for c in classes):  # the model's own top class (a two-step answer's step model)
            own = np.argmax(model.predict(x, batch_size=batch, verbose=0), axis=-1)
            classes = [int(o) if c is None else c for c, o in zip(classes, own)]
        maps = case_maps(model, x, classes, chosen, batch_size=batch)
        for j, i in enumerate(index):
            out[i] = Explained(case=cases[i], inputs=x[j], layers=chosen,
                               maps={layer: maps[layer][j] for layer in chosen}, class_index=int(classes[j]))
            case_panels(out[i])
    return out


def _slug(*parts):
    return re.sub(r"[^A-Za-z0-9]+", "_", " ".join(str(p) for p in parts if p is not None)).strip("_").lower()


def _panel_entries(explained, file, row, base):
    """``gradcam.json``'s entries of one drawn row: one per map panel."""
    case = explained.case
    entries = []
    for column, (_, _, layer, cut) in enumerate(explained.panels):
        if layer is None:
            continue
        entry = {"key": case.key, "patient_id": case.patient_id, "true": case.true, "predicted": case.predicted,
                 "probability": round(case.probability, 6), "layer": layer, "file": file, "row": row,
                 "column": column, "group": case.group, "answer": case.answer, "part": case.part,
                 "explained_class": explained.class_name(), "explained_index": explained.class_index,
                 "model": os.path.relpath(case.model, base) if base else case.model}
        for name in ("fold", "slice_index", "step"):
            if getattr(case, name) is not None:
                entry[name] = getattr(case, name)
        if cut is not None:
            entry["cut"] = cut
            entry["index"] = explained.cuts[layer][cut]
            entry["at"] = explained.cuts[layer]["at"]
        entries.append(entry)
    return entries


def _group_label(group):
    return "correctly classified" if group == "correct" else "misclassified"


def _explain_group(answer, part, level, files, *, cases, seed, run_dir, summary, cache, pipeline, out_dir, load,
                   layers):
    """Montages of one answer on one part: ``(group entry for gradcam.json, panel entries, explained)``."""
    chosen, available = choose_cases(files, cases, seed)
    entry = {"answer": answer, "part": part, "level": level,
             "folds": sorted({p.fold for p in files if p.fold is not None}),
             "available": available, "shown": {g: 0 for g in GROUPS}, "files": {}, "notes": []}
    folds = f" (folds {', '.join(map(str, entry['folds']))}, each by its own model)" if entry["folds"] else ""
    for group in GROUPS:
        if len(chosen[group]) < cases:
            n = available[group]
            entry["notes"].append(f"{answer} {part}: only {n} {_group_label(group)} case{'s' * (n != 1)}, fewer "
                                  f"than --cases {cases}; all are shown" if n else
                                  f"{answer} {part}: no {_group_label(group)} case, so no montage")
    if LEVEL_PIPELINES[level] != pipeline:
        entry["notes"].append(f"{answer} {part}: {level}-level answers, but the run's cache {cache} holds "
                              f"{pipeline} inputs; not explained")
        return entry, [], []
    flat = [case for g in GROUPS for case in _run_cases(chosen[g], g, run_dir, summary)]
    inputs = read_inputs(cache, pipeline, flat)
    missing = [c for c, x in zip(flat, inputs) if x is None]
    if missing:
        entry["notes"].append(f"{answer} {part}: {len(missing)} of {len(flat)} chosen cases are not in the run's "
                              f"cache {cache} (another dataset's cache); not explained")
        kept = [(c, x) for c, x in zip(flat, inputs) if x is not None]
        flat, inputs = [c for c, _ in kept], [x for _, x in kept]
    if not flat:
        return entry, [], []
    explained = explain_cases(flat, inputs, load, layers)
    panels = []
    for group in GROUPS:
        rows = [e for e in explained if e.case.group == group]
        if not rows:
            continue
        path = os.path.join(out_dir, f"{_slug(answer, part)}_{group}.png")
        title = (f"Grad-CAM - {answer}, {part}{folds}: {_group_label(group)} "
                 f"({len(rows)} of {available[group]})")
        draw_montage([e.panels for e in rows], path, title)
        entry["files"][group] = path
        entry["shown"][group] = len(rows)
        for r, e in enumerate(rows):
            panels += _panel_entries(e, path, r, run_dir)
    return entry, panels, explained


def _read_summary(run_dir):
    from covid_keras.training.runs import read_json

    return read_json(os.path.join(run_dir, "summary.json"),
                     "the run has not finished, so its model and preprocessing cache are not known; "
                     "let its training command finish.")


def _run_cache(run_dir, summary):
    cache = _existing(summary.get("cache"), run_dir, summary)
    if not cache or not os.path.isdir(cache):
        raise errors.ConfigurationError(
            f"{run_dir}: its preprocessing cache {summary.get('cache') or '(not named in summary.json)'} is "
            "missing; a Grad-CAM montage reads each case's input from it: run the training command again to "
            "rebuild it."
        )
    return cache


def run_montages(run_dir, *, cases=4, seed=0, part=None, layers=None, out_dir=None, log=None):
    """Writes the Grad-CAM montages of a run's held-out cases and ``gradcam.json`` (see the module docstring).

    Args:
        run_dir: a run folder of an image, slice or volume training command.
        cases: correct and misclassified cases shown per answer (each).
        seed: the seed choosing them.
        part: ``"test"`` or ``"val"``; None: test where the run has a test
            part, else each fold's validation part.
        layers: layer names to explain instead of each model's
            :func:`default_layers`.
        out_dir: where the PNGs and ``gradcam.json`` go (default
            ``RUN_DIR/report/gradcam``).
        log: a function given one line per note.

    Returns:
        A :class:`GradcamResult`: ``summary`` is ``gradcam.json``'s dict
        (``groups``, ``panels``, ``notes``, ``json``, ``montages``),
        ``explained`` the cases with their inputs and maps.

    Raises:
        ConfigurationError: ``run_dir`` is not a finished run with
            predictions (no ``config.json``, ``summary.json`` or predictions
            files); its cache or a model is missing; the run has no image,
            slice or volume answers on ``part``; a layer is unknown;
            ``cases`` is below 1 or ``part`` unknown.

    Example:
        >>> run_montages("runs/xray_cnn/synthetic-xray-1a2b3c4d", cases=2).summary["montages"]  # doctest: +SKIP
        ['runs/xray_cnn/.../report/gradcam/xraycnn_step1_test_correct.png', ...]
    """
    from covid_keras.evaluation.predictions import find_predictions
    from covid_keras.training.runs import write_json

    _check_options(cases, part)
    run_dir = os.fspath(run_dir)
    log = log or (lambda message: None)
    predictions = find_predictions(run_dir)
    summary = _read_summary(run_dir)
    cache = _run_cache(run_dir, summary)
    pipeline = _cache_pipeline(cache)
    part, groups, left_out = _groups(predictions, part)
    if not groups:
        study = " (patient-level heads answer from slice features: explain the slice-level run they build on)" \
            if "study" in left_out else ""
        raise errors.ConfigurationError(
            f"{run_dir}: holds no image, slice or volume answers on its {part} part{study}; Grad-CAM needs a "
            "model that answered for pictures."
        )
    out_dir = os.fspath(out_dir or os.path.join(run_dir, "report", "gradcam"))
    load = _Models()
    result = {"run": run_dir, "out": out_dir, "part": part, "cases": cases, "seed": seed,
              "layers": list(layers) if layers else None, "groups": [], "panels": [], "notes": [], "montages": []}
    if left_out:
        result["notes"].append(f"{', '.join(left_out)}-level answers have no pictures to explain; left out")
    explained = []
    for answer, p, level, files in groups:
        entry, panels, done = _explain_group(answer, p, level, files, cases=cases, seed=seed, run_dir=run_dir,
                                             summary=summary, cache=cache, pipeline=pipeline, out_dir=out_dir,
                                             load=load, layers=layers)
        result["groups"].append(entry)
        result["panels"] += panels
        result["notes"] += entry["notes"]
        result["montages"] += list(entry["files"].values())
        explained += done
    for note in result["notes"]:
        log(note)
    result["json"] = os.path.join(out_dir, "gradcam.json")
    os.makedirs(out_dir, exist_ok=True)
    write_json(result["json"], result)
    return GradcamResult(result, explained)


def _check_options(cases, part):
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise errors.ConfigurationError(f"--cases must be a positive integer. Received: {cases!r}")
    if part is not None and part not in PARTS:
        raise errors.ConfigurationError(f"--part must be one of {', '.join(PARTS)}. Received: {part!r}")


# --------------------------------------------------------------------------
# Images given to a model
# --------------------------------------------------------------------------


def _keras_class_names(path, num_classes):
    """A ``.keras`` file's class names: those of a predictions file beside it (a run's), else ``class 0`` ..."""
    import glob

    for found in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(path)), "predictions*.json"))):
        try:
            with open(found) as f:
                classes = json.load(f).get("classes")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(classes, list) and len(classes) == num_classes:
            return [str(c) for c in classes]
    return [f"class {i}" for i in range(num_classes)]


def _keras_inputs(model, image_path):
    """An image file as a 2-D ``.keras`` image model gets it: X-ray preprocessing at its input size, 8-bit grey."""
    from covid_keras import data, preprocess

    size, channels = int(model.input_shape[1]), int(model.input_shape[-1])
    x = np.rint(preprocess.xray(data.read_xray(image_path), size=size))  # [size, size, 3]
    return x[..., :channels].astype(np.float32) if channels < 3 else x.astype(np.float32)


def _keras_image_model(path, load):
    model = load(path)
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or shape[1] != shape[2]:
        raise errors.ConfigurationError(
            f"{path}: takes inputs of shape {shape}, not square 2-D images; --images are explained with image "
            "models only (explain a volume model from its run folder)."
        )
    return model


def _export_cases(served, images, load):
    """``(cases, inputs)`` of image files given to an export, each explained by the Keras model that answered."""
    from covid_keras.serving import heatmap
    from covid_keras.serving.predict import _read_and_preprocess, predict_study

    if served.kind not in heatmap.KINDS:
        raise errors.ConfigurationError(
            f"{served.version_dir}: is a {served.kind} export, which answers for a whole CT study, so it has "
            "no Grad-CAM montage of images; explain it from its training run folder instead."
        )
    cases, inputs = [], []
    for i, image in enumerate(images, 1):
        prediction = predict_study(image, served)
        x = _read_and_preprocess(image, served, {})[0][0]
        role = heatmap.keras_role(served.metadata, bool(heatmap.routed_to_step2(prediction)))
        name = served.metadata["keras_files"][role]
        path = os.path.join(served.version_dir, "assets.extra", name)
        load.preload(path, heatmap.load_keras_model(served, role))
        predicted = prediction["predicted_class"]
        cases.append(Case(key=f"image {i}", patient_id=f"image {i}", true=None, predicted=predicted,
                          probability=float(prediction["probabilities"][predicted]), group=None,
                          answer=f"{served.name} v{served.version}", part=None, model=path,
                          step=role if role != "model" else None,
                          class_index=served.class_names.index(predicted) if role == "model" else None,
                          model_classes=list(served.output_classes.get(role) or served.class_names)
                          if role != "model" else served.class_names))
        inputs.append(x)
    return cases, inputs


def _keras_cases(path, images, load):
    """``(cases, inputs)`` of image files given to a ``.keras`` 2-D image model."""
    model = _keras_image_model(path, load)
    names = _keras_class_names(path, int(model.output_shape[-1]))
    inputs = [_keras_inputs(model, image) for image in images]
    probs = model.predict(np.stack(inputs), batch_size=IMAGE_BATCH, verbose=0)
    cases = []
    for i, p in enumerate(probs, 1):
        best = int(np.argmax(p))
        cases.append(Case(key=f"image {i}", patient_id=f"image {i}", true=None, predicted=names[best],
                          probability=float(p[best]), group=None, answer=os.path.basename(path), part=None,
                          model=path, class_index=best, model_classes=names))
    return cases, inputs


def model_montage(model_path, images, out_dir, *, layers=None):
    """Writes the Grad-CAM montage of image files given to a model, and ``gradcam.json`` (module docstring).

    Args:
        model_path: an export (``saved_models/<name>/<version>`` or its
            model folder) of an image or two-step model, or a ``.keras``
            file of a 2-D image model.
        images: image files (PNG, JPEG, DICOM).
        out_dir: the folder written (``gradcam.png``, ``gradcam.json``).
        layers: layer names instead of the model's :func:`default_layers`.

    Returns:
        A :class:`GradcamResult`.

    Raises:
        ConfigurationError: no images or ``out_dir``; a volume or patient
            pipeline export; a ``.keras`` model that does not take 2-D
            images; an unknown layer.
        ServingError: the folder holds no export, or the export no Keras model.
        ImageReadError, PreprocessingError: an image cannot be read.

    Example:
        >>> model_montage("saved_models/xray_cnn/1", ["chest.png"], "gradcam_out").summary["montages"]  # doctest: +SKIP
        ['gradcam_out/gradcam.png']
    """
    from covid_keras.training.runs import write_json

    model_path = os.fspath(model_path)
    images = [os.fspath(i) for i in images or ()]
    if not images:
        raise errors.ConfigurationError(
            f"{model_path}: is a model, not a run folder; pass the image files to explain with --images FILE...."
        )
    if not out_dir:
        raise errors.ConfigurationError(
            f"{model_path}: is a model, not a run folder; pass the folder to write the montage to with --out DIR."
        )
    for image in images:
        if not os.path.isfile(image):
            raise errors.ConfigurationError(f"{image}: not an image file; --images takes PNG, JPEG or DICOM files.")
    load = _Models()
    if os.path.isfile(model_path) and model_path.endswith(".keras"):
        cases, inputs = _keras_cases(model_path, images, load)
        answer = os.path.basename(model_path)
    else:
        from covid_keras.serving.predict import ServedModel

        served = ServedModel(model_path)
        cases, inputs = _export_cases(served, images, load)
        answer = f"{served.name} (version {served.version})"
    explained = explain_cases(cases, inputs, load, layers)
    out_dir = os.fspath(out_dir)
    path = draw_montage([e.panels for e in explained], os.path.join(out_dir, "gradcam.png"),
                        f"Grad-CAM - {answer}: {len(images)} image{'s' * (len(images) > 1)}")
    panels = []
    for r, e in enumerate(explained):
        for entry in _panel_entries(e, path, r, None):
            entry.pop("true"), entry.pop("group"), entry.pop("part")
            entry["image"] = images[r]
            panels.append(entry)
    result = {"model": model_path, "out": out_dir, "images": len(images), "layers": list(layers) if layers else None,
              "panels": panels, "notes": [], "montages": [path], "json": os.path.join(out_dir, "gradcam.json")}
    write_json(result["json"], result)
    return GradcamResult(result, explained)


def is_model(path):
    """Whether ``path`` names a model (a ``.keras`` file, an export) rather than a run folder (``config.json``)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path.endswith(".keras")
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")):
        return False
    from covid_keras.serving.savedmodel import resolve_version_dir

    try:
        resolve_version_dir(path)
    except errors.ServingError:
        return False
    return True


__all__ = ["Case", "Explained", "GradcamResult", "case_maps", "case_panels", "check_layers", "choose_cases",
           "default_layers", "draw_montage", "explain_cases", "is_model", "model_montage", "montage_size",
           "read_inputs", "run_montages", "volume_cuts"]
