"""Paper 001, levels 2 and 3: the patient heads, then the ensemble.

Per-slice features are extracted once per study from the slice classifier
(``features``: the 1024-d ``features`` layer; ``weighted``: 3072-d, those
times each class probability) and stored in the run folder. The heads
(paper 001's Maxpool, Maxpool-Weighted, BiLSTM and BiLSTM-Weighted, or any
registered with :func:`covid_keras.models.register_head`, in a module
given to ``--import``) train on padded, masked slice sequences; the
ensemble on their concatenated probabilities, one input per trained head.
Everything uses the slice-level run's patient split: heads and ensemble
select their best weights on the validation patients and are reported on
the held-out test patients. Settings come from the recipes
``patient_heads`` and ``ensemble_mlp`` (:mod:`covid_keras.recipes.multiscale`).
"""

import dataclasses
import glob
import os

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import classification_report
from covid_keras.evaluation.predictions import write_predictions
from covid_keras.extensions import import_modules, reimport_modules
from covid_keras.recipes import ENSEMBLE, PATIENT_HEADS, config_class
from covid_keras.training import distribute, pipelines, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.inference import Predictor
from covid_keras.training.runs import read_json, write_json
from covid_keras.training.stages import StageData, run_stages

PatientLevelConfig = config_class(
    PATIENT_HEADS, "PatientLevelConfig",
    "Settings of the patient-level heads (recipe patient_heads: paper 001 defaults).")
EnsembleConfig = config_class(
    ENSEMBLE, "EnsembleConfig", "Settings of the ensemble MLP (recipe ensemble_mlp: paper 001 defaults).")


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
    """Per-study ``features`` and slice probabilities, extracted once into ``out_path`` (.npz)."""
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
    """A head's per-slice features: ``"features"`` (as extracted) or ``"weighted"`` (times each class probability)."""
    from covid_keras.models import weighted_features

    if kind not in ("features", "weighted"):
        raise errors.ConfigurationError(f"`kind` must be 'features' or 'weighted'. Received: kind={kind!r}")
    return features if kind == "features" else weighted_features(features, probabilities)


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


def _study_rows(studies, probabilities, classes, records=None):
    """One predictions row per study (key, pseudonymous patient id, class, the answer's probabilities, covariates)."""
    from covid_keras.evaluation.predictions import case_row

    records = records or {}
    return [case_row(key, pid, classes[int(label)], p, classes, record=records.get(key))
            for (key, pid, label, _, _), p in zip(studies, probabilities)]


def _slice_run_records(slice_run):
    """``{record key: Record}`` of the slice-level run (its ``records.json``), or {} for a run from before it."""
    from covid_keras.preprocess.cache import record_key
    from covid_keras.training.runs import read_records

    try:
        return {record_key(r): r for r in read_records(slice_run)}
    except errors.ConfigurationError:
        return {}


def _predict_heads(predictors, features, studies, batch_size):
    """[n_studies, heads * classes] concatenated head probabilities, in the order of ``predictors``.

    ``predictors``: name -> :class:`Predictor`; ``features``: name -> the
    feature kind the head takes.
    """
    columns = []
    for name, predictor in predictors.items():
        items = [(feature_set(f, p, features[name]), label) for _, _, label, f, p in studies]
        columns.append(predictor(sequence_dataset(items, training=False, batch_size=batch_size)))
    return np.concatenate(columns, axis=-1)


# --------------------------------------------------------------------------
# Level 2: heads
# --------------------------------------------------------------------------


