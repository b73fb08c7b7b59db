"""Paper 001, level 1: the multi-scale ResNet50 slice classifier, in stages.

Stages (paper 001 MultiScale, docs/papers.md), each switchable, each keeping its
best-validation-accuracy weights:

1. ``pretrain`` - the whole model on a pre-training set (COVIDx-CT in the
   paper; ``--pretrain-data``), Adam 1e-3, 10 epochs. Without a pre-training
   set it runs on the training slices themselves.
2. ``last_layers`` - only the last two layers (``features``,
   ``probabilities``), Adam 1e-4, 10 epochs.
3. ``finetune`` - every layer but BatchNormalization (BN frozen: inference
   mode, moving statistics untouched), Adam 1e-5, 10 epochs.
4. ``pseudo_label`` - the model picks infected slices of the patients that
   have only a patient label; retrain 25 epochs on them plus stage 3's
   slices (ours: stage 3's learning rate and freezing).

Normal slices of infected patients are left out of stages 2-4. The
training patients' series get ``interpolate - 1`` spline-interpolated
slices between neighbouring slices of the same label (paper 001; a separate
cache, so validation and test patients are never interpolated). The patient
split (train / validation / held-out test, by patient, with the leakage
guard) is written to the run folder and reused by the patient level and the
ensemble.
"""

import dataclasses
import os

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import classification_report
from covid_keras.recipes import MULTISCALE_RESNET50, config_class
from covid_keras.training import distribute, pipelines, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.inference import Predictor
from covid_keras.extensions import import_modules
from covid_keras.training.runs import write_json
from covid_keras.training.stages import StageData, run_stages, set_trainable  # noqa: F401 - set_trainable: API

#: Every setting of a slice-level run: one field per setting of the recipe
#: ``multiscale_resnet50`` (paper 001 defaults), generated from it.
SliceLevelConfig = config_class(MULTISCALE_RESNET50, "SliceLevelConfig")
#: The stages, in order (the recipe's Stage records).
STAGES = tuple(stage.name for stage in MULTISCALE_RESNET50.stages)
#: The small preset used on the built-in phantoms (no --data), from the
#: recipe: a few minutes on 2 CPU cores instead of the paper's full-size runs.
PHANTOM_PRESET = MULTISCALE_RESNET50.phantom_preset()


def slice_recipe(name):
    """The recipe of a slice model: ``multiscale_resnet50`` or one registered by an ``--import``-ed module.

    A slice recipe trains with ``train.slice_level`` and takes its settings
    (a copy of ``multiscale_resnet50`` with another builder: see
    docs/extending.md); its model has the ``features`` and
    ``probabilities`` layers the stages and the patient heads use.
    """
    from covid_keras import recipes

    slices = [r.name for r in recipes.RECIPES.values() if r.command == "train.slice_level"]
    if name not in recipes.RECIPES:
        raise errors.ConfigurationError(
            f"--backbone {name}: no recipe {name!r} is registered; use one of {', '.join(slices)}, or --import the "
            "module that registers it."
        )
    recipe = recipes.get(name)
    if recipe.command != "train.slice_level":
        raise errors.ConfigurationError(
            f"--backbone {name}: recipe {name!r} is not a slice model (it trains with {recipe.command or 'no command'}); "
            f"use one of {', '.join(slices)}."
        )
    # The command line's settings and stages are paper 001's (SliceLevelConfig): a recipe with
    # other ones would train with values that neither it nor --help shows.
    if recipe.stages != MULTISCALE_RESNET50.stages or recipe.all_params() != MULTISCALE_RESNET50.all_params():
        raise errors.ConfigurationError(
            f"--backbone {name}: recipe {name!r} changes paper 001's stages or settings; a slice recipe may change "
            "the builder, its arguments, the pipeline and the augmentation only (docs/extending.md)."
        )
    return recipe


