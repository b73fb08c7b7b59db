"""Paper 003 DETL: a 12-layer CNN from scratch on Data-A, then domain extension to Data-B, 5-fold cross-validated.

The chain (recipe ``detl_cnn``, docs/papers.md paper 003)::

    phase 1   Data-A (NIH ChestX-ray14 normal vs disease) -> detl_cnn from scratch,
              Adam 1e-3 cosine-annealed over 100 epochs, rotation / scaling / mirroring,
              best weights on a class-balanced validation set sampled from the training
              patients -> runs/detl/phase1-<hash>/model.keras
    phase 2   Data-B (normal / other_disease / pneumonia / covid) -> per fold: phase 1's
              model with a new 4-way softmax (models.detl_extend), everything before
              block3_conv1 frozen, SGD 1e-4 momentum 0.9 -> fold report; 5 folds by
              patient, mean +- std, then a final model on every patient -> export

Phase 1's run folder is named by the settings phase 1 depends on only
(Data-A, image size, batch size, augmentation, the validation sample,
phase 1's rate and epochs, seed), so phase 2 runs with other phase-2
settings reuse it, and an interrupted phase 1 resumes from its last epoch.
A phase-2 fold keeps its last epoch's weights: its validation patients are
the ones it reports.
"""

import json
import os

import numpy as np

from covid_keras import errors
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.recipes import DETL_CNN, config_class
from covid_keras.training import crossval, distribute, image_level, pipelines, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.runs import RunFolder, config_hash, write_json, write_records
from covid_keras.training.stages import run_stages

#: Every setting of a DETL run: one field per setting of the recipe ``detl_cnn``.
DETLConfig = config_class(DETL_CNN, "DETLConfig")
#: The settings phase 1 depends on (its run folder's hash).
PHASE1_SETTINGS = ("data", "dataset", "phantom_images", "image_size", "batch_size", "augment", "balanced_val",
                   "phase1_lr", "phase1_epochs", "seed")
#: Phase-1 phantoms are another set of images than Data-B's (seed of the phantom dataset).
PHANTOM_DATA_A_SEED = 1
#: Data-A's phantoms per pathology, as a multiple of --phantom-images: Data-A is the large set
#: (112,120 NIH images against Data-B's 1,191), and phase 1 learns from it alone.
PHANTOM_DATA_A_FACTOR = 3


def data_a(config):
    """``(dataset name, records)`` of Data-A: NIH ChestX-ray14 normal vs disease, or phantoms."""
    from covid_keras.data import datasets

    if not config.data:
        return image_level.phantom_records("detl_a", PHANTOM_DATA_A_FACTOR * config.phantom_images,
                                           seed=PHANTOM_DATA_A_SEED)
    return f"{config.dataset}-data_a", datasets.load_dataset(config.dataset, config.data, subset="data_a")


def data_b(config):
    """``(dataset name, records)`` of Data-B (``detl_data_b``: NIH + the COVID-19 collection), or phantoms.

    Raises:
        ConfigurationError: ``--data`` without ``--covid-data`` (Data-B's covid class comes from it).
    """
    from covid_keras.data.datasets import detl_data_b

    if not config.data:
        return image_level.phantom_records("detl_b", config.phantom_images)
    if not config.covid_data:
        raise errors.ConfigurationError(
            "Data-B needs its COVID-19 source: pass --covid-data, the COVID-19 image data collection folder "
            "(covid-chestxray-dataset), beside --data (NIH ChestX-ray14)."
        )
    return f"{config.dataset}-data_b+covid-chestxray", detl_data_b(config.data, config.covid_data, seed=config.seed)


