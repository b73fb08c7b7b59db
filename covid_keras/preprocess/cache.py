"""Building a preprocessing cache: a dataset once through a pipeline, as TFRecord shards.

:func:`build_cache` plans the shards (consecutive runs of records), skips
the ones a previous run finished, and runs the rest through
:func:`covid_keras.preprocess.pipelines.process_record` in worker processes
(every core by default). The parent writes each finished shard under a
temporary name and renames it when complete, with a ``shard-NNNNN.json``
beside it listing its records and the studies it skipped; so an
interrupted run leaves no half-written shard and a second run resumes.
A study that fails is reported by file and skipped; the others go on.
When every shard is done, ``manifest.json`` gathers them: the pipeline's
parameters, the package version, the class list and, per record, its
patient id, label, shape and content hash (SHA-256 of the input bytes).
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings

from covid_keras import __version__, errors
from covid_keras.data import records as tfrecords
from covid_keras.preprocess.pipelines import process_record


@dataclasses.dataclass
class BuildReport:
    """What :func:`build_cache` did."""

    folder: str
    shards_total: int
    shards_built: int
    shards_reused: int
    examples: int
    skipped: list  # [{"key", "error"}] of every failed study
    seconds: float

    def summary(self):
        lines = [
            f"{self.folder}: {self.shards_total} shards ({self.shards_built} built now, "
            f"{self.shards_reused} from an earlier run), {self.examples} examples, "
            f"{len(self.skipped)} studies skipped, {self.seconds:.1f} s."
        ]
        reasons = {}
        for s in self.skipped:
            reasons.setdefault(s["reason"], []).append(s)
        for reason, items in sorted(reasons.items()):
            lines.append(f"  skipped {len(items)} x {reason}:")
            for s in items[:10]:
                lines.append(f"    {s['error']}")
            if len(items) > 10:
                lines.append(f"    ... and {len(items) - 10} more (see shard-*.json)")
        return "\n".join(lines)


def record_key(record):
    """A stable, non-identifying key for a record: patient id + a hash of its paths."""
    digest = hashlib.sha1("|".join(record.paths).encode()).hexdigest()[:10]
    return f"{record.patient_id}-{digest}"


def paper_classes(labels):
    """The smallest paper class list (``CLASS_NAMES``) that holds every label, or None."""
    from covid_keras.data.datasets import CLASS_NAMES

    fits = [names for names in CLASS_NAMES.values() if set(labels) <= set(names)]
    return list(min(fits, key=len)) if fits else None


#: The paper class list (``CLASS_NAMES`` key) of each dataset's labels, so a
#: subset that lacks a class keeps the full list's index order.
DATASET_CLASSES = {
    "covid-ct-md": "ct3",
    "covidx-ct": "ct3",
    "synthetic-ct": "ct3",
    "sars-cov2-ct": "transfer_ct",
}


def _classes_for(records, classes, dataset=""):
    labels = sorted({r.label for r in records})
    if classes is None and dataset.split("/")[-1] in DATASET_CLASSES:
        from covid_keras.data.datasets import CLASS_NAMES

        classes = CLASS_NAMES[DATASET_CLASSES[dataset.split("/")[-1]]]
    if classes is None:
        return paper_classes(labels) or labels
    unknown = [lab for lab in labels if lab not in classes]
    if unknown:
        raise errors.ConfigurationError(
            f"labels {unknown} are not in the class list {list(classes)}; pass the paper's "
            "class list that matches the dataset."
        )
    return list(classes)


def plan_shards(records, records_per_shard):
    """Consecutive runs of ``records_per_shard`` records: [(name, [record, ...])]."""
    out = []
    for i, start in enumerate(range(0, len(records), records_per_shard)):
        out.append((f"shard-{i:05d}", records[start:start + records_per_shard]))
    return out


def default_records_per_shard(records, min_shards=1):
    """One study per shard for series folders; 256 images per shard otherwise.

    ``min_shards``: fewer records per shard when needed for at least that
    many shards (as many as training workers, so that each reads its own
    files: :func:`covid_keras.training.distribute.shard_options`).
    """
    per_shard = 1 if records and os.path.isdir(records[0].paths[0]) else 256
    if records and -(-len(records) // per_shard) < min_shards:
        per_shard = max(1, -(-len(records) // min_shards))
    return per_shard


def _fingerprint(options, classes, shards, dataset):
    content = {
        "options": dataclasses.asdict(options),
        "classes": classes,
        "dataset": dataset,
        "shards": [[record_key(r) for r in recs] for _, recs in shards],
        "version": __version__,
    }
    if options.interpolate > 1:
        # Interpolated slices are indexed on the finer grid (slice_index //
        # interpolate = original slice); caches from before that scheme differ.
        content["slice_index"] = "finer grid"
    if options.pipeline == "volume3d":
        # Volumes are stored as uint8 grey levels (lung_volume.quantize) and their crops
        # are seeded per study; float32 caches from before differ.
        content["storage"] = "uint8, crop seeds per study from its patient id and folder name"
    if options.pipeline == "xray":
        # One rounded uint8 grey channel per image; float32 RGB caches from before differ.
        content["storage"] = "uint8 grey"
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_fingerprint(records, options, classes, dataset, records_per_shard=None):
    """The fingerprint :func:`build_cache` gives these records and settings."""
    shards = plan_shards(list(records), records_per_shard or default_records_per_shard(records))
    return _fingerprint(options, list(classes), shards, dataset)


def _process_shard(name, recs, options, class_index):
    """Worker: every record of one shard -> (examples, manifest rows, skipped)."""
    examples, rows, skipped = [], [], []
    for record in recs:
        key = record_key(record)
        try:
            items = process_record(record, options)
        except errors.CovidKerasError as e:
            skipped.append({"key": key, "reason": type(e).__name__, "error": str(e)})
            continue
        except Exception as e:  # noqa: BLE001 - one broken study must not end the run
            skipped.append({"key": key, "reason": type(e).__name__,
                            "error": f"{record.paths[0]}: {type(e).__name__}: {e}"})
            continue
        for item in items:
            k = f"{key}-{item.suffix}" if item.suffix else key
            # Serialised here, in the worker, so the parent only writes bytes.
            examples.append(tfrecords.serialize_example(item.array, class_index[record.label],
                                                        record.patient_id, k, item.slice_index,
                                                        item.slice_label))
            rows.append({
                "key": k,
                "patient_id": record.patient_id,
                "label": record.label,
                "shape": list(item.array.shape),
                "slice_index": item.slice_index,
                "slice_label": item.slice_label,
                "suffix": item.suffix,  # "" for the study itself, "aug<i>" for an augmented copy
                "sha256": hashlib.sha256(item.array.tobytes()).hexdigest(),
            })
    return name, examples, rows, skipped


def _write_shard(folder, name, examples, rows, skipped):
    tfrecords.write_shard(os.path.join(folder, f"{name}.tfrecord"), examples)
    # The .json is written last: its presence marks the shard as finished.
    tfrecords.write_json(os.path.join(folder, f"{name}.json"), {"records": rows, "skipped": skipped})


def _prepare_folder(folder, plan, overwrite):
    os.makedirs(folder, exist_ok=True)
    for n in os.listdir(folder):
        if n.startswith(".tmp-"):  # left by an interrupted run
            os.remove(os.path.join(folder, n))
    plan_path = os.path.join(folder, tfrecords.PLAN)
    if os.path.exists(plan_path):
        with open(plan_path) as f:
            old = json.load(f)
        if old.get("fingerprint") != plan["fingerprint"]:
            if not overwrite:
                raise errors.CacheError(
                    f"{folder}: holds a cache built with other settings or data "
                    f"({old.get('pipeline')}, {len(old.get('shards', []))} shards); choose "
                    "another --out or pass --overwrite to replace it."
                )
            for n in os.listdir(folder):
                if n.startswith("shard-") or n in (tfrecords.MANIFEST, tfrecords.PLAN):
                    os.remove(os.path.join(folder, n))
    tfrecords.write_json(plan_path, plan)


def _finished(folder, name, retry_failed):
    path = os.path.join(folder, f"{name}.json")
    if not (os.path.exists(path) and os.path.exists(os.path.join(folder, f"{name}.tfrecord"))):
        return False
    if retry_failed:
        with open(path) as f:
            return not json.load(f)["skipped"]
    return True


def _write_manifest(folder, plan, options):
    rows, skipped, shards = [], [], []
    for s in plan["shards"]:
        with open(os.path.join(folder, f"{s['name']}.json")) as f:
            part = json.load(f)
        rows += [{**r, "shard": f"{s['name']}.tfrecord"} for r in part["records"]]
        skipped += part["skipped"]
        shards.append(f"{s['name']}.tfrecord")
    shapes = {tuple(r["shape"]) for r in rows}
    manifest = {
        "pipeline": options.pipeline,
        "options": dataclasses.asdict(options),
        "dtype": options.dtype,
        "input_shape": list(shapes.pop()) if len(shapes) == 1 else None,
        "classes": plan["classes"],
        "dataset": plan["dataset"],
        "package_version": __version__,
        "shards": shards,
        "records": rows,
        "skipped": skipped,
        "fingerprint": plan["fingerprint"],
    }
    tfrecords.write_json(os.path.join(folder, tfrecords.MANIFEST), manifest)
    return manifest


def build_cache(records, out, options, *, dataset="", classes=None, workers=None,
                records_per_shard=None, overwrite=False, retry_failed=False, progress=True,
                stop_after=None):
    """Runs ``records`` through a pipeline into TFRecord shards under ``out``.

    Args:
        records: :class:`covid_keras.data.Record` list (sorted; the order
            defines the shards).
        out: the cache folder.
        options: a :class:`PipelineOptions`.
        dataset: the dataset's name, kept in the manifest.
        classes: the class list (label order); default: the sorted labels.
        workers: processes; default every core, 1 runs in this process.
        records_per_shard: records per shard; default one study per shard
            for series folders and 256 for images.
        overwrite: replace a cache built with other settings.
        retry_failed: rebuild finished shards that skipped studies.
        progress: show a progress bar.
        stop_after: stop after this many shards are written (tests use it
            to simulate an interrupted run).

    Returns:
        A :class:`BuildReport`.

    Raises:
        CacheError: ``out`` holds another cache and ``overwrite`` is False.
        ConfigurationError: no records, or a label outside ``classes``.
    """
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Two processes building one folder (the workers of a multi-worker run on one machine) take turns;
    # the second finds every shard finished and reuses it.
    with _lock(f"{out}.lock"):
        return _build_cache(records, out, options, dataset=dataset, classes=classes, workers=workers,
                            records_per_shard=records_per_shard, overwrite=overwrite, retry_failed=retry_failed,
                            progress=progress, stop_after=stop_after)


@contextlib.contextmanager
def _lock(path):
    """An exclusive lock on ``path``; none where the filesystem or the system has no ``flock`` (one builder)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # e.g. Lustre without -o flock, NFS without lockd
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_cache(records, out, options, *, dataset, classes, workers, records_per_shard, overwrite, retry_failed,
                 progress, stop_after):
    t0 = time.perf_counter()
    records = list(records)
    if not records:
        raise errors.ConfigurationError(f"{out}: no records to preprocess; check --dataset and --data.")
    classes = _classes_for(records, classes, dataset)
    class_index = {c: i for i, c in enumerate(classes)}
    shards = plan_shards(records, records_per_shard or default_records_per_shard(records))
    plan = {
        "pipeline": options.pipeline,
        "options": dataclasses.asdict(options),
        "classes": classes,
        "dataset": dataset,
        "package_version": __version__,
        "shards": [{"name": name, "records": [record_key(r) for r in recs]} for name, recs in shards],
        "fingerprint": _fingerprint(options, classes, shards, dataset),
    }
    _prepare_folder(out, plan, overwrite)
    todo = [(name, recs) for name, recs in shards if not _finished(out, name, retry_failed)]
    reused = len(shards) - len(todo)
    workers = workers or os.cpu_count() or 1

    from tqdm import tqdm

    bar = tqdm(total=sum(len(r) for _, r in todo), desc=f"{options.pipeline} cache", unit="study",
               disable=not progress, file=sys.stderr)
    shard_sizes = {name: len(recs) for name, recs in todo}
    built = 0
    try:
        for name, examples, rows, skipped in _run(todo, options, class_index, workers):
            _write_shard(out, name, examples, rows, skipped)
            built += 1
            bar.update(shard_sizes[name])
            for s in skipped:
                warnings.warn(f"skipped: {s['error']}", stacklevel=2)
            if stop_after is not None and built >= stop_after:
                break
    finally:
        bar.close()
    done = all(_finished(out, s["name"], False) for s in plan["shards"])
    manifest = _write_manifest(out, plan, options) if done else None
    skipped = manifest["skipped"] if manifest else []
    return BuildReport(
        folder=out,
        shards_total=len(shards),
        shards_built=built,
        shards_reused=reused,
        examples=len(manifest["records"]) if manifest else 0,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
    )


def _run(todo, options, class_index, workers):
    """Yields finished shards, in this process or in a spawn-started pool."""
    if workers == 1 or len(todo) <= 1:
        for name, recs in todo:
            yield _process_shard(name, recs, options, class_index)
        return
    # spawn, not fork: the parent may hold TensorFlow's threads.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_process_shard, name, recs, options, class_index) for name, recs in todo]
        try:
            for fut in concurrent.futures.as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()
