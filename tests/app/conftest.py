"""Shared fixtures for the app's tests: tiny exports, phantom inputs, and the app launched in this process.

* :func:`phantom_xray_pngs` — one 64 x 64 phantom radiograph PNG per
  pathology (``synthetic.write_xray_dataset``), ``{pathology: path}``;
* :func:`tiny_two_step_export` — paper 004's two-step ``xray_cnn`` export at
  64 x 64, random weights, step 1 biased to answer viral so that step 2
  runs for every image (the page then shows both steps' labels);
* :func:`make_xray_cnn` and :func:`tiny_xray_export` — the seeded 64 x 64
  ``xray_cnn`` builder the exports use, and a plain X-ray classifier export;
* :func:`tiny_ct_export` and :func:`phantom_ct_zip` — a 64 x 64 CT slice
  classifier (``ct_slices`` preprocessing, random weights) and a ``.zip``
  of a 10-slice phantom CT series written as DICOM;
* :func:`launch_app` — launches :func:`covid_keras.app.page.build_app` on a
  free loopback port (gradio's own test pattern: ``launch(...,
  prevent_thread_lock=True)``) and closes it, and its workspace, after the
  test.

Nothing is downloaded; the exports and inputs are made once per test
process (session scope; under pytest-xdist, once per worker).
"""

import dataclasses
import os
import socket
import zipfile

import pytest

#: Side of the tiny models' square input and of the phantom radiographs.
SIZE = 64
#: Step 1's logit bias added to "viral" in :func:`tiny_two_step_export`: above
#: the random logits' spread, so step 1 routes every image to step 2.
VIRAL_BIAS = 3.0


def _xray_cnn(seed, num_classes=3):
    import keras

    from covid_keras import models

    keras.utils.set_random_seed(seed)
    return models.xray_cnn(input_shape=(SIZE, SIZE, 3), num_classes=num_classes)


@pytest.fixture(scope="session")
def phantom_xray_pngs(tmp_path_factory):
    """``{pathology: path}``: one 64 x 64 phantom radiograph PNG per pathology (normal, covid, viral, ...)."""
    from covid_keras.data import synthetic

    root = str(tmp_path_factory.mktemp("xray_phantoms"))
    synthetic.write_xray_dataset(root, synthetic.XrayPhantomConfig(images_per_pathology=1, size=SIZE))
    return {name: os.path.join(root, name, f"{name}-0000.png") for name in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, name))}


@pytest.fixture(scope="session")
def tiny_two_step_export(tmp_path_factory):
    """The version folder of a two-step ``xray_cnn`` export (64 x 64) whose step 1 routes every image to step 2."""
    from covid_keras import serving

    step1, step2 = _xray_cnn(7), _xray_cnn(8)
    head = step1.get_layer("probabilities")
    kernel, bias = head.get_weights()
    bias[2] += VIRAL_BIAS  # step 1's classes: normal, bacterial, viral
    head.set_weights([kernel, bias])
    return serving.export_two_step(step1, step2, str(tmp_path_factory.mktemp("saved_models")))


@pytest.fixture(scope="session")
def make_xray_cnn():
    """Returns ``make(seed, num_classes=3)``: a 64 x 64 ``models.xray_cnn`` with seeded random weights."""
    return _xray_cnn


@pytest.fixture(scope="session")
def tiny_xray_export(tmp_path_factory):
    """The version folder of a 64 x 64 X-ray classifier export (normal, bacterial, viral; random weights)."""
    from covid_keras import serving

    return serving.export(_xray_cnn(5), str(tmp_path_factory.mktemp("saved_models")),
                          class_names=["normal", "bacterial", "viral"],
                          preprocessing={"pipeline": "xray", "size": SIZE}, image_bytes_endpoint=False)


@pytest.fixture(scope="session")
def tiny_ct_export(tmp_path_factory):
    """The version folder of a 64 x 64 CT slice classifier export (Normal, CAP, COVID-19; random weights)."""
    from covid_keras import serving

    return serving.export(_xray_cnn(6), str(tmp_path_factory.mktemp("saved_models")), name="ct_slice_cnn",
                          class_names=["Normal", "CAP", "COVID-19"],
                          preprocessing={"pipeline": "ct_slices", "size": SIZE}, image_bytes_endpoint=False)


@pytest.fixture(scope="session")
def phantom_ct_zip(tmp_path_factory):
    """``(zip path, series folder)``: a 10-slice 96 x 96 phantom CT series as DICOM, and a ``.zip`` of its files."""
    from covid_keras.data import synthetic

    root = tmp_path_factory.mktemp("ct_phantom")
    folder = str(root / "series")
    synthetic.write_ct_phantom(folder, n_slices=10, size=96)
    path = str(root / "study.zip")
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(os.listdir(folder)):
            archive.write(os.path.join(folder, name), arcname=os.path.join("study", name))
    return path, folder


@dataclasses.dataclass
class LaunchedApp:
    """A launched app: its ``url`` (ends in ``/``), the ``gr.Blocks`` (``demo``) and its ``workspace``."""

    url: str
    demo: object
    workspace: object


def free_port():
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def launch_app(monkeypatch):
    """Returns ``launch(model_dirs, **build_app_kwargs) -> LaunchedApp``; each app launched is closed after the test.

    ``model_dirs``: export version folders (loaded with
    ``serving.load_model``). Each app gets its own
    :class:`covid_keras.app.uploads.Workspace` (removed at the end);
    ``GRADIO_TEMP_DIR`` and ``GRADIO_ANALYTICS_ENABLED``, which the app
    sets, are restored after the test.

    Example:
        >>> app = launch_app([tiny_two_step_export], keep_outputs=60)   # doctest: +SKIP
        >>> gradio_client.Client(app.url, verbose=False).predict(...)   # doctest: +SKIP
    """
    from covid_keras import serving
    from covid_keras.app import uploads
    from covid_keras.app.page import build_app

    launched = []

    def launch(model_dirs, **build_app_kwargs):
        workspace = uploads.Workspace()
        monkeypatch.setenv("GRADIO_TEMP_DIR", workspace.gradio_dir)
        monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        demo = build_app([serving.load_model(d) for d in model_dirs], workspace, **build_app_kwargs)
        launched.append(LaunchedApp("", demo, workspace))
        for attempt in range(3):  # the free port may be taken between free_port() and the server's bind
            try:
                _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(),
                                        prevent_thread_lock=True, quiet=True)
                break
            except OSError:
                if attempt == 2:
                    raise
        launched[-1].url = url
        return launched[-1]

    yield launch
    for app in launched:
        app.demo.close()
        app.workspace.close()
