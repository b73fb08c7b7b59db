"""Paper 003 DETL (``python -m train.detl``): frozen layers, fold table, export, phase 1 reuse, bad input.

The chain runs the command twice on small built-in phantoms (40 x 40
images, 2 folds, 2 epochs per phase): once with a final model and an
export, then with another phase-2 setting, which must reuse phase 1.
Every check on a run reads that module's two runs; the balanced
validation split and the frozen-layer check also get hand-made inputs.
With 2 epochs the phantoms are not learnt (accuracy stays at the majority
rate); that the phantom preset learns is left to the full no-argument run.
"""

import csv
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data.datasets import CLASS_NAMES, Record
from covid_keras.training import detl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDE = 40
#: Phantom images per pathology: Data-B has 4 x 5 patients, Data-A 2 x 3 x 5 (detl.PHANTOM_DATA_A_FACTOR).
PHANTOMS = 5
#: The command's flags, tiny: 2 epochs per phase, 2 folds.
SMALL = ["--phantom-images", str(PHANTOMS), "--image-size", str(SIDE), "--phase1-epochs", "2", "--folds", "2",
         "--balanced-val", "6", "--verbose", "0"]
#: Layers phase 2 keeps frozen (everything with weights before block3_conv1) and some it trains.
FROZEN = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
TRAINED = ["block3_conv1", "fc1"]


