"""Shortcut probes: can the class be read from what should carry no diagnosis?

A model can reach a fine test score by reading the hospital, the scanner
or a marker in a corner instead of the lungs, when those differ between
the classes of a dataset. The probes here measure what no diagnosis
should depend on and fit a small classifier on it alone:

* the **border**: for a radiograph the outer frame of the film
  (:func:`radiograph_border`: the outer ring of a 12 x 12 grid of cells,
  about 8 % of each side, each cell's mean and maximum ranked along the
  ring, so that a film's own display window does not count); for CT what
  lies outside the body (:func:`outside_body`: outside the body mask of
  :func:`covid_keras.preprocess.body_slices.body_mask`, the statistics of
  the pixels and a coarse grid of them, on a few representative slices of
  a series);
* the **non-identifying metadata** of DICOM files (:func:`metadata_features`:
  manufacturer, model, convolution kernel, slice thickness, pixel spacing,
  kVp, view position ... never a name, id, date or UID), one-hot for
  categories and as numbers otherwise.

:func:`shortcut_probe` fits a scaled, class-weighted logistic regression
with patient-grouped stratified cross-validation, scores it by *balanced*
accuracy (the mean of the per-class recalls, scikit-learn's
``balanced_accuracy_score``; chance is 1 / K for K classes whatever their
shares) with a permutation test against chance, and warns when the class
is readable: ``p < alpha`` **and** balanced accuracy at least ``min_gain``
above chance. The second condition keeps a significant but useless edge
(large datasets make tiny ones significant) from raising a warning.
Plain accuracy would not do: against the majority share it can never
gain ``min_gain`` once that share passes ``1 - min_gain`` (12 COVID-19
studies among 200, all readable from the kVp, would score 1.0 against
chance 0.94).

Example:
    >>> rows = [radiograph_border(img) for img in images]                     # doctest: +SKIP
    >>> result = shortcut_probe(rows, labels, patients, name="border", seed=0)  # doctest: +SKIP
    >>> result["balanced_accuracy"], result["chance"], result["p_value"], result["warning"]  # doctest: +SKIP
"""

import math
import warnings
from collections import Counter, defaultdict

import cv2
import numpy as np

from covid_keras import errors

#: The radiograph's frame: the image resampled into FRAME_GRID x FRAME_GRID
#: cells (each about 8 % of a side), of which the outer ring is kept.
FRAME_GRID = 12
#: The grid (GRID x GRID cells) over a CT slice outside the body.
OUTSIDE_GRID = 8
#: Relative heights (0 = first slice, 1 = last) of a CT series' representative slices.
CT_SLICE_FRACTIONS = (0.3, 0.5, 0.7)
#: HU above which a voxel outside the body is dense (table, clothes, devices, text).
DENSE_HU = -500.0
#: Default permutations of the probe's permutation test (p-value resolution 1/201).
PERMUTATIONS = 200
#: Default significance level of the warning rule.
ALPHA = 0.05
#: Default balanced accuracy above chance (1 / K) that the warning rule also asks for.
MIN_GAIN = 0.10
#: Largest number of cross-validation folds.
FOLDS = 5

#: DICOM metadata the probe uses: technical, never identifying. Categories
#: are one-hot encoded; numbers are used as numbers.
CATEGORICAL_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "BodyPartExamined",
    "PatientPosition",
    "ViewPosition",
    "PhotometricInterpretation",
    "PresentationIntentType",
    "TransferSyntax",
    "lossy",
    "multiframe",
)
NUMERIC_TAGS = (
    "KVP",
    "SliceThickness",
    "slice_step_mm",
    "n_slices",
    "pixel_spacing_row",
    "pixel_spacing_col",
    "Rows",
    "Columns",
    "BitsStored",
    "Exposure",
    "ExposureTime",
    "XRayTubeCurrent",
    "DistanceSourceToDetector",
)
_MAX_CATEGORY = 64  # characters of a category value kept
_TOP_FEATURES = 5


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------


