"""Tests for covid_keras.data.datasets: every adapter on a miniature real layout.

The trees come from ``fixtures_layouts.py`` in this folder; they copy each dataset's
folder names, index files and file-name conventions.
"""

import dataclasses
import os
import shutil
import warnings

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fixtures_layouts import (
    build_covid_chestxray_flat,
    build_covidx_ct,
    build_chest_xray,
    build_nih,
    write_csv,
)
from covid_keras import errors
from covid_keras.data import datasets
from covid_keras.data.datasets import CLASS_NAMES, Record
from covid_keras.data.privacy import pseudonymize

URLS = {
    "covid-ct-md": "https://figshare.com/s/c20215f3d42c98f09ad0",
    "covidx-ct": "https://www.kaggle.com/datasets/hgunraj/covidxct",
    "sars-cov2-ct": "https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset",
    "chest-xray-pneumonia": "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    "covid-chestxray": "https://github.com/ieee8023/covid-chestxray-dataset",
    "nih-chestxray14": "https://nihcc.app.box.com/v/ChestXray-NIHCC",
}


def by_patient(records):
    out = {}
    for record in records:
        out.setdefault(record.patient_id, []).append(record)
    return out


def quiet(function, *args, **kwargs):
    """Calls an adapter with its (expected) warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


# --------------------------------------------------------------------------
# Registry, Record, layout errors
# --------------------------------------------------------------------------


def test_registry_names():
    assert set(datasets.DATASETS) == set(URLS)


def test_unknown_dataset_is_configuration_error(tmp_path):
    with pytest.raises(errors.ConfigurationError) as info:
        datasets.load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "mnist" in message
    for name in URLS:
        assert name in message


def test_load_dataset_passes_options(sars_root):
    records = quiet(datasets.load_dataset, "sars-cov2-ct", sars_root)
    assert len(records) == 5


@pytest.mark.parametrize("name", sorted(URLS))
def test_missing_root_names_url_and_data_flag(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(errors.DatasetLayoutError) as info:
        datasets.load_dataset(name, missing)
    message = str(info.value)
    assert str(missing) in message
    assert URLS[name] in message
    assert "--data" in message


@pytest.mark.parametrize("name", sorted(URLS))
def test_empty_root_names_url_and_data_flag(tmp_path, name):
    with pytest.raises(errors.DatasetLayoutError) as info:
        datasets.load_dataset(name, tmp_path)
    assert URLS[name] in str(info.value)
    assert "--data" in str(info.value)
    assert "no `" in str(info.value)


def test_record_is_frozen_and_hashable():
    record = Record("P001", "COVID-19", ("a.png",), "x", extra={"split": "train"})
    assert hash(record) == hash(Record("P001", "COVID-19", ("a.png",), "x", extra={"split": "train"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.label = "Normal"
    assert record.slice_labels is None and record.age is None and record.sex is None


def test_class_names_lists():
    assert CLASS_NAMES["ct3"] == ("Normal", "CAP", "COVID-19")
    assert CLASS_NAMES["transfer_ct"] == ("COVID-19", "Normal")
    assert set(CLASS_NAMES["detl_b"]) == {"normal", "other_disease", "pneumonia", "covid"}
    assert set(CLASS_NAMES["xraycnn_step2"]) == {"non-viral pneumonia", "COVID-19", "other viral"}


@pytest.mark.parametrize(
    "value, years",
    [("58", 58.0), ("058Y", 58.0), ("6M", 0.5), ("", None), ("n/a", None), (" 41 ", 41.0)],
)
def test_parse_age(value, years):
    assert datasets.parse_age(value) == years


def test_parse_sex():
    assert [datasets.parse_sex(v) for v in ("M", "f", "Female", "O", "", None)] == ["M", "F", "F", None, None, None]


# --------------------------------------------------------------------------
# COVID-CT-MD
# --------------------------------------------------------------------------


def test_covid_ct_md_labels_and_patients(ct_md_root):
    records = datasets.covid_ct_md(ct_md_root)
    labels = {r.patient_id: r.label for r in records}
    assert labels == {
        "P001": "COVID-19", "P002": "COVID-19", "P043": "COVID-19", "P044": "COVID-19",
        "P100": "COVID-19", "cap001": "CAP", "normal001": "Normal", "normal002": "Normal",
    }
    assert set(labels.values()) <= set(CLASS_NAMES["ct3"])
    assert [r.patient_id for r in records] == sorted(labels)
    p001 = records[0]
    assert p001.paths == (os.path.join(ct_md_root, "COVID-19 Cases", "P001"),)
    assert p001.dataset == "covid-ct-md"
    assert p001.extra["n_slices"] == 3


def test_covid_ct_md_slice_labels_follow_the_index_jump(ct_md_root):
    records = {r.patient_id: r for r in datasets.covid_ct_md(ct_md_root)}
    assert records["P001"].slice_labels == (("IM0001.dcm", 1), ("IM0002.dcm", 1), ("IM0003.dcm", 0))
    assert records["P043"].slice_labels == tuple(
        zip(["IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"], [0, 1, 1, 0])
    )
    # Index.csv says 44 and 45; the array rows are 43 and 44.
    assert [v for _, v in records["P044"].slice_labels] == [1, 0, 0, 1]
    assert [v for _, v in records["cap001"].slice_labels] == [0, 0, 1, 1]
    assert records["P044"].extra["label_row"] == 43
    assert records["P100"].slice_labels is None
    assert records["normal001"].slice_labels is None


def test_covid_ct_md_natural_slice_order(ct_md_root):
    records = {r.patient_id: r for r in datasets.covid_ct_md(ct_md_root)}
    assert records["P002"].slice_labels == (
        ("98C14734-ASSH_1.dcm", 0), ("98C14734-ASSH_2.dcm", 1), ("98C14734-ASSH_10.dcm", 0)
    )


def test_covid_ct_md_without_gap_reads_indices_unchanged(ct_md_root):
    index = os.path.join(ct_md_root, "Index.csv")
    rows = [("0", "COVID-19", "./COVID-19/", "P001"), ("43", "COVID-19", "./COVID-19/", "P044")]
    write_csv(index, ["Label Index", "Diagnosis", "Relative Path", "Folder/ID"], rows)
    records = {r.patient_id: r for r in datasets.covid_ct_md(ct_md_root)}
    assert records["P044"].extra["label_row"] == 43
    assert records["P043"].slice_labels is None


def test_covid_ct_md_index_beyond_array_is_layout_error(ct_md_root):
    index = os.path.join(ct_md_root, "Index.csv")
    rows = [("0", "COVID-19", "./COVID-19/", "P001"), ("99", "CAP", "./CAP/", "cap001")]
    write_csv(index, ["Label Index", "Diagnosis", "Relative Path", "Folder/ID"], rows)
    with pytest.raises(errors.DatasetLayoutError, match="cap001"):
        datasets.covid_ct_md(ct_md_root)


def test_covid_ct_md_missing_index_message(ct_md_root):
    os.remove(os.path.join(ct_md_root, "Index.csv"))
    with pytest.raises(errors.DatasetLayoutError) as info:
        datasets.covid_ct_md(ct_md_root)
    message = str(info.value)
    assert "no `Index.csv` found" in message
    assert URLS["covid-ct-md"] in message and "--data" in message and "COVID-19 Cases" in message


def test_covid_ct_md_without_label_array_warns(ct_md_root):
    os.remove(os.path.join(ct_md_root, "Slice-level-labels.npy"))
    with pytest.warns(UserWarning, match="Slice-level-labels.npy"):
        records = datasets.covid_ct_md(ct_md_root)
    assert all(r.slice_labels is None for r in records)


def test_covid_ct_md_index_patient_not_on_disk_warns(ct_md_root):
    shutil.rmtree(os.path.join(ct_md_root, "Cap Cases", "cap001"))
    with pytest.warns(UserWarning, match="skipped 1 Index.csv patients"):
        records = datasets.covid_ct_md(ct_md_root)
    assert "cap001" not in {r.patient_id for r in records}


def test_covid_ct_md_metadata_csv_age_sex(ct_md_root):
    write_csv(os.path.join(ct_md_root, "patients.csv"), ["Folder/ID", "Patient Age", "Patient Sex"],
              [("P001", "045Y", "M"), ("normal001", "38", "F")])
    records = {r.patient_id: r for r in datasets.covid_ct_md(ct_md_root)}
    assert (records["P001"].age, records["P001"].sex) == (45.0, "M")
    assert (records["normal001"].age, records["normal001"].sex) == (38.0, "F")
    assert records["P002"].age is None and records["P002"].sex is None


def test_covid_ct_md_bad_slice_order():
    with pytest.raises(errors.ConfigurationError, match="slice_order"):
        datasets.covid_ct_md("anywhere", slice_order="random")


def write_ct_slice(path, location, age="061Y", sex="F"):
    """A minimal header-only CT DICOM file with SliceLocation, age and sex."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SliceLocation = location
    ds.PatientAge = age
    ds.PatientSex = sex
    ds.save_as(path, enforce_file_format=True)


