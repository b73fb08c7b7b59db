"""The gradio page: an X-ray tab and a CT-study tab over the exported models (paper 004's interface, Fig. 3-4).

:func:`build_app` returns a ``gr.Blocks`` with two endpoints, the ones the
page's buttons call and ``gradio_client`` reaches:

* ``/xray`` (model label, image file) -> status, probabilities, heat map,
  model view, step 1, step 2, step 1's heat map (a two-step answer from
  step 2), and the cleared upload;
* ``/ct`` (model label, study .zip, folder path) -> status, patient answer,
  slice curve, the suspicious slices (a gallery), the cleared upload and
  the cleared folder field.

Answers run one at a time across both tabs (one queue, :data:`ANSWERS`).

The status is Markdown: the answer in words, or the package's one-sentence
error for bad input (``covid_keras.errors``), never a traceback; any other
failure is one sentence too, its traceback only in the server log. The
page never shows a patient identifier, and the upload is cleared from it
once answered. Pictures are PNG (``format="png"``; gradio's default is
webp), served from the workspace's gradio cache and deleted by gradio's
sweep (``delete_cache``) once older than ``keep_outputs`` seconds.
"""

import contextlib
import logging
import os
import traceback
import warnings

from covid_keras import errors
from covid_keras.app import answers, uploads

LOG = logging.getLogger("covid_keras.app")
#: Both tabs' answers share one queue, one at a time: the models share the CPU, and the readers' warnings are
#: caught with ``warnings.catch_warnings``, which is process-wide (two answers at once would swap their notes).
ANSWERS = "answers"
#: Where the package's own modules live: the page shows the warnings they give.
_PACKAGE = os.path.dirname(os.path.abspath(errors.__file__))
TITLE = "covid_keras — chest X-ray and CT"
NOTICE = ("Research software, not a medical device: the answers and heat maps are a model's, for research and "
          "teaching, not for diagnosis. Uploads are deleted after each answer; nothing is kept.")


class Models:
    """The exports the page offers, by their page label (:func:`covid_keras.app.answers.describe`)."""

    def __init__(self, served_models):
        self.by_label = {}
        for served in served_models:
            label = answers.describe(served)
            if label in self.by_label and self.by_label[label].version_dir != served.version_dir:
                raise errors.ConfigurationError(
                    f"two exports are both {label!r} ({self.by_label[label].version_dir} and "
                    f"{served.version_dir}); give each model name and version once."
                )
            self.by_label[label] = served
        self.keras = answers.KerasModels()

    def labels(self, kind):
        return [label for label, served in self.by_label.items() if answers.input_kind(served) == kind]

    def get(self, label, kind):
        served = self.by_label.get(label)
        if served is None or answers.input_kind(served) != kind:
            offered = "; ".join(self.labels(kind)) or "none"
            raise errors.ConfigurationError(f"model {label!r} is not offered here; choose one of: {offered}.")
        return served


def _notes(caught, paths):
    """The package's warnings about the input (readers, preprocessing), scrubbed of upload paths, as Markdown."""
    lines = []
    for w in caught:
        if not issubclass(w.category, UserWarning) or _PACKAGE not in os.path.abspath(w.filename):
            continue  # a library's own deprecation notes are for the server's log, not the page
        text = uploads.scrub(str(w.message), paths)
        if text not in lines:
            lines.append(text)
    return "".join(f"\n\n*Note:* {line}" for line in lines)


def _failure(error, paths):
    """One sentence for the page: the package's own message, or a short one for anything else."""
    if isinstance(error, errors.CovidKerasError):
        return "**Could not answer:** " + uploads.scrub(str(error), paths)
    LOG.error("app: internal error\n%s", uploads.scrub(traceback.format_exc(), paths))
    return (f"**Could not answer:** an internal error ({type(error).__name__}) stopped the app on this input; "
            "the server log has the details.")


