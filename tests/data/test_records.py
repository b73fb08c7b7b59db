"""The TFRecord example encoding is exactly tf.train.Example's."""

import numpy as np
import pytest
import tensorflow as tf

from covid_keras.data import records


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.full((300, 2), 255, dtype=np.uint8),
    np.zeros((0,), dtype=np.float32),
])
@pytest.mark.parametrize("label,slice_index,slice_label", [(0, -1, -1), (3, 127, 1), (2**40, 0, 0)])
def test_example_bytes_parse_as_tf_example(array, label, slice_index, slice_label):
    data = records.serialize_example(array, label, "pt-abc", "pt-abc-0123", slice_index, slice_label)
    ex = tf.train.Example.FromString(data)
    f = ex.features.feature
    assert f["input"].bytes_list.value == [array.tobytes()]
    assert list(f["shape"].int64_list.value) == list(array.shape)
    assert list(f["label"].int64_list.value) == [label]
    assert f["patient_id"].bytes_list.value == [b"pt-abc"]
    assert f["key"].bytes_list.value == [b"pt-abc-0123"]
    assert list(f["slice_index"].int64_list.value) == [slice_index]
    assert list(f["slice_label"].int64_list.value) == [slice_label]
    # The same message TensorFlow's own API builds.
    built = tf.train.Example()
    g = built.features.feature
    g["input"].bytes_list.value.append(array.tobytes())
    g["shape"].int64_list.value.extend(array.shape)
    g["label"].int64_list.value.append(label)
    g["patient_id"].bytes_list.value.append(b"pt-abc")
    g["key"].bytes_list.value.append(b"pt-abc-0123")
    g["slice_index"].int64_list.value.append(slice_index)
    g["slice_label"].int64_list.value.append(slice_label)
    assert ex == built
    parsed = records.parse_example(tf.constant(data), array.dtype.name)
    np.testing.assert_array_equal(parsed["input"].numpy(), array)