def _stats(values, prefix):
    """Mean, standard deviation, 5th / 50th / 95th percentile and maximum of ``values``."""
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        return {f"{prefix}_{s}": 0.0 for s in ("mean", "std", "p5", "p50", "p95", "max")}
    p5, p50, p95 = np.percentile(values, (5, 50, 95))
    return {f"{prefix}_mean": float(values.mean()), f"{prefix}_std": float(values.std()),
            f"{prefix}_p5": float(p5), f"{prefix}_p50": float(p50), f"{prefix}_p95": float(p95),
            f"{prefix}_max": float(values.max())}


def _check_image(image, what="image"):
    image = np.asarray(image, np.float32)
    if image.ndim != 2 or min(image.shape) < 2:
        raise errors.ConfigurationError(
            f"`{what}` must be a 2-D image of at least 2 x 2. Received: shape={image.shape}"
        )
    return image


def _ring(cells):
    """The outer ring of a square grid of cells, row by row, with their names."""
    n = cells.shape[0]
    where = [(r, c) for r in range(n) for c in range(n) if r in (0, n - 1) or c in (0, n - 1)]
    return np.array([cells[r, c] for r, c in where]), [f"r{r}_c{c}" for r, c in where]


def radiograph_border(image, grid=FRAME_GRID):
    """Features of a radiograph's outer frame, where no lung lies, that no display window changes.

    The image is resampled (area averaging) to ``grid`` x ``grid`` cells of
    8 x 8 pixels; the outer ring of cells is the frame (each cell 1 /
    ``grid`` of a side: about 8 % for the default 12). For each ring cell
    its mean and its maximum grey level are ranked among the ring's cells
    (as fractions in (0, 1]). Ranks say where along the frame something
    bright or dark lies (a burned-in marker, a hospital's label, padding,
    a collimator edge) and do not move when the whole film is windowed
    otherwise: the detector's or the export's window or LUT, set per film
    from its own histogram (as :func:`covid_keras.data.synthetic.drr`'s
    percentile window is), shifts with a dense lesion, and raw frame
    intensities would then carry the diagnosis without any shortcut.

    Args:
        image: float [H, W] in [0, 1] (:func:`covid_keras.data.read_xray`).
        grid: cells per side, at least 3.

    Returns:
        ``{feature name: float}``: ``frame_mean_r<i>_c<j>`` and
        ``frame_max_r<i>_c<j>`` for the ``4 * (grid - 1)`` ring cells.

    Raises:
        ConfigurationError: ``image`` is not 2-D, or ``grid`` is below 3.

    Example:
        >>> image = np.zeros((96, 96))
        >>> image[:4, :4] = 1.0   # a marker in the top-left corner
        >>> features = radiograph_border(image)
        >>> len(features), features["frame_max_r0_c0"], features["frame_max_r0_c1"]
        (88, 1.0, 0.5)
    """
    from scipy.stats import rankdata

    image = _check_image(image)
    if isinstance(grid, bool) or int(grid) != grid or grid < 3:
        raise errors.ConfigurationError(f"`grid` must be an integer of at least 3. Received: grid={grid}")
    grid = int(grid)
    square = cv2.resize(image, (8 * grid, 8 * grid), interpolation=cv2.INTER_AREA)
    blocks = square.reshape(grid, 8, grid, 8)
    features = {}
    for stat, cells in (("mean", blocks.mean(axis=(1, 3))), ("max", blocks.max(axis=(1, 3)))):
        values, names = _ring(cells)
        ranks = rankdata(values) / len(values)
        features.update({f"frame_{stat}_{name}": float(v) for name, v in zip(names, ranks)})
    return features


