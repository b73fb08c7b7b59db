"""Tests for covid_keras.data.splits: grouped, stratified, reproducible, leak-free."""

import os
import shutil
from collections import Counter

import pytest

from covid_keras import errors
from covid_keras.data import datasets, splits
from covid_keras.data.datasets import Record
from fixtures_layouts import build_sars_cov2_ct, write_image


def make_records(root, patients_per_class=None, images_per_patient=2):
    """Records with real, distinct image files: {label: number of patients}."""
    patients_per_class = patients_per_class or {"Normal": 10, "CAP": 6, "COVID-19": 14}
    records = []
    for label, n_patients in patients_per_class.items():
        for p in range(n_patients):
            pid = f"{label}-{p:03d}"
            for i in range(images_per_patient + p % 2):  # 2 or 3 images per patient
                path = write_image(os.path.join(root, label, f"{pid}_{i}.png"))
                records.append(Record(pid, label, (path,), "test"))
    return records


def patients(records):
    return {r.patient_id for r in records}


def patient_classes(records):
    return Counter(label for _, label in {(r.patient_id, r.label) for r in records})


@pytest.fixture
def records(tmp_path):
    return make_records(str(tmp_path / "imgs"))


# --------------------------------------------------------------------------
# Hold-out
# --------------------------------------------------------------------------


def test_holdout_groups_patients(records):
    train, test = splits.holdout_split(records, test_size=0.3, seed=0)
    assert not patients(train) & patients(test)
    assert sorted(map(id, train + test)) == sorted(map(id, records))
    assert len(patients(test)) == 9  # ceil(0.3 * 30)


def test_holdout_is_stratified(records):
    train, test = splits.holdout_split(records, test_size=0.3, seed=3)
    per_class = patient_classes(test)
    for label, n_patients in {"Normal": 10, "CAP": 6, "COVID-19": 14}.items():
        assert abs(per_class[label] - 0.3 * n_patients) <= 1, (label, per_class)


def test_holdout_same_seed_same_split(records):
    first = splits.holdout_split(records, test_size=0.25, seed=7)
    second = splits.holdout_split(list(records), test_size=0.25, seed=7)
    assert first == second
    other = splits.holdout_split(records, test_size=0.25, seed=8)
    assert patients(other[1]) != patients(first[1])


def test_holdout_unstratified(records):
    train, test = splits.holdout_split(records, test_size=0.2, seed=0, stratify=False)
    assert not patients(train) & patients(test)
    assert len(patients(test)) == 6


def test_holdout_class_with_one_patient_names_it(tmp_path):
    records = make_records(str(tmp_path), {"Normal": 5, "CAP": 1, "COVID-19": 5})
    with pytest.raises(errors.SplitError, match="'CAP' has only 1 patient"):
        splits.holdout_split(records)
    train, test = splits.holdout_split(records, stratify=False)
    assert not patients(train) & patients(test)


def test_holdout_too_few_patients(tmp_path):
    one = make_records(str(tmp_path), {"Normal": 1})
    with pytest.raises(errors.SplitError, match="at least 2 patients"):
        splits.holdout_split(one)
    few = make_records(str(tmp_path / "few"), {"Normal": 2, "CAP": 2})
    with pytest.raises(errors.SplitError, match="fewer than the 2 classes"):
        splits.holdout_split(few, test_size=0.2)


def test_holdout_bad_test_size(records):
    with pytest.raises(errors.ConfigurationError, match="test_size"):
        splits.holdout_split(records, test_size=1.5)


def test_holdout_empty():
    with pytest.raises(errors.SplitError):
        splits.holdout_split([])


# --------------------------------------------------------------------------
# K folds
# --------------------------------------------------------------------------


def test_kfold_every_patient_validated_once(records):
    folds = splits.kfold_splits(records, k=5, seed=0)
    assert len(folds) == 5
    seen = Counter()
    for train, val in folds:
        assert not patients(train) & patients(val)
        assert len(train) + len(val) == len(records)
        seen.update(patients(val))
    assert set(seen) == patients(records) and set(seen.values()) == {1}


def test_kfold_is_stratified(records):
    for train, val in splits.kfold_splits(records, k=4, seed=1):
        per_class = patient_classes(val)
        assert set(per_class) == {"Normal", "CAP", "COVID-19"}
        assert 1 <= per_class["CAP"] <= 2 and 2 <= per_class["Normal"] <= 3


def test_kfold_same_seed_same_folds(records):
    first = splits.kfold_splits(records, k=3, seed=5)
    assert first == splits.kfold_splits(records, k=3, seed=5)
    other = splits.kfold_splits(records, k=3, seed=6)
    assert [patients(v) for _, v in other] != [patients(v) for _, v in first]


def test_kfold_unstratified(records):
    folds = splits.kfold_splits(records, k=5, seed=0, stratify=False)
    assert sum(len(patients(v)) for _, v in folds) == 30


def test_kfold_too_few_patients(tmp_path):
    records = make_records(str(tmp_path), {"Normal": 2, "CAP": 2})
    with pytest.raises(errors.SplitError, match="Only 4 patients for 5 folds"):
        splits.kfold_splits(records, k=5)


