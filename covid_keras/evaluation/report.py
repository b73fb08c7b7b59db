"""A run's evaluation report: metrics with intervals, curves, calibration, k-fold tables, paper 004's statistics.

``python -m evaluate.report RUN_DIR`` calls :func:`write_report`, which
reads the run's per-case predictions (:mod:`covid_keras.evaluation.predictions`)
and writes ``RUN_DIR/report/``::

    metrics.json   every number below, each interval as {"value", "ci95", "method", "k", "n"}
    report.md      the same as tables, with the figures
    *.png          per section: ROC, precision-recall, reliability diagram, confusion matrix

A *section* is one answer on one group of cases: a model's held-out test
images, its validation images, a patient head's test studies. A slice
model's file gives two sections: the labelled slices, and the patients
(the mean of all its slices' probabilities against its class). k-fold
runs (papers 000 and 003) get a per-fold table with mean and standard
deviation (ddof 0) and a section pooling every fold's validation cases
(each patient is in exactly one fold's validation side).

Intervals: binomial (Wilson by default, Clopper-Pearson on request) for
the proportions, treating cases as independent; the AUCs' intervals come
from a bootstrap that resamples *patients* (slices of one patient are not
independent), :func:`covid_keras.evaluation.stats.bootstrap_class_aucs`.
"""

import dataclasses
import json
import os
import re

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import stats
from covid_keras.evaluation.predictions import find_predictions, patient_rows

#: Classes that count as viral pneumonia when paper 004's statistics compare bacterial with viral.
_VIRAL = ("viral", "COVID-19", "other viral", "covid")


@dataclasses.dataclass
class Section:
    """One answer on one group of cases, ready for the metrics."""

    name: str
    answer: str
    part: str
    level: str
    classes: list
    y_true: np.ndarray  # int [n]
    probabilities: np.ndarray  # float [n, classes]
    patients: np.ndarray  # str [n], the pseudonymous patient id of each case
    fold: int | None = None

    @property
    def slug(self):
        return _slug(self.name)


