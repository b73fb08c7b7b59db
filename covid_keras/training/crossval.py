"""K-fold cross-validation by patient, resumable fold by fold, then a final model.

:func:`cross_validate` splits the records once into ``k`` patient-grouped
stratified folds (:func:`covid_keras.data.splits.kfold_splits`, with its
leakage guard), writes the assignment to ``folds.json`` and trains one
model per fold in its own sub-run folder, ``folds/fold_<i>/``, through a
``train_fold`` function the paper's runner gives. A fold with a
``report.json`` is finished and only read back; an interrupted fold is
trained again by the same ``train_fold`` call, and its stages continue
from their last finished epoch (:func:`covid_keras.training.fitting.fit_stage`'s
BackupAndRestore in the sub-run folder). A resumed run never splits again:
it reads ``folds.json``.

The run folder then holds::

    folds.json                  patient ids of every fold's train and validation side
    records.json                the records the folds split (covid_keras.training.runs.write_records)
    folds/fold_<i>/             one sub-run per fold (config.json, logs, checkpoints, stages)
    folds/fold_<i>/report.json  the fold's metrics, written when it finished
    final/                      the model trained on all records (``final=True``)
    crossval.json               per-fold reports, their mean and standard deviation

Example:
    >>> from covid_keras.training import crossval
    >>> def train_fold(fold_run, train, val, fold):  # doctest: +SKIP
    ...     model = build_model()
    ...     fit_stage(model, fold_run, "train", to_dataset(train), to_dataset(val), ...)
    ...     return classification_report(labels(val), model.predict(...), classes)
    >>> summary = crossval.cross_validate(run, records, k=4, seed=0, train_fold=train_fold)  # doctest: +SKIP
    >>> summary["mean"]["accuracy"], summary["std"]["accuracy"]  # doctest: +SKIP
"""

import json
import os
from collections import Counter, defaultdict

import keras
import numpy as np

from covid_keras import errors
from covid_keras.data import splits
from covid_keras.training import distribute
from covid_keras.training.runs import RunFolder, write_json, write_records

#: np.std's ddof for the spread over folds: the folds are the whole set of
#: folds, not a sample of them (as scikit-learn's cross_validate reports).
STD_DDOF = 0


