"""Shared fixtures: generated phantoms written as real DICOM, nothing downloaded."""

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test uses a private cache folder and a fixed id salt."""
    cache = tmp_path_factory.getbasetemp() / "covid_keras_cache"
    monkeypatch.setenv("COVID_KERAS_CACHE", str(cache))
    monkeypatch.setenv("COVID_KERAS_ID_SALT", "test-salt")


@pytest.fixture
def small_volume():
    """A 12-slice 32x32 COVID phantom in HU with its slice labels and spacing."""
    from covid_keras.data import synthetic

    return synthetic.phantom_volume("covid", n_slices=12, size=32, slice_spacing=2.5, seed=5)


@pytest.fixture
def phantom_series(tmp_path, small_volume):
    """A written phantom series: (folder, hu, spacing, paths in slice order)."""
    from covid_keras.data import synthetic

    hu, _, spacing = small_volume
    folder = tmp_path / "series"
    paths = synthetic.write_ct_series(hu, spacing, str(folder), seed=5,
                                      patient_name="DOE^JANE", patient_id="SECRET-ID-123",
                                      birth_date="19450203")
    return str(folder), hu, spacing, paths


@pytest.fixture
def testdata():
    """Returns a function: name -> path of a file pydicom or pydicom-data ships."""
    from pydicom.data import get_testdata_file

    def find(name):
        path = get_testdata_file(name)
        if path is None or not os.path.exists(path):
            pytest.fail(f"{name} is missing: install pydicom-data (requirements-dev.txt)")
        return path

    return find