def _command(args, cache):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COVID_KERAS_CACHE": str(cache),
           "COVID_KERAS_ID_SALT": "test-salt"}
    return subprocess.run([sys.executable, "-m", "train.detl", *args], check=False, capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Two runs of the command sharing a runs root: phase-2 epochs 2 (exported), then 3 (no export)."""
    root = tmp_path_factory.mktemp("detl")
    cache, runs = root / "cache", root / "runs"
    first = _command([*SMALL, "--phase2-epochs", "2", "--runs-root", str(runs),
                      "--export-dir", str(root / "saved_models")], cache)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    phase1 = summary["phase1"]["model"]
    with open(phase1, "rb") as f:
        phase1_before = (f.read(), os.stat(phase1).st_mtime_ns)
    second = _command([*SMALL, "--phase2-epochs", "3", "--runs-root", str(runs), "--export-dir", "none"], cache)
    assert second.returncode == 0, second.stderr[-3000:]
    return types.SimpleNamespace(root=root, cache=cache, first=first, summary=summary, phase1_before=phase1_before,
                                 second=second, second_summary=json.loads(second.stdout))


def _json(path):
    with open(path) as f:
        return json.load(f)


def _weights(model, name):
    return [w.tobytes() for w in model.get_layer(name).get_weights()]


def _trained_models(summary):
    run = summary["run"]
    return {"fold 1": os.path.join(run, "folds", "fold_1", "model.keras"),
            "fold 2": os.path.join(run, "folds", "fold_2", "model.keras"),
            "final": summary["model"]}


@pytest.mark.slow
def test_phase_2_leaves_every_frozen_layer_bitwise_as_phase_1_trained_it(chain):
    import keras

    source = keras.models.load_model(chain.summary["phase1"]["model"])
    # Every layer with weights before block3_conv1 is in FROZEN: the check below covers them all.
    names = [layer.name for layer in source.layers]
    before = names[:names.index("block3_conv1")]
    assert [n for n in before if source.get_layer(n).weights] == FROZEN
    for what, path in _trained_models(chain.summary).items():
        model = keras.models.load_model(path)
        assert detl.frozen_layers(model) == FROZEN, what
        for name in FROZEN:
            assert _weights(model, name) == _weights(source, name), f"{what}: {name} changed"
        # ... and phase 2 did train: the layers after them moved (so the check above can fail).
        for name in TRAINED:
            assert _weights(model, name) != _weights(source, name), f"{what}: {name} did not change"
        assert model.output_shape == (None, 4)
    folds = chain.summary["crossval"]
    assert all(_json(os.path.join(chain.summary["run"], "folds", f"fold_{f['fold']}", "report.json"))
               ["frozen_unchanged"] for f in folds["folds"])
    assert folds["final"]["frozen_unchanged"] is True


def test_frozen_unchanged_compares_the_frozen_layers_bit_for_bit():
    import keras

    from covid_keras.models import detl_cnn

    keras.utils.set_random_seed(0)
    source = detl_cnn(input_shape=(SIDE, SIDE, 3))
    config = detl.DETLConfig(**{**detl.DETLConfig.recipe.phantom_preset(), "image_size": SIDE})
    model = detl.extend(source, config)
    assert detl.frozen_layers(source) == []  # phase 1 trains everything
    assert detl.frozen_layers(model) == FROZEN  # rescale is frozen too, but has no weights
    assert model.output_shape == (None, len(CLASS_NAMES["detl_b"]))
    assert detl.frozen_unchanged(source, model)
    # A trained layer may change ...
    fc1 = model.get_layer("fc1")
    fc1.set_weights([w + 1.0 for w in fc1.get_weights()])
    assert detl.frozen_unchanged(source, model)
    # ... a frozen one not even by one ulp of one bias.
    layer = model.get_layer("block2_conv2")
    kernel, bias = layer.get_weights()
    bias = bias.copy()
    bias[0] = np.nextafter(bias[0], np.float32(1.0))
    layer.set_weights([kernel, bias])
    assert not detl.frozen_unchanged(source, model)
    # Restored, they agree again; the source is read, not assumed: changing it is a difference too.
    layer.set_weights(source.get_layer("block2_conv2").get_weights())
    assert detl.frozen_unchanged(source, model)
    source.get_layer("block1_conv1").set_weights([w * 2 for w in source.get_layer("block1_conv1").get_weights()])
    assert not detl.frozen_unchanged(source, model)


@pytest.mark.slow
def test_the_summary_holds_per_fold_and_mean_std_accuracy(chain):
    view = chain.summary["crossval"]
    assert view["k"] == 2 and [f["fold"] for f in view["folds"]] == [1, 2]
    accuracies = [f["accuracy"] for f in view["folds"]]
    majority = [f["majority_rate"] for f in view["folds"]]
    assert view["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert view["std"]["accuracy"] == pytest.approx(np.std(accuracies))  # ddof 0
    assert view["mean"]["majority_rate"] == pytest.approx(np.mean(majority))
    assert view["std_ddof"] == 0
    run = chain.summary["run"]
    folds = _json(os.path.join(run, "folds.json"))["folds"]
    crossval = _json(os.path.join(run, "crossval.json"))
    assert crossval["k"] == 2 and crossval["mean"]["accuracy"] == view["mean"]["accuracy"]
    for entry, fold in zip(folds, view["folds"]):
        report = _json(os.path.join(run, "folds", f"fold_{fold['fold']}", "report.json"))
        predictions = _json(os.path.join(run, "folds", f"fold_{fold['fold']}", "predictions_val.json"))["rows"]
        assert report["accuracy"] == fold["accuracy"] and report["n"] == fold["n"] == len(predictions) == 2 * PHANTOMS
        assert np.sum(fold["confusion"]) == fold["n"]
        assert sorted({p["patient_id"] for p in predictions}) == sorted(entry["val"])
    assert view["final"] == {"frozen_unchanged": True, "images": 4 * PHANTOMS, "patients": 4 * PHANTOMS}
    assert "[crossval] accuracy" in chain.first.stderr and "(std ddof=0)" in chain.first.stderr


_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = signature(image=tf.constant(np.load(sys.argv[2])))["probabilities"].numpy()
assert "covid_keras" not in sys.modules  # the SavedModel needs no code of ours
print(json.dumps(out.tolist()))
"""


@pytest.mark.slow
def test_the_final_model_is_exported_and_a_fresh_process_serves_it(chain, tmp_path):
    import keras

    from covid_keras import serving

    exported = chain.summary["exported"]
    assert exported == str(chain.root / "saved_models" / "detl_cnn" / "1")
    assert chain.summary["model"] == os.path.join(chain.summary["run"], "final", "model.keras")
    meta = serving.load_metadata(exported)
    assert meta["kind"] == "image" and meta["class_names"] == list(CLASS_NAMES["detl_b"])
    assert meta["metadata"]["recipe"]["recipe"] == "detl_cnn"
    assert meta["metadata"]["crossval"]["k"] == 2
    assert meta["metadata"]["crossval"]["mean"]["accuracy"] == pytest.approx(
        chain.summary["crossval"]["mean"]["accuracy"])
    x = np.random.default_rng(3).uniform(0, 255, size=(3, SIDE, SIDE, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _SERVE, exported, str(tmp_path / "x.npy")], check=False,
                          capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))
    final = keras.models.load_model(chain.summary["model"])
    np.testing.assert_allclose(served, final.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_another_phase_2_setting_reuses_phase_1_without_retraining_it(chain):
    first, second = chain.summary, chain.second_summary
    phase1 = first["phase1"]["model"]
    assert second["phase1"]["model"] == phase1 and second["phase1"]["report"] == first["phase1"]["report"]
    with open(phase1, "rb") as f:
        assert (f.read(), os.stat(phase1).st_mtime_ns) == chain.phase1_before
    log = chain.second.stderr
    assert f"[phase1] finished in {os.path.dirname(phase1)}; reusing its model" in log
    assert "[phase1] run folder" not in log and "[phase1] done" not in log
    assert "[phase1] run folder" in chain.first.stderr  # the first run did train it
    # Phase 1's log holds its 2 epochs once: the second run trained none.
    with open(os.path.join(os.path.dirname(phase1), "logs", "phase1.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    # Phase 2 ran again, in a folder of its own, for its 3 epochs.
    assert second["run"] != first["run"] and os.path.dirname(second["run"]) == os.path.dirname(first["run"])
    with open(os.path.join(second["run"], "folds", "fold_1", "logs", "phase2.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]
    assert "exported" not in second and second["crossval"]["k"] == 2


@pytest.mark.slow
def test_phase_1_validates_on_a_class_balanced_sample_of_its_own_patients(chain):
    folder = os.path.dirname(chain.summary["phase1"]["model"])
    split = _json(os.path.join(folder, "split.json"))
    assert split["val_images"] == {"disease": 3, "normal": 3}
    assert not set(split["train"]) & set(split["val"])
    assert sorted(split["val_class"]) == split["val"]
    predictions = _json(os.path.join(folder, "predictions_val.json"))["rows"]
    assert len(predictions) == 6 and {p["patient_id"] for p in predictions} <= set(split["val"])
    assert all(split["val_class"][p["patient_id"]] == p["label"] for p in predictions)
    assert len(split["train"]) == 2 * detl.PHANTOM_DATA_A_FACTOR * PHANTOMS - 6
    logged = f"[phase1] Data-A patients: {len(split['train'])} train, 6 in the balanced validation set"
    assert logged in chain.first.stderr


def _records(n_normal, n_disease, both=0):
    """One image per patient, ``both`` patients with a normal and a disease image."""
    recs = [Record(f"n{i:02d}", "normal", (f"n{i}.png",), "test") for i in range(n_normal)]
    recs += [Record(f"d{i:02d}", "disease", (f"d{i}.png",), "test") for i in range(n_disease)]
    for i in range(both):
        recs += [Record(f"b{i:02d}", label, (f"b{i}{label}.png",), "test") for label in ("normal", "disease")]
    return recs


def test_balanced_validation_draws_whole_patients_per_class_with_its_seed():
    recs = _records(10, 12, both=3)
    patients = {r.patient_id for r in recs}
    split = detl.balanced_validation(recs, 8, seed=0)
    assert split["val_images"] == {"disease": 4, "normal": 4}
    assert not set(split["train"]) & set(split["val"])
    assert set(split["train"]) | set(split["val"]) == patients
    drawn = {(r.patient_id, r.label) for r in recs}
    assert all((pid, label) in drawn for pid, label in split["val_class"].items())
    assert sorted(split["val_class"]) == split["val"] and len(split["val"]) == 8
    # The same seed, the same split; other seeds, other samples.
    assert detl.balanced_validation(list(reversed(recs)), 8, seed=0) == split
    assert any(detl.balanced_validation(recs, 8, seed=s)["val"] != split["val"] for s in range(1, 4))
    # A patient with images of both classes is drawn for one; its other images are on neither side.
    for seed in range(10):
        out = detl.balanced_validation(recs, 8, seed=seed)
        assert not set(out["train"]) & set(out["val"])
        assert sum(out["val_images"].values()) == len(out["val"]) == 8


def test_balanced_validation_too_large_is_one_clear_sentence():
    recs = _records(5, 5)
    with pytest.raises(errors.ConfigurationError,
                       match=r"^--balanced-val 20: leaves no training patients in Data-A's 10; choose a smaller "
                             r"--balanced-val\.$"):
        detl.balanced_validation(recs, 20, seed=0)
    # Enough patients overall, but every disease one would be drawn: phase 1 would train on one class.
    with pytest.raises(errors.ConfigurationError,
                       match=r"^--balanced-val 6: takes every Data-A patient of class 'disease' into the validation "
                             r"set, leaving phase 1 none to train on; choose a smaller --balanced-val\.$"):
        detl.balanced_validation(_records(8, 3), 6, seed=0)
    with pytest.raises(errors.ConfigurationError, match=r"^Data-A holds only normal images; phase 1 needs normal "
                                                        r"and disease images: check --data"):
        detl.balanced_validation(_records(8, 0), 2, seed=0)
    assert len(detl.balanced_validation(recs, 8, seed=0)["train"]) == 2


_NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
               "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
_COHEN_HEADER = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "view",
                 "modality", "date", "location", "folder", "filename", "doi", "url", "license", "clinical_notes",
                 "other_notes", ""]


def _image(path, seed):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8))


def _one_class_layouts(root):
    """An NIH ChestX-ray14 folder of No Finding images only, and a COVID-19 collection of 6 covid X-rays."""
    nih, covid = root / "ChestXray-NIHCC", root / "covid-chestxray-dataset"
    lines = [_NIH_HEADER]
    for i in range(6):
        name = f"{i + 1:08d}_000.png"
        lines.append(f"{name},No Finding,0,{i + 1},40,M,PA,2048,2500,0.139,0.139,")
        _image(nih / "images_001" / "images" / name, i)
    (nih / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    rows = []
    for i in range(6):
        rows.append([str(100 + i), "0", "F", "50", "Pneumonia/Viral/COVID-19", "", "", "PA", "X-ray", "2020", "",
                     "images", f"covid-{i}.png", "", "", "", "", "", ""])
        _image(covid / "images" / f"covid-{i}.png", 100 + i)
    with open(covid / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([_COHEN_HEADER, *rows])
    return str(nih), str(covid)


def _one_error_line(proc):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_bad_input_is_one_sentence_and_exit_2(tmp_path):
    nih, covid = _one_class_layouts(tmp_path)
    run = ["--runs-root", str(tmp_path / "runs"), "--export-dir", "none", "--verbose", "0"]
    cache = tmp_path / "cache"
    assert _one_error_line(_command(["--data", nih, *run], cache)) == (
        "error: Data-B needs its COVID-19 source: pass --covid-data, the COVID-19 image data collection folder "
        "(covid-chestxray-dataset), beside --data (NIH ChestX-ray14).")
    assert not (tmp_path / "runs").exists()  # refused before any work
    line = _one_error_line(_command(["--data", covid, "--covid-data", covid, *run], cache))
    assert line.startswith(f"error: {covid}: no `Data_Entry_2017.csv` found; download NIH ChestX-ray14")
    # A dataset folder of one class (No Finding only): Data-B lacks two of its classes, refused before phase 1
    # (Data-B's NIH classes are Data-A's, so a one-class Data-A stops here; balanced_validation's own check
    # is tested above).
    line = _one_error_line(_command(["--data", nih, "--covid-data", covid, "--image-size", str(SIDE), "--folds", "2",
                                     "--balanced-val", "2", "--quiet", *run], cache))
    assert line.startswith("error: Data-B holds no other_disease, pneumonia images; phase 2 needs all of")
    assert not list((tmp_path / "runs").glob("detl/*/model.keras"))  # nothing trained


def test_a_data_b_without_one_of_its_four_classes_is_refused():
    classes = list(CLASS_NAMES["detl_b"])
    records = [Record(f"p{i}", label, (f"{label}-{i}.png",), "x") for i, label in enumerate(classes[:3] * 2)]
    with pytest.raises(errors.ConfigurationError, match="Data-B holds no covid images; phase 2 needs all of"):
        detl._check_data_b(records, classes)
    detl._check_data_b(records + [Record("p9", "covid", ("c.png",), "x")], classes)  # all four: no error


@pytest.mark.slow
def test_evaluate_report_on_the_run(chain):
    """The folds' table is crossval.json's; phase 1's validation is its own section when it lives in the run."""
    from report_checks import check_report

    run = chain.summary["run"]
    metrics = check_report(run)
    (table,) = metrics["kfold"]
    crossval = _json(os.path.join(run, "crossval.json"))
    assert table["k"] == crossval["k"] == 2
    assert table["mean"]["accuracy"] == pytest.approx(crossval["mean"]["accuracy"], abs=1e-4)
    assert table["std"]["accuracy"] == pytest.approx(crossval["std"]["accuracy"], abs=1e-4)
    pooled = metrics["sections"][-1]
    assert pooled["part"] == "val (pooled folds)" and pooled["n"] == sum(f["n"] for f in table["folds"])
