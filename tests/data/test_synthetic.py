"""The built-in phantoms: real DICOM, deterministic, labelled, learnable geometry."""

import os

import numpy as np
import pytest

from covid_keras.data import read_ct_series, read_xray, synthetic

SMALL_CT = synthetic.CTPhantomConfig(patients_per_class=2, size=48, min_slices=20, max_slices=28, seed=3)
SMALL_XRAY = synthetic.XrayPhantomConfig(images_per_pathology=2, size=64, seed=3)


def test_phantom_anatomy_in_hu():
    hu, labels, spacing = synthetic.phantom_volume("normal", n_slices=30, size=96, seed=0, noise_hu=0)
    mid = hu[15]
    assert mid[0, 0] == -1000  # air in the corner
    assert np.isclose(mid, -850).mean() > 0.1  # lungs
    assert (mid >= 700).any()  # spine
    assert not labels.any()
    # Lung area grows then shrinks along z.
    area = (hu == -850).sum(axis=(1, 2))
    peak = int(area.argmax())
    assert 0 < peak < 29 and area[0] < area[peak] and area[-1] < area[peak]


@pytest.mark.parametrize("pathology,lesion_hu", [("covid", (-680, -520)), ("cap", (0, 40))])
def test_lesions_labelled_where_they_are(pathology, lesion_hu):
    hu, labels, _ = synthetic.phantom_volume(pathology, n_slices=40, size=96, seed=1, noise_hu=0)
    lo, hi = lesion_hu
    assert labels.any() and not labels.all()
    for k in range(40):
        lungish = (hu[k] > lo) & (hu[k] < hi)
        if labels[k]:
            assert lungish.any()


def test_covid_is_bilateral_and_cap_unilateral():
    hu, labels, _ = synthetic.phantom_volume("covid", n_slices=40, size=96, seed=2, noise_hu=0)
    ggo = (hu > -680) & (hu < -520)
    cols = np.flatnonzero(ggo.any(axis=(0, 1)))
    assert cols.min() < 48 < cols.max()
    hu, _, _ = synthetic.phantom_volume("cap", n_slices=40, size=96, seed=2, noise_hu=0)
    lungs_or_lesion = (hu > 0) & (hu < 40)
    # consolidation lies inside one lung only: either side of the midline
    left = lungs_or_lesion[:, 20:70, :40].sum()
    right = lungs_or_lesion[:, 20:70, 56:].sum()
    assert min(left, right) == 0 < max(left, right)


