"""evaluate.audit: leakage across a run's split and the shortcut probes, on phantom runs made by hand.

Run folders are written as a training command leaves them (config.json, a
patient split or folds, records.json) by ``audit_helpers``; nothing is
trained. The clean phantoms must give no warning; a planted marker, a
planted scanner difference and planted leaks must each be found.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from audit_helpers import (
    FILM_COPIES,
    SLIGHT_COPIES,
    ct_series_records,
    default_ct_grey,
    dicom_radiograph_records,
    marked_copy,
    noised_copy,
    read_split,
    write_run,
    xray_phantoms,
    xray_records,
)

from covid_keras import errors
from covid_keras.evaluation import audit, leakage, shortcuts
from covid_keras.preprocess.cache import record_key

PERMUTATIONS = 39  # smallest p-value 1/40 = 0.025, below alpha = 0.05


# --------------------------------------------------------------------------
# Fixtures: phantom studies (written once per module), runs per test
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xray_recs(tmp_path_factory):
    """24 phantom radiographs (64 px): 12 normal, 12 viral pneumonia, one patient each."""
    root = xray_phantoms(tmp_path_factory.mktemp("xray") / "phantoms", images_per_pathology=12, size=64)
    return xray_records(root)


@pytest.fixture(scope="module")
def ct_recs(tmp_path_factory):
    """16 phantom CT series (48 px, 12 slices) as DICOM folders: 8 Normal, 8 COVID-19."""
    return ct_series_records(tmp_path_factory.mktemp("ct"), n_per_class=8, size=48, n_slices=12)


@pytest.fixture(scope="module")
def ct_recs_scanner(tmp_path_factory):
    """The same CT phantoms, but each class scanned on its own manufacturer's machine."""
    return ct_series_records(tmp_path_factory.mktemp("ct_scanner"), n_per_class=8, size=48, n_slices=12,
                             manufacturers={"Normal": "ACME Medical", "COVID-19": "Globex Imaging"})


def _audit(run_dir, **kwargs):
    return audit.audit_run(run_dir, permutations=PERMUTATIONS, **kwargs)


def _keys(entries, a, b):
    """``{(key on side a, key on side b)}`` of a leakage list."""
    return {(pair[a]["key"], pair[b]["key"]) for entry in entries for pair in entry["pairs"]}


# --------------------------------------------------------------------------
# Clean phantoms and planted shortcuts
# --------------------------------------------------------------------------


def test_clean_xray_phantoms_are_not_flagged(tmp_path, xray_recs):
    run, _ = write_run(tmp_path / "run", xray_recs)
    report = _audit(run)
    assert report["warnings"] == []
    assert report["records"] == {"total": 24, "audited": 24, "not_in_split": 0, "unreadable": [],
                                 "kinds": ["radiograph"]}
    assert [p["name"] for p in report["partitions"]] == ["split"]
    assert report["leakage"] == {"patients_on_both_sides": [], "identical": [], "near_duplicates": []}
    border = report["shortcuts"]["border"]
    assert border["status"] == "ok" and not border["warning"]
    assert border["records"] == 24 and 40 < border["features"] <= 88 and border["chance"] == 0.5  # constants dropped
    metadata = report["shortcuts"]["metadata"]
    assert metadata["status"] == "skipped" and "PNG" in metadata["reason"] and not metadata["warning"]


def test_a_marker_burned_into_one_class_corner_is_flagged(tmp_path, xray_recs):
    _, split = write_run(tmp_path / "clean", xray_recs)
    marked = marked_copy(xray_recs, str(tmp_path / "marked_images"), label="viral", corner="top-left")
    run, _ = write_run(tmp_path / "marked", marked, split=split)
    border = _audit(run)["shortcuts"]["border"]
    assert border["warning"]
    assert border["balanced_accuracy"] >= 0.9 and border["p_value"] <= 1 / (PERMUTATIONS + 1) + 1e-12
    corner = ("_r0_c0", "_r0_c1", "_r1_c0")
    assert any(cell in border["top_features"][0] for cell in corner)