def outside_body(values, grey_u8, background, dense=None, grid=OUTSIDE_GRID):
    """Features of one CT slice outside the patient's body.

    The body is :func:`covid_keras.preprocess.body_slices.body_mask` of
    ``grey_u8`` (the largest smoothed-Otsu contour, filled: the body with
    its lungs, without the table). Outside it: the share of the slice it
    covers, the statistics of ``values`` there, the share that is dense,
    and a ``grid`` x ``grid`` average of the slice with the body replaced by
    ``background``.

    Args:
        values: float [H, W], what is measured (HU, or grey levels in [0, 1]).
        grey_u8: uint8 [H, W], the same slice in grey levels for the mask.
        background: the value the body is replaced by in the grid (air).
        dense: values above this count as dense; None leaves that feature out.
        grid: cells per side of the grid.

    Returns:
        ``{feature name: float}``.

    Example:
        >>> from covid_keras.preprocess.body_slices import to_uint8
        >>> hu = np.full((32, 32), -1000.0)
        >>> hu[8:24, 8:24] = 40.0    # the body
        >>> hu[28:30, 4:28] = 100.0  # the table under it
        >>> f = outside_body(hu, to_uint8(hu, "window"), background=-1000.0, dense=-500.0)
        >>> round(f["outside_fraction"], 2), round(f["outside_dense"], 2)
        (0.76, 0.08)
    """
    from covid_keras.preprocess.body_slices import body_mask

    values = _check_image(values, "values")
    body = body_mask(np.asarray(grey_u8, np.uint8))
    outside = values[~body]
    features = {"outside_fraction": float(outside.size / values.size)}
    features.update(_stats(outside, "outside"))
    if dense is not None:
        features["outside_dense"] = float((outside > dense).mean()) if outside.size else 0.0
    masked = np.where(body, np.float32(background), values)
    cells = cv2.resize(masked, (grid, grid), interpolation=cv2.INTER_AREA)
    features.update({f"outside_r{r}_c{c}": float(cells[r, c]) for r in range(grid) for c in range(grid)})
    return features


def representative_indices(n_slices, fractions=CT_SLICE_FRACTIONS):
    """The slice indices at relative heights ``fractions`` of an ``n_slices`` series.

    Example:
        >>> representative_indices(11)
        [3, 5, 7]
    """
    return [round(f * (n_slices - 1)) for f in fractions]


def ct_outside_body(hu_slices):
    """:func:`outside_body` of a series' representative HU slices, averaged over them.

    Args:
        hu_slices: float [k, H, W] in HU (HU clipped to the 12-bit CT range
            [-1024, 3071] before they are measured).

    Returns:
        ``{feature name: float}``.
    """
    from covid_keras.preprocess.body_slices import to_uint8

    rows = []
    for hu in np.asarray(hu_slices, np.float32):
        hu = np.clip(hu, -1024.0, 3071.0)
        rows.append(outside_body(hu, to_uint8(hu, normalization="window"), background=-1024.0, dense=DENSE_HU))
    return mean_features(rows)


def ct_image_outside_body(image):
    """:func:`outside_body` of a CT slice stored as a picture (grey [0, 1]: SARS-CoV-2 CT-scan, COVIDx-CT)."""
    from covid_keras.evaluation.leakage import to_grey_u8

    return outside_body(image, to_grey_u8(image), background=0.0)


def mean_features(rows):
    """The mean of each feature over a record's images (a feature some lack: over those that hold it)."""
    sums, counts = defaultdict(float), Counter()
    for row in rows:
        for name, value in row.items():
            sums[name] += value
            counts[name] += 1
    return {name: sums[name] / counts[name] for name in sums}


