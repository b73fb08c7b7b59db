"""Paper 002: DenseNet, New-DenseNet and InceptionV3 transfer learning on X-rays or CT images.

One recipe per model (``densenet``, ``new_densenet``, ``inceptionv3``:
docs/papers.md, paper 002), each trained the paper's way: ImageNet
weights, Adam 1e-4, 50 epochs, rotation / zoom / horizontal flip / shift
(our ranges: the paper gives none), on an 80 / 20 split by patient (with
our 10 % validation patients inside the 80 for the best weights). The
held-out 20 % get the report; :func:`train_all_models` trains the three
models on the same split and sets their accuracies side by side, as the
paper's Tables III and IV do.

Real data, by ``--task``:

* ``transfer_xray`` (COVID-19 / Pneumonia / Normal): ``--data`` in the
  Kermany layout (``chest-xray-pneumonia``: pneumonia and normal) or the
  COVID-19 image data collection (``covid-chestxray``), and
  ``--covid-data``, the collection's folder, adding its COVID-19 X-rays to
  Kermany's images (the paper's 430 COVID-19 images came from it);
* ``transfer_ct`` (COVID-19 / Normal): ``--data`` of the SARS-CoV-2
  CT-scan dataset (``sars-cov2-ct``). It publishes no patient ids: every
  image is its own "patient", the adapter warns, and the split's
  identical-content check is the only leakage guard.
"""

import dataclasses
import os

from covid_keras import errors
from covid_keras.recipes import DENSENET, INCEPTIONV3, NEW_DENSENET, config_class
from covid_keras.training import distribute, image_level, runner
from covid_keras.training.fitting import printer, seed_everything
from covid_keras.training.runs import write_json

#: The paper's three models by ``--model``, in its tables' order.
RECIPES = {"densenet": DENSENET, "new_densenet": NEW_DENSENET, "inceptionv3": INCEPTIONV3}
#: Each model's settings (recipe defaults), generated from its recipe.
CONFIGS = {name: config_class(recipe, f"Transfer{name.title().replace('_', '')}Config")
           for name, recipe in RECIPES.items()}


def transfer_records(config):
    """``(dataset name, records)``: the real dataset of ``--data`` (and ``--covid-data``), or the phantoms."""
    from covid_keras.data import datasets

    if not config.data:
        return image_level.phantom_records(config.task, config.phantom_images)
    options = {} if config.dataset == "sars-cov2-ct" else {"task": config.task}
    recs = datasets.load_dataset(config.dataset, config.data, **options)
    name = config.dataset
    if config.dataset == "chest-xray-pneumonia" and not config.covid_data:
        raise errors.ConfigurationError(
            "the Kermany X-rays hold pneumonia and normal images only: pass --covid-data, the COVID-19 image data "
            "collection folder, for paper 002's COVID-19 class."
        )
    if config.covid_data:
        covid = [r for r in datasets.load_dataset("covid-chestxray", config.covid_data, task="transfer_xray")
                 if r.label == "COVID-19"]
        if not covid:
            raise errors.ConfigurationError(
                f"--covid-data {config.covid_data}: holds no COVID-19 X-ray (PA / AP views); check the folder."
            )
        recs = sorted([*recs, *covid], key=lambda r: (r.patient_id, r.paths))
        name = f"{config.dataset}+covid-chestxray"
    return name, recs


def export_name(config):
    """``densenet`` (X-ray task) or ``densenet_ct`` (CT task): the two tasks' models have other classes."""
    return config.recipe.name + ("_ct" if config.task == "transfer_ct" else "")


