"""Command lines: one sentence and exit 2 on bad input, traceback only with --debug."""

import json
import subprocess
import sys

import pytest

from covid_keras import cli, errors
from covid_keras.data import __main__ as data_cli


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys):
    status = cli.run(data_cli.main, ["info", str(tmp_path / "missing_dir") + "/"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and "missing_dir" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(errors.CovidKerasError):
        cli.run(data_cli.main, ["info", str(tmp_path / "nothing.png"), "--debug"])


def test_info_on_a_phantom_series_prints_json_without_phi(tmp_path, capsys, phantom_series):
    folder, hu, spacing, _ = phantom_series
    assert cli.run(data_cli.main, ["info", folder]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert summary["shape_zyx"] == list(hu.shape)
    assert summary["patient_id"].startswith("pt-")
    assert "SECRET-ID-123" not in out and "DOE" not in out


def test_module_entry_point_exits_non_zero(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "covid_keras.data", "info", str(empty)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {empty}: the folder is empty; put the series' DICOM files in it or point to the right folder."


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "covid_keras.data", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for word in ("demo", "info", "phantoms", "list"):
        assert word in proc.stdout
