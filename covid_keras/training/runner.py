"""The steps every paper's training command shares, each reading the recipe.

A command line is a recipe plus the data its stages train on::

    run = open_run("slice_level", dataset, config)             # run folder named by the settings' hash
    split = holdout_patients(run, records, recipe.validation(config), config.seed)   # split.json, guarded
    ... build the cache and tf.data pipelines (covid_keras.training.pipelines) ...
    results = stages.run_stages(model, run, config.stage_list(), stage_data, classes, trainer=augmenting_model)
    ... held-out report (covid_keras.evaluation) ...
    export_model(model, recipe, config, classes, preprocessing)        # saved_models/<recipe>/<version>

k-fold runs (papers 000 and 003) put :func:`covid_keras.training.crossval.cross_validate`
around the stages: one resumable sub-run per fold, then a final model.
"""

import json
import os

from covid_keras import errors
from covid_keras.training import distribute
from covid_keras.training.runs import RunFolder, config_hash, write_json, write_records


def open_run(command_dir, prefix, config, log=print, extra=None):
    """The run folder of ``config``: ``--run-dir``, or ``<runs_root>/<command_dir>/[<prefix>-]<hash>``.

    The hash is over ``config.settings()`` (every setting that changes what
    the run computes) and ``extra`` (e.g. the run this one builds on), so
    the same command finds an interrupted run again and resumes it; another
    setting gets another folder. Under ``--strategy multi-worker`` a worker
    other than the chief keeps a copy in its temporary folder
    (:func:`covid_keras.training.distribute.run_path`).
    """
    settings = {**config.settings(), **(extra or {})}
    name = f"{prefix}-{config_hash(settings)}" if prefix else config_hash(settings)
    path = config.run_dir or os.path.join(config.runs_root, command_dir, name)
    mine = distribute.run_path(path, fresh=config.fresh)  # a copy under multi-worker, except on the chief
    run = RunFolder.open(mine, settings, fresh=config.fresh)
    log(f"run folder: {path}" + (f" (this worker's copy: {mine})" if mine != path else ""))
    return run


def load_records(data, dataset, phantom_patients, seed, phantom_size=128):
    """``(dataset name, study records)`` of a real dataset (``--data``), or of the built-in CT phantoms."""
    from covid_keras.data import datasets, synthetic

    if data:
        return dataset, datasets.load_dataset(dataset, data)
    config = synthetic.CTPhantomConfig(patients_per_class=phantom_patients, size=phantom_size, seed=seed)
    return "synthetic-ct", synthetic.ct_dataset(config)


def holdout_patients(run, records, protocol, seed, log=print):
    """The run's patient split (``split.json``): made once, by patient, with the leakage guard; reused on resume.

    The records go to ``records.json`` (:func:`covid_keras.training.runs.write_records`).

    Args:
        run: the :class:`RunFolder`.
        records: the dataset's :class:`covid_keras.data.datasets.Record` list.
        protocol: a :class:`covid_keras.recipes.Holdout` (validation and
            held-out test fractions of the patients).
        seed: the split's seed.

    Returns:
        ``{"train": [patient ids], "val": [...], "test": [...]}``.
    """
    path = run.file("split.json")
    if os.path.exists(path):
        with open(path) as f:
            split = json.load(f)
    else:
        split = split_patients(records, protocol.val_fraction, protocol.test_fraction, seed)
        write_json(path, split)
    write_records(run, records)
    log(f"patients: {len(split['train'])} train, {len(split['val'])} validation, {len(split['test'])} test")
    return split


def split_patients(records_list, val_fraction, test_fraction, seed):
    """Patient-grouped, stratified train / validation / test split with the leakage guard."""
    from covid_keras.data.splits import holdout_split

    labels = {r.label for r in records_list}
    if len(labels) < 2:
        only = next(iter(labels)) if labels else "none"
        raise errors.ConfigurationError(
            f"the dataset has only one class ({only}); a classifier needs studies of at least two "
            "classes, check --data and --dataset."
        )
    rest, test = holdout_split(records_list, test_size=test_fraction, seed=seed) if test_fraction else (records_list, [])
    train, val = holdout_split(rest, test_size=val_fraction / max(1e-9, 1 - test_fraction), seed=seed + 1)
    return {name: sorted({r.patient_id for r in part}) for name, part in
            (("train", train), ("val", val), ("test", test))}


def export_model(model, recipe, config, classes, preprocessing, metadata=None, name=None):
    """Exports a trained image model for TF Serving as ``<export_dir>/<name or recipe name>/<version>``.

    ``name`` keeps models of one recipe with other class lists apart (paper
    002's CT task: ``densenet_ct``), so that TF Serving never serves one
    under the other's name.

    The metadata records the recipe (name, builder, builder arguments,
    classes, pipeline: :meth:`Recipe.export_metadata`) beside ``metadata``,
    so that predictions never guess a class list. None when
    ``config.export_dir`` is None.
    """
    if not config.export_dir:
        return None
    from covid_keras import serving

    record = recipe.export_metadata(config)
    if list(classes) != record["classes"]:
        raise errors.ConfigurationError(
            f"recipe {recipe.name}: the data's classes {list(classes)} differ from the recipe's {record['classes']}."
        )
    return serving.export(model, config.export_dir, name=name or recipe.name, class_names=list(classes),
                          preprocessing=preprocessing, metadata={"recipe": record, **(metadata or {})})


def export_crossval_model(model, recipe, config, classes, preprocessing, crossval_view):
    """Exports a cross-validated run's final model, its metadata holding the folds' ``k``, ``mean`` and ``std``.

    ``crossval_view`` is the run's fold table (``volume_level.table4``,
    ``detl.fold_table``). Returns the version folder, or None (no export).
    """
    return export_model(model, recipe, config, classes, preprocessing, metadata={
        "crossval": {key: crossval_view[key] for key in ("k", "mean", "std")}})