def test_kfold_class_with_one_patient_names_it(tmp_path):
    records = make_records(str(tmp_path), {"Normal": 6, "covid": 1, "CAP": 6})
    with pytest.raises(errors.SplitError, match="'covid' has only 1 patient"):
        splits.kfold_splits(records, k=3)


def test_kfold_small_class_warns(tmp_path):
    records = make_records(str(tmp_path), {"Normal": 6, "CAP": 2})
    with pytest.warns(UserWarning, match="'CAP' has 2 patients, fewer than the 3 folds"):
        splits.kfold_splits(records, k=3)


def test_kfold_bad_k(records):
    with pytest.raises(errors.ConfigurationError, match="`k`"):
        splits.kfold_splits(records, k=1)


# --------------------------------------------------------------------------
# Leakage guard and content hashing
# --------------------------------------------------------------------------


def test_check_leakage_shared_patient(records):
    train, test = records[:10], records[8:]
    shared = sorted(patients(train) & patients(test))
    with pytest.raises(errors.LeakageError) as info:
        splits.check_leakage(train, test)
    assert f"Patient {shared[0]} " in str(info.value)
    assert f"({len(shared)} shared patients in all)" in str(info.value)


def test_check_leakage_warns_on_unreadable_paths(records, tmp_path):
    ghost = Record("ghost", "Normal", (str(tmp_path / "gone.png"),), "test")
    with pytest.warns(UserWarning, match="1 record paths could not be read"):
        splits.check_leakage(records[:3], [ghost])


def test_check_leakage_identical_content(tmp_path):
    a = write_image(str(tmp_path / "a" / "one.png"), value=42)
    b = write_image(str(tmp_path / "b" / "copy.png"), value=42)
    c = write_image(str(tmp_path / "b" / "other.png"), value=43)
    train = [Record("pt-a", "Normal", (a,), "test")]
    test = [Record("pt-b", "Normal", (b,), "test"), Record("pt-c", "Normal", (c,), "test")]
    with pytest.raises(errors.LeakageError) as info:
        splits.check_leakage(train, test)
    message = str(info.value)
    assert a in message and b in message and "1 test files" in message
    splits.check_leakage(train, test, check_content=False)  # ids alone do not collide
    splits.check_leakage(train, test[1:])


def test_split_keeps_identical_images_together(tmp_path, records):
    # Two patients share one image (a duplicate under another id): they must
    # land on the same side, and the split must pass its own leakage guard.
    dup_a = write_image(str(tmp_path / "dup" / "x.png"), value=7)
    dup_b = write_image(str(tmp_path / "dup" / "y.png"), value=7)
    extra = [Record("Normal-000", "Normal", (dup_a,), "test"), Record("CAP-000", "CAP", (dup_b,), "test")]
    for seed in range(5):
        train, test = splits.holdout_split(records + extra, test_size=0.3, seed=seed)
        assert ("Normal-000" in patients(test)) == ("CAP-000" in patients(test))
    for train, val in splits.kfold_splits(records + extra, k=4, seed=0):
        assert ("Normal-000" in patients(val)) == ("CAP-000" in patients(val))


def test_content_hash_file_folder_and_cache(tmp_path):
    a = write_image(str(tmp_path / "s1" / "a.png"), value=1)
    write_image(str(tmp_path / "s1" / "b.png"), value=2)
    shutil.copytree(tmp_path / "s1", tmp_path / "s2")
    assert splits.content_hash(a) == splits.content_hash(str(tmp_path / "s2" / "a.png"))
    assert splits.content_hash(str(tmp_path / "s1")) == splits.content_hash(str(tmp_path / "s2"))
    before = splits.content_hash(a)
    with open(a, "ab") as f:
        f.write(b"changed")
    assert splits.content_hash(a) != before


def test_folder_records_leak_by_content(tmp_path):
    for name in ("P001", "P999"):
        for i in range(3):
            write_image(str(tmp_path / name / f"IM{i}.dcm.png"), value=100 + i)
    train = [Record("P001", "COVID-19", (str(tmp_path / "P001"),), "covid-ct-md")]
    test = [Record("P999", "COVID-19", (str(tmp_path / "P999"),), "covid-ct-md")]
    with pytest.raises(errors.LeakageError, match="identical content"):
        splits.check_leakage(train, test)


def test_sars_dataset_duplicates_split_cleanly(tmp_path):
    root = build_sars_cov2_ct(str(tmp_path / "sars"), n_covid=6, n_non=6)
    shutil.copy(os.path.join(root, "COVID", "Covid (1).png"), os.path.join(root, "COVID", "Covid (7).png"))
    with pytest.warns(UserWarning, match="patient-grouped splitting is impossible"):
        records = datasets.sars_cov2_ct(root)
    for seed in range(4):
        train, test = splits.holdout_split(records, test_size=0.3, seed=seed)
        sides = {os.path.basename(r.paths[0]): "test" if r in test else "train"
                 for r in records if r.label == "COVID-19"}
        assert sides["Covid (1).png"] == sides["Covid (7).png"]
