"""Intervals for the evaluation report: binomial intervals, Bonferroni families, patient bootstraps, calibration.

Every metric of the report is stored as one *estimate* dict (``metrics.json``)::

    {"value": 0.9, "ci95": [0.7864, 0.9565], "method": "wilson", "k": 45, "n": 50}

Proportions (sensitivity, specificity, PPV, NPV, accuracy) get binomial
intervals from statsmodels' ``proportion_confint`` (Wilson by default,
Clopper-Pearson with ``method="clopper-pearson"``); paper 004's PPV and NPV
get family-wise (Bonferroni) intervals. The areas under the ROC and
precision-recall curves get a **patient-level** percentile bootstrap: the
slices (or images) of one patient are not independent, so patients are
resampled with replacement and every case of a drawn patient enters with
the patient's multiplicity. The bootstrap is vectorised (no Python loop per
resample); :func:`bootstrap_auc` explains how.

Calibration is the top-label reliability of Guo et al. (2017) with its
expected calibration error, beside scikit-learn's per-class one-vs-rest
``calibration_curve``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from covid_keras import errors

#: Binomial interval methods, and statsmodels' names for them.
CI_METHODS = ("wilson", "clopper-pearson")
_STATSMODELS_METHOD = {"wilson": "wilson", "clopper-pearson": "beta"}
CURVES = ("roc", "pr")
BOOTSTRAP_METHOD = "patient bootstrap (percentile)"
#: Resamples drawn per block, and cells (levels x resamples) per kernel block: bounds memory, fixes the stream.
_DRAW_BLOCK = 256
_KERNEL_CELLS = 400_000


# --------------------------------------------------------------------------- binomial intervals


def _check_method(method):
    if method not in CI_METHODS:
        raise errors.ConfigurationError(f"interval method {method!r} is not one of {', '.join(CI_METHODS)}.")


def _check_confidence(confidence):
    if not (isinstance(confidence, (int, float, np.floating)) and 0.0 < float(confidence) < 1.0):
        raise errors.ConfigurationError(f"confidence must be a number between 0 and 1. Received: {confidence!r}")
    return float(confidence)


def _counts(k, n):
    """``k`` and ``n`` broadcast to float arrays of whole counts with ``0 <= k <= n``."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    bad = ~np.isfinite(k) | ~np.isfinite(n) | (k != np.round(k)) | (n != np.round(n)) | (k < 0) | (k > n)
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        raise errors.ConfigurationError(
            f"counts must be whole numbers with 0 <= k <= n. Received: k={k.ravel()[i]:g}, n={n.ravel()[i]:g}")
    return k, n


def proportion_ci(k, n, method="wilson", confidence=0.95):
    """Binomial confidence interval of the proportion ``k / n``, vectorised over arrays.

    statsmodels' ``proportion_confint`` (``"wilson"``: the Wilson score
    interval; ``"clopper-pearson"``: the exact interval from beta
    quantiles, statsmodels' ``"beta"``). SciPy's ``binomtest(k, n)
    .proportion_ci`` gives the same numbers.

    Args:
        k: successes, an int or an array of ints.
        n: trials, broadcastable with ``k``.
        method: ``"wilson"`` or ``"clopper-pearson"``.
        confidence: the interval's coverage, in (0, 1).

    Returns:
        ``(lo, hi)``: two floats for scalar input, else two float arrays
        of the broadcast shape. NaN where ``n == 0``.

    Raises:
        ConfigurationError: an unknown method, a confidence outside (0, 1),
            or counts that are not whole numbers with ``0 <= k <= n``.

    Example:

    >>> lo, hi = proportion_ci(45, 50)
    >>> round(lo, 4), round(hi, 4)
    (0.7864, 0.9565)
    >>> proportion_ci([0, 3], [0, 4], method="clopper-pearson")[0]
    array([       nan, 0.19412045])
    """
    from statsmodels.stats.proportion import proportion_confint

    _check_method(method)
    confidence = _check_confidence(confidence)
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k, n = _counts(k, n)
    lo, hi = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    ok = n > 0  # statsmodels divides by n: an empty denominator has no interval
    if ok.any():
        lo[ok], hi[ok] = proportion_confint(k[ok], n[ok], alpha=1.0 - confidence,
                                            method=_STATSMODELS_METHOD[method])
    if scalar:
        return float(lo), float(hi)
    return lo, hi


