"""Paper 004 XrayCNN: the two-step X-ray classifier, trained step by step and exported as one SavedModel.

The chain (recipe ``xray_cnn``, docs/papers.md paper 004)::

    records labelled in the combined classes (Normal, bacterial, COVID-19, other viral)
        -> one patient split (train / validation / held-out test) for both steps
        -> step 1: xray_cnn on every image, relabelled normal / bacterial / viral
        -> step 2: xray_cnn on the pneumonia images, relabelled non-viral pneumonia /
           COVID-19 / other viral
           (both behind scale / shift / rotation / flip and salt-and-pepper noise, training only)
        -> held-out report per step and of the combined 4-class answer (paper 004's Fig. 5)
        -> serving.export_two_step: one SavedModel returning step 1, step 2 and the combined answer

Both steps share the split, so no held-out patient is trained on by
either. Real data: ``--data`` in the Kermany layout (normal; bacteria ->
bacterial; virus -> other viral) and ``--covid-data``, the COVID-19 image
data collection (COVID-19; other viral; non-viral pneumonia -> bacterial).
"""

import dataclasses

import numpy as np

from covid_keras import errors
from covid_keras.data.datasets import CLASS_NAMES
from covid_keras.evaluation import classification_report
from covid_keras.recipes import XRAY_CNN, config_class
from covid_keras.training import distribute, image_level, pipelines, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.runs import RunFolder, write_json

#: Every setting of an XrayCNN run: one field per setting of the recipe ``xray_cnn``.
XrayCNNConfig = config_class(XRAY_CNN, "XrayCNNConfig")
COMBINED = list(CLASS_NAMES["xraycnn_4class"])
#: Each step's label of a combined class (None: not part of the step).
STEP_LABELS = {
    "xraycnn_step1": {"Normal": "normal", "bacterial": "bacterial", "COVID-19": "viral", "other viral": "viral"},
    "xraycnn_step2": {"Normal": None, "bacterial": "non-viral pneumonia", "COVID-19": "COVID-19",
                      "other viral": "other viral"},
}
#: The combined class of each source dataset's labels.
KERMANY_TO_COMBINED = {"normal": "Normal", "bacterial": "bacterial", "viral": "other viral"}
COHEN_TO_COMBINED = {"COVID-19": "COVID-19", "other viral": "other viral", "non-viral pneumonia": "bacterial"}


def xray_cnn_records(config):
    """``(dataset name, records labelled in the combined classes)``: Kermany + the COVID-19 collection, or phantoms.

    Raises:
        ConfigurationError: ``--data`` without ``--covid-data`` when step 2 is trained.
    """
    from covid_keras.data import datasets

    if not config.data:
        return image_level.phantom_records("xraycnn_4class", config.phantom_images)
    recs = [dataclasses.replace(r, label=KERMANY_TO_COMBINED[r.label])
            for r in datasets.load_dataset(config.dataset, config.data, task="xraycnn_step1")]
    name = config.dataset
    if config.covid_data:
        recs += [dataclasses.replace(r, label=COHEN_TO_COMBINED[r.label])
                 for r in datasets.load_dataset("covid-chestxray", config.covid_data, task="xraycnn_step2")]
        name += "+covid-chestxray"
    elif config.step != "xraycnn_step1":
        raise errors.ConfigurationError(
            "step 2 needs COVID-19 X-rays: pass --covid-data, the COVID-19 image data collection folder "
            "(covid-chestxray-dataset), or train --step xraycnn_step1 alone."
        )
    return name, sorted(recs, key=lambda r: (r.patient_id, r.paths))


def _steps(config):
    return ("xraycnn_step1", "xraycnn_step2") if config.step == "both" else (config.step,)


def train_step(step, run, cache, split, config, log, records=None):
    """Trains one step in its sub-run ``<run>/<step>/``; returns ``(model, reports)``.

    ``records`` (the run's) add each image's covariates to the step's predictions files.
    """
    import keras

    classes = list(CLASS_NAMES[step])
    step_run = RunFolder.open(run.file(step), {"step": step})
    keras.utils.set_random_seed(config.seed + _steps(config).index(step))
    model = XRAY_CNN.build(config)
    trainer = image_level.augmenting_model(model, XRAY_CNN.input_shape(config), config.seed,
                                           XRAY_CNN.augmentation(config), config.salt_pepper)
    relabel = STEP_LABELS[step].get
    log(f"=== {step}: {' / '.join(classes)} ===")
    image_level.train_holdout(model, step_run, cache, split, classes, config.stage_list(), config,
                              relabel=relabel, trainer=trainer, class_weights=config.class_weights == "balanced",
                              log=log)
    model.save(step_run.file("model.keras"))
    reports = image_level.held_out_reports(model, step_run, cache, split, classes, config.batch_size, answer=step,
                                           relabel=relabel, records=records)
    return model, reports


