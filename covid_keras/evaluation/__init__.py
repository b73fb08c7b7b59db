"""Metrics and reports."""

from covid_keras.evaluation.metrics import classification_report, confusion_matrix

__all__ = ["classification_report", "confusion_matrix"]