def estimate(k, n, method="wilson", confidence=0.95):
    """One proportion ``k / n`` with its interval, as ``metrics.json`` stores every metric.

    Args:
        k: successes (an int).
        n: trials (an int).
        method: ``"wilson"`` or ``"clopper-pearson"``.
        confidence: the interval's coverage; stored as ``"confidence"``
            when it is not 0.95 (the key stays ``ci95``).

    Returns:
        ``{"value": k / n, "ci95": [lo, hi], "method": method, "k": k,
        "n": n}``; ``value`` and ``ci95`` are None when ``n == 0``.

    Raises:
        ConfigurationError: as :func:`proportion_ci`, or non-scalar counts.

    Example:

    >>> e = estimate(45, 50)
    >>> e["value"], [round(x, 4) for x in e["ci95"]], e["method"], e["k"], e["n"]
    (0.9, [0.7864, 0.9565], 'wilson', 45, 50)
    >>> estimate(0, 0)["ci95"] is None
    True
    """
    if np.ndim(k) or np.ndim(n):
        raise errors.ConfigurationError(f"estimate takes one count pair. Received: k={k!r}, n={n!r}")
    lo, hi = proportion_ci(k, n, method=method, confidence=confidence)
    k, n = int(k), int(n)
    result = {"value": k / n if n else None, "ci95": [lo, hi] if n else None, "method": method, "k": k, "n": n}
    if float(confidence) != 0.95:
        result["confidence"] = float(confidence)
    return result