@contextlib.contextmanager
def _guarded(workspace, uploaded):
    """Catches the readers' warnings; deletes the uploaded files after the answer, whatever happens."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        workspace.forget(*[p for p in uploaded if p])


def xray_handler(models, workspace):
    """The ``/xray`` endpoint's function."""
    import gradio as gr

    def classify_xray(label, upload):
        hidden = gr.update(value=None, visible=False)
        empty = ("", None, None, None, hidden, hidden, hidden, None)
        paths = [upload]
        try:
            with _guarded(workspace, [upload]) as caught, workspace.staging() as folder:
                served = models.get(label, "xray")
                paths.append(folder)
                image = uploads.stage_image(upload, folder)
                paths.append(image)
                answer = answers.answer_image(image, served, models.keras)
        except Exception as e:  # noqa: BLE001 - every failure becomes one sentence in the page
            return (_failure(e, paths),) + empty[1:]
        LOG.info("app: answered an X-ray with %s in %.2f s", served.name, sum(answer.seconds.values()))
        step1 = step2 = step1_heat = hidden
        if answer.step1_heatmap is not None:
            step1_heat = gr.update(value=answer.step1_heatmap, visible=True)
        if answer.steps:
            step1 = gr.update(value=answer.steps["step1"], label="Step 1 (normal / bacterial / viral)",
                              visible=True)
            step2 = gr.update(value=answer.steps["step2"], visible=True,
                              label="Step 2 (COVID-19 / other viral)" if answer.steps["routed"]
                              else "Step 2: not run (step 1 did not answer viral)")
        status = (f"**Answer:** {answer.predicted_class} ({answer.probabilities[answer.predicted_class]:.2f}) — "
                  f"{answers.describe(served)}. Heat map: {answer.explained}. "
                  f"Answered in {answer.seconds['answer'] + answer.seconds['heatmap']:.2f} s."
                  + _notes(caught, paths))
        return status, answer.probabilities, answer.heatmap, answer.model_view, step1, step2, step1_heat, None

    return classify_xray


def _study_folder(upload, folder_path, allow_folders, staging):
    """The folder to read: the unpacked upload, or the typed folder (local use only)."""
    if upload:
        return uploads.unzip_study(upload, staging)
    folder_path = (folder_path or "").strip()
    if folder_path:
        if not allow_folders:
            raise errors.ConfigurationError(
                "reading a folder of the server is turned off for this app; upload the study as a .zip."
            )
        if not os.path.isdir(folder_path):
            raise errors.NoDicomError(f"{folder_path}: is not a folder of this machine; give a study's folder.")
        return folder_path
    raise errors.NoDicomError("No study was given; upload a .zip of its DICOM files"
                              + (" or type its folder." if allow_folders else "."))


def ct_handler(models, workspace, allow_folders):
    """The ``/ct`` endpoint's function."""
    import gradio as gr

    def classify_study(label, upload, folder_path, progress=gr.Progress()):
        paths = [upload, (folder_path or "").strip()]  # a typed folder's name may be a patient's too
        try:
            with _guarded(workspace, [upload]) as caught, workspace.staging() as staging:
                served = models.get(label, "ct")
                progress(0.0, desc="Unpacking the study")
                paths.append(staging)  # the readers name the folder they read: never the app's own path
                folder = _study_folder(upload, folder_path, allow_folders, staging)
                answer = answers.answer_study(folder, served, models.keras,
                                              progress=lambda f, text: progress(f, desc=text))
        except Exception as e:  # noqa: BLE001 - every failure becomes one sentence in the page
            return _failure(e, paths), None, None, None, None, ""
        LOG.info("app: answered a CT study of %d slices with %s in %.2f s", answer.slices, served.name,
                 sum(answer.seconds.values()))
        status = (f"**Patient answer:** {answer.predicted_class} "
                  f"({answer.probabilities[answer.predicted_class]:.2f}, {answer.aggregation.replace('_', ' ')}, "
                  f"{answer.slices} slices) — {answers.describe(served)}. Heat maps: {answer.explained}. "
                  f"Answered in {answer.seconds['answer'] + answer.seconds['heatmaps']:.1f} s."
                  + _notes(caught, paths))
        return status, answer.probabilities, answer.curve, answer.suspicious, None, ""

    return classify_study


def _describe_choice(models):
    def show(label):
        served = models.by_label.get(label)
        if served is None:
            return ""
        classes = ", ".join(served.class_names)
        return f"Classes: {classes}. Input {served.input_shape[1:] if served.input_shape else '?'}."

    return show


def _model_picker(gr, models, labels, kind):
    """The tab's model selector and the line describing the chosen model."""
    show = _describe_choice(models)
    model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id=f"{kind}-model")
    about = gr.Markdown(show(labels[0]))
    model.change(show, model, about, api_name=False)
    return model


