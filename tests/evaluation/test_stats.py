"""covid_keras.evaluation.stats: binomial intervals, Bonferroni families, the patient bootstrap, calibration.

Checked against statsmodels, SciPy, hand formulas and published values, and
the vectorised bootstrap kernel against scikit-learn with ``sample_weight``.
"""

import doctest
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from statsmodels.stats.proportion import proportion_confint

from covid_keras import errors
from covid_keras.evaluation import stats


def _wilson_by_hand(k, n, confidence=0.95):
    """The Wilson score interval from its closed form (Wilson 1927; Agresti & Coull 1998, eq. 2)."""
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# --------------------------------------------------------------------------- binomial intervals


def test_wilson_45_of_50_matches_statsmodels_scipy_hand_formula_and_published_value():
    lo, hi = stats.proportion_ci(45, 50, method="wilson")
    assert (lo, hi) == pytest.approx(proportion_confint(45, 50, alpha=0.05, method="wilson"), abs=1e-12)
    ci = binomtest(45, 50).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert (lo, hi) == pytest.approx(_wilson_by_hand(45, 50), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.7864, 0.9565)  # the published 4-digit interval for 45/50


def test_clopper_pearson_45_of_50_matches_statsmodels_scipy_exact_and_published_value():
    lo, hi = stats.proportion_ci(45, 50, method="clopper-pearson")
    assert (lo, hi) == pytest.approx(proportion_confint(45, 50, alpha=0.05, method="beta"), abs=1e-12)
    ci = binomtest(45, 50).proportion_ci(confidence_level=0.95, method="exact")  # root finding, not beta quantiles
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.7819, 0.9667)


@pytest.mark.parametrize("method,sm", [("wilson", "wilson"), ("clopper-pearson", "beta")])
def test_proportion_ci_is_vectorised_and_gives_nan_for_no_trials(method, sm):
    k = np.array([[0, 3, 10], [7, 0, 0]])
    n = np.array([[10, 10, 10], [9, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # n == 0 is answered NaN without a division warning
        lo, hi = stats.proportion_ci(k, n, method=method, confidence=0.9)
    assert lo.shape == hi.shape == (2, 3)
    for i, j in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        assert (lo[i, j], hi[i, j]) == pytest.approx(
            proportion_confint(k[i, j], n[i, j], alpha=0.1, method=sm), abs=1e-12)
    assert np.isnan(lo[1, 2]) and np.isnan(hi[1, 2])
    assert lo[0, 0] == 0.0 and hi[0, 2] == pytest.approx(1.0)
    assert all(np.isnan(v) for v in stats.proportion_ci(0, 0, method=method))


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 6, "n": 5}, "0 <= k <= n"),
    ({"k": -1, "n": 5}, "0 <= k <= n"),
    ({"k": 2.5, "n": 5}, "whole numbers"),
    ({"k": 2, "n": 5, "method": "agresti"}, "not one of wilson, clopper-pearson"),
    ({"k": 2, "n": 5, "confidence": 95}, "between 0 and 1"),
])
def test_proportion_ci_refuses_bad_input_with_one_sentence(kwargs, match):
    with pytest.raises(errors.ConfigurationError, match=match):
        stats.proportion_ci(**kwargs)


def test_estimate_has_exactly_the_metrics_json_keys():
    e = stats.estimate(45, 50)
    assert set(e) == {"value", "ci95", "method", "k", "n"}
    assert e["value"] == 0.9 and e["method"] == "wilson" and (e["k"], e["n"]) == (45, 50)
    assert e["ci95"] == pytest.approx(list(proportion_confint(45, 50, method="wilson")), abs=1e-12)
    assert stats.estimate(np.int64(3), np.int64(4), method="clopper-pearson")["method"] == "clopper-pearson"
    assert stats.estimate(0, 0) == {"value": None, "ci95": None, "method": "wilson", "k": 0, "n": 0}
    assert stats.estimate(3, 4, confidence=0.9)["confidence"] == 0.9


