"""Preprocessed datasets as TFRecord shards: writing examples, reading them back.

A cache folder (written by :mod:`covid_keras.preprocess.cache`) holds
``shard-NNNNN.tfrecord`` files, one ``shard-NNNNN.json`` beside each (its
records and the studies it skipped), ``cache.json`` (what is being built)
and, once every shard is done, ``manifest.json``. Each example carries:

=============== ======== ===========================================
``input``       bytes    the array's raw bytes, C order
``shape``       int64[]  its shape
``label``       int64    index into the manifest's ``classes``
``patient_id``  bytes    pseudonymous patient id
``key``         bytes    the study the example comes from
``slice_index`` int64    slice number in the study, -1 for volumes/images
``slice_label`` int64    1 infected, 0 clean, -1 unknown
=============== ======== ===========================================

In a cache built with ``interpolate=f`` (paper 001's added slices),
``slice_index`` counts on a grid ``f`` times finer: original slice ``i``
is index ``i * f``, interpolated ones lie between, and ``slice_index // f``
is the original slice at or before each example.

Model code uses only Keras; data pipelines and serving import TensorFlow,
and this module is a data pipeline.
"""

import json
import os

import numpy as np

from covid_keras import errors

MANIFEST = "manifest.json"
PLAN = "cache.json"


def _tf():
    import tensorflow as tf

    return tf


def _varint(n):
    """Protobuf base-128 varint; negative int64 as 10-byte two's complement."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(value):
    return _field(1, _field(1, value))  # Feature.bytes_list -> BytesList.value


def _int64_feature(values):
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list -> Int64List.value (packed)


def serialize_example(array, label, patient_id, key, slice_index=-1, slice_label=-1):
    """One ``tf.train.Example`` as bytes (see the module docstring).

    The Example wire format is written here directly instead of through
    ``tf.train.Example``: building that message needs TensorFlow imported in
    every cache worker (seconds each) and copies a 45 MB volume several
    times (0.3 s per study, measured); this writes the same message (tests
    parse it back with ``tf.train.Example`` and compare) with one copy.
    """
    array = np.ascontiguousarray(array)
    features = {
        "input": _bytes_feature(array.tobytes()),
        "shape": _int64_feature(array.shape),
        "label": _int64_feature([label]),
        "patient_id": _bytes_feature(str(patient_id).encode()),
        "key": _bytes_feature(str(key).encode()),
        "slice_index": _int64_feature([slice_index]),
        "slice_label": _int64_feature([slice_label]),
    }
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, feat)) for name, feat in features.items())
    return _field(1, entries)  # Example.features -> Features.feature (map entries)


def write_shard(path, serialized):
    """Writes serialized examples to ``path`` atomically (temporary name, then rename)."""
    tf = _tf()
    tmp = f"{os.path.dirname(path)}/.tmp-{os.path.basename(path)}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for item in serialized:
            writer.write(item)
    os.replace(tmp, path)


def write_json(path, obj):
    """Writes JSON atomically."""
    tmp = f"{os.path.dirname(path)}/.tmp-{os.path.basename(path)}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_manifest(folder):
    """The manifest of a complete cache folder.

    Raises:
        CacheError: the folder is missing, or its build has not finished.
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise errors.CacheError(
            f"{folder}: no such cache folder; build it with "
            "`python -m covid_keras.preprocess --out` pointing there."
        )
    if not os.path.exists(path):
        plan = os.path.join(folder, PLAN)
        if os.path.exists(plan):
            with open(plan) as f:
                total = len(json.load(f).get("shards", []))
            done = sum(1 for n in os.listdir(folder) if n.startswith("shard-") and n.endswith(".json"))
            raise errors.CacheError(
                f"{folder}: the cache is incomplete ({done} of {total} shards); run the "
                "same `python -m covid_keras.preprocess` command again to finish it."
            )
        raise errors.CacheError(
            f"{folder}: holds no {MANIFEST}, so it is not a covid_keras cache; build one "
            "with `python -m covid_keras.preprocess`."
        )
    with open(path) as f:
        return json.load(f)


_FEATURES = None


def _feature_spec():
    global _FEATURES
    if _FEATURES is None:
        tf = _tf()
        _FEATURES = {
            "input": tf.io.FixedLenFeature([], tf.string),
            "shape": tf.io.VarLenFeature(tf.int64),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "patient_id": tf.io.FixedLenFeature([], tf.string),
            "key": tf.io.FixedLenFeature([], tf.string),
            "slice_index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            "slice_label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        }
    return _FEATURES


def parse_example(serialized, dtype, shape=None):
    """Parses one serialized example into a dict of tensors (``input`` decoded)."""
    tf = _tf()
    ex = tf.io.parse_single_example(serialized, _feature_spec())
    flat = tf.io.decode_raw(ex["input"], tf.as_dtype(dtype))
    if shape is not None:
        ex["input"] = tf.reshape(flat, shape)
    else:
        ex["input"] = tf.reshape(flat, tf.sparse.to_dense(ex["shape"]))
    del ex["shape"]
    return ex


def load(folder, with_meta=False, shuffle_files=False, seed=None, shards=None):
    """Reads a cache folder as a ``tf.data.Dataset``.

    Args:
        folder: a folder written by ``python -m covid_keras.preprocess``.
        with_meta: yield the whole example dict (``input``, ``label``,
            ``patient_id``, ``key``, ``slice_index``, ``slice_label``)
            instead of the ``(input, label, patient_id)`` triple.
        shuffle_files: read the shards in a random order (training).
        seed: seed of that order.
        shards: read only these shard files (names as the manifest lists
            them, e.g. ``shard-00003.tfrecord``); default every shard.

    Returns:
        A ``tf.data.Dataset`` of ``(input, label, patient_id)``: the input
        with the pipeline's dtype and a static shape when every record has
        the same one, the label as int64 (an index into
        ``read_manifest(folder)["classes"]``) and the patient id as a string.

    Raises:
        CacheError: the folder is missing or incomplete.

    Example:
        >>> ds = records.load("cache/ct_slices")          # doctest: +SKIP
        >>> for x, y, pid in ds.take(1): print(x.shape)   # doctest: +SKIP
    """
    tf = _tf()
    manifest = read_manifest(folder)
    names = manifest["shards"]
    if shards is not None:
        unknown = sorted(set(shards) - set(names))
        if unknown:
            raise errors.CacheError(f"{folder}: has no shard {unknown[0]!r}; the manifest lists {len(names)} shards.")
        names = [n for n in names if n in set(shards)]
        if not names:
            raise errors.CacheError(f"{folder}: no shard selected to read.")
    files = [os.path.join(folder, s) for s in names]
    dtype = manifest["dtype"]
    shape = manifest.get("input_shape")
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = files_ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, max(1, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.map(lambda s: parse_example(s, dtype, shape), num_parallel_calls=tf.data.AUTOTUNE)
    if not with_meta:
        ds = ds.map(lambda ex: (ex["input"], ex["label"], ex["patient_id"]))
    return ds
