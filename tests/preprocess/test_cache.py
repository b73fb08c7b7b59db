"""The dataset cache: round trip, resume after an interruption, failures skipped."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data import records as tfrecords
from covid_keras.data import synthetic
from covid_keras.preprocess import cache
from covid_keras.preprocess.pipelines import PipelineOptions, process_record

SMALL_CT = synthetic.CTPhantomConfig(patients_per_class=2, size=48, min_slices=20, max_slices=28, seed=1)
VOLUME = PipelineOptions("volume3d", size=24)


@pytest.fixture(scope="module")
def ct_records(tmp_path_factory):
    from covid_keras.data.datasets import covid_ct_md

    root = tmp_path_factory.mktemp("phantoms")
    synthetic.write_ct_dataset(str(root), SMALL_CT)
    return covid_ct_md(str(root))


def _read_all(folder):
    out = {}
    for ex in tfrecords.load(folder, with_meta=True):
        out[ex["key"].numpy().decode()] = {k: v.numpy() for k, v in ex.items()}
    return out


def test_round_trip_identical_arrays(tmp_path, ct_records):
    report = cache.build_cache(ct_records, tmp_path / "c", VOLUME, dataset="phantoms", workers=1, progress=False)
    assert report.shards_total == 6 and report.examples == 6 and not report.skipped
    manifest = tfrecords.read_manifest(tmp_path / "c")
    assert manifest["classes"] == ["Normal", "CAP", "COVID-19"]
    assert manifest["input_shape"] == [24, 24, 24] and manifest["dtype"] == "uint8"
    assert manifest["package_version"] and manifest["options"]["pipeline"] == "volume3d"
    got = _read_all(tmp_path / "c")
    assert len(got) == 6
    for record in ct_records:
        key = cache.record_key(record)
        expected = process_record(record, VOLUME)[0].array
        np.testing.assert_array_equal(got[key]["input"], expected)
        # Stored as uint8 grey levels: within half a level of the float pipeline's output.
        from covid_keras.data import read_ct_series
        from covid_keras.preprocess.lung_volume import dequantize, volume3d

        exact = volume3d(read_ct_series(record.paths[0]), output_shape=(24,) * 3)
        assert np.abs(dequantize(got[key]["input"]) - exact).max() <= 0.5 / 255 + 1e-7
        assert got[key]["patient_id"].decode() == record.patient_id
        assert manifest["classes"][got[key]["label"]] == record.label
    row = manifest["records"][0]
    assert set(row) >= {"patient_id", "label", "shape", "sha256"}
    # (input, label, patient id) triples with a static shape, batchable.
    x, y, pid = next(iter(tfrecords.load(tmp_path / "c").batch(3)))
    assert x.shape == (3, 24, 24, 24) and y.shape == (3,) and pid.dtype.name == "string"


def test_interrupted_run_resumes_and_every_study_is_there_once(tmp_path, ct_records):
    out = tmp_path / "c"
    first = cache.build_cache(ct_records, out, VOLUME, workers=1, progress=False, stop_after=2)
    assert first.shards_built == 2 and first.examples == 0
    # A run killed while writing shard 3 leaves its temporary file behind.
    (out / ".tmp-shard-00003.tfrecord").write_bytes(b"half a shard")
    with pytest.raises(errors.CacheError, match=r"incomplete \(2 of 6 shards\)"):
        tfrecords.load(out)
    second = cache.build_cache(ct_records, out, VOLUME, workers=1, progress=False)
    assert second.shards_reused == 2 and second.shards_built == 4
    assert not any(n.startswith(".tmp-") for n in os.listdir(out))
    keys = [ex["key"].numpy() for ex in tfrecords.load(out, with_meta=True)]
    assert len(keys) == len(set(keys)) == len(ct_records)


def test_failed_study_is_reported_and_skipped(tmp_path, ct_records):
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    good = os.path.join(ct_records[0].paths[0], sorted(os.listdir(ct_records[0].paths[0]))[0])
    data = open(good, "rb").read()
    (broken_dir / "cut.dcm").write_bytes(data[: len(data) // 2])
    broken = type(ct_records[0])(patient_id="pt-broken", label="CAP", paths=(str(broken_dir),), dataset="x")
    with pytest.warns(UserWarning, match="skipped: .*cut.dcm.*truncated"):
        report = cache.build_cache([broken] + ct_records, tmp_path / "c", VOLUME, workers=1, progress=False)
    assert report.examples == len(ct_records)
    assert [s["reason"] for s in report.skipped] == ["DicomReadError"]
    assert "skipped 1 x DicomReadError" in report.summary() and "cut.dcm" in report.summary()


def test_other_settings_need_overwrite(tmp_path, ct_records):
    cache.build_cache(ct_records[:2], tmp_path / "c", VOLUME, workers=1, progress=False)
    other = PipelineOptions("volume3d", size=16)
    with pytest.raises(errors.CacheError, match="built with other settings.*--overwrite"):
        cache.build_cache(ct_records[:2], tmp_path / "c", other, workers=1, progress=False)
    report = cache.build_cache(ct_records[:2], tmp_path / "c", other, workers=1, progress=False, overwrite=True)
    assert report.examples == 2 and tfrecords.read_manifest(tmp_path / "c")["input_shape"] == [16, 16, 16]


def test_two_workers_write_what_one_writes(tmp_path, ct_records):
    cache.build_cache(ct_records, tmp_path / "one", VOLUME, workers=1, progress=False)
    cache.build_cache(ct_records, tmp_path / "two", VOLUME, workers=2, progress=False)
    a, b = tfrecords.read_manifest(tmp_path / "one"), tfrecords.read_manifest(tmp_path / "two")
    assert [r["sha256"] for r in a["records"]] == [r["sha256"] for r in b["records"]]


def test_ct_slices_cache_keeps_slice_labels(tmp_path, ct_records):
    options = PipelineOptions("ct_slices", size=32)
    cache.build_cache(ct_records, tmp_path / "c", options, workers=1, progress=False)
    manifest = tfrecords.read_manifest(tmp_path / "c")
    assert manifest["dtype"] == "uint8" and manifest["input_shape"] == [32, 32]
    rows = manifest["records"]
    covid = [r for r in rows if r["label"] == "COVID-19"]
    normal = [r for r in rows if r["label"] == "Normal"]
    assert {r["slice_label"] for r in covid} == {0, 1}
    assert {r["slice_label"] for r in normal} == {-1}  # Normal cases have no slice labels
    n_slices = sum(len(os.listdir(r.paths[0])) for r in ct_records)
    assert len(rows) == n_slices


def _phantom_truth(config, label, i):
    """Slice labels (True = lesion voxels in the slice) of phantom ``i`` of ``label``, slice 0 lowest."""
    pathology = {v: k for k, v in synthetic.CT_LABELS.items()}[label]
    n, dz, px, seed = synthetic._ct_patient_params(config, label, i)
    hu, labels, _ = synthetic.phantom_volume(pathology, n_slices=n, size=config.size, pixel_spacing=px,
                                             slice_spacing=dz, seed=seed)
    # The label is whether the slice holds lesion voxels: where the volume
    # differs from the same phantom without its lesions (same seed, noise off).
    healthy = synthetic.phantom_volume("normal", n_slices=n, size=config.size, pixel_spacing=px,
                                       slice_spacing=dz, seed=seed, noise_hu=0.0)[0]
    sick = synthetic.phantom_volume(pathology, n_slices=n, size=config.size, pixel_spacing=px,
                                    slice_spacing=dz, seed=seed, noise_hu=0.0)[0]
    lesion_voxels = np.any(np.abs(sick - healthy) > 100.0, axis=(1, 2))
    np.testing.assert_array_equal(labels, lesion_voxels)
    return labels.astype(int)


def test_ct_slices_cache_labels_follow_slice_position_not_file_name(tmp_path, ct_records):
    """Each cached slice's label says whether that slice (by position) holds lesion voxels."""
    options = PipelineOptions("ct_slices", size=32)
    cache.build_cache(ct_records, tmp_path / "c", options, workers=1, progress=False)
    rows = tfrecords.read_manifest(tmp_path / "c")["records"]
    checked = 0
    for record in ct_records:
        if record.label == "Normal":
            continue
        i = int(record.patient_id[-3:]) - 1  # P001 / cap001 -> phantom 0
        truth = _phantom_truth(SMALL_CT, record.label, i)
        # The files' names do not sort in position order, so a wrong
        # ordering would be seen: the labels by file name differ.
        files = sorted(os.listdir(record.paths[0]))
        by_name = np.array([dict(record.slice_labels)[f] for f in files])
        assert 0 < truth.sum() < len(truth) and not np.array_equal(by_name, truth), record.patient_id
        mine = sorted((r for r in rows if r["patient_id"] == record.patient_id), key=lambda r: r["slice_index"])
        assert [r["slice_index"] for r in mine] == list(range(len(truth)))
        assert [r["slice_label"] for r in mine] == list(truth), record.patient_id
        checked += 1
    assert checked == 4