def test_clean_ct_phantoms_are_not_flagged(tmp_path, ct_recs):
    run, _ = write_run(tmp_path / "run", ct_recs)
    report = _audit(run)
    assert report["warnings"] == []
    assert report["records"]["kinds"] == ["ct-series"]
    for name in ("border", "metadata"):
        assert report["shortcuts"][name]["status"] == "ok"
        assert not report["shortcuts"][name]["warning"]


def test_a_scanner_that_differs_by_class_is_flagged_by_the_metadata_probe(tmp_path, ct_recs_scanner):
    run, _ = write_run(tmp_path / "run", ct_recs_scanner)
    report = _audit(run)
    metadata = report["shortcuts"]["metadata"]
    assert metadata["warning"] and metadata["balanced_accuracy"] == 1.0
    assert metadata["top_features"][0].startswith("Manufacturer=")
    assert not report["shortcuts"]["border"]["warning"]  # the pixels are the clean phantoms'
    assert len(report["warnings"]) == 1 and "DICOM metadata" in report["warnings"][0]


def test_ct_slice_pictures_are_probed_outside_the_body(tmp_path):
    from covid_keras.data import synthetic
    from covid_keras.data.datasets import sars_cov2_ct

    root = synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), synthetic.CTImagePhantomConfig(10, 64))
    with pytest.warns(UserWarning, match="patient"):  # the dataset publishes no patient ids
        records = sars_cov2_ct(root)
    run, _ = write_run(tmp_path / "run", records)
    report = _audit(run)
    assert report["records"]["kinds"] == ["ct-image"] and report["warnings"] == []
    scan = audit.scan_record(records[0])
    assert set(scan.border) == set(shortcuts.outside_body(np.zeros((8, 8)), np.zeros((8, 8), np.uint8), 0.0))


# --------------------------------------------------------------------------
# Planted leaks
# --------------------------------------------------------------------------


def _leaky_xray_run(tmp_path, xray_recs):
    """A clean run, then: a training patient also in test, a file copied into test, a noised copy in test."""
    _, split = write_run(tmp_path / "clean", xray_recs)
    by_patient = {r.patient_id: r for r in xray_recs}
    shared, copied, noised = sorted(split["train"])[:3]
    folder = tmp_path / "leaks"
    folder.mkdir()
    copy = str(folder / "copy.png")
    shutil.copyfile(by_patient[copied].paths[0], copy)
    noisy = noised_copy(by_patient[noised].paths[0], str(folder / "noisy.png"), sigma=1.0, seed=3)
    extra = [dataclasses.replace(by_patient[copied], patient_id="leak-copy", paths=(copy,)),
             dataclasses.replace(by_patient[noised], patient_id="leak-noise", paths=(noisy,))]
    leaky = {**split, "test": sorted(split["test"] + [shared, "leak-copy", "leak-noise"])}
    run, _ = write_run(tmp_path / "leaky", xray_recs + extra, split=leaky)
    keys = {name: record_key(r) for name, r in
            (("copied", by_patient[copied]), ("noised", by_patient[noised]), ("copy", extra[0]),
             ("noise", extra[1]))}
    return run, shared, keys


def test_planted_leaks_are_found(tmp_path, xray_recs):
    run, shared, keys = _leaky_xray_run(tmp_path, xray_recs)
    report = _audit(run)
    found = report["leakage"]
    assert found["patients_on_both_sides"] == [
        {"partition": "split", "boundary": "train/test", "count": 1, "patients": [shared]}]
    identical = _keys(found["identical"], "train", "test")
    near = _keys(found["near_duplicates"], "train", "test")
    assert identical == {(keys["copied"], keys["copy"])}
    assert found["identical"][0]["pairs"][0]["by"] == "bytes"
    # The noised copy has other bytes and other pixels, but its perceptual hash and thumbnail are near.
    assert near == {(keys["noised"], keys["noise"])}
    pair = found["near_duplicates"][0]["pairs"][0]
    assert pair["distance"] <= leakage.PHASH_THRESHOLD and pair["difference"] <= leakage.MAX_DIFFERENCE
    assert len(report["warnings"]) == 3
    assert "1 patient(s) on both sides" in report["warnings"][0]


