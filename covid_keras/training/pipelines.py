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
from covid_keras.preprocess.cache import build_cache, cache_fingerprint, default_records_per_shard
from covid_keras.training import distribute

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


def ensure_cache(records_list, dataset, options, classes, root=None, workers=None, progress=True, log=None):
    """Builds (or reuses) the preprocessing cache of a dataset; returns its folder.

    The folder, under the user's cache directory, is named by the cache's
    fingerprint (records, pipeline options, classes). Studies the pipeline
    refused (no lungs, unreadable) are skipped; ``log`` gets the build's
    summary naming them, or, for a cache built earlier, their count.
    """
    root = root or os.path.join(cache_dir(), "preprocessed")
    # As many shards as training workers at least (multi-worker runs read them file by file).
    per_shard = default_records_per_shard(records_list, min_shards=distribute.num_workers())
    digest = cache_fingerprint(records_list, options, list(classes), dataset, records_per_shard=per_shard)[:10]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-") or "data"
    folder = os.path.join(root, f"{slug}-{options.pipeline}-{digest}")
    if not os.path.exists(os.path.join(folder, records.MANIFEST)):
        report = build_cache(records_list, folder, options, dataset=dataset, classes=list(classes),
                             workers=workers, progress=progress, records_per_shard=per_shard)
        if log is not None and report.skipped:
            log(report.summary())
    elif log is not None:
        skipped = records.read_manifest(folder)["skipped"]
        if skipped:
            log(f"{folder}: {len(skipped)} studies were skipped when this cache was built (see its manifest.json)")
    return folder


def ensure_slice_cache(records_list, dataset, options, root=None, workers=None, progress=True, log=None):
    """Builds (or reuses) the ct_slices cache of a dataset (paper 001's classes); returns its folder."""
    return ensure_cache(records_list, dataset, options, CT_CLASSES, root=root, workers=workers,
                        progress=progress, log=log)


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


def slice_id(ex):
    """The id :func:`select_slices` gives a cached slice: ``<study key>#<slice index>``."""
    return tf.strings.join([ex["key"], "#", tf.strings.as_string(ex["slice_index"])])


def table_lookup(selection, id_of=slice_id):
    """``example -> (input, class index or -1)`` for the selected ids, by a hash table.

    ``id_of(example)`` names an example as ``selection`` does (slices:
    :func:`slice_id`; volumes: their key).

    A ``tf.lookup.StaticHashTable`` is a stateful op, which makes TF 2.21 log
    a spurious NodeDef error under op determinism; a stateless lookup avoids
    it but streams no faster on 2 cores (benchmarks/slice_pipeline.py:
    0.86-1.33x over three runs), so the plain table stays.
    """
    keys = tf.constant(list(selection.keys()))
    values = tf.constant(list(selection.values()), dtype=tf.int64)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)

    def label_of(ex):
        return ex["input"], table.lookup(id_of(ex))

    return label_of


def selected_per_file(folder, selection, id_of_row, shards=None):
    """How many selected examples each shard file read holds, in the order :func:`records.load` reads them.

    ``id_of_row(manifest record)`` names a record as ``selection`` does.
    """
    manifest = records.read_manifest(folder)
    names = [n for n in manifest["shards"] if shards is None or n in set(shards)]
    counts = dict.fromkeys(names, 0)
    for row in manifest["records"]:
        if row["shard"] in counts and id_of_row(row) in selection:
            counts[row["shard"]] += 1
    return [counts[n] for n in names]