def test_deterministic_by_seed():
    a = synthetic.phantom_volume("covid", n_slices=10, size=32, seed=7)
    b = synthetic.phantom_volume("covid", n_slices=10, size=32, seed=7)
    c = synthetic.phantom_volume("covid", n_slices=10, size=32, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_ct_dataset_layout_read_by_covid_ct_md_adapter():
    records = synthetic.ct_dataset(SMALL_CT)
    assert sorted({r.label for r in records}) == ["CAP", "COVID-19", "Normal"]
    assert len(records) == 6
    root = synthetic.ct_dataset_dir(SMALL_CT)
    for folder in ("COVID-19 Cases", "Cap Cases", "Normal Cases", "Index.csv", "Slice-level-labels.npy"):
        assert os.path.exists(os.path.join(root, folder))
    for r in records:
        ct = read_ct_series(r.paths[0])
        assert 20 <= ct.hu.shape[0] <= 28 and ct.hu.shape[1:] == (48, 48)
        if r.label == "Normal":
            assert r.slice_labels is None
            continue
        # Slice labels (by file name, like the real dataset) line up with the
        # lesions seen in the volume read back in position order.
        by_file = dict(r.slice_labels)
        in_order = np.array([by_file[os.path.basename(p)] for p in ct.source_files])
        assert in_order.any()
        lesion_hu = (-680, -520) if r.label == "COVID-19" else (0, 40)
        lung_band = slice(10, 38)
        for k in np.flatnonzero(in_order):
            sl = ct.hu[k, lung_band]
            assert ((sl > lesion_hu[0]) & (sl < lesion_hu[1])).any()


def test_ct_dataset_is_cached_and_file_names_carry_no_phi():
    root = synthetic.ct_dataset_dir(SMALL_CT)
    mtime = os.path.getmtime(root)
    assert synthetic.ct_dataset_dir(SMALL_CT) == root
    assert os.path.getmtime(root) == mtime
    for _, _, files in os.walk(root):
        for name in files:
            assert "PHANTOM" not in name.upper()


def test_xray_dataset_per_task_and_lungs_dark():
    for task, mapping in synthetic.XRAY_TASKS.items():
        records = synthetic.xray_dataset(task, SMALL_XRAY)
        assert {r.label for r in records} == set(mapping.values())
        assert len(records) == 2 * len(mapping)
    record = synthetic.xray_dataset("detl_a", SMALL_XRAY)[0]
    img = read_xray(record.paths[0])
    assert img.shape == (64, 64) and img.dtype == np.float32
    # DRR: the lung fields (left/right of the midline) are darker than the
    # mediastinum (the central strip), as on a real film.
    h, w = img.shape
    band = img[int(h * 0.35):int(h * 0.6)]
    lungs = (band[:, int(w * 0.2):int(w * 0.35)].mean() + band[:, int(w * 0.65):int(w * 0.8)].mean()) / 2
    mediastinum = band[:, int(w * 0.45):int(w * 0.55)].mean()
    assert lungs + 0.1 < mediastinum


def test_unknown_task_and_pathology():
    from covid_keras import errors

    with pytest.raises(errors.ConfigurationError, match="`task` must be one of"):
        synthetic.xray_records(synthetic.xray_dataset_dir(SMALL_XRAY), task="nope")
    with pytest.raises(ValueError, match="`pathology` must be one of"):
        synthetic.phantom_volume("flu")


def test_phantom_records_carry_synthetic_covariates_independent_of_class():
    import dataclasses

    from scipy import stats

    from covid_keras.data.datasets import Record, covid_ct_md
    from covid_keras.evaluation.predictions import covariates

    # Built-in datasets: every record has all four; the adapter's records are otherwise unchanged, in order.
    plain = covid_ct_md(synthetic.ct_dataset_dir(SMALL_CT))
    ct = synthetic.ct_dataset(SMALL_CT)
    strip = {"age": None, "sex": None}
    assert [dataclasses.replace(r, **strip, extra={k: v for k, v in r.extra.items() if k not in ("bmi", "ethnicity")})
            for r in ct] == plain
    for r in ct + synthetic.xray_dataset("xraycnn_step1", SMALL_XRAY):
        found = covariates(r)
        assert set(found) == {"age", "sex", "bmi", "ethnicity"}
        assert 20 <= found["age"] <= 90 and found["sex"] in ("F", "M") and 16 <= found["bmi"] <= 45
        assert found["ethnicity"] in synthetic.PHANTOM_ETHNICITIES
    # Reproducible, the same image gets the same values in every task, another seed draws others.
    assert synthetic.ct_dataset(SMALL_CT) == ct
    step1 = {r.paths[0]: covariates(r) for r in synthetic.xray_dataset("xraycnn_step1", SMALL_XRAY)}
    detl = {r.paths[0]: covariates(r) for r in synthetic.xray_dataset("detl_b", SMALL_XRAY)}
    assert all(detl[p] == c for p, c in step1.items() if p in detl)
    # Independent of the class: a function of the seed and the file name only, not of the label or the id.
    one = Record("a", "Normal", ("/data/normal/normal-0001.png",), "synthetic-xray")
    other = dataclasses.replace(one, patient_id="b", label="COVID-19")
    assert synthetic.phantom_covariates(one, 0) == synthetic.phantom_covariates(other, 0)
    assert synthetic.phantom_covariates(one, 0) != synthetic.phantom_covariates(one, 1)
    by_class = {c: [synthetic.phantom_covariates(Record("p", c, (f"/r/{c}/{c}-{i:04d}.png",), "s"))
                    for i in range(300)] for c in ("normal", "covid")}
    ages = {c: [v[0] for v in vals] for c, vals in by_class.items()}
    assert stats.ks_2samp(ages["normal"], ages["covid"]).pvalue > 0.001
    table = [[sum(v[1] == s for v in vals) for s in ("F", "M")] for vals in by_class.values()]
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert {v[3] for v in by_class["normal"]} == set(synthetic.PHANTOM_ETHNICITIES)