@pytest.mark.parametrize("method,sm", [("wilson", "wilson"), ("clopper-pearson", "beta")])
@pytest.mark.parametrize("m", [2, 4])
def test_bonferroni_interval_is_the_single_interval_at_alpha_over_m_and_wider_than_m_1(method, sm, m):
    k, n = 45, 50
    e = stats.family_wise(k, n, m, method=method)
    assert e["family"] == m and e["confidence"] == pytest.approx(1 - 0.05 / m)
    assert e["ci95"] == pytest.approx(list(proportion_confint(k, n, alpha=0.05 / m, method=sm)), abs=1e-12)
    single = stats.family_wise(k, n, 1, method=method)["ci95"]
    assert single == stats.estimate(k, n, method=method)["ci95"]
    assert e["ci95"][0] < single[0] and e["ci95"][1] > single[1]
    if m == 4:
        two = stats.family_wise(k, n, 2, method=method)["ci95"]
        assert e["ci95"][1] - e["ci95"][0] > two[1] - two[0]


def test_bonferroni_clopper_pearson_50_of_55_six_intervals():
    # FACTS_NEXT_WAVE.md §2: statsmodels and scipy both give [0.759514, 0.980717] for 50/55, m = 6.
    e = stats.family_wise(50, 55, 6, method="clopper-pearson")
    assert [round(x, 6) for x in e["ci95"]] == [0.759514, 0.980717]


def test_family_wise_refuses_a_bad_family_size():
    for m in (0, 2.5, True):
        with pytest.raises(errors.ConfigurationError, match="family size"):
            stats.family_wise(3, 4, m)


# --------------------------------------------------------------------------- per-class metrics


CONFUSION = np.array([[50, 3, 2], [4, 40, 6], [1, 5, 39]])
CLASSES = ["COVID-19", "Pneumonia", "Normal"]


def _cases(confusion):
    y_true = np.repeat(np.arange(3), confusion.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in confusion])
    return y_true, y_pred


def test_class_metrics_match_sklearn_and_hand_counts():
    m = stats.class_metrics(CONFUSION, CLASSES)
    y_true, y_pred = _cases(CONFUSION)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2])
    assert m["n"] == 150 and m["confusion"] == CONFUSION.tolist()
    assert m["accuracy"]["value"] == pytest.approx(129 / 150) and m["accuracy"]["k"] == 129
    for i, c in enumerate(CLASSES):
        row = m["per_class"][c]
        assert row["support"] == support[i]
        assert row["sensitivity"]["value"] == pytest.approx(recall[i]) == row["recall"]["value"]
        assert row["ppv"]["value"] == pytest.approx(precision[i]) == row["precision"]["value"]
        assert row["f1"]["value"] == pytest.approx(f1[i])
        negative = y_true != i
        assert row["specificity"]["value"] == pytest.approx(np.mean(y_pred[negative] != i))
        assert row["npv"]["value"] == pytest.approx(np.mean(y_true[y_pred != i] != i))
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            e = row[name]
            assert e["ci95"] == pytest.approx(list(proportion_confint(e["k"], e["n"], method="wilson")), abs=1e-12)
    covid = m["per_class"]["COVID-19"]
    assert (covid["specificity"]["k"], covid["specificity"]["n"]) == (90, 95)  # TN = 40+6+5+39, FP = 4+1
    assert (covid["npv"]["k"], covid["npv"]["n"]) == (90, 95)  # FN = 3 + 2


def test_f1_interval_is_the_jaccard_interval_mapped_and_covers_95_percent():
    m = stats.class_metrics(CONFUSION, CLASSES, method="clopper-pearson")
    f1 = m["per_class"]["Pneumonia"]["f1"]
    tp, fp, fn = 40, 8, 10
    assert f1["via"] == "jaccard" and (f1["k"], f1["n"]) == (tp, tp + fp + fn)
    lo, hi = proportion_confint(tp, tp + fp + fn, method="beta")
    assert f1["ci95"] == pytest.approx([2 * lo / (1 + lo), 2 * hi / (1 + hi)], abs=1e-12)
    assert f1["ci95"][0] < f1["value"] < f1["ci95"][1]
    # Coverage by simulation: 4,000 confusion matrices of 200 cases drawn from one population.
    rng = np.random.default_rng(0)
    cells = np.array([0.30, 0.06, 0.08, 0.56])  # TP, FP, FN, TN
    truth = 2 * cells[0] / (2 * cells[0] + cells[1] + cells[2])
    draws = rng.multinomial(200, cells, size=4000)
    lo, hi = stats.proportion_ci(draws[:, 0], draws[:, :3].sum(axis=1), method="wilson")
    covered = (2 * lo / (1 + lo) <= truth) & (truth <= 2 * hi / (1 + hi))
    assert 0.935 < covered.mean() < 0.965
    y_true, y_pred = _cases(CONFUSION)
    assert m["per_class"]["Normal"]["f1"]["value"] == pytest.approx(f1_score(y_true, y_pred, labels=[2],
                                                                              average=None)[0])


