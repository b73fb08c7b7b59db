"""Helpers of the image-command chain tests (``train.xray_cnn``, ``train.transfer``): commands, reports, exports.

A plain module beside the tests (as ``doc_blocks.py``): the commands run in
fresh processes with the test session's cache folder and id salt, each
held-out report is recomputed by hand from its per-image predictions, and
each export is run in a process that imports TensorFlow only.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The one-class and Kermany trees come from the dataset tests' layout writers.
_LAYOUTS = os.path.join(REPO, "tests", "data", "fixtures_layouts.py")

_FRESH_EXPORT = """
import json, sys
import numpy as np
import tensorflow as tf
version_dir, inputs = sys.argv[1], np.load(sys.argv[2])
with open(version_dir + "/assets.extra/covid_keras.json") as f:
    name = json.load(f)["input"]["name"]
signature = tf.saved_model.load(version_dir).signatures["serving_default"]
print(json.dumps({k: v.numpy().tolist() for k, v in signature(**{name: tf.constant(inputs)}).items()}))
"""


def session_env(basetemp):
    """The environment of a command: the session's cache (as the autouse fixture sets it), quiet TensorFlow."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COVID_KERAS_ID_SALT": "test-salt",
            "COVID_KERAS_CACHE": str(basetemp / "covid_keras_cache")}


def command(basetemp, *argv, timeout=900):
    """Runs ``python <argv>`` from the repository root; returns the finished process."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=session_env(basetemp),
                          cwd=REPO, timeout=timeout, check=False)


def module(basetemp, name, *args, timeout=900):
    """Runs ``python -m <name> <args>``."""
    return command(basetemp, "-m", name, *args, timeout=timeout)


def modules_side_by_side(basetemp, *commands, timeout=900):
    """Runs several ``python -m <name> <args>`` (tuples) at once, their start-ups overlapping; returns them finished."""
    started = [subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=session_env(basetemp), cwd=REPO) for argv in commands]
    done = []
    for proc in started:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def ok_json(proc):
    """The JSON a successful command printed on stdout."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def one_error_line(proc, *fragments):
    """Exit status 2, nothing on stdout, one ``error:`` line on stderr holding ``fragments``; returns it."""
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def layouts():
    """``tests/data/fixtures_layouts.py`` as a module (it lives beside other tests, not on this folder's path)."""
    spec = importlib.util.spec_from_file_location("image_chain_fixtures_layouts", _LAYOUTS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_json(*parts):
    with open(os.path.join(*map(str, parts))) as f:
        return json.load(f)


def read_rows(*parts):
    """The rows of a predictions file (covid_keras.evaluation.predictions), its header checked."""
    from covid_keras.evaluation.predictions import read_predictions

    predictions = read_predictions(os.path.join(*map(str, parts)))
    assert predictions.level == "image" and predictions.part in os.path.basename(predictions.path)
    return predictions.rows


def cached_images(cache_folder, keys):
    """``{key: float32 [H, W, 3]}``: the cached uint8 grey images, repeated to RGB as training feeds them."""
    from covid_keras.training import pipelines

    return {k: np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
            for k, image in pipelines.iter_images(cache_folder, set(keys))}


def probe_images(side, n=3, seed=0):
    """Images no cache holds: black, white and uniform noise in [0, 255]."""
    noise = np.random.default_rng(seed).uniform(0, 255, (n, side, side, 3))
    return np.concatenate([np.zeros((1, side, side, 3)), np.full((1, side, side, 3), 255.0), noise]).astype("f4")


def fresh_outputs(version_dir, x, tmp_path):
    """The export's ``serving_default`` outputs on ``x`` in a fresh process that imports TensorFlow only."""
    path = tmp_path / "fresh_inputs.npy"
    np.save(path, np.asarray(x, np.float32))
    proc = subprocess.run([sys.executable, "-c", _FRESH_EXPORT, str(version_dir), str(path)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {k: np.asarray(v, np.float32) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _rate(num, den):
    return None if den == 0 else num / den


def report_by_hand(rows, classes):
    """The held-out report of per-image rows (``label``, ``probabilities``), from its confusion matrix by hand.

    One-vs-rest per class: sensitivity = recall = TP / (TP + FN),
    specificity = TN / (TN + FP), precision = TP / (TP + FP),
    F1 = 2 TP / (2 TP + FP + FN); None where the denominator is 0.
    """
    k = len(classes)
    cm = np.zeros((k, k), int)
    for row in rows:
        cm[classes.index(row["label"]), int(np.argmax([row["probabilities"][c] for c in classes]))] += 1
    n = int(cm.sum())
    out = {"n": n, "accuracy": np.trace(cm) / n, "majority_rate": cm.sum(axis=1).max() / n,
           "confusion": cm.tolist(), **{m: {} for m in ("sensitivity", "specificity", "precision", "recall", "f1")}}
    for i, c in enumerate(classes):
        tp, fn, fp = cm[i, i], cm[i].sum() - cm[i, i], cm[:, i].sum() - cm[i, i]
        tn = n - tp - fn - fp
        out["sensitivity"][c] = out["recall"][c] = _rate(tp, tp + fn)
        out["specificity"][c] = _rate(tn, tn + fp)
        out["precision"][c] = _rate(tp, tp + fp)
        out["f1"][c] = _rate(2 * tp, 2 * tp + fp + fn)
    return out


def assert_report_matches(report, rows, classes):
    """``report`` (4-digit rounding) is :func:`report_by_hand` of ``rows``, every per-class column present."""
    expected = report_by_hand(rows, classes)
    assert report["n"] == expected["n"] == len(rows)
    assert report["confusion"] == expected["confusion"]
    for key in ("accuracy", "majority_rate"):
        assert abs(report[key] - expected[key]) <= 1e-4, key
    for metric in ("precision", "recall", "f1", "sensitivity", "specificity"):
        assert list(report[metric]) == list(classes), metric
        for c in classes:
            got, want = report[metric][c], expected[metric][c]
            assert (got is None) == (want is None), (metric, c, got, want)
            if want is not None:
                assert abs(got - want) <= 1e-4, (metric, c, got, want)


def row_probabilities(row, classes, key="probabilities"):
    """A prediction row's probabilities in ``classes`` order (the JSON files sort their keys)."""
    return [row[key][c] for c in classes]


def no_identifiers(text, dicom_path):
    """The DICOM's patient name and id appear nowhere in ``text``."""
    import pydicom

    ds = pydicom.dcmread(dicom_path, stop_before_pixels=True)
    for value in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
        for part in filter(None, value.replace("^", " ").split()):
            if len(part) > 2:
                assert part not in text, part