@distribute.distributed
def train_patient_level(config, log=None):
    """Trains the patient heads on a slice-level run; returns the summary.

    Imports ``config.import_modules`` first, so ``config.heads`` may name
    any registered head (:func:`covid_keras.models.register_head`); each
    head gets the features its registration names. The summary records the
    heads' order, features and builders and the imported modules (its own
    and the slice-level run's), which :func:`train_ensemble` imports again.

    Raises:
        ConfigurationError: an unknown head, a module that cannot be
            imported, or no finished slice-level run.
    """
    from covid_keras import models

    log = log or printer(config.quiet)
    # Before seeding: whatever a module draws at import leaves the seeded sequence alone.
    imported = import_modules(config.import_modules, log=log)
    specs = {name: models.get_head(name) for name in config.heads}
    stage = config.stage_list()[0]
    seed_everything(config.seed)
    slice_run, source = source_run(config.slice_run, config.runs_root, "slice_level", "--slice-run")
    reimport_modules(source.get("imports", []), slice_run)  # a slice model of one's own (--backbone)
    split = read_json(os.path.join(slice_run, "split.json"), "the slice-level run has no split.json.")
    # Without --import, named as before the flag existed (hash_default=False).
    run = runner.open_run("patient_level", None, config, log, extra={"slice_run": os.path.abspath(slice_run)})
    classes = source["classes"]
    studies = extract_features(source["model"], source["cache"], run.file("features.npz"), log=log)
    records = _slice_run_records(slice_run)

    paths, reports = {}, {}
    for name, spec in specs.items():
        train_items = _items(studies, split["train"], spec.features)
        val_items = _items(studies, split["val"], spec.features)
        head = spec.build(train_items[0][0].shape[-1], len(classes), l1=config.l1, l2=config.l2,
                          lstm_units=config.lstm_units)
        data = StageData(train=sequence_dataset(train_items, training=True, batch_size=config.batch_size,
                                                seed=config.seed),
                         val=sequence_dataset(val_items, training=False, batch_size=config.batch_size),
                         labels=[y for _, y in train_items], what="studies", counts={"val": len(val_items)})
        # The recipe's one stage, once per head under the head's name (its files in the run folder).
        run_stages(head, run, [dataclasses.replace(stage, name=name)], lambda _: data, classes,
                   verbose=config.verbose, log=log)
        paths[name] = run.file("heads", f"{name}.keras")
        head.save(paths[name])
        predictor = Predictor(head)
        for part in ("val", "test"):
            part_items = _items(studies, split[part], spec.features)
            if part_items:
                ds = sequence_dataset(part_items, training=False, batch_size=config.batch_size)
                probs = predictor(ds)
                reports.setdefault(name, {})[part] = classification_report([y for _, y in part_items], probs, classes)
                members = set(split[part])
                chosen = [s for s in studies if s[1] in members]  # _items' order
                write_predictions(run.file(f"predictions_{name}_{part}.json"),
                                  _study_rows(chosen, probs, classes, records),
                                  classes=classes, level="study", answer=name, part=part)
    summary = {"command": "train.patient_level", "recipe": PATIENT_HEADS.export_metadata(config),
               "slice_run": os.path.abspath(slice_run), "classes": classes,
               "features": run.file("features.npz"), "heads": paths, "head_order": list(specs),
               "head_specs": {name: {"features": spec.features, "builder": spec.builder_path}
                              for name, spec in specs.items()},
               "imports": imported, "slice_imports": source.get("imports", []), "reports": reports,
               "slice_model": source["model"], "pipeline": source.get("pipeline"),
               "slice_recipe": source.get("recipe")}
    write_json(run.file("summary.json"), summary)
    return summary


# --------------------------------------------------------------------------
# Level 3: ensemble
# --------------------------------------------------------------------------


