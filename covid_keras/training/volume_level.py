"""Paper 000: the 3-D ResNet on whole CT volumes, 4-fold cross-validation by patient, then a final model.

The chain (recipe ``resnet50_3d``, docs/papers.md paper 000)::

    records -> volume3d cache (uint8 TFRecord shards, one study per shard, with the
               CAP / Normal studies' two augmented copies beside them)
            -> cross_validate: per fold, the training patients' volumes + their copies,
               the validation patients' volumes only -> run_stages -> fold report
            -> final model on every patient -> saved_models/resnet50_3d/<version>

Augmented copies (paper 000, Table 1) are made once per minority-class
study by the cache, and a fold trains on the copies of its own training
patients only: :func:`fold_volumes` selects them, and no copy of a
validation patient is ever read for training. Volumes stream from the
shards (:func:`covid_keras.training.pipelines.volume_dataset`), so host
memory does not grow with the number of studies.

Each fold reports Table 4's columns (accuracy, COVID-19 sensitivity and
specificity) with every class's sensitivity and the confusion matrix;
``crossval.json`` holds them with their mean and standard deviation over
the folds, and :func:`table4` is the view the command line prints.
"""

import concurrent.futures
import dataclasses
import multiprocessing

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import classification_report
from covid_keras.evaluation.predictions import covariates as record_covariates
from covid_keras.recipes import RESNET50_3D, config_class
from covid_keras.training import crossval, distribute, pipelines, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.runs import write_json
from covid_keras.training.stages import StageData, run_stages

#: Every setting of a volume run: one field per setting of the recipe
#: ``resnet50_3d`` (paper 000 defaults), generated from it.
Volume3DConfig = config_class(RESNET50_3D, "Volume3DConfig")
#: The small preset used on the built-in phantoms (no --data), from the recipe.
PHANTOM_PRESET = RESNET50_3D.phantom_preset()
#: The class of Table 4's sensitivity and specificity columns.
COVID = "COVID-19"


def class_counts(selection, classes):
    """``{class: volumes}`` of a selection (``{key: class index}``), every class listed."""
    counts = np.bincount(np.fromiter(selection.values(), dtype=int), minlength=len(classes))
    return {c: int(counts[i]) for i, c in enumerate(classes)}


def fold_volumes(rows, train_patients, val_patients, classes, augment):
    """The volumes one fold trains and validates on, and their Table 1-style counts.

    Training: every volume of the training patients, with their augmented
    copies when ``augment``. Validation: the validation patients' own
    volumes, never a copy.

    Returns:
        ``(train_selection, val_selection, counts)`` with ``counts`` =
        ``{"train_before": {class: n}, "train_after": {...}, "val": {...}}``.
    """
    before = pipelines.select_volumes(rows, train_patients, classes, augmented=False)
    train = pipelines.select_volumes(rows, train_patients, classes, augmented=augment)
    val = pipelines.select_volumes(rows, val_patients or (), classes, augmented=False)
    counts = {"train_before": class_counts(before, classes), "train_after": class_counts(train, classes),
              "val": class_counts(val, classes)}
    return train, val, counts


def describe_counts(counts, classes):
    """``Normal 6 -> 18, CAP 6 -> 18, COVID-19 6; validation Normal 2, ...`` for the log."""
    def one(c):
        a, b = counts["train_before"][c], counts["train_after"][c]
        return f"{c} {a}" if a == b else f"{c} {a} -> {b}"

    line = "training volumes " + ", ".join(one(c) for c in classes)
    if any(counts["val"].values()):
        line += "; validation " + ", ".join(f"{c} {counts['val'][c]}" for c in classes)
    return line


def evaluate_volumes(model, folder, rows, selection, classes, batch_size, covariates=None):
    """The report of ``model`` on the selected volumes, and one prediction row per volume.

    Returns:
        ``(report, predictions)``: :func:`covid_keras.evaluation.classification_report`
        with Table 4's ``covid_sensitivity`` / ``covid_specificity``
        beside it, and one :func:`covid_keras.evaluation.predictions.case_row`
        per volume (pseudonymous ids only; ``covariates``, ``{study key:
        {age, sex, ...}}``, adds each study's).
    """
    from covid_keras.evaluation.predictions import case_row
    from covid_keras.preprocess.lung_volume import dequantize

    by_key = {r.key: r for r in rows}
    keys, probs, batch = [], [], []

    def flush():
        x = np.stack([dequantize(v)[..., None] for v in batch])
        probs.append(np.asarray(model(x, training=False), dtype=np.float64))
        batch.clear()

    for key, volume in pipelines.iter_volumes(folder, rows, selection):
        keys.append(key)
        batch.append(volume)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    probs = np.concatenate(probs)
    report = classification_report([selection[k] for k in keys], probs, classes)
    report["covid_sensitivity"] = report["sensitivity"].get(COVID)
    report["covid_specificity"] = report["specificity"].get(COVID)
    predictions = [case_row(k, by_key[k].patient_id, by_key[k].label, row, classes) for k, row in zip(keys, probs)]
    for row in predictions:
        if (covariates or {}).get(row["key"]):
            row["covariates"] = covariates[row["key"]]
    return report, predictions


