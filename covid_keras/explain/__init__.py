"""Explaining predictions: Grad-CAM maps and overlays, t-SNE of features."""

from covid_keras.explain.gradcam import gradcam, overlay
from covid_keras.explain.tsne import embed

__all__ = ["embed", "gradcam", "overlay"]
