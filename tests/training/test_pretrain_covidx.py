"""Stage 1 on a separate COVIDx-CT layout (paper 001's pre-training), end to end.

The COVIDx-CT layout is written from phantom slices as PNG files with the
dataset's split files; it also holds one ``COVIDCTMD-<id>`` slice of every
phantom COVID-CT-MD patient, as the real COVIDx-CT does, so the test can
check that the run's validation and test patients never reach pre-training.
"""

import json
import os

import cv2
import numpy as np
import pytest

from covid_keras.data import synthetic
from covid_keras.training import pipelines
from covid_keras.training.slice_level import PHANTOM_PRESET, SliceLevelConfig, train_slice_level

TARGET = {"phantom_patients_per_class": 4, "phantom_size": 64, "seed": 3}
CLASS_INDEX = {"Normal": 0, "CAP": 1, "COVID-19": 2}
PREFIX = {"Normal": "Normal", "CAP": "CP", "COVID-19": "NCP"}
PATHOLOGY = {"Normal": "normal", "CAP": "cap", "COVID-19": "covid"}


def _png(hu):
    return np.clip((hu + 1024.0) / 1424.0 * 255.0, 0, 255).astype(np.uint8)


def write_covidx_layout(root, target_records, patients_per_class=4, slices=4):
    """COVIDx CT-2A: 2A_images/*.png and {train,val,test}_COVIDx_CT-2A.txt."""
    images = os.path.join(root, "2A_images")
    os.makedirs(images)
    lines = {"train": [], "val": [], "test": []}

    def add(split, name, label, image):
        cv2.imwrite(os.path.join(images, name), image)
        h, w = image.shape
        lines[split].append(f"{name} {CLASS_INDEX[label]} 0 0 {w} {h}")

    for label in CLASS_INDEX:
        for i in range(patients_per_class):
            hu, infected, _ = synthetic.phantom_volume(PATHOLOGY[label], n_slices=12, size=64, seed=100 + i)
            chosen = np.flatnonzero(infected) if label != "Normal" else np.arange(len(hu))
            split = ("train", "train", "val", "test")[i % 4]
            for k in chosen[:slices]:
                add(split, f"{PREFIX[label]}_{i + 1}_{500 + i}_{k:04d}.png", label, _png(hu[k]))
    # One slice of each target (COVID-CT-MD) patient, listed in COVIDx's train part.
    for r in target_records:
        hu, _, _ = synthetic.phantom_volume(PATHOLOGY[r.label], n_slices=6, size=64, seed=7)
        add("train", f"COVIDCTMD-{r.patient_id}-IM0001.png", r.label, _png(hu[3]))
    for split, rows in lines.items():
        with open(os.path.join(root, f"{split}_COVIDx_CT-2A.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return lines


@pytest.mark.slow
def test_stage_one_pretrains_on_covidx_without_held_out_patients(tmp_path, monkeypatch):
    monkeypatch.setenv("COVID_KERAS_CACHE", str(tmp_path / "cache"))
    target = synthetic.ct_dataset(synthetic.CTPhantomConfig(patients_per_class=TARGET["phantom_patients_per_class"],
                                                            size=TARGET["phantom_size"], seed=TARGET["seed"]))
    lines = write_covidx_layout(tmp_path / "covidx", target)

    config = SliceLevelConfig(**{**PHANTOM_PRESET, **TARGET, "image_size": 32, "batch_size": 8,
                                 "stages": ("pretrain", "last_layers"), "pretrain_epochs": 1,
                                 "last_layers_epochs": 1},
                              pretrain_data=str(tmp_path / "covidx"), run_dir=str(tmp_path / "run"),
                              export_dir=None, verbose=0, quiet=True)
    summary = train_slice_level(config)

    split = json.loads((tmp_path / "run" / "split.json").read_text())
    rows, _ = pipelines.manifest_rows(summary["pretrain_cache"])
    pretrain_patients = {r.patient_id for r in rows}
    ctmd = {p.split("COVIDCTMD-")[1] for p in pretrain_patients if p.startswith("COVIDCTMD-")}
    assert ctmd == set(split["train"])  # held-out target patients never pre-train
    # COVIDx's own test part (the 4th patient of each class) is left out.
    assert not {"Normal_4", "CP_4", "NCP_4"} & pretrain_patients
    assert {"Normal_1", "CP_3", "NCP_2"} <= pretrain_patients
    n_listed = sum(len(v) for k, v in lines.items() if k != "test")
    n_held_out = len(split["val"]) + len(split["test"])
    assert len(rows) == n_listed - n_held_out
    # Stage 1 trained and validated on COVIDx slices, stage 2 on the target's.
    counts = summary["slices"]
    assert counts["pretrain"]["train"] + counts["pretrain"]["val"] == len(rows)
    assert counts["last_layers"]["train"] > 0 and summary["stages"]["pretrain"]["epochs_run"] == 1