def test_the_noised_copy_escapes_the_content_hashes(tmp_path, xray_recs):
    source = xray_recs[0].paths[0]
    noisy = noised_copy(source, str(tmp_path / "noisy.png"), sigma=1.0, seed=3)
    a, b = (audit.scan_record(dataclasses.replace(xray_recs[0], paths=(p,))).fingerprint for p in (source, noisy))
    assert not a.file_hashes & b.file_hashes and not a.pixel_hashes & b.pixel_hashes
    assert int(leakage.hamming(np.stack(a.phashes), np.stack(b.phashes))[0, 0]) <= leakage.PHASH_THRESHOLD
    difference = leakage.thumbnail_difference(np.stack(a.thumbnails), np.stack(b.thumbnails))[0, 0]
    assert difference <= leakage.MAX_DIFFERENCE


def test_a_reexported_dicom_series_is_identical_by_pixels(tmp_path, ct_recs):
    from pydicom import dcmread

    _, split = write_run(tmp_path / "clean", ct_recs)
    source = next(r for r in ct_recs if r.patient_id == min(split["train"]))
    folder = tmp_path / "reexport"
    shutil.copytree(source.paths[0], folder)
    for name in os.listdir(folder):  # a PACS re-export: other header values, the same pixels
        ds = dcmread(folder / name)
        ds.InstitutionName = "Another Hospital"
        ds.RescaleIntercept, ds.PixelData = "-1048", (ds.pixel_array + 24).astype(np.uint16).tobytes()
        ds.save_as(folder / name)
    copy = dataclasses.replace(source, patient_id="leak-reexport", paths=(str(folder),))
    run, _ = write_run(tmp_path / "leaky", ct_recs + [copy],
                       split={**split, "test": sorted(split["test"] + ["leak-reexport"])})
    found = _audit(run)["leakage"]
    assert _keys(found["identical"], "train", "test") == {(record_key(source), record_key(copy))}
    assert found["identical"][0]["pairs"][0]["by"] == "pixels"
    assert found["near_duplicates"] == []


# --------------------------------------------------------------------------
# Near duplicates on default-size phantoms: distinct ones are not, copies are
# --------------------------------------------------------------------------


def _hashed(items):
    """``(bits [n, k, 256], thumbnails [n, k, 256])`` of ``n`` items of ``k`` uint8 grey images."""
    bits = np.stack([[leakage.perceptual_hash(g / 255.0) for g in item] for item in items])
    thumbs = np.stack([[leakage.thumbnail(g / 255.0) for g in item] for item in items])
    return bits, thumbs


def _found(a, b):
    rows, cols, _, _ = leakage.near_duplicate_pairs(*a[:1], *b[:1], *a[1:], *b[1:])
    return set(zip(rows.tolist(), cols.tolist()))


def _check_distinct_and_copies(items, copies):
    """Each item is near only itself among the distinct ones, and near each of its slight ``copies``."""
    hashed = _hashed(items)
    assert _found(hashed, hashed) == {(i, i) for i in range(len(items))}
    for name, copy in copies.items():
        copies = _hashed([[copy(g) for g in item] for item in items])
        assert _found(hashed, copies) == {(i, i) for i in range(len(items))}, name
    return hashed


