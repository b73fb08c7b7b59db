"""Paper 001, levels 2 and 3: the four patient heads, then the ensemble.

Per-slice features are extracted once per study from the slice classifier
(features A: the 1024-d ``features`` layer; features B: 3072-d, A times each
class probability) and stored in the run folder. The four heads
(Maxpool, Maxpool-Weighted, BiLSTM, BiLSTM-Weighted) train on padded,
masked slice sequences; the ensemble on their 12 concatenated
probabilities. Everything uses the slice-level run's patient split: heads
and ensemble select their best weights on the validation patients and are
reported on the held-out test patients.
"""

import dataclasses
import glob
import os

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import classification_report
from covid_keras.training import pipelines
from covid_keras.training.fitting import (
    balanced_class_weights,
    describe_class_weights,
    fit_stage,
    printer,
    seed_everything,
)
from covid_keras.models.ensemble import HEAD_ORDER
from covid_keras.training.inference import Predictor
from covid_keras.training.runs import RunFolder, config_hash, read_json, write_json

_HEAD_KINDS = {
    "maxpool": ("A", "maxpool_head"),
    "maxpool_weighted": ("B", "maxpool_head"),
    "bilstm": ("A", "bilstm_head"),
    "bilstm_weighted": ("B", "bilstm_head"),
}
#: The heads, in the ensemble's input order, ``models.ensemble.HEAD_ORDER``
#: (the one list the exporter uses too): (feature set, builder).
HEADS = {name: _HEAD_KINDS[name] for name in HEAD_ORDER}


@dataclasses.dataclass
class PatientLevelConfig:
    """Settings of the patient-level heads (paper 001 defaults)."""

    slice_run: str | None = None
    heads: tuple = tuple(HEADS)
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 25
    l1: float = 1e-5
    l2: float = 1e-4
    lstm_units: int = 512
    seed: int = 0
    run_dir: str | None = None
    runs_root: str = "runs"
    fresh: bool = False
    verbose: int = 2
    quiet: bool = False

    def __post_init__(self):
        unknown = sorted(set(self.heads) - set(HEADS))
        if unknown:
            raise errors.ConfigurationError(f"unknown heads {unknown}; --heads takes some of {', '.join(HEADS)}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise errors.ConfigurationError(
                f"--epochs and --batch-size must be at least 1. Received: epochs={self.epochs}, "
                f"batch_size={self.batch_size}"
            )


@dataclasses.dataclass
class EnsembleConfig:
    """Settings of the ensemble MLP (paper 001 defaults)."""

    patient_run: str | None = None
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 200
    l1: float = 1e-5
    l2: float = 1e-4
    seed: int = 0
    run_dir: str | None = None
    runs_root: str = "runs"
    export_dir: str | None = "saved_models"
    fresh: bool = False
    verbose: int = 0
    quiet: bool = False


def latest_run(runs_root, command, what):
    """The newest finished run folder of ``command`` (has summary.json)."""
    found = sorted(glob.glob(os.path.join(runs_root, command, "*", "summary.json")), key=os.path.getmtime)
    if not found:
        raise errors.ConfigurationError(
            f"{os.path.join(runs_root, command)}: no finished run found; {what}"
        )
    return os.path.dirname(found[-1])


def source_run(path, runs_root, command, flag):
    """``(folder, summary)`` of the run a level builds on: ``path`` or the newest finished one."""
    hint = f"run `python -m train.{command}` to the end first"
    folder = path or latest_run(runs_root, command, f"{hint} or pass {flag}.")
    return folder, read_json(os.path.join(folder, "summary.json"), f"{hint}.")


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------


def extract_features(model_path, cache, out_path, batch_size=64, log=print):
    """Per-study features A and slice probabilities, extracted once into ``out_path`` (.npz)."""
    import keras

    if os.path.exists(out_path):
        log(f"features: reusing {out_path}")
        return load_features(out_path)
    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    extractor = Predictor(keras.Model(model.inputs, [model.get_layer("features").output, model.output]))
    arrays, index = {}, []
    for key, pid, label, slices, _, _ in pipelines.study_slices(cache):
        feats, probs = extractor(pipelines.to_rgb(slices), batch_size=batch_size)
        arrays[f"{key}/features"] = feats.astype(np.float32)
        arrays[f"{key}/probabilities"] = probs.astype(np.float32)
        index.append({"key": key, "patient_id": pid, "label": label, "slices": len(slices)})
    tmp = out_path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
    write_json(out_path + ".json", index)
    log(f"features: extracted {len(index)} studies into {out_path}")
    return load_features(out_path)


