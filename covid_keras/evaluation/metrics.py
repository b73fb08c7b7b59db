"""Classification metrics the papers report: accuracy, per-class sensitivity."""

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(np.asarray(y_true, int), np.asarray(y_pred, int)):
        cm[t, p] += 1
    return cm


def classification_report(y_true, probabilities, classes):
    """Accuracy, per-class sensitivity (recall) and specificity, and the majority rate.

    Returns:
        A JSON-ready dict: ``accuracy``, ``sensitivity`` {class: value or
        None when the class is absent}, ``specificity`` {class: value},
        ``majority_rate`` (accuracy of always answering the most frequent
        true class), ``n`` and the ``confusion`` matrix.
    """
    y_true = np.asarray(y_true, int)
    y_pred = np.argmax(np.asarray(probabilities), axis=-1)
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
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
        "majority_rate": round(float(counts.max() / max(n, 1)), 4),
        "confusion": cm.tolist(),
    }
