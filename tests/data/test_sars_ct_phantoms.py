"""Phantom CT-slice PNGs in the SARS-CoV-2 CT-scan layout, read by the real adapter."""

import collections
import os

import numpy as np
import pytest
from PIL import Image

from covid_keras.data import synthetic

SMALL = synthetic.CTImagePhantomConfig(images_per_class=4, size=64, seed=3)
NO_IDS = "publishes no patient ids"


def _png_files(root):
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".png")
    )


def _read(path):
    """The PNG as Pillow (not OpenCV, which wrote it) decodes it."""
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def _lung_mean(grey):
    """Mean grey level of the lungs: dark pixels inside the (non-black) body."""
    lungs = (grey > 0) & (grey < 170)  # fat / soft tissue are above 200 in the lung window
    return float(grey[lungs].mean())


def test_lung_window_levels():
    hu = np.array([-2000.0, -1350.0, -1000.0, -850.0, -600.0, 150.0, 700.0])
    # (HU + 1350) / 1500 * 255, rounded, clipped: computed by hand.
    expected = [0, 0, 60, 85, 128, 255, 255]
    assert synthetic.lung_window(hu).tolist() == expected
    assert synthetic.lung_window(hu).dtype == np.uint8


def test_layout_read_by_the_real_adapter(tmp_path):
    root = synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), SMALL)
    assert sorted(os.listdir(root)) == ["COVID", "non-COVID"]
    assert "Covid (1).png" in os.listdir(os.path.join(root, "COVID"))
    assert "Non-Covid (4).png" in os.listdir(os.path.join(root, "non-COVID"))
    from covid_keras.data.datasets import sars_cov2_ct

    with pytest.warns(UserWarning, match=NO_IDS):
        records = sars_cov2_ct(root)
    assert collections.Counter(r.label for r in records) == {"COVID-19": 4, "Normal": 4}
    for r in records:
        folder = os.path.basename(os.path.dirname(r.paths[0]))
        assert folder == {"COVID-19": "COVID", "Normal": "non-COVID"}[r.label]
        assert r.dataset == "sars-cov2-ct"
    assert len({r.patient_id for r in records}) == 8


def test_sars_ct_dataset_records_balanced_default_config():
    with pytest.warns(UserWarning, match=NO_IDS):
        records = synthetic.sars_ct_dataset()
    assert collections.Counter(r.label for r in records) == {"COVID-19": 24, "Normal": 24}
    assert all(os.path.isfile(r.paths[0]) for r in records)


def test_images_are_8bit_grey_body_on_black(tmp_path):
    root = synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), SMALL)
    shapes = set()
    for path in _png_files(root):
        mode, grey = _read(path)
        assert mode == "L" and grey.dtype == np.uint8
        shapes.add(grey.shape)
        # Cropped to the body with a black margin: no air grey, no table.
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        assert (border == 0).all()
        assert grey.shape[0] < grey.shape[1] <= SMALL.size  # a chest is wider than deep
        assert (grey > 200).mean() > 0.2  # body wall, mediastinum
        assert ((grey > 0) & (grey < 170)).mean() > 0.1  # lungs, dark inside the body
    assert len(shapes) > 1  # sizes vary a little, as the real dataset's do


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synthetic.write_sars_ct_dataset(str(tmp_path / "a"), SMALL)
    b = synthetic.write_sars_ct_dataset(str(tmp_path / "b"), SMALL)
    other = synthetic.CTImagePhantomConfig(images_per_class=4, size=64, seed=4)
    c = synthetic.write_sars_ct_dataset(str(tmp_path / "c"), other)
    files_a, files_b, files_c = _png_files(a), _png_files(b), _png_files(c)
    assert len(files_a) == 8
    assert [os.path.relpath(p, a) for p in files_a] == [os.path.relpath(p, c) for p in files_c]
    for pa, pb, pc in zip(files_a, files_b, files_c):
        with open(pa, "rb") as fa, open(pb, "rb") as fb, open(pc, "rb") as fc:
            bytes_a = fa.read()
            assert bytes_a == fb.read()
            assert bytes_a != fc.read()


def test_every_image_is_its_own_patient(tmp_path):
    root = synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), SMALL)
    pixels = [_read(p)[1].tobytes() for p in _png_files(root)]
    assert len(set(pixels)) == len(pixels)


def test_covid_lungs_brighter_than_normal_ones():
    """Ground glass (-600 HU) lifts the lungs' mean grey: a learnable cue."""
    with pytest.warns(UserWarning, match=NO_IDS):
        records = synthetic.sars_ct_dataset()
    means = collections.defaultdict(list)
    for r in records:
        means[r.label].append(_lung_mean(_read(r.paths[0])[1]))
    covid, normal = np.array(means["COVID-19"]), np.array(means["Normal"])
    # Plain lung (-850 HU) is grey 85 with noise; each COVID-19 slice shows lesions.
    assert np.allclose(normal, 85, atol=1.0)
    assert covid.min() > normal.max() + 1.0
    # A one-number threshold classifier separates the classes.
    threshold = (covid.mean() + normal.mean()) / 2
    accuracy = ((covid > threshold).sum() + (normal <= threshold).sum()) / (len(covid) + len(normal))
    assert accuracy == 1.0


def test_covid_slices_show_ground_glass_normal_ones_none(tmp_path):
    root = synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), SMALL)
    for path in _png_files(root):
        grey = _read(path)[1]
        ggo = ((grey > 110) & (grey < 150)).sum()  # -600 HU is grey 128
        if os.path.basename(os.path.dirname(path)) == "COVID":
            assert ggo >= 10
        else:
            assert ggo == 0


def test_cache_folder_built_once_and_reused(monkeypatch):
    config = synthetic.CTImagePhantomConfig(images_per_class=2, size=48, seed=11)
    first = synthetic.sars_ct_dataset_dir(config)
    assert os.path.basename(os.path.dirname(first)) == "phantoms"
    assert os.path.basename(first).startswith("sars-ct-")
    assert len(_png_files(first)) == 4

    def fail(root, config):
        raise AssertionError("the cached folder should have been reused")

    monkeypatch.setattr(synthetic, "write_sars_ct_dataset", fail)
    assert synthetic.sars_ct_dataset_dir(config) == first
    with pytest.raises(AssertionError, match="reused"):
        synthetic.sars_ct_dataset_dir(synthetic.CTImagePhantomConfig(images_per_class=2, size=48, seed=12))


def test_writing_48_images_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    synthetic.write_sars_ct_dataset(str(tmp_path / "sars"), synthetic.CTImagePhantomConfig())
    assert time.perf_counter() - start < 10.0
