"""The evaluation report's figures: ROC and precision-recall curves, reliability diagram, confusion matrix, folds.

Each function draws one PNG and returns its path. The curves are
scikit-learn's (``roc_curve``, ``precision_recall_curve``), one-vs-rest per
class. Figures are ``matplotlib.figure.Figure`` objects rendered by the Agg
canvas: no pyplot, so no global figure registry to leak and no display
needed (servers, CI, worker threads). A figure is dropped once saved.
"""

import os

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import stats

#: Figure sizes in inches at :data:`DPI`: a PNG is ``size * DPI`` pixels (width, height).
CURVE_SIZE = (6.4, 5.6)
RELIABILITY_SIZE = (11.0, 5.0)
DPI = 100


def _figure(size):
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _save(fig, path):
    """Writes ``fig`` as a PNG at ``path`` (its folder made if missing) and returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    fig.clear()
    return path


def _interval_text(result):
    """``"0.912 (95% CI 0.881-0.940)"`` of an estimate or bootstrap dict, or of a plain number."""
    if result is None:
        return None
    if not isinstance(result, dict):
        return f"{float(result):.3f}"
    if result.get("value") is None:
        return "not defined"
    text = f"{result['value']:.3f}"
    if result.get("ci95"):
        lo, hi = result["ci95"]
        level = round(100 * result.get("confidence", 0.95), 1)
        text += f" ({level:g}% CI {lo:.3f}\u2013{hi:.3f})"
    return text


def _lookup(aucs, name, key):
    """The area given for class ``name``: ``aucs[name]``, or its ``key`` in ``stats.bootstrap_class_aucs`` output."""
    if not aucs or name not in aucs:
        return None
    found = aucs[name]
    if isinstance(found, dict) and key in found:
        found = found[key]
    return found


def _one_vs_rest(y, probs, i):
    truth = y == i
    return truth, probs[:, i], bool(truth.any() and not truth.all())


def _defined_curves(ax, y, p, classes):
    """Yields ``(name, colour, truth, score)`` per class whose one-vs-rest curve is defined.

    A class with no case, or with every case, has no curve; its legend
    entry says so instead.
    """
    for i, (name, color) in enumerate(zip(classes, _colors(len(classes)))):
        truth, score, defined = _one_vs_rest(y, p, i)
        if defined:
            yield name, color, truth, score
        else:
            ax.plot([], [], color=color, label=f"{name}: not defined (one class only)")


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def roc_figure(y_true, probs, classes, path, aucs=None, title="ROC curves, one-vs-rest"):
    """ROC curve of each class against the rest, its AUC (with interval) in the legend, and the chance line.

    Args:
        y_true: int [n] class indices. probs: float [n, classes].
        classes: the class names, in column order.
        path: the PNG to write.
        aucs: optional ``{class: area}``, an area being a number, an
            estimate / bootstrap dict (``value``, ``ci95``), or
            :func:`stats.bootstrap_class_aucs` output (its ``roc_auc``);
            classes missing from it get scikit-learn's ``roc_auc_score``
            without an interval.
        title: the figure's title.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: mismatched shapes, labels outside the classes,
            or non-finite probabilities.

    Example:

    >>> import tempfile, os
    >>> p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    >>> out = roc_figure([0, 1, 0, 1], p, ["covid", "normal"], os.path.join(tempfile.mkdtemp(), "roc.png"))
    >>> out.endswith("roc.png")
    True
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y, p = stats._check_multiclass(y_true, probs, classes)
    fig = _figure(CURVE_SIZE)
    ax = fig.add_subplot()
    for name, color, truth, score in _defined_curves(ax, y, p, classes):
        fpr, tpr, _ = roc_curve(truth, score)
        area = _lookup(aucs, name, "roc_auc")
        area = float(roc_auc_score(truth, score)) if area is None else area
        ax.plot(fpr, tpr, color=color, lw=1.8, label=f"{name}: AUC {_interval_text(area)}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC 0.5)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="False positive rate (1 \u2212 specificity)",
           ylabel="True positive rate (sensitivity)", title=f"{title} (n = {y.size})")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def pr_figure(y_true, probs, classes, path, aucs=None, title="Precision-recall curves, one-vs-rest"):
    """Precision-recall curve of each class against the rest, with its average precision and chance level.

    The chance level of a class is its prevalence (a classifier that
    answers at random has that precision at every recall), drawn dotted in
    the class's colour.

    Args:
        y_true: int [n] class indices. probs: float [n, classes].
        classes: the class names, in column order.
        path: the PNG to write.
        aucs: optional ``{class: area}`` as in :func:`roc_figure` (the
            ``pr_auc`` of :func:`stats.bootstrap_class_aucs` output);
            missing classes get ``average_precision_score``.
        title: the figure's title.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: as :func:`roc_figure`.

    Example:

    >>> import tempfile, os
    >>> p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    >>> out = pr_figure([0, 1, 0, 1], p, ["covid", "normal"], os.path.join(tempfile.mkdtemp(), "pr.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, p = stats._check_multiclass(y_true, probs, classes)
    fig = _figure(CURVE_SIZE)
    ax = fig.add_subplot()
    for name, color, truth, score in _defined_curves(ax, y, p, classes):
        precision, recall, _ = precision_recall_curve(truth, score)
        area = _lookup(aucs, name, "pr_auc")
        area = float(average_precision_score(truth, score)) if area is None else area
        ax.plot(recall, precision, color=color, lw=1.8, drawstyle="steps-post",
                label=f"{name}: AP {_interval_text(area)}")
        prevalence = float(truth.mean())
        ax.axhline(prevalence, color=color, ls=":", lw=1, label=f"{name}: chance ({prevalence:.2f})")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="Recall (sensitivity)",
           ylabel="Precision (PPV)", title=f"{title} (n = {y.size})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def _check_calibration(calibration):
    if not isinstance(calibration, dict) or "bins" not in calibration or "per_class" not in calibration:
        raise errors.ConfigurationError("reliability_figure takes the dict stats.calibration returns "
                                        "(with 'bins' and 'per_class').")


def _draw_top_label(ax, hist, calibration):
    bins = calibration["bins"]
    lo = np.array([b["lo"] for b in bins])
    width = np.array([b["hi"] - b["lo"] for b in bins])
    full = [i for i, b in enumerate(bins) if b["count"]]
    acc = np.array([bins[i]["accuracy"] for i in full])
    conf = np.array([bins[i]["confidence"] for i in full])
    ax.bar(lo[full], acc, width=width[full], align="edge", color="tab:blue", edgecolor="black", lw=0.6,
           label="accuracy")
    ax.bar(lo[full], conf - acc, bottom=acc, zorder=3, width=width[full], align="edge", color="tab:red", alpha=0.35,
           edgecolor="tab:red", hatch="//", lw=0.6, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ece = calibration.get("ece")
    ece_text = "not defined" if ece is None else f"{ece:.3f}"
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="Accuracy",
           title=f"Top-label reliability (ECE {ece_text}, n = {calibration.get('n', sum(b['count'] for b in bins))})")
    ax.legend(loc="upper left", fontsize="small")
    ax.tick_params(labelbottom=False)
    hist.bar(lo, [b["count"] for b in bins], width=width, align="edge", color="grey", edgecolor="black", lw=0.6)
    hist.set(xlim=(0, 1), xlabel="Confidence (highest probability)", ylabel="Cases")


def _draw_per_class(ax, calibration):
    for (name, curve), color in zip(calibration["per_class"].items(), _colors(len(calibration["per_class"]))):
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], marker="o", ms=4, color=color, label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Mean predicted probability",
           ylabel="Fraction of positives", title="Per-class reliability, one-vs-rest")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")


def reliability_figure(calibration, path):
    """Reliability diagram: top-label accuracy against confidence per bin (with ECE and counts), and per class.

    Left: per confidence bin, the accuracy (bars), its gap to the bin's
    mean confidence (hatched) and the diagonal of perfect calibration, the
    expected calibration error in the title, and the cases per bin below.
    Right: each class's one-vs-rest reliability curve.

    Args:
        calibration: the dict :func:`stats.calibration` returns.
        path: the PNG to write.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: ``calibration`` is not such a dict.

    Example:

    >>> import tempfile, os
    >>> c = stats.calibration([0, 1, 1, 0], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.7, 0.3]], n_bins=5)
    >>> out = reliability_figure(c, os.path.join(tempfile.mkdtemp(), "reliability.png"))
    >>> os.path.exists(out)
    True
    """
    _check_calibration(calibration)
    fig = _figure(RELIABILITY_SIZE)
    axes = fig.subplot_mosaic([["top", "classes"], ["hist", "classes"]], height_ratios=[3, 1],
                              gridspec_kw={"hspace": 0.02})
    axes["hist"].sharex(axes["top"])
    _draw_top_label(axes["top"], axes["hist"], calibration)
    _draw_per_class(axes["classes"], calibration)
    return _save(fig, path)


def confusion_figure(confusion, classes, path, title="Confusion matrix"):
    """Confusion matrix, rows true and columns predicted: colour by row fraction, each cell's count and percent.

    Args:
        confusion: int [classes, classes] counts, rows true, columns predicted.
        classes: the class names, in the matrix's order.
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: a matrix that is not square, not one row per
            class, or not whole non-negative counts.

    Example:

    >>> import tempfile, os
    >>> out = confusion_figure([[45, 5], [10, 40]], ["covid", "normal"], os.path.join(tempfile.mkdtemp(), "cm.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    cm = stats._check_confusion(confusion, classes)
    rows = cm.sum(axis=1, keepdims=True)
    fraction = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    k = len(classes)
    side = min(4.0 + 0.8 * k, 12.0)
    fig = _figure((side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{100 * fraction[i, j]:.1f}%", ha="center", va="center", fontsize="small",
                    color="white" if fraction[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels=classes, rotation=30, ha="right")
    ax.set_yticks(range(k), labels=classes)
    ax.set(xlabel="Predicted class", ylabel="True class", title=f"{title} (n = {int(cm.sum())})")
    return _save(fig, path)


def fold_figure(folds, path, metrics=None, title="Per-fold results", ddof=0):
    """Each fold's value of each metric (dots), with the mean and one standard deviation (bar).

    Paper 000's Table 4 and paper 003's k-fold result as a picture: one
    column per metric, one dot per fold, mean +- standard deviation
    beside them (``ddof=0`` by default, as the report's fold table: the
    folds are all the folds, not a sample of them).

    Args:
        folds: a list with one ``{metric: value}`` dict per fold (values
            in [0, 1]; None where a fold has none).
        path: the PNG to write.
        metrics: the metrics to draw, in order (default: the first fold's keys).
        title: the figure's title.
        ddof: the standard deviation's delta degrees of freedom.

    Returns:
        ``path``.

    Raises:
        ConfigurationError: no folds, or no metric to draw.

    Example:

    >>> import tempfile, os
    >>> folds = [{"accuracy": 0.9, "f1": 0.88}, {"accuracy": 0.86, "f1": 0.84}]
    >>> out = fold_figure(folds, os.path.join(tempfile.mkdtemp(), "folds.png"))
    >>> os.path.exists(out)
    True
    """
    if not folds:
        raise errors.ConfigurationError("fold_figure needs at least one fold's metrics; none were given.")
    metrics = list(metrics if metrics is not None else folds[0])
    if not metrics:
        raise errors.ConfigurationError("fold_figure has no metric to draw; name them with metrics=[...].")
    fig = _figure((max(4.5, 1.3 * len(metrics) + 2.0), 4.5))
    ax = fig.add_subplot()
    for f, color in zip(range(len(folds)), _colors(len(folds))):
        values = [folds[f].get(m) for m in metrics]
        xs = [j - 0.15 for j, v in enumerate(values) if v is not None]
        ax.scatter(xs, [v for v in values if v is not None], color=color, s=22, label=f"fold {f + 1}", zorder=3)
    for j, m in enumerate(metrics):
        values = np.array([fold[m] for fold in folds if fold.get(m) is not None], dtype=np.float64)
        if values.size:
            sd = float(values.std(ddof=ddof)) if values.size > ddof else 0.0
            ax.errorbar(j + 0.15, values.mean(), yerr=sd, fmt="s", color="black", capsize=4, zorder=4,
                        label="mean \u00b1 SD" if j == 0 else None)
            ax.annotate(f"{values.mean():.3f}\n\u00b1{sd:.3f}", (j + 0.25, values.mean()), fontsize="x-small",
                        va="center")
    ax.set_xticks(range(len(metrics)), labels=metrics, rotation=20, ha="right")
    ax.set(xlim=(-0.6, len(metrics) - 0.1), ylim=(0, 1.05), ylabel="value",
           title=f"{title} (k = {len(folds)})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize="x-small", ncol=2)
    return _save(fig, path)


__all__ = ["confusion_figure", "fold_figure", "pr_figure", "reliability_figure", "roc_figure"]