def test_class_metrics_with_an_absent_class_gives_none_not_an_error():
    m = stats.class_metrics([[5, 0], [0, 0]], ["covid", "normal"])
    normal = m["per_class"]["normal"]
    assert normal["sensitivity"]["value"] is None and normal["sensitivity"]["ci95"] is None
    assert normal["ppv"]["value"] is None and normal["f1"]["value"] is None
    assert normal["specificity"]["value"] == 1.0
    assert stats.class_metrics(np.zeros((2, 2), int), ["a", "b"])["accuracy"]["value"] is None


def test_class_metrics_refuses_a_bad_matrix():
    with pytest.raises(errors.ConfigurationError, match="one row per class"):
        stats.class_metrics([[1, 2], [3, 4]], CLASSES)
    with pytest.raises(errors.ConfigurationError, match="whole non-negative"):
        stats.class_metrics([[1, -2], [3, 4]], ["a", "b"])


# --------------------------------------------------------------------------- patient-level bootstrap


def test_patient_resamples_draw_every_patient_count_with_replacement():
    groups = np.array(["p3", "p1", "p1", "p2", "p3", "p3"])
    counts, case = stats.patient_resamples(groups, n_boot=3000, seed=1)
    assert counts.shape == (3000, 3) and case.tolist() == [2, 0, 0, 1, 2, 2]
    assert (counts.sum(axis=1) == 3).all() and (counts >= 0).all()
    assert counts.mean() == pytest.approx(1.0, abs=0.03)
    assert np.mean(counts[:, 0] == 0) == pytest.approx((2 / 3) ** 3, abs=0.03)  # P(patient never drawn)
    again, _ = stats.patient_resamples(groups, n_boot=3000, seed=1)
    assert np.array_equal(counts, again)
    assert not np.array_equal(counts, stats.patient_resamples(groups, n_boot=3000, seed=2)[0])


def _sliced_scores(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1)


def test_one_patient_of_1000_slices_collapses_the_patient_interval_but_not_a_slice_bootstrap():
    y, s = _sliced_scores(1000, seed=3)
    one_patient = np.full(1000, "p-only")
    for curve, exact in (("roc", roc_auc_score), ("pr", average_precision_score)):
        patient = stats.bootstrap_auc(y, s, one_patient, n_boot=300, seed=0, curve=curve)
        assert patient["value"] == pytest.approx(exact(y, s))
        assert patient["patients"] == 1 and patient["dropped"] == 0
        assert patient["ci95"] == pytest.approx([patient["value"]] * 2, abs=1e-12)  # every resample is that patient
        slices = stats.bootstrap_auc(y, s, np.arange(1000), n_boot=300, seed=0, curve=curve)
        assert slices["patients"] == 1000
        assert slices["ci95"][1] - slices["ci95"][0] > 0.02  # treating slices as patients invents precision
        assert slices["ci95"][0] < slices["value"] < slices["ci95"][1]


