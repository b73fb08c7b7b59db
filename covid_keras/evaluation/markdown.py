"""``report.md``: a run's evaluation report (:func:`covid_keras.evaluation.report.build_report`) as Markdown tables."""

_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _pct(estimate):
    """``0.912 [0.85, 0.95]`` of an estimate dict, or ``n/a`` (no cases)."""
    if not estimate or estimate.get("value") is None:
        return "n/a"
    lo, hi = estimate["ci95"] if estimate.get("ci95") else (None, None)
    interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{estimate['value']:.3f}{interval}"


def _counted(estimate):
    if not estimate or estimate.get("value") is None:
        return "n/a"
    return f"{_pct(estimate)} ({estimate['k']}/{estimate['n']})"


def _number(value):
    return "n/a" if value is None else f"{value:.4f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _section(m, ci_name):
    out = [f"### {m['name']}", "",
           f"{m['n']} cases of {m['patients']} patients; accuracy {_counted(m['accuracy'])}, "
           f"majority rate {_number(m['majority_rate'])} (always answering the commonest class). "
           f"Intervals: 95 % {ci_name}.", ""]
    rows = [[c, m["per_class"][c]["support"]] + [_pct(m["per_class"][c][k]) for k in _METRICS]
            for c in m["classes"]]
    out += [_table(["class", "cases", "sensitivity (recall)", "specificity", "PPV (precision)", "NPV", "F1"], rows),
            ""]
    if m["auc"]:
        rows = [[c, _pct(v["roc_auc"]), _pct(v["pr_auc"])] for c, v in m["auc"].items()]
        boot = next(iter(m["auc"].values()))["roc_auc"]
        out += [_table(["class (one vs rest)", "ROC AUC", "PR AUC (average precision)"], rows), "",
                f"AUC intervals: {boot.get('n_boot')} bootstrap resamples of the {m['patients']} patients "
                "(all of a patient's cases together), percentile intervals.", ""]
        dropped = {c: v["roc_auc"].get("dropped") for c, v in m["auc"].items() if v["roc_auc"].get("dropped")}
        if dropped:
            out += ["Resamples without both sides of a class were left out of its interval (the interval is "
                    "conditional on the rest): " + ", ".join(f"{c} {n}" for c, n in dropped.items()) + ".", ""]
    calibration = m.get("calibration")
    if calibration and calibration.get("ece") is not None:
        out += [f"Expected calibration error (top label, {calibration['n_bins']} bins): {calibration['ece']:.4f}.", ""]
    header = ["true \\ predicted"] + m["classes"]
    out += [_table(header, [[c] + row for c, row in zip(m["classes"], m["confusion"])]), ""]
    for kind, name in (m.get("figures") or {}).items():
        out.append(f"![{kind}]({name})")
    if m.get("figures"):
        out.append("")
    if m.get("paper004"):
        out += _paper004(m["paper004"])
    return out


def _paper004(stats):
    confidence = 1 - 0.05 / stats["family"]
    out = [f"Paper 004's statistics: PPV and NPV with family-wise 95 % intervals (Bonferroni over "
           f"m = {stats['family']} intervals, each at {confidence:.4f}; {stats['method']}).", ""]
    rows = [[name, _counted(c["ppv"]), _counted(c["npv"]), c["cases"], c["left_out"]]
            for name, c in stats["comparisons"].items()]
    out += [_table(["comparison", "PPV", "NPV", "cases", "left out (neither side)"], rows), ""]
    return out


def _kfold(table):
    out = [f"### {table['answer']}: {table['k']}-fold cross-validation ({table['level']})", ""]
    header = ["fold", "cases"] + table["columns"]
    rows = [[r["fold"], r["n"]] + [_number(r[c]) for c in table["columns"]] for r in table["folds"]]
    counted = table.get("folds_counted", {})

    def summary(c):
        if table["mean"][c] is None:
            return "n/a"
        over = f" ({counted[c]} folds)" if counted.get(c, table["k"]) < table["k"] else ""
        return f"{table['mean'][c]:.4f} ± {table['std'][c]:.4f}{over}"

    rows.append(["mean ± std", ""] + [summary(c) for c in table["columns"]])
    out += [_table(header, rows), "", f"Standard deviation over the folds with ddof = {table['ddof']}; a fold "
            "without a class has no sensitivity for it and is left out of that column's mean.", ""]
    if table.get("figure"):
        out += [f"![folds]({table['figure']})", ""]
    return out


def render(report):
    """The Markdown text of a report dict."""
    run = report["run"]
    ci_name = {"wilson": "Wilson score", "clopper-pearson": "Clopper-Pearson exact"}.get(report["ci_method"],
                                                                                       report["ci_method"])
    out = [f"# Evaluation report: {run.get('command') or 'run'} ({run.get('recipe') or 'recipe unknown'})", "",
           f"Run folder: `{run['path']}`; dataset: {run.get('dataset') or 'unknown'}.", ""]
    if run["phantom"]:
        out += ["**Phantom run.** " + report["comparison"]["caveat"], ""]
    if not run["finished"]:
        out += ["The run has no summary.json: it has not finished, and this report covers the predictions it "
                "wrote so far.", ""]
    if report["kfold"]:
        out += ["## Cross-validation", ""]
        for table in report["kfold"]:
            out += _kfold(table)
    out += ["## Sections", ""]
    for m in report["sections"]:
        out += _section(m, ci_name)
    comparison = report["comparison"]
    if comparison["rows"]:
        out += ["## The paper's figures beside this run's", "",
                _table(["figure", "paper", "this run", "from"],
                       [[r["figure"], _number(r["paper"]), _number(r["this run"]), r["from"] or "no match"]
                        for r in comparison["rows"]]),
                "", comparison["caveat"], ""]
    return "\n".join(out)