def test_covid_ct_md_location_order_and_dicom_demographics(ct_md_root):
    for class_folder in ("COVID-19 Cases", "Cap Cases", "Normal Cases"):
        for pid in os.listdir(os.path.join(ct_md_root, class_folder)):
            if pid != "P001":
                shutil.rmtree(os.path.join(ct_md_root, class_folder, pid))
    folder = os.path.join(ct_md_root, "COVID-19 Cases", "P001")
    # File names run opposite to slice location.
    for name, location in (("IM0001.dcm", 30.0), ("IM0002.dcm", 20.0), ("IM0003.dcm", 10.0)):
        write_ct_slice(os.path.join(folder, name), location)
    (p001,) = quiet(datasets.covid_ct_md, ct_md_root, slice_order="location",
                    read_dicom_demographics=True)
    assert [n for n, _ in p001.slice_labels] == ["IM0003.dcm", "IM0002.dcm", "IM0001.dcm"]
    assert [v for _, v in p001.slice_labels] == [1, 1, 0]
    assert (p001.age, p001.sex) == (61.0, "F")


# --------------------------------------------------------------------------
# COVIDx CT
# --------------------------------------------------------------------------


def test_covidx_ct_all_splits(covidx_root):
    with pytest.warns(UserWarning, match="skipped 1 listed slices"):
        records = datasets.covidx_ct(covidx_root)
    assert len(records) == 10
    patients = by_patient(records)
    assert {pid: len(v) for pid, v in patients.items()} == {
        "NCP_96": 3, "CP_12": 1, "Normal_5": 1, "radiopaedia-40-51-0": 1, "CP_13": 1,
        "COVIDCTMD-P001": 1, "Normal_6": 1, "volume-covid19-A-0003": 1,
    }
    labels = {r.patient_id: r.label for r in records}
    assert labels["NCP_96"] == "COVID-19" and labels["CP_12"] == "CAP" and labels["Normal_5"] == "Normal"
    ncp = patients["NCP_96"][0]
    assert ncp.extra == {"split": "train", "box": (10, 20, 300, 310), "variant": "2A"}
    assert ncp.paths == (os.path.join(covidx_root, "2A_images", "NCP_96_1328_0032.png"),)
    assert {r.extra["split"] for r in patients["CP_13"]} == {"val"}