def test_distinct_default_size_xray_phantoms_are_not_near_duplicates_but_their_copies_are(tmp_path):
    from covid_keras.data import read_xray, synthetic

    root = str(tmp_path / "xray128")
    synthetic.write_xray_dataset(root, synthetic.XrayPhantomConfig(images_per_pathology=8))  # 128 px, 40 films
    films = [[leakage.to_grey_u8(read_xray(r.paths[0]))] for r in synthetic.xray_records(root)]
    bits, _ = _check_distinct_and_copies(films, FILM_COPIES)
    distances = leakage.hamming(bits, bits)[np.triu_indices(len(films), 1)]
    assert distances.min() <= 8  # the hash alone (at the old threshold 8) took distinct films for copies


def test_distinct_default_size_ct_phantoms_are_not_near_duplicates_but_their_copies_are():
    series = default_ct_grey()  # 24 series of 128 px, 3 slices each
    assert len(series) == 24 and series[0][0].shape == (128, 128)
    _check_distinct_and_copies(series, SLIGHT_COPIES)


def test_near_duplicate_pairs_match_the_dense_computation():
    rng = np.random.default_rng(0)
    n, m, k = 37, 29, 2
    source = rng.integers(0, n, m)  # b: noisy copies of rows of a, some bits flipped
    a_bits = rng.random((n, k, 64)) < 0.5
    b_bits = a_bits[source] ^ (rng.random((m, k, 64)) < 0.06)
    a_thumbs = rng.normal(0, 2, (n, k, 16))
    b_thumbs = a_thumbs[source] + rng.normal(0, 1, (m, 1, 1)) * rng.normal(0, 1, (m, k, 16))
    # Independently, densely: every pair's distances at once (what the search did before chunking).
    distances = (a_bits[:, None] != b_bits[None]).sum(axis=-1).max(axis=-1)
    differences = np.sqrt(((a_thumbs[:, None] - b_thumbs[None]) ** 2).mean(axis=-1).max(axis=-1))
    np.testing.assert_array_equal(leakage.hamming(a_bits, b_bits), distances)
    np.testing.assert_allclose(leakage.thumbnail_difference(a_thumbs, b_thumbs), differences, rtol=1e-9)
    for threshold, max_difference in ((6, np.inf), (6, 1.0), (64, 1.0), (64, np.inf)):
        expected = np.nonzero((distances <= threshold) & (differences <= max_difference))
        assert expected[0].size  # every setting finds pairs, and leaves some out (but the last)
        assert expected[0].size < n * m or max_difference == np.inf and threshold == 64
        for chunk in (1, 7, 100, 10**9):  # a row per chunk, several rows, one chunk
            rows, cols, dist, diff = leakage.near_duplicate_pairs(a_bits, b_bits, a_thumbs, b_thumbs, threshold,
                                                                  max_difference, pairs_per_chunk=chunk)
            np.testing.assert_array_equal(rows, expected[0])
            np.testing.assert_array_equal(cols, expected[1])
            np.testing.assert_array_equal(dist, distances[expected])
            np.testing.assert_allclose(diff, differences[expected], rtol=1e-9)


