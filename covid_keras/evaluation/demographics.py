"""Paper 004's logistic regression of correctness on age, sex, BMI and ethnicity.

Paper 004 (XrayCNN) asks whether the network's performance is associated
with the patient's age, gender, BMI and ethnicity (its evaluation step 3:
"logistic regression ... has significant interaction term"). Here each
case of a predictions file (:mod:`covid_keras.evaluation.predictions`) is
*correct* when its arg-max class is its true class, and
``statsmodels.formula.api.logit`` fits correct ~ covariates, by default
``correct ~ age * C(sex) + bmi + C(ethnicity, Treatment(<most frequent>))``
built from the covariates the rows carry and that vary. An odds ratio above
1 means more often correct: per year of age, per kg/m2 of BMI, or for a
category against its reference level.

Small or lopsided test sets make maximum likelihood fail in ways that look
like results: huge odds ratios with infinite intervals. So every fit says
whether it converged, whether the data are (quasi-)separated (checked by a
linear program, not only by statsmodels' warnings), whether the design is
rank-deficient, and whether there are fewer than 10 of the rarer outcome per
term; all-correct or all-wrong predictions are reported, not fitted.

:func:`correctness_regression` fits one set of rows; :func:`demographics_report`
fits a run's predictions and writes ``report/demographics.json`` and
``report/demographics.md`` (``python -m evaluate.demographics RUN_DIR``).
"""

import collections
import math
import os
import re
import warnings

import numpy as np

from covid_keras import errors
from covid_keras.evaluation.predictions import COVARIATES, Predictions, find_predictions, patient_rows

NUMERIC = ("age", "bmi")
CATEGORICAL = ("sex", "ethnicity")
#: A covariate known for fewer than this fraction of the rows is left out of the default formula
#: (a complete-case fit would drop the other rows).
MIN_KNOWN_FRACTION = 0.5
#: Events per term below which the estimates are flagged as unstable (Peduzzi et al., 1996).
MIN_EVENTS_PER_TERM = 10
PHANTOM_NOTE = ("**Phantom run.** The covariates of the built-in phantoms are synthetic, drawn independently of "
                "the class: no association is expected, and about 1 term in 20 reaches p < 0.05 by chance. Not "
                "comparable with the paper.")
UNITS = {"age": "per year", "bmi": "per kg/m\u00b2"}


def correctness_frame(predictions):
    """One row per labelled case: ``correct`` (0 / 1), the true ``label``, ``patient_id`` and the covariates.

    Args:
        predictions: a :class:`~covid_keras.evaluation.predictions.Predictions`,
            or a list of its row dicts (``label``, ``probabilities``, optional
            ``covariates`` and ``patient_id``).

    Returns:
        A pandas DataFrame with columns ``correct``, ``label``, ``patient_id``
        and :data:`~covid_keras.evaluation.predictions.COVARIATES` (numbers
        as floats, categories as strings, missing as NaN / None). Rows whose
        label is None (unlabelled slices) are left out.

    Example:
        >>> rows = [{"label": "a", "probabilities": {"a": 0.9, "b": 0.1}, "covariates": {"age": 40}}]
        >>> correctness_frame(rows)[["correct", "age"]].values.tolist()
        [[1.0, 40.0]]
    """
    import pandas as pd

    rows = predictions.rows if isinstance(predictions, Predictions) else list(predictions)
    records = []
    for row in rows:
        if row.get("label") is None:
            continue
        probabilities = row["probabilities"]
        predicted = max(probabilities, key=probabilities.get)  # the first of equal maxima, as argmax
        known = row.get("covariates") or {}
        records.append({"correct": int(predicted == row["label"]), "label": row["label"],
                        "patient_id": row.get("patient_id"),
                        **{c: known.get(c) for c in COVARIATES}})
    frame = pd.DataFrame(records, columns=["correct", "label", "patient_id", *COVARIATES])
    for c in NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    for c in CATEGORICAL:
        frame[c] = frame[c].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    frame["correct"] = frame["correct"].astype(float)
    return frame


