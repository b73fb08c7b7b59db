"""Explaining predictions: Grad-CAM maps and overlays."""

from covid_keras.explain.gradcam import gradcam, overlay

__all__ = ["gradcam", "overlay"]