def table4(summary, classes):
    """The command line's view of a cross-validation: Table 4's columns per fold, their mean and std."""
    metrics = ["accuracy", f"sensitivity/{COVID}", f"specificity/{COVID}"] + \
              [f"sensitivity/{c}" for c in classes if c != COVID]
    folds = []
    for entry in summary["folds"]:
        report = entry["report"]
        folds.append({
            "fold": entry["fold"], "val_patients": entry["val_patients"],
            "accuracy": report["accuracy"], "covid_sensitivity": report["covid_sensitivity"],
            "covid_specificity": report["covid_specificity"], "sensitivity": report["sensitivity"],
            "majority_rate": report["majority_rate"], "confusion": report["confusion"],
        })
    return {"k": summary["k"], "folds": folds,
            "mean": {m: summary["mean"].get(m) for m in metrics + ["majority_rate"]},
            "std": {m: summary["std"].get(m) for m in metrics},
            # Folds each figure rests on: a class absent from a fold's validation patients is left out.
            "counts": {m: summary["counts"].get(m) for m in metrics}}


def check_folds(records, folds, skipped=0):
    """Clear errors for a dataset the cross-validation cannot split (before any training)."""
    try:
        crossval.check_folds(records, folds, option="--folds")
    except errors.ConfigurationError as e:
        if skipped:
            raise errors.ConfigurationError(
                f"{e} ({skipped} studies were skipped by the preprocessing, see above)") from None
        raise


def build_model(config, recipe=RESNET50_3D):
    """The fold's model: under ``mixed_float16`` with ``config.mixed_precision``, BatchNormalization momentum set.

    The policy is set here, after cross-validation's ``clear_session``
    (which resets it); the builder keeps the ``probabilities`` layer in
    float32, so the softmax and the loss stay full precision, and Keras
    wraps the optimizer in a ``LossScaleOptimizer`` when it compiles.
    """
    import keras

    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = recipe.build(config)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    return model


def check_mixed_precision(config):
    """ConfigurationError for ``--mixed-precision`` without a GPU (TensorFlow has no float16 MaxPool3D on CPUs)."""
    if not config.mixed_precision:
        return
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise errors.ConfigurationError(
            "--mixed-precision needs a GPU: TensorFlow's CPU kernels have no float16 MaxPool3D, so a 3-D ResNet "
            "cannot train in mixed_float16 here; leave --mixed-precision off on a CPU."
        )


def train_one_fold(config, folder, fold_run, train_patients, val_patients, fold, log=print, covariates=None):
    """Trains one fold (or the final model, with no ``val_patients``) in ``fold_run``; returns its report.

    The report holds the metrics only (what ``crossval.json`` averages);
    the fold's volumes and counts go to ``volumes.json``, its stages to
    ``stages/``, its per-volume answers to ``predictions_val.json``.
    """
    rows, classes = pipelines.volume_rows(folder)
    train_sel, val_sel, counts = fold_volumes(rows, train_patients, val_patients, classes, config.augment_minority)
    name = f"fold {fold}" if fold != "final" else "final"
    log(f"[{name}] {describe_counts(counts, classes)}")
    write_json(fold_run.file("volumes.json"), {"counts": counts, "train": sorted(train_sel), "val": sorted(val_sel)})
    model = build_model(config)

    def stage_data(stage):
        return StageData(
            train=pipelines.volume_dataset(folder, train_sel, rows, training=True, batch_size=config.batch_size,
                                           seed=config.seed),
            val=(pipelines.volume_dataset(folder, val_sel, rows, training=False, batch_size=config.batch_size)
                 if val_sel else None),
            labels=np.fromiter(train_sel.values(), dtype=int), what="volumes",
            counts={"train": len(train_sel), "val": len(val_sel)})

    # keep="last": a fold reports its validation patients, so it must not pick its epoch on them.
    run_stages(model, fold_run, config.stage_list(), stage_data, classes, keep="last",
               class_weights=config.class_weights == "balanced", verbose=config.verbose, log=log)
    model.save(fold_run.file("model.keras"))
    if not val_sel:  # the final model: trained on every patient, nothing held out
        return {"patients": len(set(train_patients)), "volumes": len(train_sel)}
    from covid_keras.evaluation.predictions import write_predictions

    report, predictions = evaluate_volumes(model, folder, rows, val_sel, classes, config.batch_size, covariates)
    write_predictions(fold_run.file("predictions_val.json"), predictions, classes=classes, level="volume",
                      answer=RESNET50_3D.name, part="val", fold=fold)
    return report


