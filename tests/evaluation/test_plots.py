"""covid_keras.evaluation.plots: each figure is a non-empty PNG of the expected size that matplotlib reads back."""

import matplotlib.image
import numpy as np
import pytest

from covid_keras import errors
from covid_keras.evaluation import plots, stats

CLASSES = ["COVID-19", "Pneumonia", "Normal"]


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5)
    y = rng.integers(0, 3, 40)[groups]
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs, groups


def _read(path, width_height):
    image = matplotlib.image.imread(path)
    width, height = (round(v * plots.DPI) for v in width_height)
    assert image.shape == (height, width, 4)
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    return image


def test_roc_and_pr_figures_with_bootstrap_intervals(tmp_path, cases):
    y, probs, groups = cases
    aucs = stats.bootstrap_class_aucs(y, probs, groups, CLASSES, n_boot=100)
    for draw in (plots.roc_figure, plots.pr_figure):
        path = draw(y, probs, CLASSES, tmp_path / "figures" / f"{draw.__name__}.png", aucs=aucs)
        assert path == str(tmp_path / "figures" / f"{draw.__name__}.png")
        _read(path, plots.CURVE_SIZE)


def test_curves_take_plain_numbers_none_or_nothing_and_a_class_missing(tmp_path, cases):
    y, probs, _ = cases
    plots.roc_figure(y, probs, CLASSES, tmp_path / "a.png", aucs={"COVID-19": 0.9})
    only_two = np.where(y == 2, 0, y)  # no Normal case: its curve is not defined, the figure still drawn
    _read(plots.roc_figure(only_two, probs, CLASSES, tmp_path / "b.png"), plots.CURVE_SIZE)
    _read(plots.pr_figure(only_two, probs, CLASSES, tmp_path / "c.png"), plots.CURVE_SIZE)


def test_interval_text_of_estimates_and_bootstrap_dicts():
    assert plots._interval_text({"value": 0.91234, "ci95": [0.8, 0.95]}) == "0.912 (95% CI 0.800\u20130.950)"
    assert plots._interval_text({"value": 0.5, "ci95": [0.4, 0.6], "confidence": 0.99}).startswith("0.500 (99% CI")
    assert plots._interval_text({"value": None, "ci95": None}) == "not defined"
    assert plots._interval_text(0.5) == "0.500"


def test_reliability_figure(tmp_path, cases):
    y, probs, _ = cases
    path = plots.reliability_figure(stats.calibration(y, probs, classes=CLASSES), tmp_path / "reliability.png")
    _read(path, plots.RELIABILITY_SIZE)
    with pytest.raises(errors.ConfigurationError, match="stats.calibration"):
        plots.reliability_figure({"ece": 0.1}, tmp_path / "bad.png")


def test_confusion_figure(tmp_path):
    confusion = [[50, 3, 2], [4, 40, 6], [0, 0, 0]]  # an empty row (no Normal case) is drawn as zeros
    path = plots.confusion_figure(confusion, CLASSES, tmp_path / "confusion.png")
    side = 4.0 + 0.8 * 3
    _read(path, (side + 1.2, side))
    with pytest.raises(errors.ConfigurationError, match="one row per class"):
        plots.confusion_figure([[1, 2], [3, 4]], CLASSES, tmp_path / "bad.png")


def test_fold_figure(tmp_path):
    folds = [{"accuracy": 0.9, "f1": 0.85}, {"accuracy": 0.86, "f1": None}, {"accuracy": 0.88, "f1": 0.8}]
    path = plots.fold_figure(folds, tmp_path / "folds.png")
    _read(path, (1.3 * 2 + 2.0, 4.5))  # 1.3 inches per metric beside the axis labels
    with pytest.raises(errors.ConfigurationError, match="at least one fold"):
        plots.fold_figure([], tmp_path / "bad.png")


def test_no_pyplot_figure_is_left_open(tmp_path, cases):
    import matplotlib.pyplot as plt

    y, probs, _ = cases
    before = plt.get_fignums()
    plots.roc_figure(y, probs, CLASSES, tmp_path / "roc.png")
    plots.confusion_figure(np.eye(3, dtype=int), CLASSES, tmp_path / "cm.png")
    assert plt.get_fignums() == before


def test_bad_input_is_refused_before_drawing(tmp_path, cases):
    y, probs, _ = cases
    with pytest.raises(errors.ConfigurationError, match="3 columns but 2 classes"):
        plots.roc_figure(y, probs, CLASSES[:2], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