def _number(value):
    """A DICOM value as a float (a multi-valued one: its first value), or None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metadata_features(meta):
    """The probe's features from a study's non-identifying metadata.

    Only the tags of :data:`CATEGORICAL_TAGS` and :data:`NUMERIC_TAGS` are
    read, so a name, id, birth date or UID in ``meta`` never reaches the
    probe or its report.

    Args:
        meta: ``{tag: value}`` (``CTSeries.meta`` plus pixel spacing and
            size, or a DICOM header's tags).

    Returns:
        ``{tag: str}`` for categories (cut to 64 characters) and
        ``{tag: float}`` for numbers; missing or unreadable values are left out.

    Example:
        >>> metadata_features({"Manufacturer": "ACME", "KVP": "120", "PatientName": "DOE^JANE"})
        {'Manufacturer': 'ACME', 'KVP': 120.0}
    """
    features = {}
    for tag in CATEGORICAL_TAGS:
        value = meta.get(tag)
        if value not in (None, ""):
            features[tag] = str(value).strip()[:_MAX_CATEGORY]
    for tag in NUMERIC_TAGS:
        number = _number(meta.get(tag))
        if number is not None:
            features[tag] = number
    return features


# --------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------


def feature_matrix(rows):
    """A float matrix from feature dicts: strings one-hot (``tag=value``), numbers as they are.

    A number missing from a row is NaN (the probe imputes the median); a
    category missing from a row has all its one-hot columns 0.

    Returns:
        ``(X, names)``: float [n, d] and the d column names.
    """
    from sklearn.feature_extraction import DictVectorizer

    numeric = sorted({k for row in rows for k, v in row.items() if not isinstance(v, str)})
    filled = [{**{k: math.nan for k in numeric}, **row} for row in rows]
    vectorizer = DictVectorizer(sparse=False, sort=True)
    X = vectorizer.fit_transform(filled) if rows else np.zeros((0, 0))
    return np.asarray(X, np.float64), list(vectorizer.get_feature_names_out()) if rows else []


def probe_classifier(seed=0):
    """The probe's classifier: median imputation, scaling, L2 logistic regression (C = 1, classes weighted).

    ``class_weight="balanced"``: the fit weighs each class as a whole
    alike, as the balanced accuracy it is scored by does, so that a rare
    class's shortcut is learned rather than outvoted by the majority.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed))


def skipped(name, reason, **extra):
    """The result of a probe that did not run: its ``reason``, and no warning."""
    return {"probe": name, "status": "skipped", "reason": reason, "warning": False, **extra}


def _patient_labels(labels, patients):
    """``(patient ids, index of each record's patient, each patient's label or None when mixed)``."""
    ids, inverse = np.unique(patients, return_inverse=True)
    per_patient = defaultdict(set)
    for label, index in zip(labels, inverse):
        per_patient[index].add(label)
    if all(len(per_patient[i]) == 1 for i in range(len(ids))):
        return ids, inverse, np.array([next(iter(per_patient[i])) for i in range(len(ids))], dtype=object)
    return ids, inverse, None


def _prepared_folds(estimator, X, splits):
    """Each split's ``(train, test, X_train, X_test)`` through every step but the last, fitted on its train part.

    The steps before the classifier (imputation, scaling) never see the
    labels, so they are fitted once per fold, not once per permutation.
    """
    from sklearn.base import clone

    prepared = []
    for train, test in splits:
        steps = clone(estimator[:-1]).fit(X[train])
        prepared.append((train, test, steps.transform(X[train]), steps.transform(X[test])))
    return prepared


def _cv_score(classifier, prepared, y):
    """Mean balanced accuracy over the prepared folds of a fresh ``classifier`` fitted on each."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    scores = []
    for train, test, X_train, X_test in prepared:
        fitted = clone(classifier).fit(X_train, y[train])
        # A fold's test part without some class (permuted labels can leave one): the mean recall of the
        # classes it has, as scikit-learn's permutation_test_score(scoring="balanced_accuracy") scores it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true", category=UserWarning)
            warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
            scores.append(balanced_accuracy_score(y[test], fitted.predict(X_test)))
    return float(np.mean(scores))


def permutation_test(estimator, X, y, patients, splits, permutations, seed):
    """Cross-validated balanced accuracy and its permutation test, permuting labels between patients.

    scikit-learn's ``permutation_test_score(groups=...)`` permutes labels
    *within* each group; with patients as groups and one class per patient
    that permutation changes nothing (every p-value would be 1). Here the
    patients' labels are permuted among the patients instead (the null
    hypothesis: the features of a patient say nothing of its class), with
    the same cross-validation splits, and the p-value is scikit-learn's
    ``(C + 1) / (permutations + 1)``. Where some patient has records of
    several classes, the records' labels are permuted instead. With one
    record per patient, in patient order, this is exactly
    ``permutation_test_score(estimator, X, y, cv=splits, random_state=seed, scoring="balanced_accuracy")``
    (hand-written for the patient-level permutation, and because the
    label-free steps of the pipeline are fitted once per fold here).

    Args:
        estimator: a scikit-learn ``Pipeline`` ending in a classifier
            (:func:`probe_classifier`); its steps before the classifier must
            not use the labels.
        X: float [n, d]. y: n labels. patients: n patient ids.
        splits: the ``(train, test)`` index pairs.
        permutations: number of permutations.
        seed: seeds the permutations (``numpy.random.RandomState``).

    Returns:
        ``(score, permutation_scores, p_value, unit)``: ``unit`` is
        ``"patients"`` or ``"records"``, what was permuted.
    """
    from sklearn.utils import check_random_state
    from threadpoolctl import threadpool_limits

    y = np.asarray(y, dtype=object)
    rng = check_random_state(seed)
    _, inverse, patient_label = _patient_labels(y, patients)
    prepared = _prepared_folds(estimator, np.asarray(X, np.float64), splits)
    classifier = estimator[-1]
    # One BLAS thread: on these tiny fits SciPy's L-BFGS spends its time
    # starting threads (20 times slower on a busy 2-core machine).
    with threadpool_limits(limits=1):
        score = _cv_score(classifier, prepared, y)
        scores = []
        for _ in range(int(permutations)):
            if patient_label is not None:
                shuffled = patient_label[rng.permutation(len(patient_label))][inverse]
            else:
                shuffled = y[rng.permutation(len(y))]
            scores.append(_cv_score(classifier, prepared, shuffled))
    scores = np.asarray(scores)
    p_value = float((np.sum(scores >= score) + 1.0) / (len(scores) + 1.0))
    return score, scores, p_value, "patients" if patient_label is not None else "records"


def _top_features(X, y, names, same_unit):
    """The features that differ most between the classes, one at a time, named for the report.

    With ``same_unit`` (the border's features: ranks along the frame, or
    HU) by the largest distance of a class's mean from the overall mean,
    in the features' unit: a bright corner moves every other cell's rank
    a little, and a statistic scaled by the spread (ANOVA F) would name
    those steady cells before the corner. Otherwise (metadata: one-hot
    and numbers in mm, kV ...) by scikit-learn's ANOVA F (``f_classif``).
    """
    from sklearn.feature_selection import f_classif
    from sklearn.impute import SimpleImputer

    X = SimpleImputer(strategy="median").fit_transform(X)
    y = np.asarray(y, dtype=object)
    if same_unit:
        overall = X.mean(axis=0)
        effect = np.max([np.abs(X[y == c].mean(axis=0) - overall) for c in np.unique(y)], axis=0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Features ... are constant"
            effect, _ = f_classif(X, y)
        effect = np.nan_to_num(effect, nan=0.0, posinf=np.finfo(float).max)
    order = np.argsort(-effect, kind="stable")[:_TOP_FEATURES]
    return [str(names[i]) for i in order]


def check_probe_args(permutations, alpha, min_gain):
    """ConfigurationError for probe settings out of range."""
    if isinstance(permutations, bool) or int(permutations) != permutations or permutations < 1:
        raise errors.ConfigurationError(f"`permutations` must be a positive integer. Received: {permutations}")
    if not 0 < alpha < 1:
        raise errors.ConfigurationError(f"`alpha` must be in (0, 1). Received: alpha={alpha}")
    if not 0 <= min_gain < 1:
        raise errors.ConfigurationError(f"`min_gain` must be in [0, 1). Received: min_gain={min_gain}")


def shortcut_probe(rows, labels, patients, *, name, permutations=PERMUTATIONS, alpha=ALPHA, min_gain=MIN_GAIN,
                   seed=0, folds=FOLDS, same_unit=False):
    """Fits the probe on ``rows`` and says whether the class is readable from them.

    Cross-validation is :class:`sklearn.model_selection.StratifiedGroupKFold`
    (no patient in both the fitting and the scoring part) with
    ``min(folds, patients of the smallest class)`` folds; the score is
    balanced accuracy (the mean per-class recall) and chance is 1 / K for
    the K classes, however imbalanced (the majority share is reported
    beside it). The permutation test is :func:`permutation_test`. The
    warning rule: ``p_value < alpha and balanced_accuracy >= chance +
    min_gain``. Constant features are dropped first.

    Args:
        rows: one feature dict per record (None: the record has none).
        labels: the records' classes. patients: their pseudonymous patient ids.
        name: the probe's name in the result (``"border"``, ``"metadata"``).
        permutations: permutations of the test. alpha: significance level.
        min_gain: balanced accuracy above chance also required for a warning.
        seed: seeds the folds and the permutations.
        folds: the most folds to use.
        same_unit: the features share one unit (the border's ranks or HU):
            ``top_features`` are then named by the raw difference of the
            class means, otherwise by ANOVA F.

    Returns:
        A dict: ``status`` ``"ok"`` with ``balanced_accuracy``, ``chance``
        (1 / K), ``majority_share``, ``permutation_mean``, ``p_value``,
        ``warning``, the counts and the
        five ``top_features`` that differ most between the classes, or
        ``"skipped"`` with a ``reason`` (no features, one class, too few
        patients) and ``warning`` False.

    Raises:
        ConfigurationError: ``permutations``, ``alpha`` or ``min_gain`` out of range.

    Example:
        >>> rows = [{"KVP": 120.0 + 10 * (i % 2)} for i in range(20)]
        >>> labels = ["a" if i % 2 else "b" for i in range(20)]
        >>> result = shortcut_probe(rows, labels, [f"p{i:02d}" for i in range(20)], name="metadata",
        ...                         permutations=39)
        >>> result["balanced_accuracy"], result["chance"], result["warning"]
        (1.0, 0.5, True)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedGroupKFold

    check_probe_args(permutations, alpha, min_gain)
    kept = [(r, y, p) for r, y, p in zip(rows, labels, patients) if r]
    if not kept:
        return skipped(name, "no record has features for this probe")
    rows, labels, patients = (list(t) for t in zip(*kept))
    counts = Counter(labels)
    base = {"records": len(labels), "patients": len(set(patients)), "classes": dict(sorted(counts.items()))}
    if len(counts) < 2:
        return skipped(name, "the records with features are all of one class", **base)
    X, names = feature_matrix(rows)
    varying = [j for j in range(X.shape[1]) if len(np.unique(X[:, j][~np.isnan(X[:, j])])) > 1]
    if not varying:
        return skipped(name, "every feature has the same value in all records", **base)
    X, names = X[:, varying], [names[j] for j in varying]
    k = min(int(folds), _smallest_class_patients(labels, patients))
    if k < 2:
        return skipped(name, "a class has fewer than 2 patients, too few for patient-grouped cross-validation",
                        **base)
    y = np.asarray(labels, dtype=object)
    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y, groups=patients))
    estimator = probe_classifier(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        score, scores, p_value, unit = permutation_test(estimator, X, y, patients, splits, permutations, seed)
        top = _top_features(X, y, names, same_unit)
    chance = 1.0 / len(counts)
    readable = bool(p_value < alpha and score >= chance + min_gain)
    return {"probe": name, "status": "ok", **base, "features": len(names), "folds": k,
            "balanced_accuracy": score, "chance": chance, "majority_share": max(counts.values()) / len(labels),
            "permutation_mean": float(scores.mean()),
            "p_value": p_value, "permutations": int(permutations), "permuted": unit,
            "alpha": alpha, "min_gain": min_gain, "warning": readable, "top_features": top}


def _smallest_class_patients(labels, patients):
    """Patients of the smallest class (a patient counts for each class it has records of)."""
    per_class = defaultdict(set)
    for label, patient in zip(labels, patients):
        per_class[label].add(patient)
    return min(len(p) for p in per_class.values())


__all__ = [
    "ALPHA",
    "FRAME_GRID",
    "MIN_GAIN",
    "PERMUTATIONS",
    "ct_image_outside_body",
    "ct_outside_body",
    "feature_matrix",
    "metadata_features",
    "outside_body",
    "permutation_test",
    "probe_classifier",
    "radiograph_border",
    "representative_indices",
    "shortcut_probe",
]
