"""Training command lines: help, and one clear sentence on bad input."""

import os
import shutil
import subprocess
import sys

import pytest

from covid_keras.data import synthetic


def _run(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=os.getcwd()))


@pytest.mark.parametrize("command", ["train.slice_level", "train.patient_level", "train.ensemble"])
def test_help_explains_every_flag(command, tmp_path):
    proc = _run(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0
    for line in proc.stdout.splitlines():
        if line.strip().startswith("--") and "  " in line.strip():
            assert line.split("  ", 1)[1].strip(), line  # the flag has a help text
    assert "--seed" in proc.stdout and "--run-dir" in proc.stdout
    assert proc.stderr == ""  # TensorFlow's start-up lines are muted (cli.quiet_tensorflow)


def _last_line(stderr):
    """The command's own last line (TensorFlow may log before it)."""
    return stderr.strip().splitlines()[-1]


def test_missing_data_folder(tmp_path):
    proc = _run("train.slice_level", "--data", str(tmp_path / "nope"), "--dataset", "covid-ct-md", cwd=tmp_path)
    assert proc.returncode == 2
    line = _last_line(proc.stderr)
    assert line.startswith("error: ") and "nope" in line and "--data" in line
    assert proc.stderr.strip().splitlines() == [line]  # nothing but the sentence


def test_debug_shows_the_traceback(tmp_path):
    proc = _run("train.slice_level", "--data", str(tmp_path / "nope"), "--dataset", "covid-ct-md", "--debug",
                cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DatasetLayoutError" in proc.stderr


def test_dataset_with_one_class(tmp_path):
    root = tmp_path / "ctmd"
    synthetic.write_ct_dataset(str(root), synthetic.CTPhantomConfig(patients_per_class=2, size=32,
                                                                    min_slices=10, max_slices=12))
    shutil.rmtree(root / "COVID-19 Cases")
    shutil.rmtree(root / "Cap Cases")
    proc = _run("train.slice_level", "--data", str(root), "--dataset", "covid-ct-md", "--weights", "none",
                cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _last_line(proc.stderr).startswith("error: the dataset has only one class (Normal)")
    assert "Traceback" not in proc.stderr


def test_patient_level_without_a_slice_run(tmp_path):
    proc = _run("train.patient_level", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    line = _last_line(proc.stderr)
    assert line.startswith("error: ") and "no finished run found" in line and "--slice-run" in line
