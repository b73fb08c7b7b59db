"""Classification metrics the papers report: accuracy, and per class sensitivity, specificity, precision, F1.

The counts are scikit-learn's (``confusion_matrix``,
``precision_recall_fscore_support``); this module only arranges them in
the form the papers' tables use, one value per class name.
"""

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """[true, predicted] counts over the classes ``0 .. num_classes - 1`` (scikit-learn's)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if y_true.size == 0:  # scikit-learn refuses empty input; no cases count nothing
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk_confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def _rounded(value):
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def classification_report(y_true, probabilities, classes):
    """Accuracy, the majority rate and, per class, sensitivity, specificity, precision, recall and F1.

    Paper 004's Fig. 5 form: per class precision, recall (= sensitivity),
    F1, sensitivity and specificity, one-vs-rest.

    Returns:
        A JSON-ready dict: ``n``, ``accuracy``, ``majority_rate`` (accuracy
        of always answering the most frequent true class), the
        ``confusion`` matrix (rows true, columns predicted), and
        ``{class: value}`` dicts ``sensitivity``, ``specificity``,
        ``precision``, ``recall`` and ``f1``. A value is None when it is
        undefined: sensitivity / recall of a class absent from ``y_true``,
        precision of a class never predicted, F1 where both are undefined,
        specificity when every case is of that class.
    """
    from sklearn.metrics import precision_recall_fscore_support

    y_true = np.asarray(y_true, int)
    y_pred = np.argmax(np.asarray(probabilities), axis=-1)
    k = len(classes)
    labels = list(range(k))
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    precision, recall, f1, _ = (precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=np.nan)
                                if n else ([np.nan] * k,) * 4)
    sens, spec = {}, {}
    for i, c in enumerate(classes):
        pos = cm[i].sum()
        neg = n - pos
        sens[c] = None if pos == 0 else round(float(cm[i, i] / pos), 4)
        tn = n - cm[i].sum() - cm[:, i].sum() + cm[i, i]
        spec[c] = None if neg == 0 else round(float(tn / neg), 4)
    counts = np.bincount(y_true, minlength=k)
    return {
        "n": n,
        "accuracy": round(float(np.trace(cm) / max(n, 1)), 4),
        "sensitivity": sens,
        "specificity": spec,
        "precision": {c: _rounded(precision[i]) for i, c in enumerate(classes)},
        "recall": {c: _rounded(recall[i]) for i, c in enumerate(classes)},
        "f1": {c: _rounded(f1[i]) for i, c in enumerate(classes)},
        "majority_rate": round(float(counts.max() / max(n, 1)), 4),
        "confusion": cm.tolist(),
    }