def test_bootstrap_metric_of_one_patient_collapses_too():
    correct = (np.arange(1000) % 4 != 0).astype(float)

    def accuracy(w):
        return (w * correct).sum(axis=1) / w.sum(axis=1)

    r = stats.bootstrap_metric(accuracy, np.zeros(1000, int), n_boot=100)
    assert r["value"] == 0.75 and r["ci95"] == pytest.approx([0.75, 0.75])
    r = stats.bootstrap_metric(accuracy, np.arange(1000), n_boot=500)
    assert r["ci95"][0] < 0.74 and r["ci95"][1] > 0.76


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_kernel_equals_sklearn_with_multiplicity_weights_ties_included(seed):
    rng = np.random.default_rng(seed)
    n, patients = 400, 23
    groups = rng.integers(0, patients, n)
    y = rng.integers(0, 2, n)
    scores = np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 1 + seed % 2)  # many tied scores
    counts, case = stats.patient_resamples(groups, n_boot=12, seed=seed)
    counts[0] = 1.0  # one row of unit weights: the plain areas
    roc, pr = stats.curve_replicates(y, scores, counts, case)
    for b in range(counts.shape[0]):
        weight = counts[b, case]
        assert roc[b] == pytest.approx(roc_auc_score(y, scores, sample_weight=weight), abs=1e-12)
        assert pr[b] == pytest.approx(average_precision_score(y, scores, sample_weight=weight), abs=1e-12)
    assert roc[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_kernel_gives_nan_for_resamples_without_one_class():
    y = np.array([1, 0, 0, 1])
    scores = np.array([0.9, 0.2, 0.4, 0.4])
    case = np.array([0, 1, 1, 2])
    counts = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    roc, pr = stats.curve_replicates(y, scores, counts, case)
    assert np.isnan(roc[:2]).all() and np.isnan(pr[:2]).all()
    assert roc[2] == pytest.approx(roc_auc_score(y, scores))
    assert roc[3] == pytest.approx(roc_auc_score(y, scores, sample_weight=counts[3, case]))  # a tie counts 1/2


def _naive_replicates(y, scores, groups, counts, metric):
    """The straightforward baseline: per resample, fancy-index the drawn patients' cases and call sklearn."""
    ids = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ids]
    out = []
    for row in counts:
        index = np.concatenate([np.tile(members[p], int(c)) for p, c in enumerate(row) if c])
        yy = y[index]
        out.append(metric(yy, scores[index]) if 0 < yy.sum() < yy.size else np.nan)
    return np.array(out)


@pytest.mark.parametrize("curve,metric", [("roc", roc_auc_score), ("pr", average_precision_score)])
def test_bootstrap_auc_equals_a_python_loop_over_fancy_indexed_resamples(curve, metric):
    rng = np.random.default_rng(7)
    groups = np.repeat([f"p{i:02d}" for i in range(12)], rng.integers(1, 9, 12))
    y = (rng.random(groups.size) < 0.4).astype(int)
    y[:2] = [0, 1]
    scores = np.round(rng.random(groups.size), 2)
    r = stats.bootstrap_auc(y, scores, groups, n_boot=200, seed=5, curve=curve)
    counts, _ = stats.patient_resamples(groups, n_boot=200, seed=5)
    naive = _naive_replicates(y, scores, groups, counts, metric)
    valid = naive[np.isfinite(naive)]
    assert r["dropped"] == 200 - valid.size
    assert r["ci95"] == pytest.approx(list(np.percentile(valid, [2.5, 97.5])), abs=1e-12)
    assert r["value"] == pytest.approx(metric(y, scores))
    assert r["method"] == "patient bootstrap (percentile)" and r["curve"] == curve and r["n_boot"] == 200


def test_bootstrap_drops_and_counts_resamples_without_a_positive_patient():
    groups = np.repeat(["a", "b", "c"], 5)
    y = np.repeat([1, 0, 0], 5)
    scores = np.linspace(0, 1, 15)
    r = stats.bootstrap_auc(y, scores, groups, n_boot=1000, seed=0)
    counts, _ = stats.patient_resamples(groups, n_boot=1000, seed=0)
    no_positive = counts[:, 0] == 0
    no_negative = (counts[:, 1] + counts[:, 2]) == 0
    assert r["dropped"] == int(np.sum(no_positive | no_negative))
    assert r["dropped"] == pytest.approx(1000 * ((2 / 3) ** 3 + (1 / 3) ** 3), abs=50)  # no a, or only a


def test_bootstrap_class_aucs_pairs_classes_on_one_set_of_resamples():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 30, 300)
    y = rng.integers(0, 3, 30)[groups]
    probs = rng.dirichlet(np.ones(3), 300)
    probs[np.arange(300), y] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    both = stats.bootstrap_class_aucs(y, probs, groups, CLASSES, n_boot=150, seed=4)
    for i, c in enumerate(CLASSES):
        assert both[c]["roc_auc"] == stats.bootstrap_auc(y == i, probs[:, i], groups, n_boot=150, seed=4)
        assert both[c]["pr_auc"] == stats.bootstrap_auc(y == i, probs[:, i], groups, n_boot=150, seed=4, curve="pr")


def test_bootstrap_of_a_single_class_says_why_there_is_no_area():
    r = stats.bootstrap_auc(np.ones(10, int), np.linspace(0, 1, 10), np.arange(10), n_boot=10)
    assert r["value"] is None and r["ci95"] is None and "one class" in r["reason"]


