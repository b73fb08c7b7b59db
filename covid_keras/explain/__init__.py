"""Explaining predictions: Grad-CAM maps and overlays, t-SNE of features."""

from covid_keras.explain.gradcam import GradcamExplainer, gradcam, overlay
from covid_keras.explain.tsne import embed

__all__ = ["GradcamExplainer", "embed", "gradcam", "overlay"]