def cross_validate(run, records, *, k, seed, train_fold, final=True, log=print, check_content=True,
                   stratify=True):
    """Trains one model per patient-grouped fold, summarises them, then (``final``) one on all records.

    Before each model, ``keras.utils.clear_session()`` gives it fresh global
    state (auto layer names, graph) and ``keras.utils.set_random_seed``
    seeds it: ``seed + i`` for fold ``i``, ``seed`` for the final model.
    Seeding per fold (``clear_session`` also drops Keras' global seed)
    makes a fold train the same whether the folds before it ran in this
    process or were finished earlier and only read back.

    Args:
        run: the :class:`covid_keras.training.runs.RunFolder` of the whole
            cross-validation.
        records: :class:`covid_keras.data.datasets.Record` items of every
            patient taking part (the held-out test patients left out).
        k: number of folds, at least 2 and at most the number of patients
            of the smallest class (when stratifying).
        seed: the folds' shuffling seed, and the base of each model's seed.
        train_fold: ``train_fold(fold_run, train_records, val_records, fold)``
            trains one model in the sub-run folder ``fold_run`` (a
            :class:`RunFolder`) and returns a JSON-ready dict of metrics
            (e.g. :func:`covid_keras.evaluation.classification_report`).
            ``fold`` is 1, ..., k, or ``"final"`` with ``val_records=None``.
        final: after the folds, train a model on all records (sub-run
            ``final/``).
        log: where one-line messages go.
        check_content: the leakage guard also compares file contents (and
            groups patients that share an identical file).
        stratify: keep class proportions (of patients) in every fold.

    Returns:
        The dict written to ``crossval.json``: ``k``; ``folds``, one
        ``{"fold": i, "val_patients": n, "train_patients": n, "report":
        {...}}`` per fold; ``mean`` and ``std`` per numeric metric, nested
        dicts flattened to ``"sensitivity/COVID-19"`` keys (lists such as the
        confusion matrix stay per fold only); ``counts``, the folds each
        metric rests on (a None value, a class absent from a fold's
        validation patients, is left out of its mean and std);
        ``std_ddof`` (0: ``np.std`` over the folds); ``final``: the final
        model's report or None.

    Raises:
        ConfigurationError: ``k`` is below 2, above the patients of the
            smallest class (or of all, without ``stratify``), or differs
            from the run's ``folds.json``; the records are not the patients
            of ``folds.json``; ``train_fold`` returned no dict.
        SplitError: the folds cannot be made (e.g. a class with one patient).
        LeakageError: a fold would leak.
    """
    records = list(records)
    folds = _fold_assignment(run, records, k, seed, check_content, stratify, log)
    write_records(run, records)  # what the evaluation commands read the run's data back from
    entries = []
    for i, (train, val) in enumerate(folds, start=1):
        val_patients = sorted({r.patient_id for r in val})
        report, state = _run_one(run.file("folds", f"fold_{i}"), {"fold": i, "val_patients": val_patients},
                                 train_fold, train, val, i, seed + i)
        log(f"[fold {i}/{len(folds)}] {_headline(report)}{_STATE_NOTE[state]}")
        entries.append({"fold": i, "val_patients": len(val_patients),
                        "train_patients": len({r.patient_id for r in train}), "report": report})
    summary = {"k": len(folds), "folds": entries, **summarise([e["report"] for e in entries]),
               "std_ddof": STD_DDOF, "final": None}
    log(f"[crossval] {_spread(summary, 'accuracy')} over {len(folds)} folds (std ddof={STD_DDOF})")
    write_json(run.file("crossval.json"), summary)  # the folds' figures, even if the final model fails
    if final:
        patients = len({r.patient_id for r in records})
        report, state = _run_one(run.file("final"), {"fold": "final", "patients": patients},
                                 train_fold, records, None, "final", seed)
        log(f"[final] {_headline(report)}{_STATE_NOTE[state]}")
        summary["final"] = report
        write_json(run.file("crossval.json"), summary)
    return summary


def summarise(reports):
    """Mean and standard deviation (``np.std``, ddof 0) of every numeric metric over fold reports.

    Nested dicts are flattened with ``/`` (``sensitivity/COVID-19``);
    booleans, strings and lists are left out. A metric that is None or
    missing in a fold is left out of that metric's mean and std, and
    ``counts`` says how many folds each one rests on (its mean and std are
    None when no fold has it).

    Returns:
        ``{"mean": {metric: value}, "std": {metric: value}, "counts": {metric: folds}}``.
    """
    values = {}  # metric -> its non-None values, metrics in first-seen order
    for report in reports:
        for name, value in _flatten(report).items():
            values.setdefault(name, [])
            if value is not None:
                values[name].append(value)
    mean, std, counts = {}, {}, {}
    for name, got in values.items():
        counts[name] = len(got)
        mean[name] = float(np.mean(got)) if got else None
        std[name] = float(np.std(got, ddof=STD_DDOF)) if got else None
    return {"mean": mean, "std": std, "counts": counts}


def _flatten(report, prefix=""):
    """``{"a/b": number or None}`` of a nested metrics dict (non-numeric values dropped)."""
    flat = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif value is None or (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)):
            flat[name] = None if value is None else float(value)
    return flat


# --------------------------------------------------------------------------
# Fold assignment
# --------------------------------------------------------------------------