@distribute.distributed
def train_transfer(config, log=None, records=None):
    """Trains one paper-002 model (``config.recipe``); returns the summary dict.

    Args:
        config: a :data:`CONFIGS` config.
        log: where one-line messages go.
        records: ``(dataset name, records)`` already read (``--all-models``
            reads them once for the three models).
    """
    from covid_keras.preprocess.pipelines import PipelineOptions

    log = log or printer(config.quiet)
    recipe = config.recipe
    seed_everything(config.seed)
    dataset, recs = records or transfer_records(config)
    classes = recipe.class_names(config)
    # The three recipes share their settings: the model's name is part of the folder's hash.
    run = runner.open_run("transfer", f"{recipe.name}-{dataset}", config, log, extra={"model": recipe.name})
    split = runner.holdout_patients(run, recs, recipe.validation(config), config.seed, log)
    options = PipelineOptions(**recipe.pipeline(config))
    cache = image_level.image_cache(recs, dataset, options, classes, config, log)

    model = recipe.build(config)
    image_level.set_bn_momentum(model, config.bn_momentum)
    trainer = image_level.augmenting_model(model, recipe.input_shape(config), config.seed,
                                           recipe.augmentation(config))
    results = image_level.train_holdout(model, run, cache, split, classes, config.stage_list(), config,
                                        trainer=trainer, log=log)
    model_path = run.file("model.keras")
    model.save(model_path)
    reports = image_level.held_out_reports(model, run, cache, split, classes, config.batch_size,
                                           answer=recipe.name, records=recs)
    for part, report in reports.items():
        log(f"[{part}] accuracy {report['accuracy']:.4f} on {report['n']} images "
            f"(majority rate {report['majority_rate']:.4f})")
    summary = {
        "command": "train.transfer",
        "recipe": recipe.export_metadata(config),
        "dataset": dataset,
        "classes": classes,
        "cache": cache.folder,
        "run": run.path,
        "model": model_path,
        "split": {part: len(ids) for part, ids in split.items()},
        "stages": {k: dataclasses.asdict(v) for k, v in results.items()},
        "report": reports,
        "reported": recipe.reported,
    }
    exported = runner.export_model(model, recipe, config, classes, options, name=export_name(config),
                                   metadata={"test_report": reports.get("test")})
    if exported:
        summary["exported"] = exported
        log(f"exported: {exported}")
    write_json(run.file("summary.json"), summary)
    return summary


def configs_for_all_models(argv_values, phantom):
    """The three models' configs from the same typed flags: each recipe's defaults (or phantom preset) under them.

    Args:
        argv_values: ``{setting: value}`` the user typed (no defaults).
        phantom: apply each recipe's phantom preset (no ``--data``).
    """
    import dataclasses as dc

    out = {}
    for name, config_cls in CONFIGS.items():
        fields = {f.name for f in dc.fields(config_cls)}
        unknown = sorted(set(argv_values) - fields)
        if unknown:
            raise errors.ConfigurationError(
                f"--all-models: {name} has no setting {unknown[0]!r} (--{unknown[0].replace('_', '-')}); "
                "leave it out to train the three models."
            )
        values = {**(config_cls.recipe.phantom_preset() if phantom else {}), **argv_values}
        if values.get("run_dir"):  # one folder per model inside the one given
            values["run_dir"] = os.path.join(values["run_dir"], name)
        out[name] = config_cls(**{**{f.name: f.default for f in dc.fields(config_cls)}, **values})
    return out


def train_all_models(configs, log=None):
    """Trains the paper's three models on the same patient split; returns their summaries and the side-by-side table.

    The split depends only on the records, the fractions and the seed, so
    the three runs make the same one; this is checked.
    """
    first = next(iter(configs.values()))
    log = log or printer(first.quiet)
    records = transfer_records(first)
    summaries, splits = {}, {}
    with distribute.session(first, log):  # one session for the three: a worker's scratch lives to the end
        for name, config in configs.items():
            log(f"=== {name} ===")
            summaries[name] = train_transfer(config, log, records=records)
            with open(f"{summaries[name]['run']}/split.json") as f:
                splits[name] = f.read()
    if len(set(splits.values())) != 1:
        raise errors.ConfigurationError(
            "--all-models: the three runs made different patient splits; give them the same --seed, "
            "--val-fraction and --test-fraction."
        )
    task = first.task
    key = "X-ray accuracy" if task == "transfer_xray" else "CT accuracy"
    table = [{"model": name, "accuracy": s["report"].get("test", {}).get("accuracy"),
              "majority_rate": s["report"].get("test", {}).get("majority_rate"),
              "paper": s["reported"].get(key)} for name, s in summaries.items()]
    note = ("built-in phantoms: the paper's column is its own data's, not comparable" if first.data is None
            else f"{records[0]}: the paper's column is its own data's")
    return {"task": task, "table": table, "note": note, "runs": summaries}


__all__ = ["CONFIGS", "RECIPES", "configs_for_all_models", "export_name", "train_all_models", "train_transfer", "transfer_records"]