def default_terms(frame):
    """The default formula's terms for ``frame``, and why each left-out covariate is left out.

    Age and sex enter as ``age * C(sex)`` (both main effects and their
    interaction) when both are usable, BMI as a number, ethnicity as a
    category against its most frequent level. A covariate is left out when
    no row carries it, when fewer than :data:`MIN_KNOWN_FRACTION` of the
    rows do, or when it is constant over the rows that carry all the kept
    ones.

    Returns:
        ``(terms, used, dropped)``: the right-hand side as a list of terms,
        the covariates used, and ``{covariate: reason}`` for the others.
    """
    n = len(frame)
    dropped, used = {}, []
    for c in COVARIATES:
        known = int(frame[c].notna().sum())
        if known == 0:
            dropped[c] = "absent from every row"
        elif known < MIN_KNOWN_FRACTION * n:
            dropped[c] = f"known for {known} of {n} rows only"
        else:
            used.append(c)
    complete = frame.dropna(subset=used)
    for c in list(used):
        values = complete[c].unique()
        if len(values) < 2:
            dropped[c] = f"the same for every row ({values[0] if len(values) else 'none'})"
            used.remove(c)
    terms = []
    if "age" in used and "sex" in used:
        terms.append("age * C(sex)")
    else:
        terms += [t for c, t in (("age", "age"), ("sex", "C(sex)")) if c in used]
    if "bmi" in used:
        terms.append("bmi")
    if "ethnicity" in used:
        counts = complete["ethnicity"].value_counts()
        reference = min(counts.index[counts == counts.max()])
        terms.append(f"C(ethnicity, Treatment({reference!r}))")
    return terms, used, dropped


def _references(frame):
    """``{column: level}``: the reference level patsy's ``C(column)`` takes (the first in sorted order)."""
    return {c: min(frame[c].dropna().unique()) for c in (*CATEGORICAL, "label") if frame[c].notna().any()}


def _referenced(formula):
    """The covariates a formula names."""
    return [c for c in COVARIATES if re.search(rf"\b{c}\b", formula)]


def _full_formula(formula):
    """``formula`` with ``correct ~`` in front when only the right-hand side is given."""
    if "~" not in formula:
        return f"correct ~ {formula}"
    if formula.split("~", 1)[0].strip() != "correct":
        raise errors.ConfigurationError(
            f"formula {formula!r}: its left-hand side must be `correct` (the answer was right); "
            "write e.g. 'correct ~ age * C(sex) + bmi', or the right-hand side alone."
        )
    return formula