def test_interpolated_cache_indexes_slices_on_the_finer_grid(tmp_path, ct_records):
    covid = [r for r in ct_records if r.label == "COVID-19"][:1]
    for factor in (1, 2):
        cache.build_cache(covid, tmp_path / f"x{factor}", PipelineOptions("ct_slices", size=32, interpolate=factor),
                          workers=1, progress=False)
    plain = tfrecords.read_manifest(tmp_path / "x1")["records"]
    finer = tfrecords.read_manifest(tmp_path / "x2")["records"]
    assert [r["slice_index"] for r in plain] == list(range(len(plain)))
    # Originals sit at even indices with their own labels; each run of one
    # label gains a slice between neighbours, none between runs.
    originals = {r["slice_index"] // 2: r["slice_label"] for r in finer if r["slice_index"] % 2 == 0}
    assert originals == {r["slice_index"]: r["slice_label"] for r in plain}
    runs = 1 + sum(a["slice_label"] != b["slice_label"] for a, b in zip(plain, plain[1:]))
    assert len(finer) == 2 * len(plain) - runs
    for r in finer:
        if r["slice_index"] % 2:
            assert r["slice_label"] == originals[r["slice_index"] // 2] == originals[r["slice_index"] // 2 + 1]


def test_xray_cache_from_phantoms(tmp_path):
    recs = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=2, size=48))
    cache.build_cache(recs, tmp_path / "c", PipelineOptions("xray", size=64), workers=1, progress=False)
    manifest = tfrecords.read_manifest(tmp_path / "c")
    assert manifest["classes"] == ["normal", "bacterial", "viral"]
    x, y, _ = next(iter(tfrecords.load(tmp_path / "c").batch(len(recs))))
    # One uint8 grey channel: the models' three channels are equal (the input pipeline repeats it).
    assert x.shape == (len(recs), 64, 64) and x.dtype.name == "uint8" and int(x.numpy().max()) > 0