def combined_report(step1, step2, run, cache, patients, config, records=None):
    """The two-step classifier's 4-class report on ``patients``, and one row per image (``predictions_test.json``).

    Each row adds the two steps' probabilities (``step1``; ``step2``, None
    where the image was not routed to step 2). Images are read and answered
    chunk by chunk.
    """
    from covid_keras.models.xraycnn import HierarchicalXrayClassifier

    selection = pipelines.select_images(cache.rows, patients, COMBINED)
    if not selection:
        return None
    classifier = HierarchicalXrayClassifier(step1, step2, config.unrouted_covid_fraction)
    keys, parts = [], []
    for chunk_keys, x in image_level.image_chunks(cache, selection):
        keys += chunk_keys
        parts.append(classifier.predict(x, config.batch_size))
    out = {name: np.concatenate([part[name] for part in parts]) for name in ("combined", "routed", "step1", "step2")}
    y_true = np.asarray([selection[k] for k in keys])
    report = classification_report(y_true, out["combined"], COMBINED)
    rows = image_level.prediction_rows(cache, keys, y_true, out["combined"], COMBINED, records)
    for row, routed, p1, p2 in zip(rows, out["routed"], out["step1"], out["step2"]):
        row["step1"] = {c: round(float(v), 6) for c, v in zip(CLASS_NAMES["xraycnn_step1"], p1)}
        row["step2"] = ({c: round(float(v), 6) for c, v in zip(CLASS_NAMES["xraycnn_step2"], p2)}
                        if routed else None)
    image_level.write_image_predictions(run.file("predictions_test.json"), rows, COMBINED, "xray_cnn two-step", "test")
    return report


@distribute.distributed
def train_xray_cnn(config, log=None):
    """Runs paper 004's two-step training (recipe ``xray_cnn``); returns the summary dict."""
    from covid_keras.preprocess.pipelines import PipelineOptions

    log = log or printer(config.quiet)
    recipe = XRAY_CNN
    seed_everything(config.seed)
    dataset, recs = xray_cnn_records(config)
    run = runner.open_run("xray_cnn", dataset, config, log)
    split = runner.holdout_patients(run, recs, recipe.validation(config), config.seed, log)
    options = PipelineOptions(**recipe.pipeline(config))
    cache = image_level.image_cache(recs, dataset, options, COMBINED, config, log)

    models, reports = {}, {}
    for step in _steps(config):
        models[step], reports[step] = train_step(step, run, cache, split, config, log, records=recs)
        test = reports[step].get("test")
        if test:
            log(f"[{step}] held-out accuracy {test['accuracy']:.4f} on {test['n']} images "
                f"(majority rate {test['majority_rate']:.4f})")
    summary = {
        "command": "train.xray_cnn",
        "recipe": recipe.export_metadata(config),
        "dataset": dataset,
        "classes": recipe.class_names(config),
        "cache": cache.folder,
        "run": run.path,
        "split": {part: len(ids) for part, ids in split.items()},
        "reports": reports,
        "models": {step: run.file(step, "model.keras") for step in models},
        "reported": recipe.reported,
    }
    if config.step == "both":
        combined = combined_report(models["xraycnn_step1"], models["xraycnn_step2"], run, cache, split["test"],
                                   config, records=recs)
        summary["combined_report"] = combined
        if combined:
            log(f"[two-step] held-out 4-class accuracy {combined['accuracy']:.4f} on {combined['n']} images "
                f"(majority rate {combined['majority_rate']:.4f}; paper 004: 0.91 on its own data)")
    exported = _export(models, recipe, config, options, summary)
    if exported:
        summary["exported"] = exported
        log(f"exported: {exported}")
    write_json(run.file("summary.json"), summary)
    return summary


def _export(models, recipe, config, options, summary):
    if not config.export_dir:
        return None
    if config.step != "both":
        # Its own name: the two-step export's folder must not get a 3-class newest version.
        return runner.export_model(models[config.step], recipe, config, recipe.class_names(config), options,
                                   name=f"{recipe.name}_{config.step.split('_')[-1]}",
                                   metadata={"test_report": summary["reports"][config.step].get("test")})
    from covid_keras import serving

    return serving.export_two_step(models["xraycnn_step1"], models["xraycnn_step2"], config.export_dir,
                                   name=recipe.name, unrouted_covid_fraction=config.unrouted_covid_fraction,
                                   preprocessing=options,
                                   metadata={"recipe": recipe.export_metadata(config),
                                             "test_report": summary.get("combined_report")})


__all__ = ["COMBINED", "STEP_LABELS", "XrayCNNConfig", "combined_report", "train_step", "train_xray_cnn",
           "xray_cnn_records"]
