"""Input pipelines: from the preprocessing cache to training batches.

The cache (built once, on the fly, by :func:`ensure_slice_cache`) holds one
example per CT slice with its study key, patient id, patient label and
slice label. :func:`select_slices` decides in Python which slices a stage
uses and with which label (one place for paper 001's rules);
:func:`slice_dataset` then streams exactly those from the shards:
shuffled only when training, parallel map, batch, prefetch.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from covid_keras import errors
from covid_keras.data import records
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.data.privacy import cache_dir
from covid_keras.preprocess.cache import build_cache, cache_fingerprint

CT_CLASSES = CLASS_NAMES["ct3"]
NORMAL = "Normal"


@dataclasses.dataclass(frozen=True)
class SliceRow:
    """One cached slice, as the manifest lists it."""

    key: str
    patient_id: str
    label: str
    slice_index: int
    slice_label: int  # 1 infected, 0 clean, -1 unknown
    # The cache's interpolation factor. An interpolated cache indexes slices
    # on a grid `factor` times finer than the originals (which sit at
    # multiples of it), so slice_index // factor is the original slice at or
    # before this one.
    factor: int = 1

    @property
    def id(self):
        return f"{self.key}#{self.slice_index}"


def ensure_slice_cache(records_list, dataset, options, root=None, workers=None, progress=True):
    """Builds (or reuses) the ct_slices cache of a dataset; returns its folder."""
    root = root or os.path.join(cache_dir(), "preprocessed")
    digest = cache_fingerprint(records_list, options, list(CT_CLASSES), dataset)[:10]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-") or "data"
    folder = os.path.join(root, f"{slug}-{options.pipeline}-{digest}")
    if not os.path.exists(os.path.join(folder, records.MANIFEST)):
        build_cache(records_list, folder, options, dataset=dataset, classes=list(CT_CLASSES),
                    workers=workers, progress=progress)
    return folder


def manifest_rows(folder):
    """The cache's slices as :class:`SliceRow` objects, and its class list."""
    manifest = records.read_manifest(folder)
    factor = int(manifest.get("options", {}).get("interpolate", 1))
    rows = [SliceRow(r["key"], r["patient_id"], r["label"], int(r["slice_index"]), int(r["slice_label"]), factor)
            for r in manifest["records"]]
    return rows, list(manifest["classes"])


def select_slices(rows, patients, classes, *, clean_slices_of_infected=False, pseudo=None, stride=1):
    """Which slices a stage trains on, and their labels (paper 001's rules).

    * Normal patients: every slice, labelled Normal.
    * COVID-19 / CAP patients with slice labels: infected slices get the
      patient's class; clean slices are left out (stages 2-3, "normal slices
      of infected patients are not used") unless ``clean_slices_of_infected``
      labels them Normal.
    * Infected patients with only a patient label: left out, except the
      slices in ``pseudo`` (stage 4's pseudo-labelled infected slices).

    Args:
        rows: :class:`SliceRow` list. patients: patient ids to use.
        classes: the class list (label order).
        stride: keep every n-th original slice; in an interpolated cache,
            with the slices interpolated after it.

    Returns:
        ``{slice id: class index}``.
    """
    patients = set(patients)
    pseudo = pseudo or set()
    out = {}
    for r in rows:
        # slice_index is -1 for single PNG slices (COVIDx-CT): never strided away.
        if r.patient_id not in patients or (stride > 1 and r.slice_index > 0 and (r.slice_index // r.factor) % stride):
            continue
        if r.label == NORMAL:
            label = NORMAL
        elif r.slice_label == 1:
            label = r.label
        elif r.slice_label == 0:
            if not clean_slices_of_infected:
                continue
            label = NORMAL
        elif r.id in pseudo:
            label = r.label
        else:
            continue
        out[r.id] = classes.index(label)
    return out


def to_rgb(image):
    """uint8 [H, W] slice -> float32 [H, W, 3] raw pixels (the models' input)."""
    image = tf.cast(image, tf.float32)
    return tf.repeat(image[..., None], 3, axis=-1)


def table_lookup(selection):
    """``example -> (input, class index or -1)`` for the selected slice ids, by a hash table.

    A ``tf.lookup.StaticHashTable`` is a stateful op, which makes TF 2.21 log
    a spurious NodeDef error under op determinism; a stateless lookup avoids
    it but streams no faster on 2 cores (benchmarks/slice_pipeline.py:
    0.86-1.33x over three runs), so the plain table stays.
    """
    keys = tf.constant(list(selection.keys()))
    values = tf.constant(list(selection.values()), dtype=tf.int64)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)

    def label_of(ex):
        sid = tf.strings.join([ex["key"], "#", tf.strings.as_string(ex["slice_index"])])
        return ex["input"], table.lookup(sid)

    return label_of


def slice_dataset(folder, selection, *, training, batch_size, seed=0, cache_in_memory=True,
                  label_lookup=table_lookup):
    """A ``tf.data`` pipeline of (image, label) batches for the selected slices.

    Args:
        folder: the ct_slices cache.
        selection: ``{slice id: class index}`` from :func:`select_slices`.
        training: shuffle (files and examples) when True; never otherwise.
        batch_size: batch size.
        seed: shuffle seed.
        cache_in_memory: keep the selected uint8 slices in memory after the
            first epoch.
        label_lookup: ``selection -> (example -> (input, label or -1))``;
            :func:`table_lookup` (benchmarks compare others).
    """
    if not selection:
        raise errors.ConfigurationError(
            f"{folder}: no slices selected for this stage; the split leaves no usable slices "
            "(check the dataset's labels and --val-fraction)."
        )
    label_of = label_lookup(selection)
    ds = records.load(folder, with_meta=True, shuffle_files=training, seed=seed)
    ds = ds.map(label_of, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda x, y: y >= 0)
    if cache_in_memory:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(selection), 10000), seed=seed, reshuffle_each_iteration=True)
    # Deterministic order throughout (tf.data's default): with --seed a run
    # repeats exactly on CPU; the shuffles above are seeded.
    ds = ds.map(lambda x, y: (to_rgb(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Every selected id is in this cache's manifest, so the count is known:
    # Keras shows epoch progress and does not warn about running out of data.
    batches = -(-len(selection) // batch_size)
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def study_slices(folder, keys=None):
    """Yields ``(key, patient_id, label, slices uint8 [n, H, W], slice_labels, slice_indices)`` per study.

    Every slice of each study, in slice order (one study per shard).
    ``slice_indices`` are the cache's indices (consecutive, except in an
    interpolated cache: see :func:`manifest_rows`).
    """
    manifest = records.read_manifest(folder)
    wanted = None if keys is None else set(keys)
    dtype = manifest["dtype"]
    for shard in manifest["shards"]:
        ds = tf.data.TFRecordDataset(os.path.join(folder, shard)).map(
            lambda s: records.parse_example(s, dtype, manifest.get("input_shape")))
        studies = {}
        for ex in ds:
            key = ex["key"].numpy().decode()
            if wanted is not None and key not in wanted:
                continue
            entry = studies.setdefault(key, [ex["patient_id"].numpy().decode(), int(ex["label"]), [], [], []])
            entry[2].append(int(ex["slice_index"]))
            entry[3].append(ex["input"].numpy())
            entry[4].append(int(ex["slice_label"]))
        for key, (pid, label, idx, slices, slabels) in studies.items():
            order = np.argsort(idx)
            yield key, pid, label, np.stack(slices)[order], np.asarray(slabels)[order], np.asarray(idx)[order]
