"""evaluate.report on hand-made run folders: every number against scikit-learn / statsmodels / numpy by hand.

The run folders hold what a training command writes (config.json,
summary.json, predictions files in covid_keras.evaluation.predictions'
format), with predictions drawn at random, so that nothing is tuned to
the code.
"""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from covid_keras import errors
from covid_keras.evaluation import report as report_module
from covid_keras.evaluation.predictions import case_row, write_predictions

XRAY4 = ["Normal", "bacterial", "COVID-19", "other viral"]
CT3 = ["Normal", "CAP", "COVID-19"]


def _probabilities(rng, y, k, skill=1.0):
    p = rng.dirichlet(np.ones(k))
    p[y] += skill * rng.random()
    return p / p.sum()


def _image_rows(rng, n, classes, patients_per_case=1):
    rows = []
    for i in range(n):
        y = int(rng.integers(len(classes)))
        rows.append(case_row(f"img{i}", f"p{i // patients_per_case}", classes[y], _probabilities(rng, y, len(classes)),
                             classes))
    return rows


def _run(tmp_path, *, data=None, summary=None):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": data}))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def _arrays(rows, classes):
    y = np.array([classes.index(r["label"]) for r in rows])
    p = np.array([[r["probabilities"][c] for c in classes] for r in rows])
    return y, p


@pytest.fixture
def xray_run(tmp_path):
    rng = np.random.default_rng(7)
    run = _run(tmp_path, summary={"command": "train.xray_cnn", "recipe": {"recipe": "xray_cnn"},
                                  "dataset": "synthetic-xray"})
    rows = _image_rows(rng, 120, XRAY4, patients_per_case=2)
    write_predictions(run / "predictions_test.json", rows, classes=XRAY4, level="image", answer="xray_cnn two-step",
                      part="test")
    return run, rows


def test_image_section_matches_sklearn_and_statsmodels(xray_run):
    run, rows = xray_run
    report, _ = report_module.build_report(run, n_boot=300)
    (section,) = report["sections"]
    y, p = _arrays(rows, XRAY4)
    cm = confusion_matrix(y, p.argmax(1), labels=range(4))
    assert section["confusion"] == cm.tolist() and section["n"] == 120 and section["patients"] == 60
    correct = int(np.trace(cm))
    lo, hi = proportion_confint(correct, 120, alpha=0.05, method="wilson")
    accuracy = dict(section["accuracy"])
    assert accuracy.pop("ci95") == pytest.approx([lo, hi])
    assert accuracy == {"value": pytest.approx(correct / 120), "method": "wilson", "k": correct, "n": 120}
    for i, c in enumerate(XRAY4):
        tp, fn, fp = cm[i, i], cm[i].sum() - cm[i, i], cm[:, i].sum() - cm[i, i]
        tn = cm.sum() - tp - fn - fp
        metrics = section["per_class"][c]
        for name, (k, n) in {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
                             "npv": (tn, tn + fn)}.items():
            lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
            assert (metrics[name]["k"], metrics[name]["n"]) == (k, n), (c, name)
            assert metrics[name]["ci95"] == pytest.approx([lo, hi]), (c, name)
        assert section["auc"][c]["roc_auc"]["value"] == pytest.approx(roc_auc_score(y == i, p[:, i]))
        lo, hi = section["auc"][c]["roc_auc"]["ci95"]
        assert lo <= section["auc"][c]["roc_auc"]["value"] <= hi


def test_clopper_pearson_on_request(xray_run):
    run, rows = xray_run
    report, _ = report_module.build_report(run, ci="clopper-pearson", n_boot=50)
    accuracy = report["sections"][0]["accuracy"]
    lo, hi = proportion_confint(accuracy["k"], accuracy["n"], alpha=0.05, method="beta")
    assert accuracy["method"] == "clopper-pearson" and accuracy["ci95"] == pytest.approx([lo, hi])
    with pytest.raises(errors.ConfigurationError, match="--ci"):
        report_module.build_report(run, ci="normal")


