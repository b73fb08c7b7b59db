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


@pytest.mark.parametrize("command", ["covid_keras.models", "covid_keras.preprocess", "covid_keras.predict"])
def test_tensorflow_start_up_lines_are_muted(command, tmp_path):
    # TF 2.21 writes absl start-up lines to fd 2; the commands mute them
    # (cli.quiet_tensorflow), and --debug lets them through.
    quiet = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout.startswith("usage:")
    assert quiet.stderr == ""


def test_failed_tensorflow_import_shows_what_was_muted(tmp_path, monkeypatch):
    # A module named tensorflow that writes to fd 2 and fails to import.
    (tmp_path / "tensorflow.py").write_text("import os\nos.write(2, b'dlopen failed: libfoo.so\\n')\n"
                                            "raise ImportError('broken TensorFlow')\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from covid_keras import cli\n"
            "try:\n    cli.quiet_tensorflow('__main__')\nexcept ImportError as e:\n    print('raised', e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "raised broken TensorFlow" in proc.stdout
    assert "dlopen failed: libfoo.so" in proc.stderr


def test_a_choice_spelt_none_is_a_word_not_none():
    """--class-weights none is one of the flag's choices, not "no value" (it was refused before)."""
    from covid_keras.training.volume_level import Volume3DConfig
    from covid_keras.training.xray_cnn import XrayCNNConfig

    for config_cls in (XrayCNNConfig, Volume3DConfig):
        config = cli.parse_recipe(["--class-weights", "none"], "prog", "", config_cls, phantom=True)
        assert config.class_weights == "none"
    assert cli.parse_recipe(["--covid-data", "none"], "prog", "", XrayCNNConfig).covid_data is None