def load_features(path):
    """``[(key, patient_id, label, features [n, 1024], probabilities [n, 3])]``."""
    import json

    with open(path + ".json") as f:
        index = json.load(f)
    data = np.load(path)
    return [(e["key"], e["patient_id"], e["label"], data[f"{e['key']}/features"],
             data[f"{e['key']}/probabilities"]) for e in index]


def feature_set(features, probabilities, kind):
    """Features A (as extracted) or B (weighted by each class probability)."""
    from covid_keras.models import weighted_features

    return features if kind == "A" else weighted_features(features, probabilities)


def sequence_dataset(items, *, training, batch_size, seed=0):
    """``tf.data`` of padded, masked slice sequences: ({features, mask}, label) batches."""
    import tensorflow as tf

    width = items[0][0].shape[-1]

    def generate():
        for feats, label in items:
            yield {"slice_features": feats, "slice_mask": np.ones(len(feats), bool)}, label

    spec = ({"slice_features": tf.TensorSpec([None, width], tf.float32),
             "slice_mask": tf.TensorSpec([None], tf.bool)}, tf.TensorSpec([], tf.int64))
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    # One element per study: telling tf.data lets Keras show progress, not warn.
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(items))).cache()
    if training:
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    return ds.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _items(studies, patients, kind):
    chosen = [s for s in studies if s[1] in set(patients)]
    return [(feature_set(f, p, kind), label) for _, _, label, f, p in chosen]


def _predict_heads(predictors, studies, batch_size):
    """[n_studies, 4 * 3] concatenated head probabilities, in HEAD_ORDER (``predictors``: name -> :class:`Predictor`)."""
    columns = []
    for name in HEAD_ORDER:
        predictor, kind = predictors[name], HEADS[name][0]
        items = [(feature_set(f, p, kind), label) for _, _, label, f, p in studies]
        columns.append(predictor(sequence_dataset(items, training=False, batch_size=batch_size)))
    return np.concatenate(columns, axis=-1)


# --------------------------------------------------------------------------
# Level 2: heads
# --------------------------------------------------------------------------


def train_patient_level(config, log=None):
    """Trains the four patient heads on a slice-level run; returns the summary."""
    from covid_keras import models

    log = log or printer(config.quiet)
    seed_everything(config.seed)
    slice_run, source = source_run(config.slice_run, config.runs_root, "slice_level", "--slice-run")
    split = read_json(os.path.join(slice_run, "split.json"), "the slice-level run has no split.json.")
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("run_dir", "fresh", "verbose", "quiet")}
    settings["slice_run"] = os.path.abspath(slice_run)
    run = RunFolder.open(config.run_dir or os.path.join(config.runs_root, "patient_level", config_hash(settings)),
                         settings, fresh=config.fresh)
    log(f"run folder: {run.path}")
    classes = source["classes"]
    studies = extract_features(source["model"], source["cache"], run.file("features.npz"), log=log)

    paths, reports = {}, {}
    for name in config.heads:
        kind, builder = HEADS[name]
        train_items = _items(studies, split["train"], kind)
        val_items = _items(studies, split["val"], kind)
        labels = np.array([y for _, y in train_items])
        weights = balanced_class_weights(labels, len(classes))
        log(f"[{name}] {len(train_items)} training / {len(val_items)} validation studies; class weights: "
            f"{describe_class_weights(weights, classes, np.bincount(labels, minlength=len(classes)))}")
        kwargs = {"feature_dim": train_items[0][0].shape[-1], "num_classes": len(classes),
                  "l1": config.l1, "l2": config.l2, "name": f"{name}_head"}
        if builder == "bilstm_head":
            kwargs["lstm_units"] = config.lstm_units
        head = getattr(models, builder)(**kwargs)
        fit_stage(head, run, name, sequence_dataset(train_items, training=True, batch_size=config.batch_size,
                                                    seed=config.seed),
                  sequence_dataset(val_items, training=False, batch_size=config.batch_size),
                  learning_rate=config.learning_rate, epochs=config.epochs, class_weight=weights,
                  verbose=config.verbose, log=log)
        paths[name] = run.file("heads", f"{name}.keras")
        head.save(paths[name])
        predictor = Predictor(head)
        for part in ("val", "test"):
            part_items = _items(studies, split[part], kind)
            if part_items:
                ds = sequence_dataset(part_items, training=False, batch_size=config.batch_size)
                probs = predictor(ds)
                reports.setdefault(name, {})[part] = classification_report([y for _, y in part_items], probs, classes)
    summary = {"command": "train.patient_level", "slice_run": os.path.abspath(slice_run), "classes": classes,
               "features": run.file("features.npz"), "heads": paths, "reports": reports,
               "slice_model": source["model"], "pipeline": source.get("pipeline")}
    write_json(run.file("summary.json"), summary)
    return summary


