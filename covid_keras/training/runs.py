"""Run folders: the config used, logs, checkpoints, and resuming.

A run folder holds ``config.json`` (every setting of the run),
``split.json`` (the patient split), ``logs/<stage>.csv`` (Keras CSVLogger),
``tensorboard/<stage>/``, ``checkpoints/<stage>/`` (BackupAndRestore state
while a stage runs), ``stages/<stage>.weights.h5`` + ``.json`` (the best
weights and metrics of each finished stage) and ``summary.json`` at the end.

The folder's default name is derived from the configuration, so running the
same command again finds the interrupted run and resumes it; a finished
stage is never trained again, a running one continues from its last
finished epoch.
"""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np

from covid_keras import errors


def config_hash(config):
    """Eight hex digits identifying a configuration (JSON-serialisable dict)."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


@dataclasses.dataclass
class RunFolder:
    """A run's folder. ``RunFolder.open(path, config)`` creates or resumes it."""

    path: str

    @classmethod
    def open(cls, path, config, fresh=False, resume_keys_ignored=("epochs_scale",)):
        """Creates the folder, or checks that an existing one ran ``config``.

        Raises:
            ConfigurationError: the folder holds a run with another config
                (pass ``fresh=True``, i.e. ``--fresh``, to start over).
        """
        path = os.fspath(path)
        if fresh and os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(path, exist_ok=True)
        run = cls(path)
        config_path = run.file("config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                old = json.load(f)
            if _comparable(old) != _comparable(config):
                new = _comparable(config)
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise errors.ConfigurationError(
                    f"{path}: holds a run with other settings ({', '.join(changed[:6])} differ); "
                    "pass --fresh to start it over or --run-dir to use another folder."
                )
        else:
            write_json(config_path, config)
        return run

    def file(self, *parts):
        full = os.path.join(self.path, *parts)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    def stage_done(self, stage):
        return os.path.exists(self.file("stages", f"{stage}.json"))

    def stage_result(self, stage):
        with open(self.file("stages", f"{stage}.json")) as f:
            return json.load(f)

    def best_val_accuracy(self, stage):
        """The best val_accuracy logged so far in a stage (for a resumed checkpoint), or None."""
        path = self.file("logs", f"{stage}.csv")
        if not os.path.exists(path):
            return None
        import csv

        with open(path) as f:
            values = [_number(r.get("val_accuracy")) for r in csv.DictReader(f)]
        values = [v for v in values if v is not None]
        return max(values) if values else None


def _number(text):
    """A CSV cell as a float, or None (empty, or Keras' ``NA`` for a stage without validation data)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if value != value else value


def _comparable(config):
    # Through JSON, so a tuple in memory equals the list it was saved as.
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    return {k: v for k, v in config.items() if k not in ("run_dir", "fresh", "debug", "quiet")}


def write_json(path, obj):
    """Writes JSON atomically (numpy scalars converted)."""
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=default)
    os.replace(tmp, path)


def write_records(run, records):
    """Writes ``records.json``: the run's study records (pseudonymous patient id, label, paths, dataset, covariates).

    The evaluation commands (``evaluate.audit``, ``evaluate.demographics``,
    ``evaluate.gradcam``) read the run's data back from it, whatever command
    and dataset adapter made the records. The patient ids are the
    pseudonymous ones the split uses; the paths are the input files as the
    adapter found them (so a folder named after a patient keeps its name
    here, as in the dataset: the run folder belongs with the data, and the
    reports name cases by key and id only); ``extra`` keeps only JSON-ready
    values.
    """
    from covid_keras.preprocess.cache import record_key

    def ready(value):
        return isinstance(value, (str, int, float, bool)) or value is None

    write_json(run.file("records.json"), [
        {"key": record_key(r), "patient_id": r.patient_id, "label": r.label, "paths": list(r.paths),
         "dataset": r.dataset, "slice_labels": [list(p) for p in r.slice_labels] if r.slice_labels else None,
         "age": r.age, "sex": r.sex, "extra": {k: v for k, v in (r.extra or {}).items() if ready(v)}}
        for r in records])


def read_records(run_dir):
    """The run's :class:`covid_keras.data.datasets.Record` list from its ``records.json``.

    Raises:
        ConfigurationError: the run has no ``records.json`` (an older run: train it again).
    """
    from covid_keras.data.datasets import Record

    rows = read_json(os.path.join(os.fspath(run_dir), "records.json"),
                     "the run is older than the evaluation commands; run its training command again.")
    return [Record(patient_id=r["patient_id"], label=r["label"], paths=tuple(r["paths"]), dataset=r["dataset"],
                   slice_labels=tuple(tuple(p) for p in r["slice_labels"]) if r["slice_labels"] else None,
                   age=r["age"], sex=r["sex"], extra=r["extra"]) for r in rows]


def read_json(path, what):
    """Reads a JSON file another command wrote, with a clear error when missing."""
    if not os.path.exists(path):
        raise errors.ConfigurationError(f"{path}: not found; {what}")
    with open(path) as f:
        return json.load(f)