def _fold_assignment(run, records, k, seed, check_content, stratify, log):
    """``[(train, val), ...]``: new folds written to folds.json, or the run's saved ones."""
    check_folds(records, k, stratify)
    path = run.file("folds.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        folds = _saved_folds(path, saved, records, k, check_content)
        log(f"[crossval] {len(folds)} folds read from {path} (not split again)")
        return folds
    folds = splits.kfold_splits(records, k=k, seed=seed, stratify=stratify, check_content=check_content)
    write_json(path, {"k": int(k), "seed": seed, "stratify": stratify,
                      "folds": [{"fold": i, "train": _patients(train), "val": _patients(val)}
                                for i, (train, val) in enumerate(folds, start=1)]})
    log(f"[crossval] {len(folds)} folds of {len(_patients(records))} patients written to {path}")
    return folds


def check_folds(records, k, stratify=True, option="k"):
    """ConfigurationError for a ``k`` no split of these records can have.

    Args:
        records: the records taking part. k: the number of folds.
        stratify: every fold needs a patient of every class.
        option: how the message names ``k`` (a command line passes ``"--folds"``).
    """
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise errors.ConfigurationError(f"`{option}` must be an integer of at least 2. Received: {option}={k}")
    per_class = Counter(_patient_labels(records).values())
    if not per_class:
        return  # kfold_splits names the empty record list
    label, smallest = min(per_class.items(), key=lambda kv: (kv[1], kv[0]))
    total = sum(per_class.values())
    if total < k:
        raise errors.ConfigurationError(f"{k} folds need at least {k} patients, but there are {total}; "
                                        f"use {option} <= {total} or add patients.")
    if stratify and smallest < k:
        fix = "add patients of that class" + (", or pass stratify=False" if option == "k" else "")
        raise errors.ConfigurationError(
            f"{k} folds need at least {k} patients of every class, but class {label!r} has {smallest}; "
            f"use {option} <= {smallest} or {fix}."
        )


def _patient_labels(records):
    """Each patient's label as the splits stratify by: its most frequent one (ties: first by name)."""
    counts = defaultdict(Counter)
    for record in records:
        counts[record.patient_id][record.label] += 1
    return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for p, c in counts.items()}


def _patients(records):
    return sorted({r.patient_id for r in records})


def _saved_folds(path, saved, records, k, check_content):
    """The folds of ``folds.json`` as record lists, checked against ``records`` and the leakage guard."""
    if saved.get("k") != k:
        raise errors.ConfigurationError(
            f"{path}: holds {saved.get('k')} folds, not k={k}; pass --fresh to start the run over."
        )
    patients = set(_patients(records))
    val_sets = [set(fold["val"]) for fold in saved["folds"]]
    assigned = set().union(*val_sets)
    if assigned != patients:
        missing, extra = sorted(patients - assigned), sorted(assigned - patients)
        raise errors.ConfigurationError(
            f"{path}: its folds hold other patients than the records ({len(missing)} new, "
            f"{len(extra)} gone); the data changed since the run began: pass --fresh to split again."
        )
    folds = []
    for fold, val_set in zip(saved["folds"], val_sets):
        train_set = set(fold["train"])
        train = [r for r in records if r.patient_id in train_set]
        val = [r for r in records if r.patient_id in val_set]
        splits.check_leakage(train, val, check_content=check_content)
        folds.append((train, val))
    return folds


# --------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------

_STATE_NOTE = {"new": "", "resumed": " (resumed)", "finished": " (finished earlier)"}


def _run_one(path, config, train_fold, train, val, fold, model_seed):
    """``(report, state)`` of one fold (or the final model): read back when finished, else trained.

    ``state`` is ``"finished"`` (report.json was there), ``"resumed"`` (the
    sub-run folder held an unfinished run) or ``"new"``.
    """
    started = os.path.exists(os.path.join(path, "config.json"))
    sub_run = RunFolder.open(path, config)
    report_path = sub_run.file("report.json")
    if os.path.exists(report_path):
        with open(report_path) as f:
            return json.load(f), "finished"
    distribute.clear_session()  # keras.utils.clear_session(), keeping a --strategy scope
    keras.utils.set_random_seed(model_seed)
    report = train_fold(sub_run, train, val, fold)
    if not isinstance(report, dict):
        raise errors.ConfigurationError(
            f"train_fold must return a dict of metrics. Received for fold {fold}: {type(report).__name__}"
        )
    write_json(report_path, report)
    with open(report_path) as f:  # what a resumed run reads back (numpy scalars as floats, tuples as lists)
        return json.load(f), "resumed" if started else "new"


def _headline(report):
    value = report.get("accuracy")
    return f"accuracy {value:.4g}" if isinstance(value, (int, float)) else "done"


def _spread(summary, metric):
    mean, std = summary["mean"].get(metric), summary["std"].get(metric)
    return f"{metric} n/a" if mean is None else f"{metric} {mean:.4g} ± {std:.2g}"


__all__ = ["STD_DDOF", "check_folds", "cross_validate", "summarise"]
