"""The slice pipeline streams exactly the selected slices with their labels."""

import numpy as np
import pytest
import tensorflow as tf

from covid_keras.data import records
from covid_keras.training import pipelines


@pytest.fixture
def cache(phantom_slice_cache):
    """The shared phantom cache (tests/training/conftest.py)."""
    return phantom_slice_cache


def _by_id(folder):
    out = {}
    for ex in records.load(folder, with_meta=True):
        out[f"{ex['key'].numpy().decode()}#{int(ex['slice_index'])}"] = ex["input"].numpy()
    return out


@pytest.mark.parametrize("training", [False, True])
def test_exactly_the_selected_slices_with_their_labels(cache, training):
    rows, classes = pipelines.manifest_rows(cache)
    patients = sorted({r.patient_id for r in rows})[::2]
    selection = pipelines.select_slices(rows, patients, classes, stride=2)
    assert 0 < len(selection) < len(rows)
    images = _by_id(cache)
    expected = sorted((images[sid].tobytes(), label) for sid, label in selection.items())
    ds = pipelines.slice_dataset(cache, selection, training=training, batch_size=5, seed=1)
    got = []
    for x, y in ds:
        assert x.dtype == tf.float32 and x.shape[1:] == (16, 16, 3)
        np.testing.assert_array_equal(x[..., 0], x[..., 2])
        got += [(xi[..., 0].numpy().astype(np.uint8).tobytes(), int(yi)) for xi, yi in zip(x, y)]
    assert sorted(got) == expected
    assert ds.cardinality() == -(-len(selection) // 5)


def test_one_selected_slice(cache):
    rows, classes = pipelines.manifest_rows(cache)
    row = rows[3]
    ds = pipelines.slice_dataset(cache, {row.id: 2}, training=False, batch_size=4)
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert labels.tolist() == [2]