def _slug(text):
    """A file-name part of a section or answer name: ``densenet test (image)`` -> ``densenet_test_image``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def sections_of(predictions):
    """The :class:`Section` list of one predictions file: one, or two for a slice model (slices, patients)."""
    p = predictions
    y, probs, patients = p.y_true(), p.probabilities(), p.patients()
    fold = f" fold {p.fold}" if p.fold is not None else ""
    if p.level != "slice":
        return [Section(f"{p.answer} {p.part}{fold} ({p.level})", p.answer, p.part, p.level, p.classes, y, probs,
                        patients, p.fold)]
    labelled = y >= 0
    out = [Section(f"{p.answer} {p.part}{fold} (labelled slices)", p.answer, p.part, "slice", p.classes,
                   y[labelled], probs[labelled], patients[labelled], p.fold)]
    if p.rows and all(row.get("study_label") is not None for row in p.rows):
        patients_of = patient_rows([p])
        out.append(Section(
            f"{p.answer} {p.part}{fold} (patients: mean of slice probabilities)", p.answer, p.part, "patient",
            p.classes, np.array([p.classes.index(r["label"]) for r in patients_of]),
            np.array([[r["probabilities"][c] for c in p.classes] for r in patients_of]),
            np.array([r["patient_id"] for r in patients_of], dtype=object), p.fold))
    return out


def section_metrics(section, *, ci="wilson", n_boot=2000, seed=0):
    """Every number of one section (JSON-ready): counts, intervals, AUCs with patient bootstrap, calibration."""
    from covid_keras.evaluation.metrics import confusion_matrix

    k = len(section.classes)
    y, probs = section.y_true, section.probabilities
    predicted = np.argmax(probs, axis=-1) if len(y) else np.zeros(0, int)
    confusion = confusion_matrix(y, predicted, k)
    metrics = stats.class_metrics(confusion, section.classes, method=ci)
    counts = np.bincount(y, minlength=k) if len(y) else np.zeros(k, int)
    out = {
        "name": section.name, "answer": section.answer, "part": section.part, "level": section.level,
        "fold": section.fold, "classes": section.classes, "n": int(len(y)),
        "patients": int(len(set(section.patients))),
        "accuracy": metrics["accuracy"], "majority_rate": float(counts.max() / len(y)) if len(y) else None,
        "confusion": metrics["confusion"], "per_class": metrics["per_class"],
    }
    present = [c for i, c in enumerate(section.classes) if 0 < counts[i] < len(y)]
    if present and len(y):
        aucs = stats.bootstrap_class_aucs(y, probs, section.patients, section.classes, n_boot=n_boot, seed=seed)
        out["auc"] = {c: aucs[c] for c in present}
    else:
        out["auc"] = {}
    out["calibration"] = stats.calibration(y, probs, classes=section.classes) if len(y) else None
    return out


def fold_table(sections):
    """Paper 000's Table 4 / paper 003's result: per fold accuracy and per-class sensitivity, specificity; mean ± std.

    ``sections``: one answer's fold sections (their metrics dicts), any order.
    The standard deviation is the population one (ddof 0: the folds are
    all the folds, not a sample of them).
    """
    folds = sorted(sections, key=lambda s: s["fold"])
    classes = folds[0]["classes"]
    columns = ["accuracy"] + [f"{c} {m}" for c in classes for m in ("sensitivity", "specificity")]

    def row(m):
        values = {"accuracy": m["accuracy"]["value"]}
        for c in classes:
            for name in ("sensitivity", "specificity"):
                values[f"{c} {name}"] = m["per_class"][c][name]["value"]
        return values

    rows = [{"fold": m["fold"], "n": m["n"], **row(m)} for m in folds]
    mean, std, counted = {}, {}, {}
    for column in columns:
        values = np.array([r[column] for r in rows if r[column] is not None], dtype=float)
        mean[column] = float(values.mean()) if values.size else None
        std[column] = float(values.std(ddof=0)) if values.size else None
        counted[column] = int(values.size)  # a fold without a class has no sensitivity for it
    return {"answer": folds[0]["answer"], "k": len(rows), "columns": columns, "folds": rows, "mean": mean,
            "std": std, "ddof": 0, "folds_counted": counted}


def binary_family_wise(y_true, predicted, positive, negative, m, ci):
    """PPV and NPV of ``positive`` against ``negative`` class indices, each with a Bonferroni family-wise interval.

    Cases whose true class is in neither list, or whose predicted class is
    in neither, are left out (e.g. images predicted Normal when comparing
    bacterial with viral pneumonia).
    """
    y, p = np.asarray(y_true), np.asarray(predicted)
    keep = np.isin(y, positive + negative) & np.isin(p, positive + negative)
    truth, guess = np.isin(y[keep], positive), np.isin(p[keep], positive)
    tp, fp = int(np.sum(truth & guess)), int(np.sum(~truth & guess))
    tn, fn = int(np.sum(~truth & ~guess)), int(np.sum(truth & ~guess))
    return {"ppv": stats.family_wise(tp, tp + fp, m, method=ci), "npv": stats.family_wise(tn, tn + fn, m, method=ci),
            "cases": int(keep.sum()), "left_out": int((~keep).sum())}


def paper004_statistics(section, ci="wilson"):
    """Paper 004's PPV / NPV with family-wise intervals: COVID-19 vs the rest, bacterial vs viral pneumonia.

    Bonferroni over the m = 2 x comparisons intervals computed (PPV and NPV
    of each comparison the section's classes allow: m = 4 for paper 004's
    four classes, 2 for a model with a COVID-19 class only). Returns None
    for a section whose classes allow neither comparison.
    """
    classes = section.classes
    predicted = np.argmax(section.probabilities, axis=-1) if len(section.y_true) else np.zeros(0, int)
    sides = {}
    covid = [i for i, c in enumerate(classes) if c in ("COVID-19", "covid")]
    if covid:
        sides["COVID-19 vs rest"] = (covid, [i for i in range(len(classes)) if i not in covid])
    viral = [i for i, c in enumerate(classes) if c in _VIRAL]
    if "bacterial" in classes and viral:
        sides["bacterial vs viral pneumonia"] = ([classes.index("bacterial")], viral)
    if not sides:
        return None
    m = 2 * len(sides)
    return {"family": m, "method": ci, "comparisons": {
        name: binary_family_wise(section.y_true, predicted, positive, negative, m, ci)
        for name, (positive, negative) in sides.items()}}


def _read_json(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _on_phantoms(run_dir, config, summary, depth=0):
    """Whether a run trained on the built-in phantoms: no ``--data``, or, for a run built on another, that run's."""
    source = summary.get("slice_run") or summary.get("patient_run")
    if "data" not in config and source and depth < 3:  # train.patient_level / train.ensemble: the slice run's data
        return _on_phantoms(source, _read_json(source, "config.json"), _read_json(source, "summary.json"), depth + 1)
    return not config.get("data") or str(summary.get("dataset") or "").startswith("synthetic")