def check_slice_model(recipe, model):
    """A slice model names its penultimate layer ``features`` and its output ``probabilities``.

    Raises:
        ConfigurationError: one of them is missing.
    """
    missing = [n for n in ("features", "probabilities") if n not in {layer.name for layer in model.layers}]
    if missing:
        raise errors.ConfigurationError(
            f"recipe {recipe.name}: its model {model.name!r} has no layer named {' or '.join(missing)}; a slice "
            "model names its penultimate layer 'features' and its output 'probabilities' (docs/extending.md)."
        )


#: Kept here for callers of the slice level; the runner owns them.
split_patients = runner.split_patients
load_records = runner.load_records


def _augmenting(model, size, seed, augmentation):
    """The model behind the recipe's fused augmentation (``RandomAffine`` arguments; active in training only)."""
    import keras

    from covid_keras.augment import RandomAffine

    inputs = keras.Input(shape=(size, size, 3), name="image")
    augment = RandomAffine(**augmentation, seed=seed, name="augmentation")
    return keras.Model(inputs, model(augment(inputs)), name=f"{model.name}_training")


def pseudo_labels(model, folder, rows, patients, threshold, batch_size):
    """Stage 4: slices of label-only infected patients the model calls infected.

    A slice is pseudo-labelled when the model gives the patient's class a
    probability of at least ``threshold``.
    """
    candidates = {r.id: r for r in rows if r.patient_id in set(patients) and r.label != pipelines.NORMAL
                  and r.slice_label == -1}
    if not candidates:
        return set()
    classes = pipelines.CT_CLASSES
    selection = {sid: classes.index(r.label) for sid, r in candidates.items()}
    chosen, predictor = set(), Predictor(model)
    for key, pid, label, slices, _, indices in pipelines.study_slices(folder, {r.key for r in candidates.values()}):
        probs = predictor(pipelines.to_rgb(slices), batch_size=batch_size)
        for i, p in zip(indices, probs):
            sid = f"{key}#{i}"
            if sid in selection and p[selection[sid]] >= threshold:
                chosen.add(sid)
    return chosen


def _run_pseudo_labels(run, model, folder, rows, split, config, log):
    """Stage 4's pseudo-labelled slice ids, chosen once per run (``pseudo_labels.json``).

    Chosen by the stage-3 model; kept in the run folder so that a resumed or
    repeated run trains on the same slices and reports them.
    """
    import json

    path = run.file("pseudo_labels.json")
    if os.path.exists(path):
        with open(path) as f:
            chosen = set(json.load(f))
        log(f"[pseudo_label] {len(chosen)} pseudo-labelled slices from {path}")
        return chosen
    chosen = pseudo_labels(model, folder, rows, split["train"], config.pseudo_threshold, config.batch_size)
    write_json(path, sorted(chosen))
    log(f"[pseudo_label] {len(chosen)} slices of label-only infected patients pseudo-labelled")
    return chosen


#: Slices answered per predict call when reporting held-out patients.
PREDICT_CHUNK = 512


