"""Fuzzing the readers: every truncation and random byte damage of a header.

A small CT slice (16 x 16, the middle one of a 5-slice series) and a small
X-ray DICOM (16 x 16), both carrying made-up identifying values, are cut at
every byte offset of their header (up to the first pixel byte) and have
random header bytes replaced (seeded trials). Each time ``read_ct_series``
(on the folder, the damaged slice among four intact ones) or ``read_xray``
must either return a correct result or raise a ``CovidKerasError`` naming
the folder or file, never another exception, and no warning, log line,
error or output may carry an identifying value.

"Correct" for a series: all five slices, the four intact ones with their
own HU (a damaged slice that is skipped leaves a gap, which must be
refused). For the X-ray: the intact image when only cut, and for random
damage a float32 16 x 16 image in [0, 1] (a damaged window may show it
otherwise). The whole file runs in well under a minute on 2 cores.
"""

import os
import random
import shutil

import numpy as np
import pytest

from covid_keras import errors
from covid_keras.data import read_ct_series, read_xray, synthetic

from damage_helpers import IDENTITY, leaked, pixel_value_offset, recorded, write_xray_dicom

N_SLICES, SIZE, DAMAGED = 5, 16, 2
FLIP_TRIALS = 500


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """(folder, damaged file path, its intact bytes, expected HU per file name)."""
    root = tmp_path_factory.mktemp("fuzz_ct")
    hu = np.random.default_rng(7).uniform(-1000, 400, (N_SLICES, SIZE, SIZE))
    folder = root / "series"
    paths = synthetic.write_ct_series(hu, (2.0, 0.8, 0.8), str(folder), seed=7, shuffle=False, **IDENTITY)
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095) - 1024.0
    expected = {os.path.basename(p): stored[k].astype(np.float32) for k, p in enumerate(paths)}
    damaged = paths[DAMAGED]
    with open(damaged, "rb") as f:
        data = f.read()
    return str(folder), damaged, data, expected


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    """(path, intact bytes, the intact image)."""
    path = write_xray_dicom(tmp_path_factory.mktemp("fuzz_xray") / "chest.dcm", size=SIZE)
    with open(path, "rb") as f:
        data = f.read()
    return path, data, read_xray(path)


def _attempt(read, where):
    """Runs ``read()``; returns (result or None, error message or None, texts)."""
    result, message = None, None
    with recorded() as texts:
        try:
            result = read()
        except errors.CovidKerasError as e:
            message = str(e)
        except Exception as e:  # noqa: BLE001 - the very thing the test forbids
            pytest.fail(f"{type(e).__name__} escaped for {where}: {e}")
    if message is not None:
        texts.append(message)
    return result, message, texts


def _check_series(folder, damaged, data, expected, blob, where):
    with open(damaged, "wb") as f:
        f.write(blob)
    ct, message, texts = _attempt(lambda: read_ct_series(folder), where)
    if ct is not None:
        texts += [repr(ct.meta), ct.patient_id]
    assert not leaked(texts, folder), f"{where}: {leaked(texts, folder)} in {[t[:300] for t in texts]}"
    if message is not None:
        assert folder in message, f"{where}: the error does not name the folder: {message}"
        return "refused"
    assert ct.hu.shape == (N_SLICES, SIZE, SIZE), where
    names = [os.path.basename(p) for p in ct.source_files]
    assert sorted(names) == sorted(expected), where
    for k, name in enumerate(names):
        if name != os.path.basename(damaged):
            np.testing.assert_array_equal(ct.hu[k], expected[name], err_msg=f"{where}: slice {name}")
    return "read"


def _check_xray(path, blob, intact, where, exact):
    with open(path, "wb") as f:
        f.write(blob)
    image, message, texts = _attempt(lambda: read_xray(path), where)
    assert not leaked(texts, path), f"{where}: {leaked(texts, path)} in {[t[:300] for t in texts]}"
    if message is not None:
        assert path in message, f"{where}: the error does not name the file: {message}"
        return "refused"
    assert image.dtype == np.float32 and image.shape == (SIZE, SIZE), where
    assert np.all(np.isfinite(image)) and image.min() >= 0.0 and image.max() <= 1.0, where
    if exact:
        np.testing.assert_array_equal(image, intact, err_msg=where)
    return "read"


def _flipped(data, rng, end):
    """1 to 3 random bytes replaced between the DICM prefix and ``end``."""
    blob = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        blob[rng.randrange(128, end)] = rng.randrange(256)
    return bytes(blob)


def test_ct_slice_cut_at_every_header_offset(series, tmp_path):
    folder, damaged, data, expected = series
    work = str(tmp_path / "series")
    shutil.copytree(folder, work)
    target = os.path.join(work, os.path.basename(damaged))
    end = pixel_value_offset(data)
    outcomes = [_check_series(work, target, data, expected, data[:n], f"CT cut at {n} of {len(data)} bytes")
                for n in range(end + 1)]
    # Without its pixels the slice is never read: a skipped one leaves a gap.
    assert outcomes.count("refused") == end + 1


def test_ct_slice_with_random_header_bytes(series, tmp_path):
    folder, damaged, data, expected = series
    work = str(tmp_path / "series")
    shutil.copytree(folder, work)
    target = os.path.join(work, os.path.basename(damaged))
    rng = random.Random(20240901)
    end = pixel_value_offset(data)
    outcomes = [_check_series(work, target, data, expected, _flipped(data, rng, end), f"CT flip trial {t}")
                for t in range(FLIP_TRIALS)]
    # The trials reach both outcomes: some damage is harmless, most is refused.
    assert 0 < outcomes.count("read") < FLIP_TRIALS


def test_xray_cut_at_every_header_offset(xray, tmp_path):
    path, data, intact = xray
    target = str(tmp_path / "chest.dcm")
    end = pixel_value_offset(data)
    outcomes = [_check_xray(target, data[:n], intact, f"X-ray cut at {n} of {len(data)} bytes", exact=True)
                for n in range(end + 1)]
    assert outcomes.count("refused") == end + 1


def test_xray_with_random_header_bytes(xray, tmp_path):
    path, data, intact = xray
    target = str(tmp_path / "chest.dcm")
    rng = random.Random(4711)
    end = pixel_value_offset(data)
    outcomes = [_check_xray(target, _flipped(data, rng, end), intact, f"X-ray flip trial {t}", exact=False)
                for t in range(FLIP_TRIALS)]
    assert 0 < outcomes.count("read") < FLIP_TRIALS