def run_info(run_dir):
    """What the report says about the run: command, dataset, whether it ran on phantoms, the paper's figures."""
    from covid_keras import recipes

    config, summary = _read_json(run_dir, "config.json"), _read_json(run_dir, "summary.json")
    recipe = summary.get("recipe") or {}
    recipe_name = recipe.get("recipe") or recipe.get("name")  # Recipe.export_metadata's key
    reported = dict(recipes.RECIPES[recipe_name].reported) if recipe_name in recipes.RECIPES else {}
    return {"command": summary.get("command"), "recipe": recipe_name, "dataset": summary.get("dataset") or None,
            "task": config.get("task"), "phantom": bool(_on_phantoms(run_dir, config, summary)),
            "reported": reported, "finished": bool(summary)}


def build_report(run_dir, *, ci="wilson", n_boot=2000, seed=0, log=None):
    """Every number of a run's report (the ``metrics.json`` dict) and its sections.

    Args:
        run_dir: a run folder a training command wrote.
        ci: ``"wilson"`` or ``"clopper-pearson"`` for the binomial intervals.
        n_boot: patient bootstrap resamples for the AUC intervals.
        seed: the bootstrap's seed.

    Returns:
        ``(metrics dict, sections list)``.

    Raises:
        ConfigurationError: not a run folder, or a run without per-case predictions.
    """
    log = log or (lambda message: None)
    if ci not in stats.CI_METHODS:
        raise errors.ConfigurationError(f"--ci must be one of {', '.join(stats.CI_METHODS)}. Received: {ci!r}")
    run_dir = os.fspath(run_dir)
    found = find_predictions(run_dir)
    info = run_info(run_dir)
    sections, results, folds = [], [], {}
    for predictions in found:
        for section in sections_of(predictions):
            log(f"[report] {section.name}: {len(section.y_true)} cases")
            metrics = section_metrics(section, ci=ci, n_boot=n_boot, seed=seed)
            metrics["file"] = os.path.relpath(predictions.path, run_dir)
            statistics = paper004_statistics(section, ci)
            if statistics:
                metrics["paper004"] = statistics
            if section.fold is not None:
                folds.setdefault((section.answer, section.level), []).append((section, metrics))
                continue
            sections.append(section)
            results.append(metrics)
    kfold = []
    for (answer, level), entries in folds.items():
        kfold.append({**fold_table([m for _, m in entries]), "level": level,
                      "fold_sections": [m for _, m in entries]})
        pooled = _pooled(answer, level, [s for s, _ in entries])
        log(f"[report] {pooled.name}: {len(pooled.y_true)} cases")
        metrics = section_metrics(pooled, ci=ci, n_boot=n_boot, seed=seed)
        statistics = paper004_statistics(pooled, ci)
        if statistics:
            metrics["paper004"] = statistics
        sections.append(pooled)
        results.append(metrics)
    report = {"run": {**info, "path": os.path.abspath(run_dir)}, "ci_method": ci, "bootstrap": {
        "resamples": n_boot, "seed": seed, "unit": "patient"}, "sections": results, "kfold": kfold}
    report["comparison"] = compare_with_paper(info, results, kfold)
    return report, sections


def _pooled(answer, level, fold_sections):
    first = fold_sections[0]
    return Section(f"{answer} all folds' validation cases ({level})", answer, "val (pooled folds)", level,
                   first.classes, np.concatenate([s.y_true for s in fold_sections]),
                   np.concatenate([s.probabilities for s in fold_sections]),
                   np.concatenate([s.patients for s in fold_sections]))


def compare_with_paper(info, sections, kfold):
    """The paper's reported figures beside this run's matching numbers, with the caveat when they cannot compare."""
    rows = []
    for name, value in info["reported"].items():
        other_task = (info.get("task") == "transfer_xray" and name.startswith("CT ")) or (
            info.get("task") == "transfer_ct" and name.startswith("X-ray "))
        number, where = (None, None) if other_task else _matching(name, sections, kfold)
        rows.append({"figure": name, "paper": value, "this run": number, "from": where})
    if info["phantom"]:
        caveat = ("This run trained and was evaluated on the built-in synthetic phantoms, not on the paper's data: "
                  "its numbers test the code path and are not comparable with the paper's.")
    else:
        caveat = ("The paper's figures come from its own data, split and hardware; compare them with care, "
                  "and with this run's intervals.")
    return {"rows": rows, "caveat": caveat}