def separation(exog, y):
    """Whether the outcome ``y`` is separated by the design ``exog``: "complete", "quasi" or None.

    Maximum-likelihood logistic estimates exist if and only if no direction
    beta has ``s_i x_i . beta >= 0`` for every case (``s = 2 y - 1``) with at
    least one strict inequality (Albert & Anderson, 1984); the check is the
    linear program of Konis (2007), as in R's ``detectseparation``.
    Hand-written because no Python package offers it, and statsmodels only
    warns (PerfectSeparationWarning) when the fitted probabilities reach 0
    or 1, not for quasi-separation or every complete one.

    Args:
        exog: float [n, p], the design matrix (intercept included).
        y: [n] of 0 / 1.

    Returns:
        "complete" when some beta classifies every case strictly right,
        "quasi" when one does so for some and ties the rest, None otherwise.
    """
    from scipy.optimize import linprog

    x = np.asarray(exog, np.float64)
    x = x / np.maximum(np.abs(x).max(axis=0), 1e-300)  # positive column scales keep the feasible directions
    a = (2.0 * np.asarray(y, np.float64) - 1.0)[:, None] * x
    n, p = a.shape
    # Complete: max t with a beta >= t, |beta| <= 1, t <= 1.
    complete = linprog(np.r_[np.zeros(p), -1.0], A_ub=np.c_[-a, np.ones(n)], b_ub=np.zeros(n),
                       bounds=[(-1, 1)] * p + [(0, 1)], method="highs")
    if complete.status == 0 and -complete.fun > 1e-7:
        return "complete"
    quasi = linprog(-a.sum(axis=0), A_ub=-a, b_ub=np.zeros(n), bounds=[(-1, 1)] * p, method="highs")
    if quasi.status == 0 and -quasi.fun > 1e-7 * n:
        return "quasi"
    return None


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _fit(model):
    """``(result, warnings)``: the fit, and every warning it raised as ``"Category: message"`` (unique)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            result = model.fit(disp=0)
    seen = dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
    return result, list(seen)


def _terms_table(result):
    with np.errstate(over="ignore"):
        odds, ci = np.exp(result.params), np.exp(result.conf_int())
    return [{"term": name, "coef": _finite(result.params[name]), "se": _finite(result.bse[name]),
             "odds_ratio": _finite(odds[name]), "ci95": [_finite(ci.loc[name, 0]), _finite(ci.loc[name, 1])],
             "p_value": _finite(result.pvalues[name])} for name in result.params.index]


def _flags(fit, n_terms):
    """Plain-word sentences for whatever makes the odds ratios unreadable."""
    flags = []
    if fit["separation"] == "complete":
        flags.append("The covariates separate correct from wrong answers completely: maximum-likelihood odds "
                     "ratios do not exist (they run to 0 or infinity), so the table shows no effects; fewer "
                     "terms or a penalised (Firth) fit would be needed.")
    elif fit["separation"] == "quasi":
        flags.append("The data are quasi-separated (some covariate pattern, e.g. a category, holds only correct "
                     "or only wrong answers): at least one odds ratio runs to 0 or infinity and its interval "
                     "and p-value mean nothing.")
    if fit["converged"] is False:
        flags.append("The fit did not converge (statsmodels' maximum-likelihood iterations stopped short): the "
                     "odds ratios and p-values are not estimates.")
    rarer = min(fit["n_correct"], fit["n"] - fit["n_correct"])
    if n_terms and rarer < MIN_EVENTS_PER_TERM * n_terms:
        flags.append(f"Only {rarer} of the rarer outcome for {n_terms} terms (fewer than "
                     f"{MIN_EVENTS_PER_TERM} per term): the estimates are unstable and the intervals unreliable.")
    return flags


def _not_fitted(fit, reason):
    fit.update(status="not_fitted", flags=fit["flags"] + [reason])
    return fit


def correctness_regression(predictions, formula=None):
    """Logistic regression of correctness on the covariates (paper 004).

    Args:
        predictions: a :class:`~covid_keras.evaluation.predictions.Predictions`
            or a list of its rows (see :func:`correctness_frame`).
        formula: a statsmodels / patsy formula over ``correct`` and the
            columns ``age``, ``sex``, ``bmi``, ``ethnicity`` and ``label``
            (the true class), e.g. ``"correct ~ age + C(sex)"``; the
            right-hand side alone is accepted. None: :func:`default_terms`.

    Returns:
        A JSON-ready dict: ``formula``, ``formula_from`` ("default" or
        "given"), ``n_rows`` (labelled rows), ``n`` (rows fitted: those
        carrying every covariate the formula uses), ``n_correct``,
        ``accuracy``, ``n_patients``, ``dropped_rows`` (``count`` and
        ``{covariate: rows lacking it}``), ``covariates`` (``used``, and
        ``dropped`` ``{covariate: reason}``), ``status`` ("fitted" or
        "not_fitted"), ``converged``, ``separation`` ("complete", "quasi" or
        None), ``warnings`` (statsmodels', as "Category: message"), ``flags``
        (plain sentences), ``terms`` (per term: ``term``, ``coef``, ``se``,
        ``odds_ratio``, ``ci95`` [lo, hi] = exp of the 95 % Wald interval,
        ``p_value``; None where not finite), ``llr_pvalue``, ``pseudo_r2``
        (McFadden's), ``log_likelihood`` and ``references`` (each category's
        first level: patsy's reference for a plain ``C(column)``). Nothing
        identifies a patient.

    Raises:
        ConfigurationError: no row carries any covariate; or ``formula`` is
            not a formula over these columns.

    Example:
        >>> fit = correctness_regression(rows)  # doctest: +SKIP
        >>> {t["term"]: round(t["odds_ratio"], 2) for t in fit["terms"]}  # doctest: +SKIP
        {'Intercept': 1.9, 'C(sex)[T.M]': 0.8, 'age': 1.01, 'age:C(sex)[T.M]': 1.0}
    """
    import patsy
    import statsmodels.formula.api as smf

    frame = correctness_frame(predictions)
    if not frame[list(COVARIATES)].notna().to_numpy().any():
        raise errors.ConfigurationError(
            f"none of the {len(frame)} labelled cases carries a covariate ({', '.join(COVARIATES)}): the "
            "dataset publishes none, so correctness cannot be related to demographics; the records need age, "
            "sex or extra bmi / ethnicity."
        )
    if formula is None:
        terms, used, dropped = default_terms(frame)
        formula, source = "correct ~ " + (" + ".join(terms) or "1"), "default"
    else:
        formula, source = _full_formula(formula), "given"
        used, dropped, terms = _referenced(formula), {}, None
    fitted = frame.dropna(subset=used)
    lacking = {c: int(frame[c].isna().sum()) for c in used if frame[c].isna().any()}
    n, n_correct = len(fitted), int(fitted["correct"].sum())
    fit = {"formula": formula, "formula_from": source, "n_rows": len(frame), "n": n, "n_correct": n_correct,
           "accuracy": n_correct / n if n else None,
           "n_patients": int(fitted["patient_id"].nunique()) if fitted["patient_id"].notna().all() else None,
           "dropped_rows": {"count": len(frame) - n, "lacking": lacking},
           "covariates": {"used": used, "dropped": dropped}, "status": "fitted", "converged": None,
           "separation": None, "warnings": [], "flags": [], "terms": [], "llr_pvalue": None, "pseudo_r2": None,
           "log_likelihood": None, "references": _references(fitted)}
    if terms == []:
        return _not_fitted(fit, "No covariate is usable (each is absent, mostly unknown or constant), so there "
                                "is nothing to relate correctness to.")
    if n == 0:
        return _not_fitted(fit, "No row carries every covariate the formula uses, so nothing can be fitted.")
    if n_correct in (0, n):
        word = "correct" if n_correct else "wrong"
        return _not_fitted(fit, f"All {n} answers are {word}: correctness does not vary, so no regression is "
                                "possible.")
    try:
        model = smf.logit(formula, data=fitted)
    except patsy.PatsyError as e:
        raise errors.ConfigurationError(
            f"formula {formula!r}: {str(e).splitlines()[0]}; use the columns correct, age, sex, bmi, ethnicity "
            "and label (patsy syntax, e.g. 'correct ~ age * C(sex) + bmi')."
        ) from None
    exog, p = model.exog, model.exog.shape[1]
    if np.linalg.matrix_rank(exog) < p:
        return _not_fitted(fit, f"The design is rank-deficient ({n} rows for {p} coefficients, or a category "
                                "seen with one level of another only): the terms cannot be told apart, so "
                                "nothing was fitted; use fewer terms.")
    fit["separation"] = separation(exog, model.endog)
    try:
        result, fit["warnings"] = _fit(model)
    except np.linalg.LinAlgError as e:
        return _not_fitted(fit, f"The fit failed ({e}): the terms cannot be estimated from these rows.")
    fit.update(converged=bool(result.mle_retvals.get("converged", False)), terms=_terms_table(result),
               llr_pvalue=_finite(result.llr_pvalue), pseudo_r2=_finite(result.prsquared),
               log_likelihood=_finite(result.llf))
    if any(w.startswith("PerfectSeparationWarning") for w in fit["warnings"]) and fit["separation"] is None:
        fit["separation"] = "quasi"
    fit["flags"] += _flags(fit, p - 1)
    return fit


def _groups(run_dir, part, answer):
    """``{answer: [Predictions]}`` of the chosen part, with a clear error when there are none."""
    found = find_predictions(run_dir)
    chosen = [p for p in found if p.part == part and (answer is None or p.answer == answer)]
    if not chosen:
        have = sorted({f"{p.answer} ({p.part})" for p in found})
        raise errors.ConfigurationError(
            f"{run_dir}: no {part} predictions" + (f" of answer {answer!r}" if answer else "")
            + f"; it holds {', '.join(have)}: pass one of those with --part / --answer."
        )
    groups = collections.defaultdict(list)
    for p in chosen:
        groups[p.answer].append(p)
    return dict(groups)


def _rows_of(files):
    """``(rows, level, note)`` of one answer's files: case-level files as they are, else slices per patient."""
    cases = [p for p in files if p.level != "slice"]
    folds = sorted({p.fold for p in files if p.fold is not None})
    notes = [f"the out-of-fold predictions of folds {', '.join(map(str, folds))} pooled"] if len(folds) > 1 else []
    if cases:
        if len(cases) < len(files):
            notes.append("slice-level predictions left out (the case-level ones are used)")
        return [r for p in cases for r in p.rows], cases[0].level, notes
    notes.append("slice predictions aggregated per patient (mean of the slice probabilities against the "
                 "patient's class): slices of one patient are not independent cases")
    return patient_rows(files), "patient", notes


def _phantom_run(run_dir):
    """Whether the run's records (``records.json``) are all built-in phantoms."""
    from covid_keras.training.runs import read_records

    try:
        records = read_records(run_dir)
    except errors.ConfigurationError:
        return False
    return bool(records) and all(r.dataset.startswith("synthetic") for r in records)


def demographics_report(run_dir, part="test", formula=None, answer=None):
    """Fits :func:`correctness_regression` on a run's predictions and writes the report.

    One fit per answer (model or head) of the chosen part: image-, study- or
    volume-level rows as they are; a slice model's rows aggregated per
    patient (:func:`patient_rows`); the validation files of k folds pooled.
    Writes ``RUN_DIR/report/demographics.json`` (``{"part", "phantom",
    "fits": [...]}``, each fit :func:`correctness_regression`'s dict plus
    ``answer``, ``level``, ``files`` and ``notes``) and
    ``RUN_DIR/report/demographics.md``.

    Args:
        run_dir: a run folder a training command wrote.
        part: "test" (held-out patients) or "val".
        formula: see :func:`correctness_regression`; None: the default.
        answer: only this answer's files; None: every answer of the part.

    Returns:
        A summary dict: ``json``, ``report`` (the two paths), ``part`` and
        per fit ``answer``, ``level``, ``n``, ``status``, ``llr_pvalue`` and
        ``flags`` (how many).

    Raises:
        ConfigurationError: the folder holds no run or no predictions of the
            part, no row carries a covariate, or the formula is bad.
    """
    from covid_keras.training.runs import write_json

    run_dir = os.fspath(run_dir)
    fits, bare = [], []
    for name, files in sorted(_groups(run_dir, part, answer).items()):
        rows, level, notes = _rows_of(files)
        head = {"answer": name, "level": level, "files": sorted(os.path.basename(p.path) for p in files),
                "notes": notes}
        if any(r.get("covariates") for r in rows):
            fits.append({**head, **correctness_regression(rows, formula)})
        else:
            bare.append(head)
    if not fits:
        raise errors.ConfigurationError(
            f"{run_dir}: none of the {part} cases carries a covariate ({', '.join(COVARIATES)}): the run's "
            "dataset publishes none, so correctness cannot be related to demographics (the built-in phantoms "
            "carry synthetic ones)."
        )
    fits += [{**head, "status": "not_fitted", "n": 0,
              "flags": ["No case of this answer carries a covariate, so nothing was fitted."]} for head in bare]
    out = os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    phantom = _phantom_run(run_dir)
    json_path, md_path = os.path.join(out, "demographics.json"), os.path.join(out, "demographics.md")
    write_json(json_path, {"part": part, "phantom": phantom, "fits": fits})
    with open(md_path, "w") as f:
        f.write(format_markdown(fits, part, phantom, os.path.basename(os.path.normpath(run_dir))))
    return {"json": json_path, "report": md_path, "part": part,
            "fits": [{"answer": x["answer"], "level": x["level"], "n": x["n"], "status": x["status"],
                      "llr_pvalue": x.get("llr_pvalue"), "flags": len(x["flags"])} for x in fits]}


# ----------------------------------------------------------------------------------------------- markdown

_CATEGORY = re.compile(r"C\((\w+)(?:,\s*Treatment\((?:reference=)?(['\"])(.*?)\2\))?\)\[T\.(.*)\]$")


def readable_term(term, references=None):
    """A term's name in words: ``C(sex)[T.M]`` -> ``sex = M (vs F)``, ``age`` -> ``age (per year)``.

    Args:
        term: a statsmodels parameter name.
        references: ``{column: reference level}`` for categories coded
            without an explicit ``Treatment`` reference.
    """
    references = references or {}

    def part(text):
        match = _CATEGORY.match(text)
        if match:
            column, _, reference, level = match.groups()
            reference = reference or references.get(column)
            return f"{column} = {level}" + (f" (vs {reference})" if reference else "")
        if text == "Intercept":
            return "Intercept (baseline odds)"
        return f"{text} ({UNITS[text]})" if text in UNITS else text

    return " \u00d7 ".join(part(p) for p in term.split(":"))


def _number(value, digits=3):
    if value is None:
        return "\u2013"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.{digits}g}"
    return f"{value:.2e}"


def _p(value):
    if value is None:
        return "\u2013"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _fit_markdown(fit):
    lines = [f"## {fit['answer']} ({fit['level']} level)"]
    notes = [f"- {note[0].upper()}{note[1:]}." for note in fit.get("notes", [])]
    lines += ["", *notes] if notes else []
    if "formula" in fit:
        lines += ["", f"Formula: `{fit['formula']}` ({fit['formula_from']})."]
        dropped = fit["dropped_rows"]
        lacking = ", ".join(f"{k} without {c}" for c, k in dropped["lacking"].items())
        lines.append(f"n = {fit['n']} of {fit['n_rows']} labelled cases"
                     + (f" ({dropped['count']} dropped: {lacking})" if dropped["count"] else "")
                     + (f", {fit['n_correct']} correct ({100 * fit['accuracy']:.1f} %)" if fit["n"] else "")
                     + (f", {fit['n_patients']} patients" if fit.get("n_patients") else "") + ".")
        if fit.get("n_patients") and fit["n_patients"] < fit["n"]:
            lines.append("Some patients have several cases; they are not independent, so the intervals may be "
                         "too narrow.")
        for covariate, reason in fit["covariates"]["dropped"].items():
            lines.append(f"Covariate {covariate} left out: {reason}.")
    if fit["status"] == "fitted":
        summary = (f"Likelihood-ratio test p = {_p(fit['llr_pvalue'])}, McFadden's pseudo R\u00b2 = "
                   f"{_number(fit['pseudo_r2'])}; converged: {'yes' if fit['converged'] else 'no'}; separation: "
                   f"{fit['separation'] or 'none'}.")
        lines += ["", summary, "",
                  "| Term | Odds ratio | 95 % interval | p |", "|---|---|---|---|"]
        for t in fit["terms"]:
            lo, hi = t["ci95"]
            high = _number(hi) if hi is not None else "\u221e"
            lines.append(f"| {readable_term(t['term'], fit.get('references'))} | {_number(t['odds_ratio'])} | "
                         f"{_number(lo)} \u2013 {high} | {_p(t['p_value'])} |")
    if fit["flags"]:
        lines += ["", "**Flags**", ""] + [f"- {flag}" for flag in fit["flags"]]
    if fit.get("warnings"):
        lines += ["", "statsmodels warned: " + "; ".join(f"`{w}`" for w in fit["warnings"]) + "."]
    return lines + [""]


def format_markdown(fits, part, phantom, run_name):
    """``demographics.md``: per fit the formula, n, the odds-ratio table and the flags in plain words."""
    intro = (f"Run `{run_name}`, {part} cases. Logistic regression of a correct answer (arg-max class = true "
             "class) on the covariates: an odds ratio above 1 means more often correct (per year of age, per "
             "kg/m\u00b2 of BMI, or for a category against its reference level); intervals are exp of the 95 % "
             "Wald intervals.")
    lines = ["# Correctness against demographics (paper 004)", "", intro, ""]
    if phantom:
        lines += [PHANTOM_NOTE, ""]
    for fit in fits:
        lines += _fit_markdown(fit)
    return "\n".join(lines)

