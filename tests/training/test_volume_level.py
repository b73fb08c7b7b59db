"""Paper 000's runner: augmented copies stay in their fold's training side, counts, bad input, the whole chain.

The chain test runs ``train_volume3d`` on a 12-patient phantom dataset at
16^3 (2 folds, 2 epochs, a final model), then checks the run folder
against ``folds.json``, the summary against NumPy, and the export's answer
on a study against the final Keras model on the cached volume.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data import splits, synthetic
from covid_keras.data.datasets import covid_ct_md
from covid_keras.preprocess.pipelines import MINORITY_CLASSES, PipelineOptions
from covid_keras.training import pipelines, volume_level

SMALL = synthetic.CTPhantomConfig(patients_per_class=4, size=48, min_slices=20, max_slices=28, seed=1)
CLASSES = ["Normal", "CAP", "COVID-19"]
SIDE = 16


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("covid-ct-md"))
    synthetic.write_ct_dataset(root, SMALL)
    return root


@pytest.fixture(scope="module")
def volume_cache(dataset_root, tmp_path_factory):
    recs = covid_ct_md(dataset_root)
    options = PipelineOptions("volume3d", size=SIDE, augment_minority=True)
    folder = pipelines.ensure_cache(recs, "covid-ct-md", options, CLASSES, root=str(tmp_path_factory.mktemp("c")),
                                    workers=1, progress=False)
    return folder, recs


def test_folds_never_train_on_a_copy_of_a_validation_patient(volume_cache):
    folder, recs = volume_cache
    rows, classes = pipelines.volume_rows(folder)
    by_key = {r.key: r for r in rows}
    # The cache holds two copies of every CAP and Normal study, none of a COVID-19 one.
    for rec in recs:
        copies = [r for r in rows if r.patient_id == rec.patient_id and r.augmented]
        assert len(copies) == (2 if rec.label in MINORITY_CLASSES else 0), rec.patient_id
    base_keys = {r.key for r in rows if not r.augmented}
    for train, val in splits.kfold_splits(recs, k=4, seed=0):
        train_p, val_p = {r.patient_id for r in train}, {r.patient_id for r in val}
        train_sel, val_sel, counts = volume_level.fold_volumes(rows, train_p, val_p, classes, augment=True)
        assert not [k for k in train_sel if by_key[k].patient_id in val_p]
        assert not [k for k in val_sel if by_key[k].augmented]
        assert {k for k in train_sel if not by_key[k].augmented} | set(val_sel) == base_keys
        for c in classes:
            n_train = sum(r.label == c for r in train)
            assert counts["train_before"][c] == n_train
            assert counts["train_after"][c] == n_train * (3 if c in MINORITY_CLASSES else 1)
            assert counts["val"][c] == sum(r.label == c for r in val)
        assert sum(counts["train_after"].values()) == len(train_sel)
        # Labels are the records' own classes.
        assert all(classes[i] == by_key[k].label for k, i in {**train_sel, **val_sel}.items())
        # Without augmentation the training side is the patients' own volumes only.
        plain, _, plain_counts = volume_level.fold_volumes(rows, train_p, val_p, classes, augment=False)
        assert plain_counts["train_after"] == plain_counts["train_before"] and not any(
            by_key[k].augmented for k in plain)


def test_describe_counts_reads_like_table_1():
    counts = {"train_before": {"Normal": 6, "CAP": 6, "COVID-19": 6},
              "train_after": {"Normal": 18, "CAP": 18, "COVID-19": 6},
              "val": {"Normal": 2, "CAP": 2, "COVID-19": 2}}
    assert volume_level.describe_counts(counts, CLASSES) == (
        "training volumes Normal 6 -> 18, CAP 6 -> 18, COVID-19 6; validation Normal 2, CAP 2, COVID-19 2")


def test_volume_dataset_streams_only_the_selected_volumes(volume_cache):
    folder, recs = volume_cache
    rows, classes = pipelines.volume_rows(folder)
    patients = sorted({r.patient_id for r in recs if r.label == "CAP"})[:2]
    selection = pipelines.select_volumes(rows, patients, classes, augmented=True)
    assert len(selection) == 6
    ds = pipelines.volume_dataset(folder, selection, rows, training=True, batch_size=4, seed=1)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    assert [x.shape for x in xs] == [(4, SIDE, SIDE, SIDE, 1), (2, SIDE, SIDE, SIDE, 1)]
    x = np.concatenate(xs)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert list(np.concatenate(ys)) == [classes.index("CAP")] * 6
    # Each volume once: the streamed volumes are the selected keys' cached ones, dequantized.
    from covid_keras.preprocess.lung_volume import dequantize

    expected = {k: dequantize(v) for k, v in pipelines.iter_volumes(folder, rows, selection)}
    assert set(expected) == set(selection)
    got = sorted(float(v.sum()) for v in x)
    assert np.allclose(got, sorted(float(v.sum()) for v in expected.values()), atol=1e-3)


def test_too_few_patients_for_the_folds_is_one_clear_sentence(volume_cache):
    _, recs = volume_cache
    with pytest.raises(errors.ConfigurationError, match=r"13 folds need at least 13 patients, but there are 12; "
                                                        r"use --folds <= 12"):
        volume_level.check_folds(recs, 13)
    with pytest.raises(errors.ConfigurationError, match=r"at least 5 patients of every class, but class 'CAP' "
                                                        r"has 4; use --folds <= 4 or add patients of that class\.$"):
        volume_level.check_folds(recs, 5)
    with pytest.raises(errors.ConfigurationError, match=r"2 studies were skipped"):
        volume_level.check_folds(recs, 5, skipped=2)
    volume_level.check_folds(recs, 4)


def _command(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "train.volume3d", *args], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=900)


def test_a_study_without_lungs_is_skipped_and_can_leave_too_few_patients(dataset_root, tmp_path):
    """The cache skips it with its summary; 4 folds then lack a Normal patient: exit 2, one sentence."""
    root = str(tmp_path / "data")
    shutil.copytree(dataset_root, root)
    normal = os.path.join(root, "Normal Cases", sorted(os.listdir(os.path.join(root, "Normal Cases")))[0])
    shutil.rmtree(normal)
    hu, _, spacing = synthetic.phantom_volume("normal", n_slices=20, size=48, slice_spacing=5.0, seed=4,
                                              geometry=synthetic.PhantomGeometry(lung_start=2.0, lung_end=3.0))
    synthetic.write_ct_series(hu, spacing, normal, seed=4)
    proc = _command("--data", root, "--volume-size", str(SIDE), "--depth", "18", "--weights", "none",
                    "--folds", "4", "--workers", "1", "--runs-root", str(tmp_path / "runs"), "--export-dir", "none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "skipped 1 x NoLungError" in proc.stderr and "no lungs found" in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        "error: 4 folds need at least 4 patients of every class, but class 'Normal' has 3; use --folds <= 3 or "
        "add patients of that class. (1 studies were skipped by the preprocessing, see above)"]
    assert "PHANTOM^" not in proc.stderr and "PHANTOM-" not in proc.stderr  # no patient names or ids


def test_the_chain_cross_validates_exports_and_predicts(dataset_root, tmp_path):
    import keras

    from covid_keras import serving
    from covid_keras.preprocess.cache import record_key
    from covid_keras.preprocess.lung_volume import dequantize

    config = volume_level.Volume3DConfig(
        data=dataset_root, weights=None, depth=18, volume_size=SIDE, batch_size=4, bn_momentum=0.9, folds=2,
        epochs=2, workers=1, run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "saved_models"),
        verbose=0, quiet=True)
    summary = volume_level.train_volume3d(config)
    run = tmp_path / "run"
    view = summary["crossval"]
    assert view["k"] == 2 and [f["fold"] for f in view["folds"]] == [1, 2]
    accuracies = [f["accuracy"] for f in view["folds"]]
    assert view["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert view["std"]["accuracy"] == pytest.approx(np.std(accuracies))
    assert view["counts"]["accuracy"] == 2
    covid = [f["covid_sensitivity"] for f in view["folds"]]
    assert view["mean"]["sensitivity/COVID-19"] == pytest.approx(np.mean(covid))
    for fold in view["folds"]:
        assert np.sum(fold["confusion"]) == 6 and set(fold["sensitivity"]) == set(CLASSES)

    folds = json.loads((run / "folds.json").read_text())["folds"]
    by_key = {r.key: r for r in pipelines.volume_rows(summary["cache"])[0]}
    for entry in folds:
        sub = run / "folds" / f"fold_{entry['fold']}"
        volumes = json.loads((sub / "volumes.json").read_text())
        assert len(volumes["train"]) == 6 + 2 * 4  # 6 training patients, and the 4 CAP / Normal ones' copies
        train_patients = {by_key[k].patient_id for k in volumes["train"]}
        assert not train_patients & set(entry["val"])  # no volume, no copy of a validation patient
        assert sorted({by_key[k].patient_id for k in volumes["val"]}) == sorted(entry["val"])
        assert not [k for k in volumes["val"] if by_key[k].augmented]
        predictions = json.loads((sub / "predictions_val.json").read_text())["rows"]
        assert sorted(p["patient_id"] for p in predictions) == sorted(entry["val"])
        report = json.loads((sub / "report.json").read_text())
        assert report["n"] == len(predictions) == 6
        assert json.loads((sub / "stages" / "train.json").read_text())["kept"] == "last"
    crossval = json.loads((run / "crossval.json").read_text())
    assert crossval["final"] == {"patients": 12, "volumes": 12 + 2 * 8}
    # The mean and std are over the metrics only, not the folds' bookkeeping.
    assert not [m for m in crossval["mean"] if m.startswith(("volumes", "stages"))]

    # evaluate.report: Table 4 from the folds' predictions equals the run's own.
    from report_checks import check_report

    (table,) = check_report(run, phantom=False)["kfold"]  # --data: a COVID-CT-MD layout of generated studies
    assert table["k"] == 2 and table["mean"]["accuracy"] == pytest.approx(view["mean"]["accuracy"], abs=1e-4)
    assert table["mean"]["COVID-19 sensitivity"] == pytest.approx(view["mean"]["sensitivity/COVID-19"], abs=1e-4)

    # The export is the final model; predict on a study = the final model on its cached volume.
    exported = summary["exported"]
    meta = serving.load_metadata(exported)
    assert meta["kind"] == "volume" and meta["class_names"] == CLASSES
    assert meta["metadata"]["recipe"]["recipe"] == "resnet50_3d"
    assert meta["metadata"]["crossval"]["mean"]["accuracy"] == pytest.approx(view["mean"]["accuracy"])
    model = keras.models.load_model(summary["model"])
    rec = covid_ct_md(dataset_root)[0]
    rows, _ = pipelines.volume_rows(summary["cache"])
    (_, cached), = pipelines.iter_volumes(summary["cache"], rows, {record_key(rec): 0})
    expected = np.asarray(model(dequantize(cached)[None, ..., None], training=False))[0]
    answer = serving.predict_study(rec.paths[0], exported)
    np.testing.assert_allclose([answer["probabilities"][c] for c in CLASSES], expected, atol=1e-5)
    assert answer["aggregation"] == "volume" and answer["patient_id"]


def test_killed_in_fold_2_the_rerun_continues_fold_2_from_its_last_finished_epoch(dataset_root, tmp_path):
    import csv
    import signal
    import time

    run = tmp_path / "run"
    args = ["--data", dataset_root, "--volume-size", str(SIDE), "--depth", "18", "--weights", "none",
            "--batch-size", "4", "--bn-momentum", "0.9", "--folds", "2", "--epochs", "4",
            "--workers", "1", "--run-dir", str(run), "--export-dir", "none", "--verbose", "2"]
    log = run / "folds" / "fold_2" / "logs" / "train.csv"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "train.volume3d", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)

    def epochs_logged():
        if not log.exists():
            return []
        with open(log) as f:
            return [int(row["epoch"]) for row in csv.DictReader(f)]

    try:
        deadline = time.time() + 600
        while len(epochs_logged()) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before fold 2 reached its second epoch"
        os.killpg(proc.pid, signal.SIGKILL)  # as a lost machine would: no clean-up at all
    finally:
        proc.wait()
    done_before = epochs_logged()
    assert 2 <= len(done_before) < 4 and not (run / "folds" / "fold_2" / "report.json").exists()

    rerun = _command(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[fold 1/2] accuracy" in rerun.stderr and "(finished earlier)" in rerun.stderr
    assert "[train] resuming" in rerun.stderr
    # Fold 2's log has every epoch once: the rerun trained only the epochs after the last finished one.
    assert epochs_logged() == [0, 1, 2, 3]
    stage = json.loads((run / "folds" / "fold_2" / "stages" / "train.json").read_text())
    assert stage["epochs_run"] == 4 - len(done_before)
    assert json.loads((run / "crossval.json").read_text())["k"] == 2
    # Everything finished: a third run trains nothing and reads the final model back (a fresh process).
    again = _command(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("(finished earlier)") == 3 and "Epoch 1/" not in again.stderr
    assert json.loads(again.stdout)["model"].endswith(os.path.join("final", "model.keras"))


def test_mixed_precision_builds_float16_compute_with_a_float32_softmax_and_loss_scaling():
    import keras

    from covid_keras.recipes import RESNET50_3D
    from covid_keras.training import schedules

    config = volume_level.Volume3DConfig(weights=None, depth=18, volume_size=SIDE, bn_momentum=0.9,
                                         mixed_precision=True)
    try:
        model = volume_level.build_model(config)
        assert model.get_layer("conv1_conv").compute_dtype == "float16"
        assert model.get_layer("conv1_conv").variable_dtype == "float32"
        assert model.get_layer("probabilities").compute_dtype == "float32"
        assert model.outputs[0].dtype == "float32"  # so the loss is computed in float32
        assert model.get_layer("conv1_bn").momentum == 0.9
        # What fit_stage compiles: Keras wraps the optimizer in loss scaling under mixed_float16.
        stage = config.stage_list()[0]
        model.compile(optimizer=schedules.build_optimizer(stage.optimizer, stage.schedule, 10, stage.epochs),
                      loss="sparse_categorical_crossentropy")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain = volume_level.build_model(volume_level.Volume3DConfig(weights=None, depth=18, volume_size=SIDE))
    assert plain.get_layer("conv1_conv").compute_dtype == "float32"
    assert RESNET50_3D.phantom_preset()["bn_momentum"] == 0.9


def test_mixed_precision_on_a_cpu_is_refused_before_any_work(tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: mixed precision runs")
    config = volume_level.Volume3DConfig(weights=None, depth=18, volume_size=SIDE, mixed_precision=True,
                                         run_dir=str(tmp_path / "run"), quiet=True)
    with pytest.raises(errors.ConfigurationError, match=r"--mixed-precision needs a GPU"):
        volume_level.train_volume3d(config)
    assert not (tmp_path / "run").exists()


def test_a_mixed_precision_final_model_is_exported_in_float32(tmp_path):
    """A mixed_float16 model cannot run on a CPU (no float16 MaxPool3D): the export is its float32 copy."""
    import keras

    from covid_keras import serving

    config = volume_level.Volume3DConfig(weights=None, depth=18, volume_size=SIDE, mixed_precision=True)
    try:
        mixed = volume_level.build_model(config)
        mixed.save(tmp_path / "final.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = keras.models.load_model(tmp_path / "final.keras")
    assert loaded.get_layer("conv1_conv").compute_dtype == "float16"
    copy = volume_level.float32_copy(loaded, config)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    for a, b in zip(copy.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    exported = serving.export(copy, str(tmp_path / "saved"), class_names=CLASSES,
                              preprocessing={"pipeline": "volume3d", "size": SIDE})
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(size=(1, SIDE, SIDE, SIDE, 1)).astype("float32")
    served = tf.saved_model.load(exported).signatures["serving_default"](volume=tf.constant(x))["probabilities"]
    np.testing.assert_allclose(served.numpy(), np.asarray(copy(x, training=False)), atol=1e-5)
    plain = volume_level.build_model(volume_level.Volume3DConfig(weights=None, depth=18, volume_size=SIDE))
    assert volume_level.float32_copy(plain, config) is plain