def _matching(name, sections, kfold):
    """``(number, where)``: this run's number for a reported figure's name, or ``(None, None)`` when none matches.

    A figure matches only a number of the same kind: a k-fold figure the
    fold table's mean (or std), a validation or test figure a section of
    that part, a slice or patient figure a section of that level, a
    figure "4 classes" a four-class section. A figure on another test set
    (paper 001's SPGC test) matches nothing: this run has no such set.
    """
    lowered = name.lower()
    metric = "sensitivity" if "sensitivity" in lowered else "specificity" if "specificity" in lowered else "accuracy"
    if "spgc" in lowered:
        return None, None
    if "fold" in lowered:
        if not kfold:
            return None, None
        table = kfold[0]
        column = "accuracy" if metric == "accuracy" else next(
            (c for c in table["columns"] if c.lower().startswith(("covid-19 ", "covid ")) and c.endswith(metric)), None)
        if column is None:
            return None, None
        statistic = "std" if "std" in lowered else "mean"
        return table[statistic][column], f"{table['answer']} {table['k']}-fold {statistic}"
    part = "val" if "validation" in lowered else "test"
    levels = {"patient", "study", "volume"} if "patient" in lowered else {"slice"} if "slice" in lowered else None
    found = re.search(r"(\d+) classes", lowered)
    classes = int(found.group(1)) if found else None
    candidates = [s for s in sections if s["part"] == part and (levels is None or s["level"] in levels)
                  and (classes is None or len(s["classes"]) == classes)]
    if len(candidates) != 1:
        return None, None  # none, or several answers (heads) that the figure's name does not tell apart
    best = candidates[0]
    if metric == "accuracy":
        return best["accuracy"]["value"], best["name"]
    covid = next((c for c in best["classes"] if c in ("COVID-19", "covid")), None)
    return (best["per_class"][covid][metric]["value"], best["name"]) if covid else (None, None)


def write_report(run_dir, *, out_dir=None, ci="wilson", n_boot=2000, seed=0, figures=True, log=None):
    """Writes ``metrics.json``, ``report.md`` and the figures into ``out_dir`` (default ``RUN_DIR/report``).

    Returns:
        ``{"report": folder, "metrics": path, "markdown": path, "figures": [paths], "sections": n}``.
    """
    from covid_keras.evaluation import markdown, plots
    from covid_keras.training.runs import write_json

    report, sections = build_report(run_dir, ci=ci, n_boot=n_boot, seed=seed, log=log)
    out_dir = os.fspath(out_dir or os.path.join(run_dir, "report"))
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    if figures:
        for section, metrics in zip(sections, report["sections"]):
            metrics["figures"] = _section_figures(plots, section, metrics, out_dir)
            paths += [os.path.join(out_dir, f) for f in metrics["figures"].values()]
        for table in report["kfold"]:
            table["figure"] = f"folds_{_slug(table['answer'])}.png"
            plots.fold_figure([{c: r[c] for c in table["columns"]} for r in table["folds"]],
                              os.path.join(out_dir, table["figure"]), metrics=table["columns"],
                              title=f"{table['answer']}: {table['k']}-fold cross-validation")
            paths.append(os.path.join(out_dir, table["figure"]))
    metrics_path = os.path.join(out_dir, "metrics.json")
    write_json(metrics_path, report)
    markdown_path = os.path.join(out_dir, "report.md")
    with open(markdown_path + ".tmp", "w") as f:
        f.write(markdown.render(report))
    os.replace(markdown_path + ".tmp", markdown_path)
    return {"report": out_dir, "metrics": metrics_path, "markdown": markdown_path, "figures": paths,
            "sections": len(report["sections"])}


def _section_figures(plots, section, metrics, out_dir):
    """The section's PNGs (file names relative to ``out_dir``)."""
    names = {}
    if metrics["n"] == 0:
        return names
    slug = section.slug
    names["confusion"] = f"confusion_{slug}.png"
    plots.confusion_figure(metrics["confusion"], section.classes, os.path.join(out_dir, names["confusion"]),
                           title=f"Confusion matrix: {section.name}")
    if metrics["auc"]:
        aucs = {c: v["roc_auc"] for c, v in metrics["auc"].items()}
        names["roc"] = f"roc_{slug}.png"
        plots.roc_figure(section.y_true, section.probabilities, section.classes, os.path.join(out_dir, names["roc"]),
                         aucs=aucs, title=f"ROC, one vs rest: {section.name}")
        names["pr"] = f"pr_{slug}.png"
        plots.pr_figure(section.y_true, section.probabilities, section.classes, os.path.join(out_dir, names["pr"]),
                        aucs={c: v["pr_auc"] for c, v in metrics["auc"].items()},
                        title=f"Precision-recall, one vs rest: {section.name}")
    if metrics["calibration"]:
        names["reliability"] = f"reliability_{slug}.png"
        plots.reliability_figure(metrics["calibration"], os.path.join(out_dir, names["reliability"]))
    return names
