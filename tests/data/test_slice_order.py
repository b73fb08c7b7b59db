"""read_ct_series sorts slices along the slice normal, whatever the orientation.

Each series is a known phantom volume written with one geometry: feet first
(positions falling as instance numbers and file names rise), orientations
whose normal points down (-z), and oblique planes (rotated about x). The
expectation is computed independently: with numpy, from the tags pydicom
reads (ImagePositionPatient projected on the cross product of the
ImageOrientationPatient cosines), and with SimpleITK's ImageSeriesReader.
"""

import os

import numpy as np
import pydicom
import pytest

from covid_keras.data import read_ct_series, synthetic

DZ = 2.5


def _rotated_about_x(degrees):
    """Row cosine x, column cosine y rotated about x: the slice normal tilts from +z towards -y."""
    a = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))


# name: (orientation, direction, shuffled file names, PatientPosition, slice order read back,
#        the naive orders it defeats)
GEOMETRIES = {
    # Identity orientation, positions falling with instance numbers and file names.
    "feet_first": ((1, 0, 0, 0, 1, 0), -1, False, "FFS", "reversed", {"file name", "instance number"}),
    # The usual feet-first-supine cosines: normal -z, so z falls along the normal.
    "feet_first_supine_cosines": ((-1, 0, 0, 0, 1, 0), 1, True, "FFS", "as written", {"raw z", "file name"}),
    "flipped_columns": ((1, 0, 0, 0, -1, 0), 1, True, "HFS", "as written", {"raw z", "file name"}),
    # Oblique: z still rises along the normal, but by only cos(20 deg) of a step.
    "oblique_20": (_rotated_about_x(20), 1, True, "HFS", "as written", {"raw z step", "file name"}),
    # Oblique and flipped: the normal points down and back.
    "oblique_200": (_rotated_about_x(200), 1, True, "HFS", "as written", {"raw z", "raw z step", "file name"}),
    "oblique_20_reversed": (_rotated_about_x(20), -1, False, "HFS", "reversed",
                            {"raw z step", "file name", "instance number"}),
}


@pytest.fixture(scope="module")
def volume():
    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=9, size=24, slice_spacing=DZ, seed=11)
    # What the files hold: HU + 1024 rounded to 12 bits, read back in HU.
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095) - 1024.0
    return hu, stored.astype(np.float32), spacing


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def series(request, tmp_path_factory, volume):
    orientation, direction, shuffle, position, order, _ = GEOMETRIES[request.param]
    hu, stored, spacing = volume
    folder = str(tmp_path_factory.mktemp(request.param))
    paths = synthetic.write_ct_series(hu, spacing, folder, seed=4, shuffle=shuffle, orientation=orientation,
                                      direction=direction, patient_position=position)
    expected = stored if order == "as written" else stored[::-1]
    return request.param, folder, paths, expected


def _numpy_expectation(paths):
    """(paths sorted along the normal, step) from the tags alone, with numpy."""
    dist = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
        normal = np.cross(cosines[:3], cosines[3:])
        dist[p] = float(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal)
    ordered = sorted(paths, key=dist.get)
    return ordered, float(np.median(np.diff([dist[p] for p in ordered])))


def test_the_geometry_defeats_naive_sorting(series):
    """Which orders other than along the normal each case gets wrong (so a reader using one fails)."""
    name, folder, paths, _ = series
    ordered, step = _numpy_expectation(paths)
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in paths}
    z = {p: float(headers[p].ImagePositionPatient[2]) for p in paths}
    wrong = set()
    if sorted(paths, key=z.get) != ordered:
        wrong.add("raw z")
    if abs(float(np.median(np.diff(sorted(z.values())))) - step) > 0.1:
        wrong.add("raw z step")
    if sorted(paths) != ordered:
        wrong.add("file name")
    if sorted(paths, key=lambda p: int(headers[p].InstanceNumber)) != ordered:
        wrong.add("instance number")
    assert wrong == GEOMETRIES[name][5]
    assert step == pytest.approx(DZ, abs=2e-3)


def test_every_naive_order_is_defeated_by_some_case():
    defeated = set().union(*(g[5] for g in GEOMETRIES.values()))
    assert defeated == {"raw z", "raw z step", "file name", "instance number"}


def test_slices_come_back_in_order_along_the_normal(series, volume):
    name, folder, paths, expected = series
    ct = read_ct_series(folder)
    np.testing.assert_array_equal(ct.hu, expected, err_msg=name)
    ordered, step = _numpy_expectation(paths)
    assert list(ct.source_files) == ordered
    assert ct.spacing[0] == pytest.approx(step, abs=1e-6)
    assert ct.spacing[0] == pytest.approx(DZ, abs=2e-3)
    assert ct.spacing[1:] == pytest.approx(volume[2][1:], abs=1e-5)
    first = pydicom.dcmread(ordered[0], stop_before_pixels=True)
    assert ct.origin == pytest.approx([float(v) for v in first.ImagePositionPatient])
    assert ct.orientation == pytest.approx(GEOMETRIES[name][0], abs=1e-6)


def test_same_volume_and_spacing_as_simpleitk(series):
    sitk = pytest.importorskip("SimpleITK")
    name, folder, _, expected = series
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(folder)
    reader.SetFileNames(files)
    image = reader.Execute()
    ct = read_ct_series(folder)
    assert [os.path.basename(p) for p in ct.source_files] == [os.path.basename(p) for p in files], name
    np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(image).astype(np.float32))
    assert ct.spacing[0] == pytest.approx(image.GetSpacing()[2], abs=2e-3)
    # SimpleITK's direction matrix: columns are the row cosine, column cosine and normal.
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.ravel(direction[:, :2].T) == pytest.approx(ct.orientation, abs=1e-5)
    assert image.GetOrigin() == pytest.approx(ct.origin, abs=1e-3)