@pytest.mark.parametrize("call,match", [
    (lambda: stats.bootstrap_auc([0, 1, 2], [0.1, 0.2, 0.3], [1, 2, 3]), "0 .negative. and 1"),
    (lambda: stats.bootstrap_auc([0, 1], [0.1, np.nan], [1, 2]), "finite"),
    (lambda: stats.bootstrap_auc([0, 1], [0.1, 0.2], [1, 2, 3]), "one patient id per case"),
    (lambda: stats.bootstrap_auc([0, 1], [0.1, 0.2], [1, 2], curve="det"), "not one of roc, pr"),
    (lambda: stats.bootstrap_auc([0, 1], [0.1, 0.2], [1, 2], n_boot=0), "n_boot"),
    (lambda: stats.bootstrap_class_aucs([0, -1], [[0.5, 0.5]] * 2, [1, 2], ["a", "b"]), "unlabelled"),
])
def test_bootstrap_refuses_bad_input(call, match):
    with pytest.raises(errors.ConfigurationError, match=match):
        call()


# --------------------------------------------------------------------------- calibration


def test_expected_calibration_error_against_a_hand_computation():
    y = np.array([0, 0, 1, 1, 2, 0])
    probs = np.array([
        [0.95, 0.03, 0.02],  # conf 0.95, correct  -> bin (0.9, 1]
        [0.55, 0.40, 0.05],  # conf 0.55, correct  -> bin (0.5, 0.6]
        [0.60, 0.30, 0.10],  # conf 0.60, wrong    -> bin (0.5, 0.6] (an edge goes to the lower bin)
        [0.10, 0.85, 0.05],  # conf 0.85, correct  -> bin (0.8, 0.9]
        [0.40, 0.25, 0.35],  # conf 0.40, wrong    -> bin (0.3, 0.4]
        [0.50, 0.20, 0.30],  # conf 0.50, correct  -> bin (0.4, 0.5]
    ])
    c = stats.calibration(y, probs, n_bins=10, classes=CLASSES)
    # |acc - conf| per bin, weighted by count / 6:
    #   (0.9,1]: |1 - 0.95| = 0.05; (0.5,0.6]: |0.5 - 0.575| = 0.075 (2 cases); (0.8,0.9]: |1 - 0.85| = 0.15;
    #   (0.3,0.4]: |0 - 0.40| = 0.40; (0.4,0.5]: |1 - 0.50| = 0.50.
    hand = (0.05 + 2 * 0.075 + 0.15 + 0.40 + 0.50) / 6
    assert c["ece"] == pytest.approx(hand, abs=1e-12)
    assert c["mce"] == pytest.approx(0.50)
    assert [b["count"] for b in c["bins"]] == [0, 0, 0, 1, 1, 2, 0, 0, 1, 1]
    assert c["bins"][5]["confidence"] == pytest.approx(0.575) and c["bins"][5]["accuracy"] == 0.5
    assert c["bins"][0]["confidence"] is None and c["n"] == 6 and c["n_bins"] == 10
    for i, name in enumerate(CLASSES):
        frac, mean = calibration_curve(y == i, probs[:, i], n_bins=10)
        assert c["per_class"][name]["fraction_positive"] == pytest.approx(frac.tolist())
        assert c["per_class"][name]["mean_predicted"] == pytest.approx(mean.tolist())
        assert sum(c["per_class"][name]["count"]) == 6


def test_a_perfectly_calibrated_sample_has_small_ece():
    rng = np.random.default_rng(0)
    p1 = rng.random(20000)
    probs = np.stack([1 - p1, p1], axis=1)
    y = (rng.random(20000) < p1).astype(int)
    assert stats.calibration(y, probs, n_bins=10)["ece"] < 0.02
    overconfident = np.stack([1 - p1 ** 0.3, p1 ** 0.3], axis=1)
    assert stats.calibration(y, overconfident, n_bins=10)["ece"] > 0.1


def test_calibration_refuses_bad_input():
    with pytest.raises(errors.ConfigurationError, match="n_bins"):
        stats.calibration([0], [[1.0, 0.0]], n_bins=0)
    with pytest.raises(errors.ConfigurationError, match="2 columns but 3 classes"):
        stats.calibration([0], [[1.0, 0.0]], classes=CLASSES)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(stats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 10 and failures == 0