def held_out_slices(model, folder, rows, patients, classes, batch_size, records=None):
    """``(report, prediction rows)`` on every slice of ``patients``' studies.

    Each slice gets one :func:`covid_keras.evaluation.predictions.case_row`:
    ``label`` is its class under stages 2-3's rules (:func:`pipelines.select_slices`),
    None for a slice they leave unlabelled (a clean slice of an infected
    patient, a slice of a patient with a label only); ``study_label`` is its
    study's class, so a report can also answer per patient (all slices).
    The slice-level report counts the labelled slices.
    """
    from covid_keras.evaluation.predictions import case_row
    from covid_keras.preprocess.cache import record_key

    labelled = pipelines.select_slices(rows, patients, classes)
    patients = set(patients)
    keys = {r.key for r in rows if r.patient_id in patients}
    by_key = {record_key(r): r for r in records or ()}
    out, y_true, probs, pending = [], [], [], []

    def flush():
        # Studies are answered in chunks of slices, not one predict call each: COVIDx-CT's
        # records are single slices, and a call per slice would cost more than the model.
        x = np.concatenate([slices for *_, slices in pending])
        answers = iter(model.predict(np.repeat(x[..., None], 3, axis=-1).astype(np.float32), batch_size=batch_size,
                                     verbose=0))
        for key, pid, label, indices, _ in pending:
            for index in indices:
                p = next(answers)
                target = labelled.get(f"{key}#{index}")
                out.append(case_row(key, pid, None if target is None else classes[target], p, classes,
                                    slice_index=index, study_label=classes[label], record=by_key.get(key)))
                if target is not None:
                    y_true.append(target)
                    probs.append(p)
        pending.clear()

    for key, pid, label, slices, _, indices in pipelines.study_slices(folder, keys):
        pending.append((key, pid, label, indices, slices))
        if sum(len(entry[-1]) for entry in pending) >= PREDICT_CHUNK:
            flush()
    if pending:
        flush()
    report = classification_report(np.asarray(y_true, int), np.asarray(probs).reshape(-1, len(classes)), classes)
    return report, out


@distribute.distributed
def train_slice_level(config, log=None):
    """Runs paper 001's slice-level training (recipe ``multiscale_resnet50``); returns the summary dict."""
    import keras

    from covid_keras.preprocess.pipelines import PipelineOptions

    log = log or printer(config.quiet)
    imports = import_modules(config.import_modules, log) if config.import_modules else []
    recipe = slice_recipe(config.backbone)
    if recipe is not MULTISCALE_RESNET50:
        # Before the cache is built (hours on a real dataset), and before the seeds are set, so
        # that the model trained is the one an unchecked run would build.
        check_slice_model(recipe, recipe.build(config))
    seed_everything(config.seed)
    dataset, recs = load_records(config.data, config.dataset, config.phantom_patients_per_class, config.seed,
                                 config.phantom_size)
    run = runner.open_run("slice_level", dataset, config, log)
    split = runner.holdout_patients(run, recs, recipe.validation(config), config.seed, log)

    options = PipelineOptions(**recipe.pipeline(config))
    folder = pipelines.ensure_slice_cache(recs, dataset, options, workers=config.workers or None,
                                          progress=not config.quiet)
    rows, classes = pipelines.manifest_rows(folder)
    train_folder, train_rows = _training_slices(config, recs, dataset, options, split, log) or (folder, rows)

    model = recipe.build(config)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    augmentation = recipe.augmentation(config)
    trainer = _augmenting(model, config.image_size, config.seed, augmentation) if augmentation else model
    counts, state = {}, {"pre_folder": None}

    def stage_data(stage):
        if stage.data == "pretrain" and config.pretrain_data:
            pre_folder, pre_rows, stage_split = _pretrain_source(config, options, log, split)
            state["pre_folder"] = pre_folder
            sources, validation = {"train": (pre_folder, pre_rows), "val": (pre_folder, pre_rows)}, "pretrain"
        else:
            sources, stage_split, validation = {"train": (train_folder, train_rows), "val": (folder, rows)}, split, "val"
        # Chosen by the model as the stages before left it (trainable flags do not change its answers).
        pseudo = (_run_pseudo_labels(run, model, train_folder, train_rows, split, config, log)
                  if stage.data == "train+pseudo" else set())
        train_sel = pipelines.select_slices(sources["train"][1], stage_split["train"], classes, pseudo=pseudo,
                                            stride=config.slice_stride)
        val_sel = pipelines.select_slices(sources["val"][1], stage_split["val"], classes,
                                          stride=config.slice_stride)
        counts[stage.name] = {"train": len(train_sel), "val": len(val_sel)}
        return StageData(
            train=pipelines.slice_dataset(sources["train"][0], train_sel, training=True,
                                          batch_size=config.batch_size, seed=config.seed),
            val=pipelines.slice_dataset(sources["val"][0], val_sel, training=False, batch_size=config.batch_size),
            labels=np.fromiter(train_sel.values(), dtype=int), what="slices", validation=validation,
            counts=counts[stage.name])

    # Stages 2-4 share the validation set (stage 1 too, without separate
    # pre-training data): a stage keeps new weights only if they beat it.
    results = run_stages(model, run, config.stage_list(), stage_data, classes, trainer=trainer,
                         verbose=config.verbose, log=log)

    model_path = run.file("model.keras")
    model.save(model_path)
    from covid_keras.evaluation.predictions import write_predictions

    report = {}
    for part in ("val", "test"):
        if split[part]:
            report[part], predictions = held_out_slices(model, folder, rows, split[part], classes, config.batch_size,
                                                        recs)
            write_predictions(run.file(f"predictions_{part}.json"), predictions, classes=classes, level="slice",
                              answer=recipe.name, part=part)
    summary = {
        "command": "train.slice_level",
        "recipe": recipe.export_metadata(config),
        "imports": imports,
        "dataset": dataset,
        "classes": classes,
        "cache": folder,
        "image_size": config.image_size,
        "pipeline": dataclasses.asdict(options),
        "model": model_path,
        "stages": {k: dataclasses.asdict(v) for k, v in results.items()},
        "slices": counts,
        "training_cache": train_folder,
        "pretrain_cache": state["pre_folder"],
        "slice_report": report,
    }
    exported = runner.export_model(model, recipe, config, classes, options)
    if exported:
        summary["exported"] = exported
    write_json(run.file("summary.json"), summary)
    return summary