def test_near_duplicate_search_memory_does_not_grow_with_the_pairs():
    import tracemalloc

    rng = np.random.default_rng(1)
    n = 3000  # 3000 x 3000 = 9e6 pairs: a dense int64 distance matrix alone would take 72 MB
    bits = rng.random((n, 1, 256)) < 0.5
    thumbs = rng.normal(0, 2, (n, 1, 16)).astype(np.float32)
    tracemalloc.start()
    try:
        rows, cols, _, _ = leakage.near_duplicate_pairs(bits, bits, thumbs, thumbs, pairs_per_chunk=1 << 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(rows, np.arange(n))  # only each item with itself
    np.testing.assert_array_equal(cols, np.arange(n))
    assert peak < 16 * 2**20


def test_dicom_radiographs_view_shortcut_and_a_reexport(tmp_path, xray_recs):
    from pydicom import dcmread

    records = dicom_radiograph_records(xray_recs, str(tmp_path / "dicom"), views={"normal": "PA", "viral": "AP"})
    _, split = write_run(tmp_path / "clean", records)
    source = next(r for r in records if r.patient_id == min(split["train"]))
    copy_path = str(tmp_path / "reexport.dcm")
    ds = dcmread(source.paths[0])
    # A PACS re-export: another vendor's header and display window, the same stored pixels.
    ds.Manufacturer, ds.InstitutionName = "Another Vendor", "Another Hospital"
    ds.WindowCenter, ds.WindowWidth = "1500", "2500"
    ds.save_as(copy_path)
    copy = dataclasses.replace(source, patient_id="leak-reexport", paths=(copy_path,))
    run, _ = write_run(tmp_path / "run", records + [copy],
                       split={**split, "test": sorted(split["test"] + ["leak-reexport"])})
    report = _audit(run)
    assert report["records"]["kinds"] == ["radiograph"]
    metadata = report["shortcuts"]["metadata"]
    assert metadata["warning"] and metadata["top_features"][0].startswith("ViewPosition=")
    assert not report["shortcuts"]["border"]["warning"]
    assert _keys(report["leakage"]["identical"], "train", "test") == {(record_key(source), record_key(copy))}
    assert report["leakage"]["identical"][0]["pairs"][0]["by"] == "pixels"
    text = json.dumps(report)
    assert "PHANTOM" not in text and "Another Hospital" not in text


def test_every_fold_of_a_kfold_run_is_audited(tmp_path, xray_recs):
    patients = sorted(r.patient_id for r in xray_recs)
    thirds = [patients[i::3] for i in range(3)]
    folds = [(sorted(set(patients) - set(val)), val) for val in thirds]
    leaked = thirds[0][0]
    folds[1] = (sorted(folds[1][0] + [leaked]), folds[1][1] + [leaked])  # fold 2: one patient on both sides
    run, _ = write_run(tmp_path / "run", xray_recs, folds=folds)
    report = _audit(run)
    assert [p["name"] for p in report["partitions"]] == ["fold 1", "fold 2", "fold 3"]
    assert report["leakage"]["patients_on_both_sides"] == [
        {"partition": "fold 2", "boundary": "train/val", "count": 1, "patients": [leaked]}]
    assert report["warnings"][0].startswith("fold 2 train/val")


# --------------------------------------------------------------------------
# The pieces, against independent implementations
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true:UserWarning")  # sklearn's folds, permuted
def test_permutation_test_is_sklearns_with_one_record_per_patient():
    from sklearn.model_selection import StratifiedGroupKFold, permutation_test_score
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 6))
    y = np.array(["a", "b", "a"] * 8, dtype=object)  # imbalanced: balanced accuracy is not accuracy
    X[:, 0] += 0.7 * (y == "b")
    patients = np.array([f"p{i:02d}" for i in range(24)])
    splits = list(StratifiedGroupKFold(4, shuffle=True, random_state=0).split(X, y, patients))
    ours = shortcuts.permutation_test(shortcuts.probe_classifier(), X, y, patients, splits, 30, seed=3)
    with threadpool_limits(limits=1):  # as ours runs (a busy machine's BLAS threads cost seconds)
        theirs = permutation_test_score(shortcuts.probe_classifier(), X, y, cv=splits, n_permutations=30,
                                        random_state=3, scoring="balanced_accuracy")
        grouped = permutation_test_score(shortcuts.probe_classifier(), X, y, groups=patients, cv=splits,
                                         n_permutations=5, random_state=3, scoring="balanced_accuracy")
    assert ours[0] == pytest.approx(theirs[0]) and ours[2] == pytest.approx(theirs[2])
    np.testing.assert_allclose(ours[1], theirs[1])
    assert ours[3] == "patients"
    # Why it is ours: sklearn's groups= permutes within each patient, which changes nothing here.
    assert grouped[2] == 1.0 and np.all(grouped[1] == grouped[0])