def test_covidx_ct_one_split(covidx_root):
    records = datasets.covidx_ct(covidx_root, split="val")
    assert [r.extra["split"] for r in records] == ["val", "val"]
    assert {r.label for r in records} == {"CAP", "COVID-19"}


def test_covidx_ct_bad_split(covidx_root):
    with pytest.raises(errors.ConfigurationError, match="split"):
        datasets.covidx_ct(covidx_root, split="training")


def test_covidx_ct_3a_layout(tmp_path):
    root = build_covidx_ct(tmp_path, variant="3A", image_dir="3A_images")
    records = quiet(datasets.covidx_ct, root)
    assert len(records) == 10 and records[0].extra["variant"] == "3A"


def test_covidx_ct_missing_split_file(covidx_root):
    os.remove(os.path.join(covidx_root, "train_COVIDx_CT-2A.txt"))
    with pytest.raises(errors.DatasetLayoutError) as info:
        datasets.covidx_ct(covidx_root)
    assert "train_COVIDx_CT-2A.txt" in str(info.value) and URLS["covidx-ct"] in str(info.value)


def test_covidx_ct_malformed_line(covidx_root):
    with open(os.path.join(covidx_root, "val_COVIDx_CT-2A.txt"), "a") as f:
        f.write("CP_13_3457_0002.png 7 0 0\n")
    with pytest.raises(errors.DatasetLayoutError, match="line 3"):
        datasets.covidx_ct(covidx_root, split="val")