def balanced_validation(records, size, seed):
    """Phase 1's split: a class-balanced validation sample of patients, the others for training.

    Patients are drawn (seeded) per class until the class has ``size //
    n_classes`` validation images of it; a drawn patient's images of other
    classes are used by neither side, so no patient is on both.

    Returns:
        ``{"train": [patient ids], "val": [...], "val_class": {patient id:
        the class it was drawn for}, "val_images": {class: n}}``.

    Raises:
        ConfigurationError: the records hold fewer than two classes, or
            ``size`` leaves no training patients (of some class) or no
            validation ones.
    """
    rng = np.random.default_rng(seed)
    labels = sorted({r.label for r in records})
    if len(labels) < 2:
        raise errors.ConfigurationError(
            f"Data-A holds only {', '.join(labels) or 'no'} images; phase 1 needs normal and disease images: "
            "check --data (NIH ChestX-ray14's Data_Entry_2017.csv and its images folders)."
        )
    per_class = max(1, size // max(1, len(labels)))
    by_class = {c: sorted({r.patient_id for r in records if r.label == c}) for c in labels}
    images = {}
    for r in records:
        images.setdefault((r.patient_id, r.label), 0)
        images[(r.patient_id, r.label)] += 1
    chosen, counts = {}, {}
    for c in labels:
        counts[c] = 0
        for pid in rng.permutation(by_class[c]):
            if counts[c] >= per_class:
                break
            if pid in chosen:
                continue
            chosen[str(pid)] = c
            counts[c] += images[(pid, c)]
    patients = sorted({r.patient_id for r in records})
    train = [p for p in patients if p not in chosen]
    if not train or not chosen:
        raise errors.ConfigurationError(
            f"--balanced-val {size}: leaves no {'training' if not train else 'validation'} patients in Data-A's "
            f"{len(patients)}; choose a smaller --balanced-val."
        )
    trained = {r.label for r in records if r.patient_id not in chosen}
    lost = [c for c in labels if c not in trained]
    if lost:
        raise errors.ConfigurationError(
            f"--balanced-val {size}: takes every Data-A patient of class {lost[0]!r} into the validation set, "
            "leaving phase 1 none to train on; choose a smaller --balanced-val."
        )
    return {"train": train, "val": sorted(chosen), "val_class": dict(sorted(chosen.items())), "val_images": counts}


def _phase1_settings(config):
    return {k: getattr(config, k) for k in PHASE1_SETTINGS}


def phase1_folder(config):
    """Phase 1's run folder path, named by :data:`PHASE1_SETTINGS` only (shared by phase 2 runs)."""
    name = f"phase1-{config_hash(_phase1_settings(config))}"
    return os.path.join(config.run_dir, "phase1") if config.run_dir else os.path.join(config.runs_root, "detl", name)


def phase1_run(config):
    """Phase 1's :class:`RunFolder` (``--fresh`` starts it over too)."""
    path = distribute.run_path(phase1_folder(config), fresh=config.fresh)  # a copy on a non-chief worker
    return RunFolder.open(path, _phase1_settings(config), fresh=config.fresh)


def train_phase1(config, log):
    """Phase 1 (or its finished model, read back); returns ``(model path, report)``."""
    import keras

    from covid_keras.preprocess.pipelines import PipelineOptions

    recipe = DETL_CNN
    run = phase1_run(config)
    model_path, report_path = run.file("model.keras"), run.file("report.json")
    if os.path.exists(model_path) and os.path.exists(report_path):
        log(f"[phase1] finished in {run.path}; reusing its model")
        with open(report_path) as f:
            return model_path, json.load(f)
    log(f"[phase1] run folder: {run.path}")
    dataset, recs = data_a(config)
    classes = list(CLASS_NAMES["detl_a"])
    options = PipelineOptions(**recipe.pipeline(config))
    cache = image_level.image_cache(recs, dataset, options, classes, config, log)
    split_path = run.file("split.json")
    if os.path.exists(split_path):
        with open(split_path) as f:
            split = json.load(f)
    else:
        split = balanced_validation(image_level.check_cached(recs, cache, log), config.balanced_val, config.seed)
        write_json(split_path, split)
    write_records(run, recs)
    log(f"[phase1] Data-A patients: {len(split['train'])} train, {len(split['val'])} in the balanced validation "
        f"set ({', '.join(f'{c} {n}' for c, n in split['val_images'].items())} images)")
    keras.utils.set_random_seed(config.seed)
    model = recipe.build(config)
    trainer = image_level.augmenting_model(model, recipe.input_shape(config), config.seed,
                                           recipe.augmentation(config))
    train = pipelines.select_images(cache.rows, split["train"], classes)
    # Each drawn patient's images of the class it was drawn for (its others are on neither side).
    val = {r.key: classes.index(r.label) for r in cache.rows if split["val_class"].get(r.patient_id) == r.label}
    log(image_level.describe_selection("[phase1] training images", train, classes) + "; "
        + image_level.describe_selection("validation", val, classes))

    stage = [s for s in config.stage_list() if s.name == "phase1"]
    run_stages(model, run, stage, image_level.stage_data(cache, train, val, config), classes, trainer=trainer,
               verbose=config.verbose, log=log)
    report, predictions = image_level.evaluate(model, cache, val, classes, config.batch_size, recs)
    image_level.write_image_predictions(run.file("predictions_val.json"), predictions, classes, "detl_cnn phase 1",
                                        "val")
    model.save(model_path)
    write_json(report_path, report)
    log(f"[phase1] balanced validation accuracy {report['accuracy']:.4f} (majority rate {report['majority_rate']:.4f})")
    return model_path, report


def frozen_layers(model):
    """Names of the layers with weights that phase 2 does not train."""
    return [layer.name for layer in model.layers if not layer.trainable and layer.weights]


def extend(phase1_model, config):
    """Phase 2's model: phase 1's with a 4-way softmax, frozen before the stage's first trainable layer."""
    from covid_keras.models import detl_extend

    stage = next(s for s in config.stage_list() if s.name == "phase2")
    first = stage.trainable.split(":", 1)[1] if stage.trainable.startswith("from:") else None
    return detl_extend(phase1_model, num_classes=len(DETL_CNN.class_names(config)), freeze_until=first)


@distribute.distributed
def train_detl(config, log=None):
    """Runs paper 003: phase 1 (or reuses it), then phase 2's cross-validation and final model; returns the summary."""
    import keras

    from covid_keras.preprocess.cache import record_key
    from covid_keras.preprocess.pipelines import PipelineOptions

    log = log or printer(config.quiet)
    recipe = DETL_CNN
    seed_everything(config.seed)
    dataset_b, recs_b = data_b(config)  # before phase 1's hours: a missing --covid-data fails now
    _check_data_b(recs_b, recipe.class_names(config))
    crossval.check_folds(recs_b, config.folds, option="folds")
    # Opened before phase 1 trains: with --run-dir, phase 1 lives inside it, and --fresh empties it.
    run = _phase2_run(config, phase1_folder(config), dataset_b, log)
    phase1_path, phase1_report = train_phase1(config, log)

    classes = recipe.class_names(config)
    options = PipelineOptions(**recipe.pipeline(config))
    cache = image_level.image_cache(recs_b, dataset_b, options, classes, config, log)
    kept = image_level.check_cached(recs_b, cache, log)
    crossval.check_folds(kept, config.folds, option="folds")

    def train_fold(fold_run, train_recs, val_recs, fold):
        source = keras.models.load_model(phase1_path)
        model = extend(source, config)
        trainer = image_level.augmenting_model(model, recipe.input_shape(config), config.seed,
                                               recipe.augmentation(config))
        train = pipelines.select_images(cache.rows, {r.patient_id for r in train_recs}, classes)
        val = pipelines.select_images(cache.rows, {r.patient_id for r in val_recs}, classes) if val_recs else {}

        stage = [s for s in config.stage_list() if s.name == "phase2"]
        run_stages(model, fold_run, stage, image_level.stage_data(cache, train, val, config), classes,
                   trainer=trainer, keep="last", verbose=config.verbose, log=log)
        model.save(fold_run.file("model.keras"))
        unchanged = frozen_unchanged(source, model)
        if not unchanged:
            raise errors.ConfigurationError(f"fold {fold}: phase 2 changed weights of layers it should keep frozen.")
        if not val:
            return {"patients": len({r.patient_id for r in train_recs}), "images": len(train),
                    "frozen_unchanged": unchanged}
        report, predictions = image_level.evaluate(model, cache, val, classes, config.batch_size, val_recs)
        image_level.write_image_predictions(fold_run.file("predictions_val.json"), predictions, classes,
                                            "detl_extend", "val", fold=fold)
        return {**report, "frozen_unchanged": unchanged}

    summary = crossval.cross_validate(run, kept, k=config.folds, seed=config.seed, train_fold=train_fold,
                                      final=config.final, log=log)
    result = {
        "command": "train.detl",
        "recipe": recipe.export_metadata(config),
        "dataset": dataset_b,
        "classes": classes,
        "cache": cache.folder,
        "run": run.path,
        "phase1": {"model": phase1_path, "report": phase1_report},
        "crossval": fold_table(summary),
        "reported": recipe.reported,
        "images": {"given": len(recs_b), "used": len(kept), "keys": len({record_key(r) for r in kept})},
    }
    if config.final:
        model = keras.models.load_model(run.file("final", "model.keras"))
        result["model"] = run.file("final", "model.keras")
        exported = runner.export_crossval_model(model, recipe, config, classes, options, result["crossval"])
        if exported:
            result["exported"] = exported
            log(f"exported: {exported}")
    write_json(run.file("summary.json"), result)
    return result


def _check_data_b(records, classes):
    """Data-B must hold every one of its four classes: a 4-way softmax with an empty class reports nothing real."""
    missing = [c for c in classes if c not in {r.label for r in records}]
    if missing:
        raise errors.ConfigurationError(
            f"Data-B holds no {', '.join(missing)} images; phase 2 needs all of {', '.join(classes)}: check --data "
            "(NIH ChestX-ray14) and --covid-data."
        )


def _phase2_run(config, phase1_path, dataset, log):
    return runner.open_run("detl", f"phase2-{dataset}", config, log,
                           extra={"phase1": os.path.basename(os.path.normpath(phase1_path))})


def frozen_unchanged(source, model):
    """True when every frozen layer of ``model`` holds exactly (bitwise) ``source``'s weights."""
    for name in frozen_layers(model):
        for a, b in zip(source.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            if a.shape != b.shape or a.tobytes() != b.tobytes():
                return False
    return True


def fold_table(summary):
    """Per-fold accuracy with the mean and standard deviation (the paper's 95.3 % +- 0.02 form)."""
    folds = [{"fold": e["fold"], "accuracy": e["report"].get("accuracy"), "n": e["report"].get("n"),
              "majority_rate": e["report"].get("majority_rate"), "sensitivity": e["report"].get("sensitivity"),
              "confusion": e["report"].get("confusion")} for e in summary["folds"]]
    return {"k": summary["k"], "folds": folds,
            "mean": {k: v for k, v in summary["mean"].items() if k in ("accuracy", "majority_rate")},
            "std": {k: v for k, v in summary["std"].items() if k in ("accuracy", "majority_rate")},
            "std_ddof": summary["std_ddof"], "final": summary["final"]}


__all__ = ["DETLConfig", "balanced_validation", "data_a", "data_b", "extend", "fold_table", "frozen_layers",
           "frozen_unchanged", "phase1_run", "train_detl", "train_phase1"]
