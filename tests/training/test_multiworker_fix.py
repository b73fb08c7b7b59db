"""The Keras 3.15 multi-worker workaround, pinned to the Keras version it was checked against.

keras-team/keras#20585 (open): ``fit`` under ``MultiWorkerMirroredStrategy``
fails in ``_maybe_symbolic_build``, then on scalar logs. These tests fail
loudly when Keras changes: on another minor version (re-check the defect),
when the private methods the workaround replaces are gone, and when plain
Keras no longer shows the defect (delete ``covid_keras/training/multiworker_fix.py``).
"""

import json
import sys

import keras
import pytest
from worker_processes import TIMEOUT, start_workers, wait_all

from covid_keras.training import multiworker_fix

PROBE = __file__.replace("test_multiworker_fix.py", "multiworker_probe.py")


def two_workers(tmp_path, mode):
    outs = [tmp_path / f"{mode}-{i}.json" for i in range(2)]
    procs, logs = start_workers(tmp_path, mode, 2, lambda i: [sys.executable, PROBE, mode, str(outs[i])])
    wait_all(procs, logs, timeout=TIMEOUT)
    return [json.load(open(o)) for o in outs]


def test_keras_is_the_version_the_workaround_was_checked_against():
    assert keras.__version__.rsplit(".", 1)[0] == multiworker_fix.CHECKED_KERAS, (
        f"Keras {keras.__version__} is not {multiworker_fix.CHECKED_KERAS}.x: run this file's other tests, "
        "check keras-team/keras#20585, and remove covid_keras/training/multiworker_fix.py once plain fit works "
        "under MultiWorkerMirroredStrategy (else update CHECKED_KERAS)."
    )


def test_the_private_methods_it_replaces_are_still_there():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    for name in ("_maybe_symbolic_build", "train_step", "test_step"):
        assert name in vars(TensorFlowTrainer), f"Keras' TensorFlowTrainer.{name} moved: re-check the workaround"
    assert hasattr(TensorFlowTrainer, "_symbolic_build")


def test_installed_only_for_its_body():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    before = {n: vars(TensorFlowTrainer)[n] for n in ("_maybe_symbolic_build", "train_step", "test_step")}
    with multiworker_fix.installed():
        assert all(vars(TensorFlowTrainer)[n] is not f for n, f in before.items())
        with multiworker_fix.installed():  # nested: installed once
            pass
        assert vars(TensorFlowTrainer)["train_step"].__wrapped__ is before["train_step"]
    assert {n: vars(TensorFlowTrainer)[n] for n in before} == before


@pytest.mark.slow
def test_plain_keras_still_fails_and_the_workaround_makes_it_train(tmp_path):
    without = two_workers(tmp_path, "without")
    for result in without:
        assert not result["ok"] and "PerReplica" in result["error"], (
            "plain Keras no longer fails under MultiWorkerMirroredStrategy as keras-team/keras#20585 describes "
            f"({result.get('error', 'it trained')}): remove covid_keras/training/multiworker_fix.py if fit works."
        )
    first, second = two_workers(tmp_path, "with")
    assert first["ok"] and second["ok"], (first.get("error"), second.get("error"))
    assert first["weights"] == second["weights"] and first["loss"] == second["loss"]
    assert first["evaluated"] == second["evaluated"]
    assert first["predicted_matches_call"] < 1e-6
