"""The app's two endpoints through ``gradio_client`` (gradio's own testing pattern), bad input, and no trace left.

Each endpoint's answer is compared with ``serving.predict_study`` on the
same file or folder. Bad inputs (a non-image file, a DICOM that is not an
image, a zip with no series, a head CT, an MR study) must come back as
the package's one sentence in the status, never a traceback, and the app
must answer the next good upload. After ten uploads no file of theirs,
by name or by content, is left anywhere under the system's temporary
folder, and once gradio's sweep has run the workspace is empty.
"""

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile

import pytest

from covid_keras import serving
from covid_keras.app import answers

SECRET_NAME = "DOE^JANE"
SECRET_ID = "SECRET-ID-123"


@pytest.fixture
def client_for(tmp_path):
    from gradio_client import Client

    def make(app):
        return Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))

    return make


def _label(served):
    return answers.describe(serving.load_model(served))


def _top(label_value):
    return label_value["label"], {c["label"]: c["confidence"] for c in label_value["confidences"]}


def _zip_folder(folder, path):
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(os.listdir(folder)):
            archive.write(os.path.join(folder, name), arcname=name)
    return str(path)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _sentence(status):
    assert status.startswith("**Could not answer:** "), status
    text = status.removeprefix("**Could not answer:** ")
    assert "Traceback" not in status and "\n" not in text and text.endswith("."), status
    assert "covid_keras_app_" not in text and tempfile.gettempdir() + "/" not in text, status  # no server path
    return text


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory):
    """A phantom series whose Modality is MR: the wrong modality for a CT model."""
    import pydicom

    from covid_keras.data import synthetic

    folder = str(tmp_path_factory.mktemp("mr") / "series")
    synthetic.write_ct_phantom(folder, n_slices=6, size=64)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    return folder


def test_xray_endpoint_answers_as_predict_and_returns_pngs(launch_app, client_for, tiny_two_step_export,
                                                           phantom_xray_pngs):
    app = launch_app([tiny_two_step_export])
    # no run history: gradio 6 would otherwise keep every upload and answer in the browser's storage
    assert app.demo.run_history is False and "runs" not in app.demo.footer_links
    assert app.demo.config["run_history"] is False
    client = client_for(app)
    image = phantom_xray_pngs["covid"]
    status, label, heat, view, step1, step2, step1_heat, cleared = client.predict(
        _label(tiny_two_step_export), _handle(image), api_name="/xray")
    expected = serving.predict_study(image, tiny_two_step_export)
    top, confidences = _top(label)
    assert status.startswith("**Answer:** ") and top == expected["predicted_class"]
    assert confidences == pytest.approx(expected["probabilities"], abs=1e-6)
    assert _is_png(heat) and _is_png(view) and _is_png(step1_heat["value"]) and cleared is None
    assert _top(step1["value"])[1] == pytest.approx(expected["steps"]["step1"], abs=1e-6)
    assert expected["steps"]["routed"] and _top(step2["value"])[1] == pytest.approx(expected["steps"]["step2"],
                                                                                  abs=1e-6)


def _handle(path):
    from gradio_client import handle_file

    return handle_file(path) if path else None


def test_ct_endpoint_answers_as_predict(launch_app, client_for, tiny_ct_export, phantom_ct_zip):
    app = launch_app([tiny_ct_export], allow_folders=True)
    client = client_for(app)
    zipped, folder = phantom_ct_zip
    expected = serving.predict_study(folder, tiny_ct_export)
    for upload, typed in ((zipped, ""), (None, folder)):
        status, label, curve, gallery, cleared, typed_left = client.predict(
            _label(tiny_ct_export), _handle(upload), typed, api_name="/ct")
        assert cleared is None and typed_left == ""  # the page forgets the study once answered
        top, confidences = _top(label)
        assert status.startswith("**Patient answer:** ") and top == expected["predicted_class"]
        assert confidences == pytest.approx(expected["probabilities"], abs=1e-6)
        assert f"{expected['slices']} slices" in status
        assert _is_png(curve) and len(gallery) == 3 and all(_is_png(item["image"]) for item in gallery)
        assert all("slice" in item["caption"] for item in gallery)


def test_folders_are_refused_when_not_allowed(launch_app, client_for, tiny_ct_export, phantom_ct_zip):
    app = launch_app([tiny_ct_export], allow_folders=False)
    status = client_for(app).predict(_label(tiny_ct_export), None, phantom_ct_zip[1], api_name="/ct")[0]
    assert "turned off" in _sentence(status)