def test_permutations_keep_a_patients_records_together(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    patients = np.repeat([f"p{i}" for i in range(10)], 3)
    y = np.repeat(["a", "b"] * 5, 3).astype(object)
    X = rng.normal(size=(30, 3))
    splits = [(np.arange(15), np.arange(15, 30)), (np.arange(15, 30), np.arange(15))]
    seen, fit = [], LogisticRegression.fit

    def spying_fit(self, X, labels, *args, **kwargs):
        seen.append(np.asarray(labels))
        return fit(self, X, labels, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spying_fit)
    *_, unit = shortcuts.permutation_test(shortcuts.probe_classifier(), X, y, patients, splits, 5, seed=0)
    assert unit == "patients" and len(seen) == 2 * 6
    for labels in seen:  # each fit's labels: 5 patients x 3 records, one class within a patient
        assert np.all(labels.reshape(5, 3) == labels.reshape(5, 3)[:, :1])
    assert any(not np.array_equal(labels, seen[0]) for labels in seen[2:])  # and they were permuted
    mixed = y.copy()
    mixed[0] = "b"  # patient p0 now has records of both classes: the records are permuted instead
    assert shortcuts.permutation_test(shortcuts.probe_classifier(), X, mixed, patients, splits, 2, 0)[3] == "records"


def test_radiograph_border_ignores_the_display_window_but_sees_a_marker():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:120, 0:100]
    image = np.clip(0.3 + 0.4 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 0.02, (120, 100)), 0, 1)
    features = shortcuts.radiograph_border(image)
    assert shortcuts.radiograph_border(0.2 + 0.5 * image) == pytest.approx(features)  # another linear window
    gamma = shortcuts.radiograph_border(image**0.6)  # a monotone curve: the cells' maxima keep their order
    assert {k: v for k, v in gamma.items() if "_max_" in k} == pytest.approx(  # at most one place apart
        {k: v for k, v in features.items() if "_max_" in k}, abs=1 / 44 + 1e-9)
    marked = image.copy()
    marked[:8, :8] = 1.0
    assert shortcuts.radiograph_border(marked)["frame_max_r0_c0"] == 1.0
    assert features["frame_max_r0_c0"] < 1.0


def test_outside_body_sees_the_table_not_the_lungs(small_volume):
    from scipy import ndimage

    from covid_keras.data.synthetic import _body_mask
    from covid_keras.preprocess.body_slices import to_uint8

    hu = np.asarray(small_volume[0][6], np.float32)
    grey = to_uint8(hu, normalization="window")
    features = shortcuts.outside_body(hu, grey, background=-1024.0, dense=shortcuts.DENSE_HU)
    # Lung and ground glass, well inside the phantom's own body mask (independent of ours).
    lungs = (hu > -920) & (hu < -500) & ndimage.binary_erosion(_body_mask(hu), iterations=2)
    changed = np.where(lungs, 200.0, hu).astype(np.float32)
    assert shortcuts.outside_body(changed, grey, background=-1024.0, dense=shortcuts.DENSE_HU) == features
    assert features["outside_p50"] == pytest.approx(-1000, abs=30)
    table = (hu > shortcuts.DENSE_HU) & ~_body_mask(hu)
    assert table.any() and features["outside_dense"] > 0.02
    no_table = np.where(table, -1000.0, hu).astype(np.float32)
    left = shortcuts.outside_body(no_table, grey, background=-1024.0, dense=shortcuts.DENSE_HU)["outside_dense"]
    assert left < features["outside_dense"] / 3  # what is left: the skin's blurred edge


def test_hamming_matches_a_plain_count():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 3, 256)) < 0.5, rng.random((4, 3, 256)) < 0.5
    plain = np.array([[max(int(np.sum(x[k] != y[k])) for k in range(3)) for y in b] for x in a])
    np.testing.assert_array_equal(leakage.hamming(a, b), plain)


def test_perceptual_hash_is_imagehash_phash():
    import imagehash
    from PIL import Image

    image = np.random.default_rng(0).random((50, 70))
    expected = imagehash.phash(Image.fromarray(leakage.to_grey_u8(image)), hash_size=16).hash.ravel()
    np.testing.assert_array_equal(leakage.perceptual_hash(image), expected)