def _training_slices(config, recs, dataset, options, split, log):
    """The training patients' slices, spline-interpolated (paper 001): (cache folder, rows), or None.

    Interpolation adds slices to the slice classifier's training set only,
    so the training patients get their own cache, built with
    ``interpolate=config.interpolate``; validation and test patients keep
    the plain cache. PNG slices (COVIDx-CT) have no neighbours and are never
    interpolated. None when nothing is interpolated (use the plain cache).
    """
    train = set(split["train"])
    train_recs = [r for r in recs if r.patient_id in train]
    series = [r for r in train_recs if os.path.isdir(r.paths[0])]
    if config.interpolate == 1 or not series:
        return None
    folder = pipelines.ensure_slice_cache(train_recs, dataset,
                                          dataclasses.replace(options, interpolate=config.interpolate),
                                          workers=config.workers or None, progress=not config.quiet)
    log(f"training slices: {len(series)} training series spline-interpolated x{config.interpolate}")
    return folder, pipelines.manifest_rows(folder)[0]


def _pretrain_source(config, options, log, target_split):
    """Stage 1 on a separate pre-training dataset (COVIDx-CT in the paper).

    Only the dataset's train and validation parts are used (the paper
    combines them), and never slices of the target run's validation or test
    patients: COVIDx-CT contains COVID-CT-MD slices (``COVIDCTMD-<id>``).
    """
    from covid_keras.data import datasets

    held_out = set(target_split["val"]) | set(target_split["test"])
    recs = [r for r in datasets.load_dataset(config.pretrain_dataset, config.pretrain_data)
            if (r.extra or {}).get("split", "train") in ("train", "val")
            and r.patient_id.split("COVIDCTMD-")[-1] not in held_out]
    folder = pipelines.ensure_slice_cache(recs, config.pretrain_dataset, options,
                                          workers=config.workers or None, progress=not config.quiet)
    rows, _ = pipelines.manifest_rows(folder)
    split = split_patients(recs, config.val_fraction, 0.0, config.seed)
    log(f"[pretrain] on {config.pretrain_dataset}: {len(split['train'])} train / {len(split['val'])} "
        "validation patients (train + val of the paper's split combined)")
    return folder, rows, split