def _xray_tab(gr, models, workspace):
    labels = models.labels("xray")
    with gr.Tab("X-ray"):
        model = _model_picker(gr, models, labels, "xray")
        upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="xray-upload")
        button = gr.Button("Classify X-ray", variant="primary", elem_id="xray-submit")
        status = gr.Markdown(elem_id="xray-status")
        probabilities = gr.Label(label="Probabilities", elem_id="xray-probabilities")
        with gr.Row():
            view = gr.Image(label="As the model saw it", format="png", type="numpy", interactive=False,
                            elem_id="xray-view")
            heatmap = gr.Image(label="Grad-CAM (last_conv) of the answer", format="png", type="numpy",
                               interactive=False, elem_id="xray-heatmap")
            step1_heat = gr.Image(label="Grad-CAM of step 1", format="png", type="numpy", interactive=False,
                                  visible=False, elem_id="xray-step1-heatmap")
        with gr.Row():
            step1 = gr.Label(label="Step 1", visible=False, elem_id="xray-step1")
            step2 = gr.Label(label="Step 2", visible=False, elem_id="xray-step2")
        button.click(xray_handler(models, workspace), [model, upload],
                     [status, probabilities, heatmap, view, step1, step2, step1_heat, upload], api_name="xray",
                     concurrency_limit=1, concurrency_id=ANSWERS)


def _ct_tab(gr, models, workspace, allow_folders):
    labels = models.labels("ct")
    with gr.Tab("CT study"):
        model = _model_picker(gr, models, labels, "ct")
        upload = gr.File(label="CT study: a .zip of its DICOM files", type="filepath", elem_id="ct-upload")
        folder = gr.Textbox(label="or the study's folder on this machine", visible=allow_folders,
                            elem_id="ct-folder")
        button = gr.Button("Classify study", variant="primary", elem_id="ct-submit")
        status = gr.Markdown(elem_id="ct-status")
        probabilities = gr.Label(label="Patient answer", elem_id="ct-probabilities")
        curve = gr.Image(label="Along z", format="png", type="numpy", interactive=False, elem_id="ct-curve")
        slices = gr.Gallery(label="The most suspicious slices, with Grad-CAM", format="png", columns=3,
                            elem_id="ct-slices")
        button.click(ct_handler(models, workspace, allow_folders), [model, upload, folder],
                     [status, probabilities, curve, slices, upload, folder], api_name="ct",
                     concurrency_limit=1, concurrency_id=ANSWERS)


def build_app(served_models, workspace, *, allow_folders=False, keep_outputs=300):
    """The app's ``gr.Blocks`` over ``served_models``.

    Args:
        served_models: :class:`covid_keras.serving.ServedModel` objects.
        workspace: the :class:`covid_keras.app.uploads.Workspace`; gradio's
            cache is set inside it (``GRADIO_TEMP_DIR``) before gradio is
            imported here.
        allow_folders: offer the CT tab's folder field (reads any folder of
            the server: for an app on the user's own machine only).
        keep_outputs: seconds an answer's PNGs stay in the cache for the
            browser to fetch, and the longest an upload not yet answered
            stays (gradio's sweep deletes older files every
            ``min(keep_outputs, 60)`` seconds; answered uploads are deleted
            at once).

    Returns:
        The ``gr.Blocks`` (launch it with ``demo.launch(...)``).

    Raises:
        ServingError: an export the app cannot serve.
        ConfigurationError: no model, or a bad ``keep_outputs``.
    """
    if not served_models:
        raise errors.ConfigurationError("the app needs at least one exported model; pass --model.")
    if isinstance(keep_outputs, bool) or not isinstance(keep_outputs, int) or keep_outputs < 1:
        raise errors.ConfigurationError(f"`keep_outputs` must be a positive number of seconds. Received: "
                                        f"{keep_outputs!r}")
    os.environ["GRADIO_TEMP_DIR"] = workspace.gradio_dir
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # gradio 6 saves every run (inputs and outputs) in the browser for its "Runs" page unless told not to:
    # patient images would stay in the browser's storage.
    os.environ["GRADIO_RUN_HISTORY"] = "False"
    os.environ.setdefault("GRADIO_FLAGGING_MODE", "never")  # Blocks has no Flag button; nor will an added Interface
    import gradio as gr

    models = Models(served_models)
    with gr.Blocks(title=TITLE, analytics_enabled=False,
                   delete_cache=(min(keep_outputs, 60), keep_outputs)) as demo:
        gr.Markdown(f"# {TITLE}\n{NOTICE}")
        if models.labels("xray"):
            _xray_tab(gr, models, workspace)
        if models.labels("ct"):
            _ct_tab(gr, models, workspace, allow_folders)
    return demo