def test_pixel_hash_ignores_blank_images_and_storage():
    assert leakage.pixel_hash(np.full((8, 8), 7.0)) is None
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8)
    assert leakage.pixel_hash(ramp) == leakage.pixel_hash(np.asfortranarray(ramp))
    assert leakage.pixel_hash(ramp) != leakage.pixel_hash(ramp.astype(np.int32))


def test_metadata_features_keep_only_non_identifying_tags():
    meta = {"Manufacturer": "ACME", "ManufacturerModelName": "X1", "ConvolutionKernel": "B30f",
            "SliceThickness": "1.25", "KVP": 120, "PatientName": "DOE^JANE", "PatientID": "SECRET-ID-123",
            "PatientBirthDate": "19450203", "InstitutionName": "General Hospital", "StudyInstanceUID": "1.2.3",
            "series": "se-1234", "label": "COVID-19"}
    assert shortcuts.metadata_features(meta) == {"Manufacturer": "ACME", "ManufacturerModelName": "X1",
                                                 "ConvolutionKernel": "B30f", "SliceThickness": 1.25,
                                                 "KVP": 120.0}


def test_the_report_names_no_patient_and_no_file(tmp_path, ct_recs_scanner):
    run, _ = write_run(tmp_path / "run", ct_recs_scanner)
    paths = audit.write_audit(run, _audit(run))
    for path in paths.values():
        with open(path) as f:
            text = f.read()
        assert "PHANTOM" not in text  # the DICOM files' PatientName / PatientID
        assert str(tmp_path) not in text and ".dcm" not in text


def test_a_shortcut_of_a_rare_class_is_flagged():
    # 12 COVID-19 studies at 140 kVp among 188 normal ones at 120: a majority share of 0.94, which plain
    # accuracy could never beat by MIN_GAIN; balanced accuracy (chance 0.5) can.
    rng = np.random.default_rng(0)
    labels = ["COVID-19"] * 12 + ["Normal"] * 188
    rows = [{"KVP": (140.0 if label == "COVID-19" else 120.0) + rng.normal(0, 1.0),
             "SliceThickness": float(rng.choice([1.0, 2.5, 5.0]))} for label in labels]
    patients = [f"p{i:03d}" for i in range(200)]
    result = shortcuts.shortcut_probe(rows, labels, patients, name="metadata", permutations=PERMUTATIONS)
    assert result["warning"]
    assert result["balanced_accuracy"] >= 0.95 and result["chance"] == 0.5
    assert result["majority_share"] == pytest.approx(0.94) and result["p_value"] < shortcuts.ALPHA
    assert result["top_features"][0] == "KVP"


def test_imbalanced_classes_without_a_shortcut_are_not_flagged():
    rng = np.random.default_rng(1)
    labels = ["COVID-19"] * 12 + ["Normal"] * 188
    rows = [{"KVP": float(rng.choice([110.0, 120.0, 140.0])), "SliceThickness": float(rng.choice([1.0, 5.0]))}
            for _ in labels]
    patients = [f"p{i:03d}" for i in range(200)]
    result = shortcuts.shortcut_probe(rows, labels, patients, name="metadata", permutations=PERMUTATIONS)
    assert result["status"] == "ok" and not result["warning"]
    assert result["balanced_accuracy"] < result["chance"] + shortcuts.MIN_GAIN