def _selected_batches(ds, selection, label_of, to_input, *, training, batch_size, seed, shuffle_buffer,
                      cache_in_memory, per_file):
    """Cache examples -> the selected (input, label) batches: label, filter, [cache], [shuffle], batch.

    Under ``--strategy multi-worker`` the pipeline carries how the workers
    split it (:func:`covid_keras.training.distribute.shard_options`, from
    ``per_file``, the selected examples of each file read: a training
    pipeline whose files share out evenly by file, each worker reading its
    own shards; otherwise by example).
    """
    ds = ds.map(label_of, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda x, y: y >= 0)
    if cache_in_memory:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(selection), shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    # Deterministic order throughout (tf.data's default): with --seed a run
    # repeats exactly on CPU; the shuffles are seeded.
    ds = ds.map(lambda x, y: (to_input(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Every selected id is in this cache's manifest, so the count is known:
    # Keras shows epoch progress and does not warn about running out of data.
    batches = -(-len(selection) // batch_size)
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(batches))
    sharding = distribute.shard_options(per_file, training)
    if sharding is not None:
        ds = ds.with_options(sharding)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shares(folder, selection, id_of_row, training, shards=None):
    """:func:`selected_per_file` for a training pipeline of several workers (only they split by file), else []."""
    if not training or distribute.num_workers() <= 1:
        return []
    return selected_per_file(folder, selection, id_of_row, shards)


def _slice_row_id(row):
    return f"{row['key']}#{row['slice_index']}"  # as slice_id names an example


def _key(row):
    return row["key"]


def _nothing_selected(folder, unit):
    return errors.ConfigurationError(
        f"{folder}: no {unit} selected for this stage; the split leaves no usable {unit} "
        "(check the dataset's labels and --val-fraction)."
    )


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
        raise _nothing_selected(folder, "slices")
    ds = records.load(folder, with_meta=True, shuffle_files=training, seed=seed)
    return _selected_batches(ds, selection, label_lookup(selection), to_rgb, training=training,
                             batch_size=batch_size, seed=seed, shuffle_buffer=10000, cache_in_memory=cache_in_memory,
                             per_file=_shares(folder, selection, _slice_row_id, training))


# --------------------------------------------------------------------------
# Volumes (paper 000)
# --------------------------------------------------------------------------

#: Volumes a training pipeline holds in its shuffle buffer (one study per
#: shard, and the shards' order is shuffled as well): 8 x 11 MB at 224^3.
VOLUME_SHUFFLE_BUFFER = 8


@dataclasses.dataclass(frozen=True)
class VolumeRow:
    """One cached volume, as the manifest lists it."""

    key: str  # the example's key: its study's, with "-aug<i>" for an augmented copy
    patient_id: str
    label: str
    shard: str  # the shard file holding it (one study and its copies per shard)
    augmented: bool  # an extra minority-class volume (paper 000), never for validation


def volume_rows(folder):
    """The cache's volumes as :class:`VolumeRow` objects, and its class list."""
    manifest = records.read_manifest(folder)
    if manifest.get("pipeline") != "volume3d":
        raise errors.CacheError(f"{folder}: holds a {manifest.get('pipeline')} cache, not volume3d volumes.")
    rows = [VolumeRow(r["key"], r["patient_id"], r["label"], r["shard"], bool(r.get("suffix")))
            for r in manifest["records"]]
    return rows, list(manifest["classes"])


def select_volumes(rows, patients, classes, *, augmented):
    """``{volume key: class index}``: the patients' volumes, with their augmented copies when ``augmented``.

    Validation and test sets take ``augmented=False``; a fold's training
    set takes its own patients' copies only, so no copy of a validation
    patient is ever trained on.
    """
    patients = set(patients)
    return {r.key: classes.index(r.label) for r in rows
            if r.patient_id in patients and (augmented or not r.augmented)}


def _shards_of(rows, selection):
    """The shard files holding the selected volumes (a fold reads those only)."""
    return sorted({r.shard for r in rows if r.key in selection})


def volume_dataset(folder, selection, rows, *, training, batch_size, seed=0,
                   shuffle_buffer=VOLUME_SHUFFLE_BUFFER):
    """(volume float32 [D, H, W, 1] in [0, 1], label) batches streamed from the volume3d cache.

    Only the shards holding a selected volume are read, and nothing is kept
    in memory beyond ``shuffle_buffer`` volumes and the prefetched batches,
    so host memory does not grow with the number of studies. The cached
    uint8 grey levels become ``v / 255`` (:func:`covid_keras.preprocess.lung_volume.dequantize`).

    Args:
        folder: the volume3d cache. rows: its :func:`volume_rows`.
        selection: ``{volume key: class index}`` from :func:`select_volumes`.
        training: shuffle the shards and the volumes (seeded) when True.
        batch_size, seed, shuffle_buffer: as named.
    """
    if not selection:
        raise _nothing_selected(folder, "volumes")
    shards = _shards_of(rows, selection)
    ds = records.load(folder, with_meta=True, shuffle_files=training, seed=seed, shards=shards)

    def to_input(volume):
        return (tf.cast(volume, tf.float32) / 255.0)[..., None]

    return _selected_batches(ds, selection, table_lookup(selection, id_of=lambda ex: ex["key"]), to_input,
                             training=training, batch_size=batch_size, seed=seed, shuffle_buffer=shuffle_buffer,
                             cache_in_memory=False,
                             per_file=_shares(folder, selection, _key, training, shards))


def iter_volumes(folder, rows, selection):
    """Yields ``(key, uint8 volume [D, H, W])`` of the selected volumes, shard by shard (evaluation)."""
    shards = _shards_of(rows, selection)
    ds = records.load(folder, with_meta=True, shards=shards).map(lambda ex: (ex["key"], ex["input"]))
    for key, volume in ds.as_numpy_iterator():
        key = key.decode()
        if key in selection:
            yield key, volume


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


# --------------------------------------------------------------------------
# Images (papers 002-004: X-rays, CT images)
# --------------------------------------------------------------------------

#: Above this many bytes of selected uint8 images a training pipeline streams from the shards
#: each epoch instead of keeping them in memory (NIH ChestX-ray14 at 224^2 is 5.6 GB).
IMAGE_MEMORY_LIMIT = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class ImageRow:
    """One cached image, as the manifest lists it."""

    key: str
    patient_id: str
    label: str


def image_rows(folder):
    """The xray cache's images as :class:`ImageRow` objects, its class list and image shape."""
    manifest = records.read_manifest(folder)
    if manifest.get("pipeline") != "xray":
        raise errors.CacheError(f"{folder}: holds a {manifest.get('pipeline')} cache, not xray images.")
    rows = [ImageRow(r["key"], r["patient_id"], r["label"]) for r in manifest["records"]]
    return rows, list(manifest["classes"]), manifest.get("input_shape")


def select_images(rows, patients, classes, relabel=None):
    """``{image key: class index}`` of the patients' images.

    Args:
        rows: :func:`image_rows`. patients: the patient ids to use.
        classes: the class list of the model being trained (label order).
        relabel: ``cache label -> class name or None`` (None: the image is
            not part of this task), for a model trained on a subset of the
            cache's classes (paper 004's two steps); default: the label.
    """
    patients = set(patients)
    out = {}
    for r in rows:
        if r.patient_id not in patients:
            continue
        label = relabel(r.label) if relabel is not None else r.label
        if label is not None:
            out[r.key] = classes.index(label)
    return out


def image_dataset(folder, selection, *, training, batch_size, seed=0, memory_limit=IMAGE_MEMORY_LIMIT,
                  shape=None):
    """(image float32 [H, W, 3] in [0, 255], label) batches of the selected cached images.

    The cache holds one uint8 grey channel per image; it is repeated to the
    models' three channels after the shuffle, so the shuffle buffer and the
    in-memory copy hold 8-bit grey images. The selected images are kept in
    memory after the first epoch when they fit in ``memory_limit`` bytes
    (``shape``: the cache's image shape, to tell); else streamed.
    """
    if not selection:
        raise _nothing_selected(folder, "images")
    pixels = int(np.prod(shape)) if shape else 0
    in_memory = bool(pixels) and len(selection) * pixels <= memory_limit
    ds = records.load(folder, with_meta=True, shuffle_files=training, seed=seed)
    return _selected_batches(ds, selection, table_lookup(selection, id_of=lambda ex: ex["key"]), to_rgb,
                             training=training, batch_size=batch_size, seed=seed, shuffle_buffer=10000,
                             cache_in_memory=in_memory,
                             per_file=_shares(folder, selection, _key, training))


def iter_images(folder, selection):
    """Yields ``(key, uint8 grey image [H, W])`` of the selected images, in cache order (evaluation)."""
    ds = records.load(folder, with_meta=True).map(lambda ex: (ex["key"], ex["input"]))
    for key, image in ds.as_numpy_iterator():
        key = key.decode()
        if key in selection:
            yield key, image
