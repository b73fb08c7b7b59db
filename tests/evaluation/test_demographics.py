"""evaluate.demographics: paper 004's logistic regression of correctness on age, sex, BMI and ethnicity."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from covid_keras import cli, errors
from covid_keras.data.datasets import Record
from covid_keras.evaluation import demographics
from covid_keras.evaluation.predictions import case_row, write_predictions
from covid_keras.training.runs import RunFolder, write_records

CLASSES = ["normal", "bacterial", "viral"]
ETHNICITIES = ["European", "Maori", "Pacific", "Asian"]


def _probabilities(label, correct, rng):
    """Class probabilities whose arg-max is ``label`` when ``correct``, another class otherwise."""
    p = rng.dirichlet(np.ones(len(CLASSES))) * 0.4
    winner = CLASSES.index(label) if correct else (CLASSES.index(label) + 1 + rng.integers(2)) % 3
    p[winner] += 0.6
    return p


def _cases(n, seed=0, correct_of=None, covariates=("age", "sex", "bmi", "ethnicity")):
    """``(arrays, rows)``: covariate arrays and correctness, and the predictions-file rows made from them.

    ``correct_of(arrays, rng)`` gives the correctness; default: 75 % correct, independent of everything.
    """
    rng = np.random.default_rng(seed)
    arrays = {"age": rng.integers(20, 91, n).astype(float), "sex": rng.choice(["F", "M"], n),
              "bmi": np.round(rng.normal(27, 5, n), 1), "ethnicity": rng.choice(ETHNICITIES, n, p=[.4, .2, .2, .2]),
              "label": rng.choice(CLASSES, n)}
    arrays["correct"] = (correct_of(arrays, rng) if correct_of else rng.random(n) < 0.75).astype(int)
    rows = []
    for i in range(n):
        extra = {k: arrays[k][i].item() for k in ("bmi", "ethnicity") if k in covariates}
        record = Record(f"p{i:03d}", arrays["label"][i], (f"/x/{i}.png",), "test",
                        age=arrays["age"][i].item() if "age" in covariates else None,
                        sex=str(arrays["sex"][i]) if "sex" in covariates else None, extra=extra)
        rows.append(case_row(f"k{i}", record.patient_id, record.label,
                             _probabilities(record.label, arrays["correct"][i], rng), CLASSES, record=record))
    return arrays, rows


def test_odds_ratios_equal_a_direct_statsmodels_fit():
    import pandas as pd
    import statsmodels.formula.api as smf

    arrays, rows = _cases(240, seed=1)
    fit = demographics.correctness_regression(rows)
    # The default: both main effects and the age x sex interaction, ethnicity against its most frequent level.
    assert fit["formula"] == "correct ~ age * C(sex) + bmi + C(ethnicity, Treatment('European'))"
    assert fit["status"] == "fitted" and fit["converged"] and fit["separation"] is None
    assert fit["n"] == fit["n_rows"] == 240 and fit["n_correct"] == arrays["correct"].sum()
    frame = pd.DataFrame({k: arrays[k] for k in ("correct", "age", "sex", "bmi", "ethnicity")})
    direct = smf.logit(fit["formula"], data=frame).fit(disp=0)
    ours = {t["term"]: t for t in fit["terms"]}
    assert list(ours) == list(direct.params.index)
    assert "age:C(sex)[T.M]" in ours
    np.testing.assert_allclose([ours[k]["odds_ratio"] for k in ours], np.exp(direct.params), rtol=1e-6)
    np.testing.assert_allclose([ours[k]["ci95"] for k in ours], np.exp(direct.conf_int()).to_numpy(), rtol=1e-6)
    np.testing.assert_allclose([ours[k]["p_value"] for k in ours], direct.pvalues, rtol=1e-6)
    assert fit["llr_pvalue"] == pytest.approx(direct.llr_pvalue, rel=1e-6)
    assert fit["pseudo_r2"] == pytest.approx(direct.prsquared, rel=1e-6)
    json.dumps(fit, allow_nan=False)  # JSON-ready, nothing non-finite


def test_a_planted_age_effect_is_found_and_independent_covariates_find_nothing():
    def older_right(a, rng):
        return rng.random(len(a["age"])) < 1 / (1 + np.exp(-(a["age"] - 55) / 8))

    _, rows = _cases(300, seed=2, correct_of=older_right)
    fit = demographics.correctness_regression(rows, "correct ~ age + C(sex) + bmi")
    age = next(t for t in fit["terms"] if t["term"] == "age")
    assert age["odds_ratio"] > 1.05 and age["ci95"][0] > 1 and age["p_value"] < 1e-6
    assert fit["llr_pvalue"] < 1e-6 and not fit["flags"]
    _, rows = _cases(300, seed=2)
    null = demographics.correctness_regression(rows, "correct ~ age + C(sex) + bmi")
    assert null["llr_pvalue"] > 0.01
    assert next(t for t in null["terms"] if t["term"] == "age")["ci95"][0] < 1


def test_separated_data_are_flagged_without_crashing():
    _, rows = _cases(60, seed=3, correct_of=lambda a, rng: a["age"] > 55)
    fit = demographics.correctness_regression(rows, "age + C(sex)")
    assert fit["formula"] == "correct ~ age + C(sex)"
    assert fit["separation"] == "complete" and fit["converged"] is False
    assert any("separate correct from wrong answers completely" in f for f in fit["flags"])
    assert any("did not converge" in f for f in fit["flags"])
    json.dumps(fit, allow_nan=False)
    # Quasi-separation: one category only ever correct, the rest mixed.
    _, rows = _cases(120, seed=3, correct_of=lambda a, rng: (a["ethnicity"] == "Maori") | (rng.random(120) < 0.6))
    fit = demographics.correctness_regression(rows, "age + C(ethnicity)")
    assert fit["separation"] == "quasi" and any("quasi-separated" in f for f in fit["flags"])


def test_separation_linear_program():
    rng = np.random.default_rng(0)
    x = np.c_[np.ones(40), rng.normal(size=40)]
    assert demographics.separation(x, rng.random(40) < 0.5) is None
    assert demographics.separation(x, x[:, 1] > 0.1) == "complete"
    tied = np.c_[np.ones(6), [0, 0, 1, 1, 2, 2]]
    assert demographics.separation(tied, [0, 0, 0, 1, 1, 1]) == "quasi"  # the two x = 1 differ, the rest split


@pytest.mark.parametrize("correct", [True, False])
def test_all_correct_or_all_wrong_is_reported_not_fitted(correct):
    _, rows = _cases(20, seed=4, correct_of=lambda a, rng: np.full(20, correct))
    fit = demographics.correctness_regression(rows)
    assert fit["status"] == "not_fitted" and fit["terms"] == []
    word = "correct" if correct else "wrong"
    assert fit["flags"] == [f"All 20 answers are {word}: correctness does not vary, so no regression is possible."]


def test_absent_constant_and_missing_covariates_are_left_out_and_said():
    _, rows = _cases(80, seed=5, covariates=("age", "sex", "ethnicity"))
    for row in rows:
        row["covariates"]["sex"] = "F"
    for row in rows[:7]:
        del row["covariates"]["age"]
    fit = demographics.correctness_regression(rows)
    assert fit["formula"] == "correct ~ age + C(ethnicity, Treatment('European'))"
    assert fit["covariates"]["dropped"] == {"sex": "the same for every row (F)", "bmi": "absent from every row"}
    assert fit["dropped_rows"] == {"count": 7, "lacking": {"age": 7}} and fit["n"] == 73
    for row in rows[:60]:
        row["covariates"].pop("ethnicity")
    fit = demographics.correctness_regression(rows)
    assert fit["covariates"]["dropped"]["ethnicity"] == "known for 20 of 80 rows only"


def test_no_covariates_bad_formulas_and_too_few_rows():
    _, rows = _cases(30, seed=6, covariates=())
    with pytest.raises(errors.ConfigurationError, match="none of the 30 labelled cases carries a covariate"):
        demographics.correctness_regression(rows)
    _, rows = _cases(30, seed=6)
    with pytest.raises(errors.ConfigurationError, match="left-hand side must be `correct`"):
        demographics.correctness_regression(rows, "age ~ bmi")
    with pytest.raises(errors.ConfigurationError, match="name 'weight' is not defined; use the columns"):
        demographics.correctness_regression(rows, "correct ~ weight")
    fit = demographics.correctness_regression(rows[:3], "age * C(sex) + bmi")
    assert fit["status"] == "not_fitted" and "rank-deficient" in fit["flags"][-1]


def test_readable_terms():
    assert demographics.readable_term("Intercept") == "Intercept (baseline odds)"
    assert demographics.readable_term("age") == "age (per year)"
    assert demographics.readable_term("age:C(sex)[T.M]", {"sex": "F"}) == "age (per year) \u00d7 sex = M (vs F)"
    term = "C(ethnicity, Treatment('European'))[T.Maori]"
    assert demographics.readable_term(term) == "ethnicity = Maori (vs European)"


def _run_dir(tmp_path, rows, *, level="image", part="test", answer="xray_cnn", name="predictions_test.json",
             records=None):
    run = RunFolder.open(str(tmp_path / "run"), {"model": "xray_cnn"})
    write_predictions(run.file(name), rows, classes=CLASSES, level=level, answer=answer, part=part)
    if records is not None:
        write_records(run, records)
    return run.path


def test_command_line_end_to_end(tmp_path, capsys):
    from evaluate import demographics as command

    _, rows = _cases(150, seed=7)
    rows[0]["covariates"].pop("bmi")
    run_dir = _run_dir(tmp_path, rows)
    assert command.main([run_dir]) == 0
    summary = json.loads(capsys.readouterr().out.strip())
    assert summary["fits"] == [{"answer": "xray_cnn", "level": "image", "n": 149, "status": "fitted",
                                "llr_pvalue": pytest.approx(summary["fits"][0]["llr_pvalue"]), "flags": 1}]
    with open(os.path.join(run_dir, "report", "demographics.json")) as f:
        report = json.load(f)
    assert report["part"] == "test" and report["phantom"] is False
    fit = report["fits"][0]
    assert fit["files"] == ["predictions_test.json"] and fit["dropped_rows"] == {"count": 1, "lacking": {"bmi": 1}}
    with open(summary["report"]) as f:
        text = f.read()
    assert "| Term | Odds ratio | 95 % interval | p |" in text
    assert "| age (per year) |" in text and "| ethnicity = Maori (vs European) |" in text
    assert "n = 149 of 150 labelled cases (1 dropped: 1 without bmi)" in text
    assert "**Flags**" in text and "(fewer than 10 per term): the estimates are unstable" in text
    assert "p001" not in text and "p001" not in json.dumps(report)  # no patient ids in the report
    # No val part: one sentence, exit 2.
    assert cli.run(command.main, [run_dir, "--part", "val"]) == 2
    assert "no val predictions; it holds xray_cnn (test)" in capsys.readouterr().err


def test_command_line_no_covariates_is_a_clear_error(tmp_path):
    _, rows = _cases(20, seed=8, covariates=())
    run_dir = _run_dir(tmp_path, rows)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "evaluate.demographics", run_dir], capture_output=True, text=True,
                          cwd=repo, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().startswith("error: ") and "none of the test cases carries a covariate" in done.stderr
    assert "Traceback" not in done.stderr


def test_slice_predictions_are_aggregated_per_patient(tmp_path):
    _, cases = _cases(60, seed=9)
    rng = np.random.default_rng(9)
    rows, expected = [], []
    for case in cases:  # three slices per patient, the middle one unlabelled (a clean slice of an ill patient)
        slices = rng.dirichlet(np.ones(3), size=3)
        for k, label in enumerate([case["label"], None, case["label"]]):
            rows.append({**case, "key": f"{case['key']}-{k}", "label": label, "slice_index": k,
                         "study_label": case["label"], "probabilities": dict(zip(CLASSES, slices[k]))})
        expected.append({**case, "probabilities": dict(zip(CLASSES, slices.mean(axis=0)))})
    run_dir = _run_dir(tmp_path, rows, level="slice", answer="slices")
    summary = demographics.demographics_report(run_dir)
    fit = demographics.correctness_regression(expected)
    assert summary["fits"][0]["level"] == "patient" and summary["fits"][0]["n"] == 60
    with open(summary["json"]) as f:
        written = json.load(f)["fits"][0]
    assert written["n_correct"] == fit["n_correct"]
    np.testing.assert_allclose([t["odds_ratio"] for t in written["terms"]], [t["odds_ratio"] for t in fit["terms"]],
                               rtol=1e-4)  # the file rounds probabilities to 6 digits
    assert "aggregated per patient" in written["notes"][0]


def test_phantom_records_run_end_to_end(tmp_path):
    from covid_keras.data import synthetic

    records = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=6, size=32))
    rng = np.random.default_rng(10)
    rows = [case_row(f"k{i}", r.patient_id, r.label, rng.dirichlet(np.ones(3)), CLASSES, record=r)
            for i, r in enumerate(records)]
    run_dir = _run_dir(tmp_path, rows, records=records)
    summary = demographics.demographics_report(run_dir)
    with open(summary["json"]) as f:
        report = json.load(f)
    assert report["phantom"] is True
    assert report["fits"][0]["covariates"]["used"] == ["age", "sex", "bmi", "ethnicity"]
    with open(summary["report"]) as f:
        assert "**Phantom run.**" in f.read()


def test_folds_pooled_and_answers_fitted_apart(tmp_path):
    _, rows = _cases(90, seed=11)
    run = RunFolder.open(str(tmp_path / "run"), {"model": "kfold"})
    for fold in (0, 1, 2):
        write_predictions(run.file("folds", str(fold), "predictions_val.json"), rows[30 * fold:30 * fold + 30],
                          classes=CLASSES, level="image", answer="cnn", part="val", fold=fold)
    write_predictions(run.file("predictions_step2_val.json"), rows[:40], classes=CLASSES, level="image",
                      answer="step2", part="val")
    summary = demographics.demographics_report(run.path, part="val", formula="age")
    assert [(f["answer"], f["n"]) for f in summary["fits"]] == [("cnn", 90), ("step2", 40)]
    with open(summary["json"]) as f:
        cnn = json.load(f)["fits"][0]
    assert cnn["notes"] == ["the out-of-fold predictions of folds 0, 1, 2 pooled"]
    assert cnn["terms"] == demographics.correctness_regression(rows, "age")["terms"]
    only = demographics.demographics_report(run.path, part="val", answer="step2")
    assert [f["answer"] for f in only["fits"]] == ["step2"]