@distribute.distributed
def train_ensemble(config, log=None):
    """Trains the ensemble MLP on the heads' probabilities; returns the summary.

    One input per head the patient-level run trained, in its order; the
    modules it imported (``--import``) are imported again first. With
    ``config.export_dir``, exports slice model, heads and ensemble as one
    SavedModel (:func:`covid_keras.serving.export_patient_pipeline`).

    Raises:
        ConfigurationError: no finished patient-level run, or a module it
            imported is gone.
    """
    import keras

    from covid_keras import models

    log = log or printer(config.quiet)
    patient_run, source = source_run(config.patient_run, config.runs_root, "patient_level", "--patient-run")
    reimport_modules(source.get("slice_imports", []) + source.get("imports", []), patient_run)
    seed_everything(config.seed)
    split = read_json(os.path.join(source["slice_run"], "split.json"), "the slice-level run has no split.json.")
    order = source.get("head_order") or list(source["heads"])
    features = {name: _head_features(source, name) for name in order}
    run = runner.open_run("ensemble", None, config, log, extra={"patient_run": os.path.abspath(patient_run)})
    classes = source["classes"]
    heads = {name: keras.saving.load_model(source["heads"][name], safe_mode=True, compile=False) for name in order}
    predictors = {name: Predictor(head) for name, head in heads.items()}
    studies = load_features(source["features"])
    parts, chosen_studies = {}, {}
    for part in ("train", "val", "test"):
        members = set(split[part])
        chosen = [s for s in studies if s[1] in members]
        if chosen:
            parts[part] = (_predict_heads(predictors, features, chosen, 64), np.array([s[2] for s in chosen]))
            chosen_studies[part] = chosen
    import tensorflow as tf

    def batches(part, training):
        x, y = parts[part]
        ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y))
        if training:
            ds = ds.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        return ds.batch(config.batch_size)

    log(f"[ensemble] over {len(order)} heads: {', '.join(order)}")
    ensemble = models.ensemble_mlp(num_heads=len(order), num_classes=len(classes), l1=config.l1, l2=config.l2)
    data = StageData(train=batches("train", True), val=batches("val", False), labels=parts["train"][1],
                     what="studies", counts={"val": len(parts["val"][1])})
    run_stages(ensemble, run, config.stage_list(), lambda _: data, classes, verbose=config.verbose, log=log)
    path = run.file("ensemble.keras")
    ensemble.save(path)
    probabilities = {part: ensemble.predict(x, verbose=0) for part, (x, _) in parts.items() if part != "train"}
    reports = {part: classification_report(parts[part][1], p, classes) for part, p in probabilities.items()}
    # Per study, the probabilities the reports rest on, under the study key and patient id
    # the run's split uses (folder-derived for folder datasets, as in split.json).
    predictions, records = {}, _slice_run_records(source["slice_run"])
    for part, probs in probabilities.items():
        rows = _study_rows(chosen_studies[part], probs, classes, records)
        predictions[part] = write_predictions(run.file(f"predictions_{part}.json"), rows, classes=classes,
                                              level="study", answer="ensemble", part=part)
    summary = {"command": "train.ensemble", "patient_run": os.path.abspath(patient_run), "classes": classes,
               "head_order": order, "model": path, "reports": reports, "predictions": predictions}
    if config.export_dir:
        from covid_keras import serving

        slice_model = keras.saving.load_model(source["slice_model"], safe_mode=True, compile=False)
        summary["exported"] = serving.export_patient_pipeline(
            slice_model, heads, ensemble, config.export_dir, head_features=features, class_names=classes,
            preprocessing=source.get("pipeline"), metadata=_pipeline_metadata(config, source, order, features))
    write_json(run.file("summary.json"), summary)
    return summary


def _head_features(source, name):
    """The feature kind a trained head takes: as the run recorded it (older runs: as registered)."""
    from covid_keras import models

    recorded = (source.get("head_specs") or {}).get(name)
    return recorded["features"] if recorded else models.get_head(name).features


def _pipeline_metadata(config, source, order, features):
    """What the exported patient pipeline records of how it was made (no patient data).

    ``recipe``: the ensemble recipe's record, with the builder arguments
    that rebuild this ensemble and the classes and preprocessing of this
    chain; ``heads``: name, features and builder of each head, in the
    ensemble's input order; ``patient_recipe`` and ``slice_recipe``: the
    records of the runs it rests on (None for runs that kept none).
    """
    classes = source["classes"]
    recipe = ENSEMBLE.export_metadata(config)
    recipe["builder_args"] = {**recipe["builder_args"], "num_heads": len(order), "num_classes": len(classes)}
    recipe["classes"] = list(classes)
    if source.get("pipeline"):
        recipe["pipeline"] = source["pipeline"]
    specs = source.get("head_specs") or {}
    heads = [{"name": name, "features": features[name], "builder": (specs.get(name) or {}).get("builder")}
             for name in order]
    return {"recipe": recipe, "classes": list(classes), "pipeline": source.get("pipeline"), "heads": heads,
            "patient_recipe": source.get("recipe"), "slice_recipe": source.get("slice_recipe"),
            "imports": [{"module": r["module"], "name": r["name"]}
                        for r in source.get("slice_imports", []) + source.get("imports", [])]}
