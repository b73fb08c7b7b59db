"""``python -m train.xray_cnn --strategy multi-worker`` as two local workers, end to end.

Both workers train both steps, report and export; the chief (worker 0)
writes the run folder and the TF Serving export, worker 1 only its
scratch folder, which is gone afterwards. The export must answer as the
chief's two ``model.keras`` files, and both workers must have reported the
same held-out numbers (they hold the same weights).
"""

import json
import os
import sys

import numpy as np
import pytest
from image_chain_helpers import REPO, fresh_outputs, probe_images
from worker_processes import TIMEOUT, start_workers, wait_all

SIDE = 32
ARGS = ("--phantom-images", "6", "--epochs", "2", "--image-size", str(SIDE), "--val-fraction", "0.2",
        "--verbose", "0", "--seed", "3", "--strategy", "multi-worker")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xray_mw")
    outs = [tmp / f"w{i}.json" for i in range(2)]
    # The workers' environment holds the session's cache and id salt (conftest's autouse fixture).
    procs, logs = start_workers(tmp, "xray", 2, lambda i: [
        sys.executable, "-m", "train.xray_cnn", *ARGS, "--runs-root", str(tmp / "runs"),
        "--export-dir", str(tmp / "saved_models")], cwd=REPO, stdout=lambda i: outs[i])
    wait_all(procs, logs, timeout=TIMEOUT * 2)
    return tmp, [json.load(open(o)) for o in outs], [open(log).read() for log in logs]


@pytest.mark.slow
def test_only_the_chief_writes_the_run_and_the_export(two_workers):
    tmp, (chief, worker), (chief_log, worker_log) = two_workers
    assert "worker 0 of 2 workers (the chief)" in chief_log and "worker 1 of 2 workers (not the chief" in worker_log
    assert chief["exported"] == str(tmp / "saved_models" / "xray_cnn" / "1")
    assert os.listdir(tmp / "saved_models") == ["xray_cnn"] and os.listdir(tmp / "saved_models" / "xray_cnn") == ["1"]
    assert os.listdir(tmp / "runs" / "xray_cnn") == [os.path.basename(chief["run"])]
    assert not os.path.exists(worker["exported"]) and not os.path.exists(worker["run"])
    assert os.listdir(tmp / "tmp") == []  # worker 1's scratch folder is removed


@pytest.mark.slow
def test_both_workers_report_the_same_held_out_numbers(two_workers):
    _, (chief, worker), _ = two_workers
    assert chief["reports"] == worker["reports"] and chief["combined_report"] == worker["combined_report"]
    assert chief["combined_report"]["n"] > 0


@pytest.mark.slow
def test_the_export_answers_as_the_chiefs_trained_models(two_workers):
    import keras

    from covid_keras.models.xraycnn import HierarchicalXrayClassifier

    tmp, (chief, _), _ = two_workers
    x = probe_images(SIDE, n=5)
    out = fresh_outputs(chief["exported"], x, tmp)
    steps = [keras.models.load_model(os.path.join(chief["run"], step, "model.keras"))
             for step in ("xraycnn_step1", "xraycnn_step2")]
    expected = HierarchicalXrayClassifier(*steps).predict(x)
    np.testing.assert_allclose(out["step1"], expected["step1"], atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], expected["combined"], atol=1e-5)