@pytest.mark.parametrize(
    "name, patient",
    [
        ("NCP_96_1328_0032.png", "NCP_96"),
        ("CP_12_3456_0001.png", "CP_12"),
        ("Normal_5_123_0001.png", "Normal_5"),
        ("LIDC-IDRI-0001-1.3.6.1.4.1.14519-0012.png", "LIDC-IDRI-0001"),
        ("COVIDCTMD-cap001-IM0042.png", "COVIDCTMD-cap001"),
        ("volume-covid19-A-0003-0045.png", "volume-covid19-A-0003"),
        ("HUST-Patient12-0031.png", "HUST-Patient12"),
        ("case7_z12_0003.png", "case7"),
        ("pt1_day3_0004.png", "pt1"),
    ],
)
def test_covidx_patient_id(name, patient):
    assert datasets.covidx_patient_id(name) == patient


# --------------------------------------------------------------------------
# SARS-CoV-2 CT-scan
# --------------------------------------------------------------------------


def test_sars_cov2_ct_labels_and_ids(sars_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = datasets.sars_cov2_ct(sars_root)
    grouping = [w for w in caught if "patient-grouped splitting is impossible" in str(w.message)]
    assert len(grouping) == 1
    assert sorted(r.label for r in records) == ["COVID-19"] * 3 + ["Normal"] * 2
    assert len({r.patient_id for r in records}) == 5
    covid1 = next(r for r in records if r.paths[0].endswith("Covid (1).png") and r.label == "COVID-19")
    assert covid1.patient_id == pseudonymize("COVID/Covid (1).png", namespace="sars-cov2-ct-image")
    assert covid1.patient_id.startswith("pt-")


def test_sars_cov2_ct_missing_folder(sars_root):
    shutil.rmtree(os.path.join(sars_root, "non-COVID"))
    with pytest.raises(errors.DatasetLayoutError, match="non-COVID"):
        datasets.sars_cov2_ct(sars_root)


# --------------------------------------------------------------------------
# Kermany chest X-ray (pneumonia)
# --------------------------------------------------------------------------


def test_chest_xray_pneumonia_labels_patients_splits(kermany_root):
    with pytest.warns(UserWarning, match="skipped 1 images"):
        records = datasets.chest_xray_pneumonia(kermany_root)
    assert len(records) == 11
    patients = by_patient(records)
    assert len(patients["IM-0115"]) == 2 and len(patients["person1"]) == 2
    assert {"NORMAL2-IM-1427", "NORMAL2-IM-1431", "IM-0001", "person3", "person1000",
            "person1946", "person100"} <= set(patients)
    label = {r.patient_id: r.label for r in records}
    assert label["IM-0115"] == "normal" and label["person1"] == "bacterial" and label["person3"] == "viral"
    assert set(label.values()) == set(CLASS_NAMES["xraycnn_step1"])
    assert {r.extra["split"] for r in patients["person1946"]} == {"val"}
    assert {r.extra["split"] for r in patients["IM-0001"]} == {"test"}


def test_chest_xray_pneumonia_root_is_chest_xray(kermany_root):
    inner = quiet(datasets.chest_xray_pneumonia, os.path.join(kermany_root, "chest_xray"))
    outer = quiet(datasets.chest_xray_pneumonia, kermany_root)
    assert inner == outer


def test_chest_xray_pneumonia_transfer_task(kermany_root):
    records = quiet(datasets.chest_xray_pneumonia, kermany_root, task="transfer_xray")
    assert {r.label for r in records} == {"Normal", "Pneumonia"}


def test_chest_xray_pneumonia_flat_root(tmp_path):
    root = build_chest_xray(tmp_path / "flat", nested=False)
    assert len(quiet(datasets.chest_xray_pneumonia, root)) == 11


# --------------------------------------------------------------------------
# COVID-19 image data collection
# --------------------------------------------------------------------------


def test_covid_chestxray_xraycnn_step2(cohen_root):
    with pytest.warns(UserWarning, match="skipped 1 metadata rows"):
        records = datasets.covid_chestxray(cohen_root)
    by_file = {os.path.basename(r.paths[0]): r for r in records}
    assert {name: r.label for name, r in by_file.items()} == {
        "covid-a.jpeg": "COVID-19", "covid-b.jpeg": "COVID-19",
        "sars.jpeg": "other viral", "mers.png": "other viral",
        "strep.jpg": "non-viral pneumonia", "pcp.jpg": "non-viral pneumonia",
        "lipoid.jpg": "non-viral pneumonia", "aspiration.jpg": "non-viral pneumonia",
    }
    covid = by_file["covid-a.jpeg"]
    assert covid.patient_id == "cxr-2" and covid.age == 65.0 and covid.sex == "M"
    assert covid.extra["finding"] == "Pneumonia/Viral/COVID-19" and covid.extra["view"] == "PA"
    assert by_file["sars.jpeg"].extra["finding"] == "Pneumonia/Viral/SARS"


def test_covid_chestxray_transfer_xray(cohen_root):
    records = quiet(datasets.covid_chestxray, cohen_root, task="transfer_xray")
    counts = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
    assert counts == {"COVID-19": 2, "Pneumonia": 7, "Normal": 1}


def test_covid_chestxray_detl_b_views_and_modality(cohen_root):
    records = quiet(datasets.covid_chestxray, cohen_root, task="detl_b")
    assert [r.label for r in records] == ["covid", "covid"]
    everything = quiet(datasets.covid_chestxray, cohen_root, task="detl_b", views=None, modality=None)
    assert len(everything) == 4
    ct = quiet(datasets.covid_chestxray, cohen_root, task="detl_b", views=None, modality="CT")
    assert [os.path.basename(r.paths[0]) for r in ct] == ["covid-ct.jpg"]


def test_covid_chestxray_flat_release(tmp_path):
    root = build_covid_chestxray_flat(tmp_path / "old")
    records = datasets.covid_chestxray(root)
    by_file = {os.path.basename(r.paths[0]): r.label for r in records}
    assert by_file == {
        "flat-covid.jpg": "COVID-19", "flat-sars.jpeg": "other viral",
        "flat-strep.jpg": "non-viral pneumonia", "flat-covid-ards.jpg": "COVID-19",
    }


def test_covid_chestxray_bad_task(cohen_root):
    with pytest.raises(errors.ConfigurationError, match="task"):
        datasets.covid_chestxray(cohen_root, task="xraycnn_step1")


@pytest.mark.parametrize(
    "finding, category",
    [
        ("Pneumonia/Viral/COVID-19", "covid"), ("COVID-19", "covid"), ("COVID-19, ARDS", "covid"),
        ("Pneumonia/Viral/SARS", "viral"), ("SARS", "viral"), ("Pneumonia/Viral/Influenza", "viral"),
        ("Pneumonia/Bacterial/Streptococcus", "nonviral"), ("Streptococcus", "nonviral"),
        ("Pneumonia/Bacterial/E.Coli", "nonviral"), ("Pneumonia/Fungal/Aspergillosis", "nonviral"),
        ("Pneumonia/Lipoid", "nonviral"), ("Pneumonia", "pneumonia"), ("No Finding", "normal"),
        ("todo", None), ("Unknown", None), ("ARDS", None), ("Tuberculosis", None), ("", None),
    ],
)
def test_finding_category(finding, category):
    assert datasets.finding_category(finding) == category


# --------------------------------------------------------------------------
# NIH ChestX-ray14, DETL Data-A / Data-B
# --------------------------------------------------------------------------


def test_nih_data_a_membership(nih_root):
    with pytest.warns(UserWarning, match="skipped 1 CSV rows"):
        records = datasets.nih_chestxray14(nih_root)
    findings = [r.extra["finding"] for r in records]
    assert sum(r.label == "normal" for r in records) == 12
    assert sum(r.label == "disease" for r in records) == 26
    assert not any("Pneumonia" in f for f in findings)  # multi-label pneumonia excluded too
    assert all(f == "No Finding" for r, f in zip(records, findings) if r.label == "normal")
    assert "Effusion|Mass" in findings and "Emphysema" in findings
    assert {r.label for r in records} == set(CLASS_NAMES["detl_a"])


def test_nih_patient_age_sex_and_paths(nih_root):
    records = quiet(datasets.nih_chestxray14, nih_root)
    first = next(r for r in records if r.paths[0].endswith("00000001_000.png"))
    assert first.patient_id == "nih-00001"
    assert (first.age, first.sex) == (20.0, "M")
    assert os.path.join("images_001", "images") in first.paths[0]
    second = next(r for r in records if r.paths[0].endswith("00000001_001.png"))
    assert second.patient_id == "nih-00001" and os.path.join("images_002", "images") in second.paths[0]


def test_nih_data_b_membership_and_counts(nih_root):
    records = quiet(datasets.nih_chestxray14, nih_root, subset="data_b", n_normal=5, n_per_other=2)
    counts = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
    assert counts == {"normal": 5, "pneumonia": 5, "other_disease": 12}
    assert all(r.extra["finding"] == "Pneumonia" for r in records if r.label == "pneumonia")
    others = [r.extra["finding"] for r in records if r.label == "other_disease"]
    assert sorted(set(others)) == sorted(datasets.DETL_OTHER_DISEASES)
    assert all("|" not in f for f in others)
    assert all(others.count(name) == 2 for name in datasets.DETL_OTHER_DISEASES)


def test_nih_data_b_sampling_is_deterministic_per_seed(nih_root):
    def sample(seed):
        records = quiet(datasets.nih_chestxray14, nih_root, subset="data_b", seed=seed,
                        n_normal=5, n_per_other=2)
        return [r.paths[0] for r in records]

    assert sample(0) == sample(0)
    assert sample(0) != sample(1)


def caught_messages(function, *args, **kwargs):
    """(result, warning messages) of a call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def test_nih_data_b_too_few_takes_all_with_warning(nih_root):
    records, messages = caught_messages(datasets.nih_chestxray14, nih_root, subset="data_b")
    assert any("only 12 No Finding images are available, fewer than the 350" in m for m in messages)
    assert sum("fewer than the 50 asked for" in m for m in messages) == 6
    assert sum(r.label == "normal" for r in records) == 12
    assert sum(r.label == "other_disease" for r in records) == 24


def test_nih_bad_subset_and_classes(nih_root):
    with pytest.raises(errors.ConfigurationError, match="subset"):
        datasets.nih_chestxray14(nih_root, subset="data_c")
    with pytest.raises(errors.ConfigurationError, match="other_classes"):
        datasets.nih_chestxray14(nih_root, subset="data_b", other_classes=("Pneumonia",))


def test_nih_without_images_folder(nih_root):
    shutil.rmtree(os.path.join(nih_root, "images_001"))
    shutil.rmtree(os.path.join(nih_root, "images_002"))
    with pytest.raises(errors.DatasetLayoutError, match="images"):
        datasets.nih_chestxray14(nih_root)


def test_nih_v2020_csv_flat_images(tmp_path):
    root = build_nih(tmp_path / "nih", missing=0)
    os.rename(os.path.join(root, "Data_Entry_2017.csv"), os.path.join(root, "Data_Entry_2017_v2020.csv"))
    os.makedirs(os.path.join(root, "images"))
    for folder in ("images_001", "images_002"):
        inner = os.path.join(root, folder, "images")
        for name in os.listdir(inner):
            shutil.move(os.path.join(inner, name), os.path.join(root, "images", name))
        shutil.rmtree(os.path.join(root, folder))
    records = datasets.nih_chestxray14(root)
    assert len(records) == 39  # 12 normal + 27 disease, nothing missing


def test_detl_data_b_combines_both(nih_root, cohen_root):
    records = quiet(datasets.detl_data_b, nih_root, cohen_root, n_normal=5, n_per_other=2)
    labels = {r.label for r in records}
    assert labels == set(CLASS_NAMES["detl_b"])
    covid = [r for r in records if r.label == "covid"]
    assert len(covid) == 2 and all(r.patient_id.startswith("cxr-") for r in covid)
    _, messages = caught_messages(datasets.detl_data_b, nih_root, cohen_root, n_normal=5, n_per_other=2)
    assert any("only 2 COVID-19 images are available, fewer than the 225" in m for m in messages)
    assert records == quiet(datasets.detl_data_b, nih_root, cohen_root, n_normal=5, n_per_other=2)


def test_every_adapter_is_sorted(ct_md_root, covidx_root, sars_root, kermany_root, cohen_root, nih_root):
    roots = {
        "covid-ct-md": ct_md_root, "covidx-ct": covidx_root, "sars-cov2-ct": sars_root,
        "chest-xray-pneumonia": kermany_root, "covid-chestxray": cohen_root, "nih-chestxray14": nih_root,
    }
    for name, root in roots.items():
        records = quiet(datasets.load_dataset, name, root)
        keys = [(r.patient_id, r.paths, r.label) for r in records]
        assert keys == sorted(keys), name
        assert all(r.dataset == name for r in records), name
        assert all(isinstance(r.paths, tuple) and r.paths for r in records), name