def test_paper004_family_wise_ppv_npv_by_hand(xray_run):
    run, rows = xray_run
    report, _ = report_module.build_report(run, n_boot=50)
    stats = report["sections"][0]["paper004"]
    assert stats["family"] == 4
    y, p = _arrays(rows, XRAY4)
    guess = p.argmax(1)
    covid = stats["comparisons"]["COVID-19 vs rest"]
    tp, fp = int(np.sum((y == 2) & (guess == 2))), int(np.sum((y != 2) & (guess == 2)))
    lo, hi = proportion_confint(tp, tp + fp, alpha=0.05 / 4, method="wilson")
    assert (covid["ppv"]["k"], covid["ppv"]["n"]) == (tp, tp + fp) and covid["ppv"]["ci95"] == pytest.approx([lo, hi])
    # Bacterial vs viral: only cases true and predicted among the pneumonias; bacterial is the positive side.
    pneumonia = np.isin(y, [1, 2, 3]) & np.isin(guess, [1, 2, 3])
    bv = stats["comparisons"]["bacterial vs viral pneumonia"]
    tn = int(np.sum(pneumonia & (y != 1) & (guess != 1)))
    fn = int(np.sum(pneumonia & (y == 1) & (guess != 1)))
    assert (bv["npv"]["k"], bv["npv"]["n"]) == (tn, tn + fn)
    assert bv["cases"] == int(pneumonia.sum()) and bv["left_out"] == 120 - int(pneumonia.sum())


def test_a_two_class_covid_model_gets_a_family_of_two(tmp_path):
    rng = np.random.default_rng(1)
    run = _run(tmp_path)
    classes = ["COVID-19", "Normal"]
    write_predictions(run / "predictions_test.json", _image_rows(rng, 30, classes), classes=classes, level="image",
                      answer="densenet", part="test")
    report, _ = report_module.build_report(run, n_boot=50)
    stats = report["sections"][0]["paper004"]
    assert stats["family"] == 2 and list(stats["comparisons"]) == ["COVID-19 vs rest"]
    assert stats["comparisons"]["COVID-19 vs rest"]["ppv"]["confidence"] == pytest.approx(0.975)


def test_slice_predictions_give_a_patient_section_of_mean_probabilities(tmp_path):
    """Unlabelled slices leave the slice section but count in their patient's mean."""
    rng = np.random.default_rng(3)
    run = _run(tmp_path)
    rows, truth = [], {}
    for s, label in enumerate(["Normal", "CAP", "COVID-19", "COVID-19"]):
        for z in range(12):
            y = CT3.index(label)
            slice_label = label if label == "Normal" or z % 3 == 0 else None
            rows.append(case_row(f"study{s}", f"pat{s}", slice_label, _probabilities(rng, y, 3), CT3, slice_index=z,
                                 study_label=label))
        truth[f"study{s}"] = y
    write_predictions(run / "predictions_val.json", rows, classes=CT3, level="slice", answer="multiscale_resnet50",
                      part="val")
    report, sections = report_module.build_report(run, n_boot=50)
    slices, patients = report["sections"]
    assert slices["level"] == "slice" and slices["n"] == 12 + 3 * 4
    assert patients["level"] == "patient" and patients["n"] == 4 and patients["patients"] == 4
    mean = {k: np.mean([[r["probabilities"][c] for c in CT3] for r in rows if r["key"] == k], axis=0) for k in truth}
    np.testing.assert_allclose(sections[1].probabilities, np.stack(list(mean.values())))
    guess = np.array([m.argmax() for m in mean.values()])
    assert patients["confusion"] == confusion_matrix(list(truth.values()), guess, labels=range(3)).tolist()