def family_wise(k, n, m, method="wilson"):
    """A proportion with its Bonferroni family-wise 95 % interval, one of ``m`` intervals.

    Paper 004's PPV and NPV: each of the family's ``m`` intervals is built
    at confidence ``1 - 0.05 / m``, so that all ``m`` hold together with at
    least 95 % probability.

    Args:
        k: successes. n: trials.
        m: how many intervals the family holds (an int >= 1; 1 is the
            plain 95 % interval).
        method: ``"wilson"`` or ``"clopper-pearson"``.

    Returns:
        The :func:`estimate` dict plus ``"family": m`` and
        ``"confidence": 1 - 0.05 / m``.

    Raises:
        ConfigurationError: ``m`` is not a whole number >= 1, or as :func:`estimate`.

    Example:

    >>> e = family_wise(50, 55, 6, method="clopper-pearson")
    >>> [round(x, 6) for x in e["ci95"]], e["family"], round(e["confidence"], 5)
    ([0.759514, 0.980717], 6, 0.99167)
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise errors.ConfigurationError(f"the family size m must be a whole number >= 1. Received: m={m!r}")
    confidence = 1.0 - 0.05 / int(m)
    result = estimate(k, n, method=method, confidence=confidence)
    result.update({"family": int(m), "confidence": confidence})
    return result


# --------------------------------------------------------------------------- per-class metrics


def _f1_estimate(tp, fp, fn, method, confidence):
    """F1 with an interval mapped from the Jaccard index (module doc of :func:`class_metrics`)."""
    n = tp + fp + fn
    result = estimate(tp, n, method=method, confidence=confidence)
    if n:
        result["value"] = 2 * tp / (2 * tp + fp + fn)
        result["ci95"] = [2 * x / (1 + x) for x in result["ci95"]]
    result["via"] = "jaccard"
    return result


def _check_confusion(confusion, classes):
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise errors.ConfigurationError(
            f"the confusion matrix must be square with one row per class ({len(classes)}). "
            f"Received shape {cm.shape}")
    if cm.size and (not np.all(np.isfinite(cm)) or np.any(cm < 0) or np.any(cm != np.round(cm))):
        raise errors.ConfigurationError("the confusion matrix must hold whole non-negative counts.")
    return cm.astype(np.int64)


def class_metrics(confusion, classes, method="wilson", confidence=0.95):
    """Accuracy and per-class one-vs-rest metrics, each an :func:`estimate`, from a confusion matrix.

    For class ``c`` (rows are true classes, columns predicted): TP, FN
    (rest of its row), FP (rest of its column), TN (everything else), and

    - ``sensitivity`` = ``recall`` = TP / (TP + FN),
    - ``specificity`` = TN / (TN + FP),
    - ``ppv`` = ``precision`` = TP / (TP + FP),
    - ``npv`` = TN / (TN + FN),
    - ``f1`` = 2 TP / (2 TP + FP + FN).

    F1 is not a binomial proportion, but it is a monotone function of one:
    the Jaccard index J = TP / (TP + FP + FN), and F1 = 2 J / (1 + J). Among
    the cases that are of class ``c`` or predicted as ``c``, each is a true
    positive with probability J independently, so the binomial interval of
    J, mapped through ``2 J / (1 + J)``, is an interval for F1 of the same
    coverage. Its dict has ``"via": "jaccard"``, ``k`` = TP and ``n`` =
    TP + FP + FN (so ``value`` = 2k / (k + n), not k / n).

    Like every binomial interval here, these treat cases as independent;
    for slice models the patient bootstrap of :func:`bootstrap_auc` is the
    one that accounts for slices of one patient.

    Args:
        confusion: int [classes, classes] counts, rows true, columns predicted.
        classes: the class names, in the matrix's order.
        method: ``"wilson"`` or ``"clopper-pearson"``.
        confidence: the intervals' coverage.

    Returns:
        ``{"n", "accuracy": estimate, "confusion": [[...]], "per_class":
        {class: {"support", "sensitivity", "specificity", "ppv", "npv",
        "precision", "recall", "f1"}}}``.

    Raises:
        ConfigurationError: a matrix that is not square, not one row per
            class, or not whole non-negative counts; or as :func:`estimate`.

    Example:

    >>> m = class_metrics([[45, 5], [10, 40]], ["covid", "normal"])
    >>> m["accuracy"]["value"], m["per_class"]["covid"]["sensitivity"]["k"]
    (0.85, 45)
    >>> round(m["per_class"]["covid"]["ppv"]["value"], 4)
    0.8182
    """
    cm = _check_confusion(confusion, classes)
    total = int(cm.sum())
    per_class = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        fn, fp = int(cm[i].sum()) - tp, int(cm[:, i].sum()) - tp
        tn = total - tp - fn - fp
        sens = estimate(tp, tp + fn, method, confidence)
        ppv = estimate(tp, tp + fp, method, confidence)
        per_class[c] = {
            "support": tp + fn,
            "sensitivity": sens,
            "specificity": estimate(tn, tn + fp, method, confidence),
            "ppv": ppv,
            "npv": estimate(tn, tn + fn, method, confidence),
            "precision": dict(ppv),
            "recall": dict(sens),
            "f1": _f1_estimate(tp, fp, fn, method, confidence),
        }
    return {"n": total, "accuracy": estimate(int(np.trace(cm)), total, method, confidence),
            "confusion": cm.tolist(), "per_class": per_class}


# --------------------------------------------------------------------------- patient-level bootstrap


def _patient_index(groups):
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise errors.ConfigurationError(f"groups must be a 1-D array of patient ids. Received shape {groups.shape}")
    if groups.size == 0:
        raise errors.ConfigurationError("the bootstrap needs at least one case; there are none.")
    _, index = np.unique(groups, return_inverse=True)
    return index.ravel().astype(np.int64)


def _check_n_boot(n_boot):
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise errors.ConfigurationError(f"n_boot must be a whole number >= 1. Received: n_boot={n_boot!r}")
    return int(n_boot)


def patient_resamples(groups, n_boot=2000, seed=0):
    """Multiplicities of patients in ``n_boot`` bootstrap resamples of the patients.

    Each resample draws as many patients as there are, uniformly with
    replacement; a patient's count is how often it was drawn. The draws come
    from ``numpy.random.default_rng(seed)`` in fixed blocks, so one seed
    gives the same resamples for every class and curve (paired intervals).

    Args:
        groups: the patient id of each case (any sortable values), [n].
        n_boot: how many resamples.
        seed: the generator's seed.

    Returns:
        ``(counts, patient_of_case)``: float64 [n_boot, patients] counts,
        and int [n] the column of ``counts`` each case belongs to. The case
        weights of resample ``b`` are ``counts[b, patient_of_case]``.

    Raises:
        ConfigurationError: ``groups`` is not one id per case, is empty, or
            ``n_boot`` < 1.

    Example:

    >>> counts, case = patient_resamples(["a", "a", "b"], n_boot=4, seed=0)
    >>> counts.shape, counts.sum(axis=1).tolist(), case.tolist()
    ((4, 2), [2.0, 2.0, 2.0, 2.0], [0, 0, 1])
    """
    patient_of_case = _patient_index(groups)
    n_boot = _check_n_boot(n_boot)
    patients = int(patient_of_case.max()) + 1
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, patients))
    for start in range(0, n_boot, _DRAW_BLOCK):
        rows = min(_DRAW_BLOCK, n_boot - start)
        draws = rng.integers(0, patients, size=(rows, patients))
        draws += np.arange(rows)[:, None] * patients  # one bincount for the whole block
        counts[start:start + rows] = np.bincount(draws.ravel(), minlength=rows * patients).reshape(rows, patients)
    return counts, patient_of_case


def _percentile_interval(values, confidence):
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def _bootstrap_result(value, replicates, n_boot, patients, confidence, **extra):
    valid = replicates[np.isfinite(replicates)]
    result = {"value": value, "ci95": _percentile_interval(valid, confidence) if valid.size else None,
              "n_boot": int(n_boot), "dropped": int(n_boot - valid.size), "patients": int(patients),
              "method": BOOTSTRAP_METHOD, **extra}
    if confidence != 0.95:
        result["confidence"] = confidence
    return result


def bootstrap_metric(statistic, groups, n_boot=2000, seed=0, confidence=0.95):
    """Patient-level percentile bootstrap of any statistic that takes case weights.

    Args:
        statistic: a function of float [resamples, n] case weights (a
            patient's multiplicity on each of its cases) returning float
            [resamples], vectorised; NaN marks a resample where the
            statistic is undefined (it is dropped). Its value on unit
            weights is the point value.
        groups: the patient id of each case, [n].
        n_boot: resamples. seed: their seed (:func:`patient_resamples`).
        confidence: the interval's coverage.

    Returns:
        ``{"value", "ci95": [lo, hi] or None, "n_boot", "dropped",
        "patients", "method": "patient bootstrap (percentile)"}``.

    Raises:
        ConfigurationError: as :func:`patient_resamples`, or a bad confidence.

    Example:

    >>> correct = np.array([1.0, 1.0, 0.0, 1.0])
    >>> accuracy = lambda w: (w * correct).sum(axis=1) / w.sum(axis=1)
    >>> r = bootstrap_metric(accuracy, ["a", "a", "b", "c"], n_boot=200)
    >>> r["value"], r["patients"], r["dropped"]
    (0.75, 3, 0)
    """
    confidence = _check_confidence(confidence)
    counts, patient_of_case = patient_resamples(groups, n_boot=n_boot, seed=seed)
    value = float(np.asarray(statistic(np.ones((1, patient_of_case.size))))[0])
    replicates = np.concatenate([np.asarray(statistic(counts[s:s + _DRAW_BLOCK][:, patient_of_case]), float)
                                 for s in range(0, counts.shape[0], _DRAW_BLOCK)])
    return _bootstrap_result(value if np.isfinite(value) else None, replicates, counts.shape[0],
                             counts.shape[1], confidence)


class _CurveKernel:
    """Weighted ROC AUC and average precision of one binary problem, for many case-weight vectors at once.

    Why hand-written: scikit-learn takes one ``sample_weight`` per call, a
    Python loop per resample. Here the cases are sorted by score once and
    grouped into the distinct score levels that hold a positive case (the
    only places where the PR curve steps up). For resample weights ``w``
    (a patient's multiplicity on each of its cases), per level ``k``:

    - ``dT[k]``: positive weight at the level; ``T = cumsum(dT)`` the true
      positives at threshold ``k`` (scores >= the level's);
    - ``F[k]``: negative weight with score >= the level's (false
      positives), of which ``tie[k]`` sits exactly on the level.

    ``dT`` and ``dF`` (``F = cumsum(dF)``) are sparse (levels x patients)
    count matrices applied to the [patients, resamples] multiplicities, one
    product per block of resamples. Then, as scikit-learn computes them
    with ``sample_weight``,

    - ROC AUC = 1 - sum_k dT[k] (F[k] - tie[k] / 2) / (P N) (the
      Mann-Whitney form of the trapezoid rule, ties counting one half);
      ``sum_k dT[k] tie[k]`` is the bilinear form ``w' (Dpos' Dtie) w``;
    - average precision = sum_k dT[k] / P * T[k] / (T[k] + F[k]),

    with P and N the resample's positive and negative weight. A resample
    with no positive or no negative weight gives NaN.
    """

    def __init__(self, y, scores, patient_of_case, patients):
        from scipy import sparse

        order = np.argsort(-scores, kind="stable")
        s, pos, pat = scores[order], y[order], patient_of_case[order]
        level = np.concatenate([[0], np.cumsum(s[1:] != s[:-1])])  # descending score levels
        pos_levels = np.unique(level[pos])
        self.n_levels = pos_levels.size
        neg_level, neg_pat = level[~pos], pat[~pos]
        k_neg = np.searchsorted(pos_levels, neg_level)  # the first positive level at or below the negative's
        counted = k_neg < pos_levels.size  # negatives below every positive never count as false positives
        tied = counted.copy()
        tied[counted] = pos_levels[k_neg[counted]] == neg_level[counted]

        def count_matrix(levels, case_patients):  # csr [levels, patients], ready for csr @ dense
            return sparse.csr_matrix((np.ones(levels.size), (levels, case_patients)),
                                     shape=(max(self.n_levels, 1), patients))

        self.d_true = count_matrix(np.searchsorted(pos_levels, level[pos]), pat[pos])
        self.d_false = count_matrix(k_neg[counted], neg_pat[counted])
        ties = count_matrix(k_neg[tied], neg_pat[tied])
        self.tie_pairs = (self.d_true.T @ ties).tocsr() if tied.any() else None
        self.n_pos = np.bincount(pat[pos], minlength=patients).astype(np.float64)
        self.n_neg = np.bincount(pat[~pos], minlength=patients).astype(np.float64)

    def __call__(self, counts):
        """float [b, patients] multiplicities -> (roc [b], pr [b])."""
        w = np.ascontiguousarray(counts.T)
        total_pos, total_neg = counts @ self.n_pos, counts @ self.n_neg
        d_true = self.d_true @ w
        false = self.d_false @ w
        np.cumsum(false, axis=0, out=false)
        roc_loss = np.einsum("kb,kb->b", d_true, false)
        if self.tie_pairs is not None:
            roc_loss -= 0.5 * np.einsum("pb,pb->b", w, self.tie_pairs @ w)
        true = np.cumsum(d_true, axis=0)
        false += true
        np.maximum(false, 1.0, out=false)  # weights are whole: T + F is 0 only where T (and dT) is 0
        true /= false
        precision_sum = np.einsum("kb,kb->b", d_true, true)
        defined = (total_pos > 0) & (total_neg > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            roc = np.where(defined, 1.0 - roc_loss / (total_pos * total_neg), np.nan)
            pr = np.where(defined, precision_sum / total_pos, np.nan)
        return roc, pr


def _threads():
    """The cores this process may use (at most 8): the kernel's blocks are spread over them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def _binary_inputs(y_true, scores):
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise errors.ConfigurationError(
            f"y_true and scores must be two 1-D arrays of one length. Received shapes {y.shape} and {s.shape}")
    if not np.isin(y, [0, 1]).all():
        raise errors.ConfigurationError("y_true must hold 0 (negative) and 1 (positive) only, one-vs-rest.")
    if not np.isfinite(s).all():
        raise errors.ConfigurationError("scores must be finite numbers; found NaN or infinity.")
    return y.astype(bool), s


def curve_replicates(y_true, scores, counts, patient_of_case):
    """Weighted ROC AUC and average precision for each row of patient multiplicities.

    The vectorised kernel behind :func:`bootstrap_auc` (its docstring in
    ``_CurveKernel``): row ``b`` equals scikit-learn's ``roc_auc_score`` and
    ``average_precision_score`` with ``sample_weight =
    counts[b, patient_of_case]``.

    Args:
        y_true: 0/1 [n]. scores: float [n].
        counts: float [b, patients] whole multiplicities.
        patient_of_case: int [n], the column of ``counts`` of each case.

    Returns:
        ``(roc, pr)``: float [b] each, NaN where a row has no positive or
        no negative weight.
    """
    y, s = _binary_inputs(y_true, scores)
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    kernel = _CurveKernel(y, s, np.asarray(patient_of_case, dtype=np.int64), counts.shape[1])
    if kernel.n_levels == 0:
        nan = np.full(counts.shape[0], np.nan)
        return nan, nan.copy()
    block = max(1, _KERNEL_CELLS // kernel.n_levels)
    blocks = [counts[start:start + block] for start in range(0, counts.shape[0], block)]
    workers = min(len(blocks), _threads())
    if workers > 1:  # numpy and scipy.sparse release the GIL in these products and sums
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(kernel, blocks))
    else:
        parts = [kernel(b) for b in blocks]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _point_aucs(y, s):
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.all() or not y.any():
        return None, None
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def _auc_results(y, s, counts, patient_of_case, confidence):
    roc_value, pr_value = _point_aucs(y, s)
    b, patients = counts.shape
    if roc_value is None:
        reason = "only one class among the cases: the curve is not defined"
        return {curve: {"value": None, "ci95": None, "n_boot": b, "dropped": b, "patients": patients,
                        "method": BOOTSTRAP_METHOD, "curve": curve, "reason": reason} for curve in CURVES}
    roc, pr = curve_replicates(y, s, counts, patient_of_case)
    return {"roc": _bootstrap_result(roc_value, roc, b, patients, confidence, curve="roc"),
            "pr": _bootstrap_result(pr_value, pr, b, patients, confidence, curve="pr")}


def bootstrap_auc(y_true, scores, groups, n_boot=2000, seed=0, curve="roc", confidence=0.95):
    """Area under the ROC or precision-recall curve with a patient-level bootstrap interval.

    Patients are resampled with replacement (:func:`patient_resamples`);
    every case of a drawn patient enters with the patient's multiplicity,
    and the area is the weighted one (scikit-learn's ``roc_auc_score`` or
    ``average_precision_score`` with ``sample_weight``), computed for all
    resamples at once (``_CurveKernel``). Resamples without a positive or
    without a negative case are dropped and counted in ``"dropped"``. The
    interval is the percentile interval of the remaining areas.

    Args:
        y_true: 0/1 [n] (one-vs-rest: 1 for the class).
        scores: float [n], the class's probability.
        groups: the patient id of each case, [n].
        n_boot: resamples. seed: their seed.
        curve: ``"roc"`` (ROC AUC) or ``"pr"`` (average precision).
        confidence: the interval's coverage.

    Returns:
        ``{"value": area on all cases, "ci95": [lo, hi], "n_boot",
        "dropped", "patients", "method": "patient bootstrap (percentile)",
        "curve"}``; ``value`` and ``ci95`` are None (with a ``"reason"``)
        when the cases hold one class only.

    Raises:
        ConfigurationError: mismatched shapes, labels other than 0/1,
            non-finite scores, an unknown curve, or as :func:`patient_resamples`.

    Example:

    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    >>> r = bootstrap_auc(y, s, ["a", "a", "b", "b", "c", "c"], n_boot=500)
    >>> round(r["value"], 4), r["patients"], r["ci95"][0] <= r["value"] <= r["ci95"][1]
    (0.8889, 3, True)
    """
    if curve not in CURVES:
        raise errors.ConfigurationError(f"curve {curve!r} is not one of {', '.join(CURVES)}.")
    confidence = _check_confidence(confidence)
    y, s = _binary_inputs(y_true, scores)
    counts, patient_of_case = patient_resamples(_check_groups(groups, y.size), n_boot=n_boot, seed=seed)
    return _auc_results(y, s, counts, patient_of_case, confidence)[curve]


def _check_groups(groups, n):
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise errors.ConfigurationError(
            f"groups must hold one patient id per case ({n}). Received shape {groups.shape}")
    return groups


def _check_multiclass(y_true, probs, classes=None):
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise errors.ConfigurationError(
            f"y_true must be [n] and probs [n, classes]. Received shapes {y.shape} and {p.shape}")
    if classes is not None and len(classes) != p.shape[1]:
        raise errors.ConfigurationError(
            f"probs has {p.shape[1]} columns but {len(classes)} classes were named.")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise errors.ConfigurationError(
            f"y_true must hold class indices 0 .. {p.shape[1] - 1}; leave out unlabelled cases (-1) first.")
    if not np.isfinite(p).all():
        raise errors.ConfigurationError("probs must be finite numbers; found NaN or infinity.")
    return y.astype(np.int64), p


def bootstrap_class_aucs(y_true, probs, groups, classes, n_boot=2000, seed=0, confidence=0.95):
    """Per class (one-vs-rest) ROC AUC and average precision, each with a patient bootstrap interval.

    One set of resamples (one seed) serves every class and both curves, so
    the intervals are paired. Equivalent to :func:`bootstrap_auc` on
    ``(y_true == i, probs[:, i])`` for each class ``i``, with the same seed.

    Args:
        y_true: int [n] class indices. probs: float [n, classes].
        groups: the patient id of each case, [n].
        classes: the class names, in column order.
        n_boot: resamples. seed: their seed. confidence: the coverage.

    Returns:
        ``{class: {"roc_auc": result, "pr_auc": result}}``, each result as
        :func:`bootstrap_auc` returns it.

    Raises:
        ConfigurationError: mismatched shapes, labels outside the classes,
            non-finite probabilities, or as :func:`patient_resamples`.

    Example:

    >>> p = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    >>> r = bootstrap_class_aucs([0, 1, 0, 1], p, ["a", "b", "c", "d"], ["covid", "normal"], n_boot=100)
    >>> r["covid"]["roc_auc"]["value"], r["normal"]["pr_auc"]["value"]
    (1.0, 1.0)
    """
    confidence = _check_confidence(confidence)
    y, p = _check_multiclass(y_true, probs, classes)
    counts, patient_of_case = patient_resamples(_check_groups(groups, y.size), n_boot=n_boot, seed=seed)
    out = {}
    for i, c in enumerate(classes):
        both = _auc_results(y == i, p[:, i], counts, patient_of_case, confidence)
        out[c] = {"roc_auc": both["roc"], "pr_auc": both["pr"]}
    return out


# --------------------------------------------------------------------------- calibration


def _bin_index(values, n_bins):
    """scikit-learn's ``calibration_curve`` binning: uniform bins, a value on an edge goes to the lower bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], values), edges


def calibration(y_true, probs, n_bins=10, classes=None):
    """Top-label reliability with the expected calibration error, and per-class reliability curves.

    Top-label (Guo et al. 2017): each case's confidence is its highest
    probability, and it is correct when that class is the true one. Cases
    are binned by confidence into ``n_bins`` equal bins of [0, 1] (as
    scikit-learn's ``calibration_curve`` bins: a confidence on an edge goes
    to the lower bin); the expected calibration error is
    ``sum_bins count / n * |accuracy - mean confidence|`` and the maximum
    calibration error the largest gap. Per class (one-vs-rest), scikit-
    learn's ``calibration_curve(y == c, probs[:, c], n_bins=n_bins)``.

    Args:
        y_true: int [n] class indices (unlabelled cases left out).
        probs: float [n, classes] probabilities.
        n_bins: bins of [0, 1] (an int >= 1).
        classes: the class names (default ``"0"``, ``"1"``, ...).

    Returns:
        ``{"n", "n_bins", "ece", "mce", "bins": [{"lo", "hi", "count",
        "confidence", "accuracy"}], "per_class": {class: {"mean_predicted":
        [...], "fraction_positive": [...], "count": [...]}}}``; an empty
        bin has None confidence and accuracy, and the per-class lists hold
        the non-empty bins only. ``ece`` and ``mce`` are None without cases.

    Raises:
        ConfigurationError: mismatched shapes, labels outside the classes,
            non-finite probabilities, or ``n_bins`` < 1.

    Example:

    >>> c = calibration([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], n_bins=2)
    >>> round(c["ece"], 4), [b["count"] for b in c["bins"]]
    (0.0667, [0, 3])
    """
    from sklearn.calibration import calibration_curve

    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise errors.ConfigurationError(f"n_bins must be a whole number >= 1. Received: n_bins={n_bins!r}")
    y, p = _check_multiclass(y_true, probs, classes)
    classes = [str(i) for i in range(p.shape[1])] if classes is None else list(classes)
    n = y.size
    confidence = p.max(axis=1) if n else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(np.float64) if n else np.zeros(0)
    index, edges = _bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    bins, gaps = [], []
    for b in range(n_bins):
        mean_conf = conf_sum[b] / count[b] if count[b] else None
        acc = acc_sum[b] / count[b] if count[b] else None
        if count[b]:
            gaps.append(abs(acc - mean_conf))
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(count[b]),
                     "confidence": None if mean_conf is None else float(mean_conf),
                     "accuracy": None if acc is None else float(acc)})
    nonempty = count[count > 0]
    ece = float(np.dot(nonempty / n, gaps)) if n else None
    per_class = {}
    for i, c in enumerate(classes):
        truth = (y == i).astype(np.int64)
        if n:
            frac, mean = calibration_curve(truth, p[:, i], n_bins=n_bins, strategy="uniform")
            counts = np.bincount(_bin_index(p[:, i], n_bins)[0], minlength=n_bins)
            counts = counts[counts > 0]
        else:
            frac, mean, counts = np.zeros(0), np.zeros(0), np.zeros(0, int)
        per_class[c] = {"mean_predicted": mean.tolist(), "fraction_positive": frac.tolist(),
                        "count": counts.tolist()}
    return {"n": int(n), "n_bins": int(n_bins), "ece": ece, "mce": float(max(gaps)) if gaps else None,
            "bins": bins, "per_class": per_class}


__all__ = [
    "CI_METHODS",
    "bootstrap_auc",
    "bootstrap_class_aucs",
    "bootstrap_metric",
    "calibration",
    "class_metrics",
    "curve_replicates",
    "estimate",
    "family_wise",
    "patient_resamples",
    "proportion_ci",
]