# --------------------------------------------------------------------------
# Level 3: ensemble
# --------------------------------------------------------------------------


def train_ensemble(config, log=None):
    """Trains the ensemble MLP on the heads' probabilities; returns the summary."""
    import keras

    from covid_keras import models

    log = log or printer(config.quiet)
    seed_everything(config.seed)
    patient_run, source = source_run(config.patient_run, config.runs_root, "patient_level", "--patient-run")
    split = read_json(os.path.join(source["slice_run"], "split.json"), "the slice-level run has no split.json.")
    missing = [h for h in HEADS if h not in source["heads"]]
    if missing:
        raise errors.ConfigurationError(
            f"{patient_run}: the ensemble needs all four heads; {', '.join(missing)} were not trained "
            "(run train.patient_level with every head)."
        )
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("run_dir", "fresh", "verbose", "quiet", "export_dir")}
    settings["patient_run"] = os.path.abspath(patient_run)
    run = RunFolder.open(config.run_dir or os.path.join(config.runs_root, "ensemble", config_hash(settings)),
                         settings, fresh=config.fresh)
    log(f"run folder: {run.path}")
    classes = source["classes"]
    heads = {name: keras.saving.load_model(source["heads"][name], safe_mode=True, compile=False) for name in HEADS}
    predictors = {name: Predictor(head) for name, head in heads.items()}
    studies = load_features(source["features"])
    parts, keys = {}, {}
    for part in ("train", "val", "test"):
        chosen = [s for s in studies if s[1] in set(split[part])]
        if chosen:
            parts[part] = (_predict_heads(predictors, chosen, 64), np.array([s[2] for s in chosen]))
            keys[part] = [(s[0], s[1]) for s in chosen]
    import tensorflow as tf

    def batches(part, training):
        x, y = parts[part]
        ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y))
        if training:
            ds = ds.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        return ds.batch(config.batch_size)

    labels = parts["train"][1]
    weights = balanced_class_weights(labels, len(classes))
    log(f"[ensemble] {len(labels)} training / {len(parts['val'][1])} validation studies; class weights: "
        f"{describe_class_weights(weights, classes, np.bincount(labels, minlength=len(classes)))}")
    ensemble = models.ensemble_mlp(num_heads=len(HEADS), num_classes=len(classes), l1=config.l1, l2=config.l2)
    fit_stage(ensemble, run, "ensemble", batches("train", True), batches("val", False),
              learning_rate=config.learning_rate, epochs=config.epochs, class_weight=weights,
              verbose=config.verbose, log=log)
    path = run.file("ensemble.keras")
    ensemble.save(path)
    probabilities = {part: ensemble.predict(x, verbose=0) for part, (x, _) in parts.items() if part != "train"}
    reports = {part: classification_report(parts[part][1], p, classes) for part, p in probabilities.items()}
    # Per study, the probabilities the reports rest on, under the study key and patient id
    # the run's split uses (folder-derived for folder datasets, as in split.json).
    predictions = [{"part": part, "key": key, "patient_id": pid, "label": int(y), "probabilities": p.tolist()}
                   for part, probs in probabilities.items()
                   for (key, pid), y, p in zip(keys[part], parts[part][1], probs)]
    write_json(run.file("predictions.json"), predictions)
    summary = {"command": "train.ensemble", "patient_run": os.path.abspath(patient_run), "classes": classes,
               "model": path, "reports": reports, "predictions": run.file("predictions.json")}
    if config.export_dir:
        from covid_keras import serving

        slice_model = keras.saving.load_model(source["slice_model"], safe_mode=True, compile=False)
        summary["exported"] = serving.export_patient_pipeline(
            slice_model, heads, ensemble, config.export_dir,
            metadata={"classes": classes, "pipeline": source.get("pipeline")})
    write_json(run.file("summary.json"), summary)
    return summary