def test_probes_skip_what_they_cannot_test():
    rows = [{"KVP": 120.0 + i} for i in range(6)]
    one_class = shortcuts.shortcut_probe(rows, ["a"] * 6, list("uvwxyz"), name="metadata")
    assert one_class["status"] == "skipped" and "one class" in one_class["reason"]
    constant = shortcuts.shortcut_probe([{"KVP": 120.0}] * 6, ["a", "b"] * 3, list("uvwxyz"), name="metadata")
    assert constant["status"] == "skipped" and "same value" in constant["reason"]
    lonely = shortcuts.shortcut_probe(rows, ["a"] * 5 + ["b"], list("uvwxyz"), name="metadata")
    assert lonely["status"] == "skipped" and "fewer than 2 patients" in lonely["reason"]
    none = shortcuts.shortcut_probe([None] * 6, ["a", "b"] * 3, list("uvwxyz"), name="metadata")
    assert none["status"] == "skipped" and not none["warning"]


# --------------------------------------------------------------------------
# Bad input and the command line
# --------------------------------------------------------------------------


def test_bad_runs_and_settings_are_one_clear_error(tmp_path, xray_recs):
    with pytest.raises(errors.ConfigurationError, match="neither split.json nor folds.json"):
        audit.audit_run(tmp_path)
    run, _ = write_run(tmp_path / "run", xray_recs)
    with pytest.raises(errors.ConfigurationError, match="phash_threshold"):
        audit.audit_run(run, phash_threshold=256)
    with pytest.raises(errors.ConfigurationError, match="alpha"):
        audit.audit_run(run, alpha=1.5)
    other, _ = write_run(tmp_path / "other", xray_recs, split={"train": ["x1", "x2"], "test": ["x3"]})
    with pytest.raises(errors.ConfigurationError, match="no record of records.json"):
        audit.audit_run(other)
    with open(os.path.join(run, "split.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(errors.ConfigurationError, match="cannot be read as JSON"):
        audit.audit_run(run)


def test_an_unreadable_record_is_counted_not_fatal(tmp_path, xray_recs):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    records = xray_recs[:-1] + [dataclasses.replace(xray_recs[-1], paths=(str(broken),))]
    run, _ = write_run(tmp_path / "run", records)
    with pytest.warns(UserWarning, match="1 of 24 records could not be read"):
        report = _audit(run)
    assert report["records"]["unreadable"] == [
        {"key": record_key(records[-1]), "patient_id": records[-1].patient_id, "error": "ImageReadError"}]
    assert report["records"]["audited"] == 23
    assert "could not be read" in report["warnings"][-1]


def test_command_line_writes_the_report_and_prints_one_json_line(tmp_path, xray_recs, capsys):
    from covid_keras import cli
    from evaluate import audit as command

    marked = marked_copy(xray_recs, str(tmp_path / "marked_images"), label="viral")
    run, _ = write_run(tmp_path / "run", marked)
    argv = [run, "--permutations", str(PERMUTATIONS), "--quiet"]
    assert cli.run(command.main, argv) == 0  # warnings alone do not fail the command
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["warnings"] == 1 and line["shortcuts"]["border"]["warning"]
    with open(line["report"]["json"]) as f:
        assert json.load(f)["format"] == "covid_keras.audit"
    assert os.path.dirname(line["report"]["markdown"]) == os.path.join(run, "report")
    with open(line["report"]["markdown"]) as f:
        markdown = f.read()
    assert "WARNING: class readable" in markdown and "| border | ok | 24 |" in markdown
    assert cli.run(command.main, argv + ["--strict"]) == 1
    capsys.readouterr()
    assert cli.run(command.main, [str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_command_line_help_explains_each_flag(capsys):
    from evaluate import audit as command

    with pytest.raises(SystemExit) as exit_info:
        command.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--phash-threshold", "--phash-size", "--max-difference", "--permutations", "--alpha",
                 "--min-gain", "--seed", "--strict", "RUN_DIR"):
        assert flag in text


def test_split_sides_are_read_as_written(tmp_path, xray_recs):
    run, _ = write_run(tmp_path / "run", xray_recs)
    (partition,) = leakage.read_partitions(run)
    assert {side: sorted(p) for side, p in partition.sides.items()} == read_split(run)
    assert partition.boundaries() == [("train", "val"), ("train", "test"), ("val", "test")]