def _fold_process(settings, folder, fold_run, train_patients, val_patients, fold, seed, covariates=None):
    """:func:`train_one_fold` in a process of its own (spawned by :func:`train_volume3d`)."""
    import sys

    sys.stdout = sys.stderr  # Keras' progress joins the log; the parent's stdout holds the JSON only
    config = Volume3DConfig(**settings)
    log = printer(config.quiet)
    with distribute.session(config, log) as config:  # --strategy: made here, in the fold's own process
        seed_everything(seed)
        return train_one_fold(config, folder, fold_run, train_patients, val_patients, fold, log, covariates)


def float32_copy(model, config):
    """The model rebuilt in float32 with ``model``'s weights (a mixed_float16 model cannot run on a CPU)."""
    import keras

    if all(layer.compute_dtype != "float16" for layer in model.layers):
        return model
    keras.mixed_precision.set_global_policy("float32")
    copy = build_model(dataclasses.replace(config, mixed_precision=False))
    copy.set_weights(model.get_weights())
    return copy


@distribute.distributed(strategy_here=False)  # each fold's process makes the strategy (_fold_process)
def train_volume3d(config, log=None):
    """Runs paper 000's cross-validation and final model (recipe ``resnet50_3d``); returns the summary dict.

    ``log`` gets this process's lines; each fold trains in a process of
    its own, which prints its lines (and Keras' progress) to stderr.
    """
    import keras

    from covid_keras.preprocess.cache import record_key
    from covid_keras.preprocess.pipelines import PipelineOptions

    log = log or printer(config.quiet)
    recipe = RESNET50_3D
    check_mixed_precision(config)
    seed_everything(config.seed)
    dataset, recs = runner.load_records(config.data, config.dataset, config.phantom_patients_per_class,
                                        config.seed)
    check_folds(recs, config.folds)  # before hours of preprocessing
    run = runner.open_run("volume3d", dataset, config, log)
    classes = recipe.class_names(config)
    options = PipelineOptions(**recipe.pipeline(config))
    folder = pipelines.ensure_cache(recs, dataset, options, classes, workers=config.workers or None,
                                    progress=not config.quiet, log=log)
    rows, cache_classes = pipelines.volume_rows(folder)
    if cache_classes != classes:
        raise errors.CacheError(f"{folder}: its classes {cache_classes} are not the recipe's {classes}.")
    cached = {r.key for r in rows if not r.augmented}
    kept = [r for r in recs if record_key(r) in cached]
    if len(kept) < len(recs):
        log(f"{len(recs) - len(kept)} of {len(recs)} studies were skipped by the preprocessing; "
            f"{len(kept)} take part")
    check_folds(kept, config.folds, skipped=len(recs) - len(kept))
    covariates = {record_key(r): found for r in kept if (found := record_covariates(r))}

    def train_fold(fold_run, train_recs, val_recs, fold):
        # In a fresh process: Keras 3.15 / TensorFlow 2.21 keep about 0.45 GB per fitted 3-D
        # ResNet-18 (16^3) after clear_session and gc, as a plain model.fit loop shows, so folds
        # trained one after another in one process would pile up host and GPU memory.
        train_patients = sorted({r.patient_id for r in train_recs})
        val_patients = sorted({r.patient_id for r in val_recs}) if val_recs is not None else []
        seed = config.seed if fold == "final" else config.seed + fold  # cross_validate's per-fold seeds
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(_fold_process, dataclasses.asdict(config), folder, fold_run, train_patients,
                               val_patients, fold, seed, covariates).result()

    try:
        summary = crossval.cross_validate(run, kept, k=config.folds, seed=config.seed, train_fold=train_fold,
                                          final=config.final, log=log)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result = {
        "command": "train.volume3d",
        "recipe": recipe.export_metadata(config),
        "dataset": dataset,
        "classes": classes,
        "cache": folder,
        "run": run.path,
        "studies": {"given": len(recs), "used": len(kept)},
        "crossval": table4(summary, classes),
        "reported": recipe.reported,
    }
    if config.final:
        import covid_keras.models  # noqa: F401 - registers ClippedReLU, for a final model finished in an earlier run

        # Served in float32 wherever it runs (after --mixed-precision, final/model.keras is mixed_float16).
        model = float32_copy(keras.models.load_model(run.file("final", "model.keras")), config)
        result["model"] = run.file("final", "model.keras")
        exported = runner.export_crossval_model(model, recipe, config, classes, options, result["crossval"])
        if exported:
            result["exported"] = exported
            log(f"exported: {exported}")
    else:
        log("no final model (--no-final): nothing exported; the folds' models are in " + run.file("folds"))
    write_json(run.file("summary.json"), result)
    return result


__all__ = ["PHANTOM_PRESET", "Volume3DConfig", "build_model", "check_folds", "check_mixed_precision", "class_counts",
           "describe_counts", "evaluate_volumes", "float32_copy", "fold_volumes", "table4", "train_one_fold",
           "train_volume3d"]