def test_bad_inputs_are_one_sentence_and_the_app_keeps_serving(launch_app, client_for, tiny_two_step_export,
                                                               tiny_ct_export, phantom_xray_pngs, phantom_ct_zip,
                                                               mr_study, testdata, tmp_path, caplog):
    app = launch_app([tiny_two_step_export, tiny_ct_export])
    client = client_for(app)
    xray, ct = _label(tiny_two_step_export), _label(tiny_ct_export)
    text = tmp_path / f"{SECRET_NAME}_notes.txt"
    text.write_text("not an image at all")
    broken = tmp_path / f"{SECRET_ID}.png"
    broken.write_bytes(open(phantom_xray_pngs["normal"], "rb").read()[:60])
    no_series = _zip_folder(_folder_with(tmp_path / "docs", {"readme.txt": b"hello"}), tmp_path / "docs.zip")
    head = tmp_path / "head"
    head.mkdir()
    shutil.copy(testdata("693_UNCR.dcm"), head / "a.dcm")
    cases = [
        ("/xray", xray, str(text), None, "neither DICOM nor a picture"),
        ("/xray", xray, str(broken), None, "corrupt"),
        ("/xray", xray, testdata("rtplan.dcm"), None, "pixel"),  # a DICOM that is not an image
        ("/ct", ct, no_series, "", "DICOM"),
        ("/ct", ct, _zip_folder(str(head), tmp_path / "head.zip"), "", "no lungs"),
        ("/ct", ct, _zip_folder(mr_study, tmp_path / "mr.zip"), "", "MR"),
        ("/ct", ct, phantom_xray_pngs["normal"], "", "not a .zip"),
    ]
    with caplog.at_level(logging.INFO):
        for api, label, upload, typed, expect in cases:
            args = (label, _handle(upload)) if api == "/xray" else (label, _handle(upload), typed)
            status = client.predict(*args, api_name=api)[0]
            sentence = _sentence(status)
            assert expect in sentence, (api, upload, sentence)
            assert SECRET_NAME not in status and SECRET_ID not in status and str(tmp_path) not in status
            assert not re.search(r"\b(pt|se)-[0-9a-f]{12}\b", status), status  # not even the pseudonyms
        good = client.predict(xray, _handle(phantom_xray_pngs["normal"]), api_name="/xray")[0]
        assert good.startswith("**Answer:** ")
    assert SECRET_NAME not in caplog.text and SECRET_ID not in caplog.text and "Traceback" not in caplog.text


def _folder_with(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return str(folder)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _files_under(root, skip):
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(skip)]
        for name in names:
            yield os.path.join(folder, name)


def test_no_trace_of_ten_uploads_is_left(launch_app, client_for, tiny_two_step_export, tiny_ct_export,
                                         phantom_xray_pngs, phantom_ct_zip, tmp_path):
    """Ten uploads (PNG X-rays, a DICOM series zip) under unique names: none of them is left, by name or bytes."""
    from covid_keras.data import synthetic

    app = launch_app([tiny_two_step_export, tiny_ct_export], keep_outputs=1)
    client = client_for(app)
    sources = tmp_path / "sources"
    sources.mkdir()
    uploads_done, digests = [], set()
    series = synthetic.write_ct_series(*synthetic.phantom_volume("covid", n_slices=10, size=96, slice_spacing=5.0)[::2],
                                       str(tmp_path / "dicom_series"), patient_name=SECRET_NAME,
                                       patient_id=SECRET_ID)
    digests.update(_digest(p) for p in series)  # the zip's members: no unpacked slice may be left either
    for k in range(10):
        tag = f"{SECRET_NAME}-{uuid.uuid4().hex[:12]}"
        if k % 5 == 4:
            path = _zip_folder(os.path.dirname(series[0]), sources / f"{tag}.zip")
            status = client.predict(_label(tiny_ct_export), _handle(path), "", api_name="/ct")[0]
            assert status.startswith("**Patient answer:** "), status
        else:
            path = str(sources / f"{tag}.png")
            shutil.copy(list(phantom_xray_pngs.values())[k % len(phantom_xray_pngs)], path)
            status = client.predict(_label(tiny_two_step_export), _handle(path), api_name="/xray")[0]
            assert status.startswith("**Answer:** "), status
        assert SECRET_NAME not in status
        uploads_done.append(os.path.basename(path))
        digests.add(_digest(path))
    # Nothing of theirs anywhere in the temporary folder (the test's own sources and gradio_client's downloads
    # of the answers aside), nor in the app's workspace.
    skip = str(tmp_path)
    for path in _files_under(tempfile.gettempdir(), skip):
        assert os.path.basename(path) not in uploads_done, path
        if path.startswith(app.workspace.root):
            assert _digest(path) not in digests, path
    # Left: the answers' pictures until gradio's sweep, and gradio's empty upload spools (no byte of data)
    # until the next answer deletes them.
    def spool(p):
        return os.path.basename(p).startswith("tmp") and os.path.getsize(p) == 0

    left = app.workspace.files()
    assert [p for p in left if not (p.endswith(".png") or spool(p))] == []
    deadline = time.monotonic() + 15
    while [p for p in app.workspace.files() if not spool(p)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [p for p in app.workspace.files() if not spool(p)] == []