def test_missing_cache_folder_is_one_sentence(tmp_path):
    with pytest.raises(errors.CacheError, match="no such cache folder"):
        tfrecords.load(tmp_path / "none")


@pytest.mark.slow
def test_cli_killed_midway_then_resumed(tmp_path):
    """A real kill -9 of the command line, then the same command again."""
    out = tmp_path / "c"
    env = dict(os.environ, COVID_KERAS_CACHE=str(tmp_path / "phantoms"))
    cmd = [sys.executable, "-m", "covid_keras.preprocess", "--pipeline", "volume3d", "--out", str(out),
           "--size", "24", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [n for n in os.listdir(out)] if out.exists() else []
        if sum(n.endswith(".json") and n.startswith("shard-") for n in done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    keys = [ex["key"].numpy() for ex in tfrecords.load(out, with_meta=True)]
    assert len(keys) == len(set(keys)) == summary["examples"] == 24
    assert "from an earlier run" in finished.stderr


def test_cli_bad_data_folder_is_one_sentence(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "covid_keras.preprocess", "--pipeline", "ct_slices",
                           "--dataset", "covid-ct-md", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "--data" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_reads_only_the_chosen_shards(tmp_path, ct_records):
    cache.build_cache(ct_records, tmp_path / "c", VOLUME, dataset="phantoms", workers=1, progress=False)
    manifest = tfrecords.read_manifest(tmp_path / "c")
    chosen = manifest["shards"][1:3]
    keys = sorted(ex["key"].numpy().decode() for ex in tfrecords.load(tmp_path / "c", with_meta=True, shards=chosen))
    # Every manifest row names its shard; the keys read are exactly those rows'.
    assert keys == sorted(r["key"] for r in manifest["records"] if r["shard"] in chosen) and len(keys) == 2
    with pytest.raises(errors.CacheError, match="has no shard 'shard-99999.tfrecord'"):
        tfrecords.load(tmp_path / "c", shards=["shard-99999.tfrecord"])
    with pytest.raises(errors.CacheError, match="no shard selected"):
        tfrecords.load(tmp_path / "c", shards=[])