def test_kfold_table_is_mean_and_population_std_of_the_folds(tmp_path):
    rng = np.random.default_rng(5)
    run = _run(tmp_path, summary={"command": "train.volume3d", "recipe": {"recipe": "resnet50_3d"},
                                  "dataset": "synthetic-ct"})
    accuracies, pooled = [], 0
    for fold in (1, 2, 3, 4):
        rows = _image_rows(rng, 20 + fold, CT3)
        for r in rows:
            r["patient_id"] = f"f{fold}-{r['patient_id']}"
        (run / "folds" / f"fold_{fold}").mkdir(parents=True)
        write_predictions(run / "folds" / f"fold_{fold}" / "predictions_val.json", rows, classes=CT3, level="volume",
                          answer="resnet50_3d", part="val", fold=fold)
        y, p = _arrays(rows, CT3)
        accuracies.append(np.mean(y == p.argmax(1)))
        pooled += len(rows)
    report, _ = report_module.build_report(run, n_boot=50)
    (table,) = report["kfold"]
    assert table["k"] == 4 and [r["fold"] for r in table["folds"]] == [1, 2, 3, 4]
    assert [r["accuracy"] for r in table["folds"]] == pytest.approx(accuracies)
    assert table["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert table["std"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=0))
    (section,) = report["sections"]  # the folds pooled: every validation case once
    assert section["n"] == pooled and section["part"] == "val (pooled folds)"
    # Paper 000's Table 4 figures are matched with the folds' means.
    rows = {r["figure"]: r["this run"] for r in report["comparison"]["rows"]}
    assert rows["accuracy (4-fold)"] == pytest.approx(np.mean(accuracies))


def test_phantom_runs_say_so_and_real_ones_do_not(tmp_path, xray_run):
    run, _ = xray_run
    written = report_module.write_report(run, n_boot=50, figures=False)
    text = open(written["markdown"]).read()
    assert "**Phantom run.**" in text and "not comparable" in text
    metrics = json.load(open(written["metrics"]))
    assert metrics["run"]["phantom"] is True and metrics["comparison"]["rows"][0]["paper"] == 0.91
    real = _run(tmp_path / "real", data="/data/kermany", summary={"command": "train.xray_cnn", "dataset": "kermany"})
    write_predictions(real / "predictions_test.json", _image_rows(np.random.default_rng(0), 12, XRAY4), classes=XRAY4,
                      level="image", answer="xray_cnn", part="test")
    assert report_module.build_report(real, n_boot=20)[0]["run"]["phantom"] is False


def test_report_writes_figures_and_markdown(xray_run):
    import matplotlib.image

    run, _ = xray_run
    written = report_module.write_report(run, n_boot=50)
    assert written["report"] == os.path.join(str(run), "report")
    names = sorted(os.path.basename(p) for p in written["figures"])
    assert names == sorted(f"{kind}_xray_cnn_two_step_test_image.png" for kind in ("confusion", "pr", "reliability",
                                                                                     "roc"))
    for path in written["figures"]:
        assert matplotlib.image.imread(path).shape[0] > 100
    text = open(written["markdown"]).read()
    assert all(f"]({name})" in text for name in names)
    assert "| COVID-19 vs rest |" in text and "m = 4" in text


def test_old_runs_and_non_runs_get_a_clear_error(tmp_path):
    with pytest.raises(errors.ConfigurationError, match="not a folder"):
        report_module.build_report(tmp_path / "missing")
    with pytest.raises(errors.ConfigurationError, match="no config.json"):
        report_module.build_report(tmp_path)
    run = _run(tmp_path)
    with pytest.raises(errors.ConfigurationError, match="no per-case predictions"):
        report_module.build_report(run)
    # Issue 12's runs wrote a bare list of rows.
    (run / "predictions_test.json").write_text(json.dumps([{"key": "a", "patient_id": "p", "label": "Normal",
                                                            "probabilities": {"Normal": 1.0}}]))
    with pytest.raises(errors.ConfigurationError, match="older than the evaluation reports"):
        report_module.build_report(run)


def test_command_line_prints_one_json_line_and_explains_errors(xray_run, capsys):
    from evaluate import report as command

    run, _ = xray_run
    assert command.main([str(run), "--bootstrap", "40", "--no-figures", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["sections"] == 1 and printed["figures"] == 0 and os.path.exists(printed["metrics"])
    from covid_keras import cli

    assert cli.run(command.main, [str(run / "nope")]) == cli.EXIT_BAD_INPUT
    assert "error:" in capsys.readouterr().err


def test_a_patient_with_several_slice_records_is_one_patient(tmp_path):
    """COVIDx-CT keeps one record per slice PNG: the patient section groups by patient id, not by record key."""
    rng = np.random.default_rng(11)
    run = _run(tmp_path)
    rows = []
    for patient, label in enumerate(["Normal", "CAP", "COVID-19", "Normal"]):
        for z in range(10):
            rows.append(case_row(f"png{patient}-{z}", f"pat{patient}", label,
                                 _probabilities(rng, CT3.index(label), 3), CT3, slice_index=-1, study_label=label))
    write_predictions(run / "predictions_test.json", rows, classes=CT3, level="slice", answer="multiscale_resnet50",
                      part="test")
    report, sections = report_module.build_report(run, n_boot=20)
    assert [s["n"] for s in report["sections"]] == [40, 4]
    expected = [np.mean([[r["probabilities"][c] for c in CT3] for r in rows[10 * i:10 * i + 10]], axis=0)
                for i in range(4)]
    np.testing.assert_allclose(sections[1].probabilities, expected)


def test_a_paper_figure_is_matched_only_by_a_number_of_its_kind(tmp_path):
    """No fallback: a 3-class step-1 run has no number for Fig. 5's 4-class accuracy, no run has SPGC's."""
    rng = np.random.default_rng(2)
    run = _run(tmp_path, summary={"command": "train.xray_cnn", "recipe": {"recipe": "xray_cnn"},
                                  "dataset": "synthetic-xray"})
    step1 = ["normal", "bacterial", "viral"]
    write_predictions(run / "predictions_test.json", _image_rows(rng, 20, step1), classes=step1, level="image",
                      answer="xraycnn_step1", part="test")
    (row,) = report_module.build_report(run, n_boot=20)[0]["comparison"]["rows"]
    assert row["this run"] is None and row["from"] is None
    sections = [{"name": "x", "part": "test", "level": "patient", "classes": CT3,
                 "accuracy": {"value": 0.5}, "per_class": {}}]
    assert report_module._matching("patient accuracy (SPGC test)", sections, []) == (None, None)
    assert report_module._matching("patient accuracy (validation)", sections, []) == (None, None)
    assert report_module._matching("accuracy", sections * 2, []) == (None, None)  # two answers: which one?


def test_patient_and_ensemble_runs_take_the_slice_runs_data(tmp_path):
    """train.patient_level / train.ensemble configs have no --data: the slice run's tells phantom from real."""
    slice_run = _run(tmp_path / "slice", data="/data/covid-ct-md", summary={"dataset": "covid-ct-md"})
    patient = tmp_path / "patient"
    patient.mkdir()
    (patient / "config.json").write_text(json.dumps({"epochs": 3}))
    (patient / "summary.json").write_text(json.dumps({"command": "train.patient_level", "slice_run": str(slice_run)}))
    assert report_module.run_info(str(patient))["phantom"] is False
    (slice_run / "config.json").write_text(json.dumps({"data": None}))
    assert report_module.run_info(str(patient))["phantom"] is True


def test_a_fold_without_a_class_is_counted_out_of_its_mean(tmp_path):
    rng = np.random.default_rng(4)
    run = _run(tmp_path)
    for fold, classes_present in ((1, CT3), (2, ["Normal", "COVID-19"])):
        rows = []
        for i in range(12):
            label = classes_present[i % len(classes_present)]
            rows.append(case_row(f"f{fold}-{i}", f"f{fold}-p{i}", label, _probabilities(rng, CT3.index(label), 3),
                                 CT3))
        (run / "folds" / f"fold_{fold}").mkdir(parents=True)
        write_predictions(run / "folds" / f"fold_{fold}" / "predictions_val.json", rows, classes=CT3, level="volume",
                          answer="resnet50_3d", part="val", fold=fold)
    (table,) = report_module.build_report(run, n_boot=20)[0]["kfold"]
    assert table["folds_counted"]["CAP sensitivity"] == 1 and table["folds_counted"]["accuracy"] == 2
    assert table["mean"]["CAP sensitivity"] == table["folds"][0]["CAP sensitivity"]
    text = report_module.write_report(run, n_boot=20)["markdown"]
    assert "(1 folds)" in open(text).read()

