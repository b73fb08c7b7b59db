"""``predict_study(series_uid=)`` / ``python -m covid_keras.predict --series-uid``,
and errors that name the path the user gave.

A study folder holds two CT series of different sizes and contents; the
answer for a chosen series must be the exported model's answer for that
series alone (read from a folder holding only it). Run in process
(``cli.run``) with a small exported xray_cnn (64 x 64).
"""

import json
import os
import shutil

import numpy as np
import pydicom
import pytest

from covid_keras import cli, errors, serving
from covid_keras import predict as predict_cli

CT3 = ["Normal", "CAP", "COVID-19"]
IDENTITY = {"patient_name": "DOE^JANE", "patient_id": "SECRET-ID-123", "birth_date": "19450203"}


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    from covid_keras import models

    model = models.xray_cnn(num_classes=3)
    path = serving.export(model, str(tmp_path_factory.mktemp("saved_models")), name="ct_slice_cnn",
                          class_names=CT3,
                          preprocessing={"pipeline": "ct_slices", "brightness": 2.0, "normalization": "minmax"})
    return model, path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(study folder with two series, {name: single-series folder}, {name: SeriesInstanceUID})."""
    from covid_keras.data import synthetic

    root = tmp_path_factory.mktemp("study")
    study = str(root / "study")
    alone, uids = {}, {}
    for name, pathology, n, seed in (("big", "covid", 16, 1), ("small", "cap", 12, 2)):
        hu, _, spacing = synthetic.phantom_volume(pathology, n_slices=n, size=96, slice_spacing=5.0, seed=seed)
        alone[name] = str(root / name)
        paths = synthetic.write_ct_series(hu, spacing, alone[name], seed=seed, **IDENTITY)
        uids[name] = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        shutil.copytree(alone[name], study, dirs_exist_ok=True)
    return study, alone, uids


def _predict(capsys, *argv):
    status = cli.run(predict_cli.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _answer(model, folder):
    from covid_keras import data, preprocess

    slices = preprocess.ct_slices(data.read_ct_series(folder), size=64, brightness=2.0, normalization="minmax")
    return model.predict(np.repeat(slices[..., None], 3, axis=-1).astype("float32"), verbose=0).mean(axis=0)


def test_series_uid_picks_the_series_the_answer_is_for(study, ct_model, capsys):
    folder, alone, uids = study
    model, path = ct_model
    with pytest.warns(UserWarning, match=r"holds 2 series; reading series \.\.\.\d+ \(16 CT images\)"):
        status, out, err = _predict(capsys, folder, "--model", path)
    assert status == 0, err
    assert json.loads(out)["slices"] == 16
    for given in (uids["small"], "..." + uids["small"][-8:]):
        with pytest.warns(UserWarning, match="holds 2 series"):
            status, out, err = _predict(capsys, folder, "--model", path, "--series-uid", given)
        assert status == 0, err
        result = json.loads(out)
        assert result["slices"] == 12
        np.testing.assert_allclose([result["probabilities"][c] for c in CT3], _answer(model, alone["small"]),
                                   atol=1e-5)
        for value in IDENTITY.values():
            assert value not in out + err


def test_series_uid_matching_nothing_is_one_sentence_naming_the_folder(study, ct_model, capsys):
    folder, _, uids = study
    wanted = uids["small"][:-4] + "0000"
    status, out, err = _predict(capsys, folder, "--model", ct_model[1], "--series-uid", wanted)
    assert status == 2 and out == ""
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and folder in line
    assert wanted not in line and uids["small"] not in line and uids["big"] not in line


def test_series_uid_with_an_image_file_is_refused(tmp_path, ct_model):
    import cv2

    png = str(tmp_path / "slice.png")
    assert cv2.imwrite(png, np.zeros((64, 64), np.uint8))
    with pytest.raises(errors.ConfigurationError, match="series UID") as info:
        serving.predict_study(png, ct_model[1], series_uid="1.2.3")
    assert png in str(info.value)


def test_study_without_lungs_names_the_folder(tmp_path, testdata, ct_model, capsys):
    """NoLungError named "series se-... of patient pt-..." but not the folder given."""
    head = str(tmp_path / "head")
    os.makedirs(head)
    shutil.copy(testdata("693_UNCR.dcm"), os.path.join(head, "693_UNCR.dcm"))
    status, out, err = _predict(capsys, head, "--model", ct_model[1])
    assert status == 2 and out == ""
    line = err.strip()
    assert line.startswith(f"error: {head}: ") and "no lungs found" in line and "\n" not in line
    with pytest.raises(errors.NoLungError, match=f"^{head}: "):
        serving.predict_study(head, ct_model[1])
