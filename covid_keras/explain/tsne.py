"""t-SNE of paper 001's patient-level features (its Fig. 6), with scikit-learn.

Paper 001 shows the patient-level feature vectors of its validation and
test patients in two dimensions: clusters of Normal, COVID-19 and CAP, and
test patients mixed among validation patients (no drift between the sets).

The patient-level vector of a study is what paper 001's Maxpool heads see
("the dimension-wise maximum of each slice features ... a single vector
representative of the whole patient"): the element-wise maximum over the
study's slices of

* the 1024-d ``features`` layer of the slice classifier (Maxpool), and
* the 3072-d weighted features, those times each class probability
  (:func:`covid_keras.models.weighted_features`; Maxpool-Weighted).

The BiLSTM heads see the same per-slice features as sequences, with no
fixed-size vector of their own, so these two are the paper's 1024-d and
3072-d patient features. They are read from the ``features.npz`` that
``python -m train.patient_level`` extracts into its run folder
(:func:`covid_keras.training.patient_level.load_features`).

:func:`embed` is scikit-learn's recipe: PCA to 50 dimensions when the
features have more (sklearn's advice for very high-dimensional data), then
``TSNE(init="pca")``, seeded. :func:`tsne_report` writes the figures and
coordinates of a run; ``python -m evaluate.tsne RUN_DIR`` is its command line.
"""

import os

import numpy as np

from covid_keras import errors

#: The paper's perplexity range tops out at scikit-learn's default.
DEFAULT_PERPLEXITY = 30.0
#: The per-slice feature kinds of the patient heads (``patient_level.feature_set``), in plot order.
FEATURE_KINDS = ("features", "weighted")
#: What each kind's patient-level vector is, as tsne.json records it.
DEFINITIONS = {
    "features": "per-dimension max over the study's slices of the slice model's features layer (Maxpool's input)",
    "weighted": "per-dimension max over the study's slices of the features times each class probability "
                "(Maxpool-Weighted's input)",
}
PARTS = ("train", "val", "test")
#: Marker of each part in the figures: validation and test patients side by side, as in the paper.
MARKERS = {"train": "s", "val": "o", "test": "^"}


def embed(features, *, perplexity=DEFAULT_PERPLEXITY, seed=0, pca_dims=50, threads=1):
    """Two-dimensional t-SNE of ``features``, after PCA to ``pca_dims`` dimensions when they have more.

    scikit-learn's ``PCA(pca_dims, random_state=seed)`` then
    ``TSNE(perplexity=perplexity, init="pca", random_state=seed)`` with its
    other defaults (Barnes-Hut, ``max_iter=1000``): the same call gives the
    same result. With the PCA initialisation t-SNE itself draws nothing at
    random, so ``seed`` changes the result only where PCA picks its
    randomized solver (a side over 500 and ``pca_dims`` below 80 % of the
    shorter side: 300 studies x 3072 features, not 30 x 3072). A perplexity
    that is not below the number of samples is an error, not silently
    reduced: the title of a figure should say the value that made it
    (:func:`default_perplexity` gives one that fits).

    Args:
        features: float [n, d], one row per sample (n >= 2).
        perplexity: t-SNE's effective number of neighbours, in (0, n).
        seed: seeds PCA (its randomized solver) and t-SNE.
        pca_dims: reduce to this many dimensions first when ``d`` is
            larger (capped at ``n``); None: no PCA.
        threads: OpenMP threads of t-SNE's gradient (threadpoolctl); None:
            scikit-learn's default, every core. The result does not depend
            on it. One by default: on 2 cores that other processes already
            load, every core took 10 times longer than one (77 s against
            7 s for 300 x 3072 features at a load of 7; OpenMP's threads
            wait for each other at every step).

    Returns:
        float32 [n, 2]: the embedding.

    Raises:
        ConfigurationError: ``features`` is not a finite 2-d array of at
            least two rows that are not all identical (scikit-learn's PCA
            initialisation divides by their spread), or ``perplexity`` is
            not in (0, n).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(20, 8))
        >>> embed(x, perplexity=5.0).shape
        (20, 2)
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = _checked_features(features)
    n, dims = features.shape
    if not 0 < perplexity < n:
        raise errors.ConfigurationError(
            f"`perplexity` must be above 0 and below the number of samples ({n}). Received: perplexity={perplexity}"
        )
    if pca_dims is not None and dims > pca_dims:
        features = PCA(n_components=min(pca_dims, n), random_state=seed).fit_transform(features)
    tsne = TSNE(n_components=2, perplexity=float(perplexity), init="pca", random_state=seed)
    with threadpool_limits(limits=threads, user_api="openmp"):
        return tsne.fit_transform(features)


def _checked_features(features):
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2 or not np.issubdtype(features.dtype, np.number):
        raise errors.ConfigurationError(
            f"`features` must be a numeric [samples, dims] array of at least 2 samples. Received: shape "
            f"{features.shape}, dtype {features.dtype}"
        )
    if not np.all(np.isfinite(features)):
        raise errors.ConfigurationError("`features` holds NaN or infinite values; t-SNE needs finite features.")
    if np.all(features == features[0]):
        raise errors.ConfigurationError(
            f"all {len(features)} feature rows are identical: there is nothing for t-SNE to spread out "
            "(a slice model whose features layer is dead gives this)."
        )
    return features


def default_perplexity(n):
    """scikit-learn's default perplexity, 30, lowered to ``(n - 1) / 3`` for small ``n``.

    t-SNE looks at about ``3 * perplexity`` neighbours of each point, so
    ``(n - 1) / 3`` is the largest perplexity whose neighbourhoods fit in
    ``n`` samples (and it is below ``n``, as :func:`embed` requires).

    Example:
        >>> default_perplexity(300), default_perplexity(7)
        (30.0, 2.0)
    """
    return float(min(DEFAULT_PERPLEXITY, (n - 1) / 3))


def patient_features(studies, kind):
    """Paper 001's patient-level vector of each study: the maximum over its slices (module docstring).

    Args:
        studies: ``[(key, patient_id, label, features [slices, F],
            probabilities [slices, C])]``, as ``load_features`` reads them.
        kind: ``"features"`` (F-d, Maxpool's input) or ``"weighted"``
            (C*F-d, Maxpool-Weighted's input).

    Returns:
        float32 [studies, F] or [studies, C*F].

    Raises:
        ConfigurationError: an unknown ``kind``, or a study without slices.
    """
    from covid_keras.training.patient_level import feature_set

    rows = []
    for key, _, _, features, probabilities in studies:
        if len(features) == 0:
            raise errors.ConfigurationError(f"study {key}: has no slice features; extract its features again.")
        rows.append(feature_set(features, probabilities, kind).max(axis=0))
    return np.stack(rows).astype(np.float32)


def neighbour_agreement(coords, labels):
    """The share of samples whose nearest other sample (Euclidean) has their label.

    A number for how well the classes stay apart in an embedding: about
    the class frequencies' sum of squares for mixed classes, 1 for classes
    that form separate clusters.

    Args:
        coords: float [n, k] (n >= 2).
        labels: [n] class of each sample.

    Returns:
        float in [0, 1].

    Example:
        >>> neighbour_agreement(np.array([[0.0], [0.1], [5.0], [5.1]]), [0, 0, 1, 1])
        1.0
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    _, index = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)
    # Column 0 is each sample itself, except among duplicates, where it may be
    # another copy: take the first neighbour that is not the sample.
    other = np.where(index[:, 0] == np.arange(len(labels)), index[:, 1], index[:, 0])
    return float(np.mean(labels[other] == labels))


def embedding_figure(coords, labels, classes, parts, *, title):
    """A t-SNE scatter: one colour per class, one marker per part of the split.

    scikit-learn's plot_t_sne_perplexity convention: one scatter per class
    (here per class and part, so validation and test patients can be told
    apart as in paper 001's figure), a legend, no tick labels on either axis
    (t-SNE coordinates mean nothing), ``axis("tight")``, the perplexity in
    the title. Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas,
    never through pyplot: no figure stays registered (open) after it is
    dropped, and no display is needed.

    Args:
        coords: float [n, 2].
        labels: int [n], indices into ``classes``.
        classes: the class names.
        parts: [n] part of each point (``"train"``, ``"val"``, ``"test"``).
        title: the figure's title.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    coords, labels, parts = np.asarray(coords), np.asarray(labels), np.asarray(parts)
    fig = Figure(figsize=(6.4, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown_parts = [p for p in PARTS if np.any(parts == p)]
    for c, name in enumerate(classes):
        for part in shown_parts:
            chosen = (labels == c) & (parts == part)
            if np.any(chosen):
                ax.scatter(coords[chosen, 0], coords[chosen, 1], s=28, marker=MARKERS[part], color=f"C{c % 10}",
                           alpha=0.85, label=name if len(shown_parts) == 1 else f"{name} ({part})")
    ax.xaxis.set_major_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(NullFormatter())
    ax.axis("tight")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def save_png(fig, path):
    """Writes ``fig`` as a PNG (100 dpi) and returns ``path``."""
    fig.savefig(path, format="png", dpi=100)
    return path


# --------------------------------------------------------------------------
# A run's figures
# --------------------------------------------------------------------------


def tsne_report(run_dir, *, perplexity=None, seed=0, parts=("val", "test"), threads=1):
    """Writes paper 001's t-SNE figures of a run into ``run_dir/report/`` and returns a summary.

    For the studies of the patients in ``parts`` (the slice-level run's
    split), embeds both patient-level features (:func:`patient_features`)
    with :func:`embed` and writes ``tsne_<dims>.png`` for each (``tsne_1024.png``
    and ``tsne_3072.png`` for the paper's model) and ``tsne.json``: the
    settings, per feature set its width, figure and
    :func:`neighbour_agreement`, and per study its key, pseudonymous
    patient id, class, part and 2-d coordinates. Nothing else of a patient
    is written.

    Args:
        run_dir: a ``train.patient_level`` run folder (it holds the
            features), or a ``train.ensemble`` run (its patient-level run's
            features are used; the figures go into ``run_dir``).
        perplexity: None: :func:`default_perplexity` of the number of studies.
        seed: the seed of PCA and t-SNE (:func:`embed`).
        parts: the split's parts whose studies are shown (names, or one comma-separated string).
        threads: see :func:`embed`.

    Returns:
        The summary dict (as ``tsne.json`` without the per-study rows, plus its path).

    Raises:
        ConfigurationError: ``run_dir`` is not a finished patient-level or
            ensemble run, its features or split are gone, an unknown part,
            too few studies, or a perplexity :func:`embed` refuses.
    """
    from covid_keras.training.patient_level import load_features
    from covid_keras.training.runs import write_json

    parts = _checked_parts(parts)
    run_dir = os.fspath(run_dir)
    summary, features_path, split = _patient_run(run_dir)
    classes = list(summary["classes"])
    studies, study_parts = _studies_in(load_features(features_path), split, parts, run_dir)
    perplexity = default_perplexity(len(studies)) if perplexity is None else float(perplexity)
    labels = np.array([int(s[2]) for s in studies])
    report = os.path.join(run_dir, "report")
    os.makedirs(report, exist_ok=True)
    sets, coords = {}, {}
    for kind in FEATURE_KINDS:
        vectors = patient_features(studies, kind)
        dims = str(vectors.shape[1])
        coords[dims] = embed(vectors, perplexity=perplexity, seed=seed, threads=threads)
        fig = embedding_figure(coords[dims], labels, classes, study_parts,
                               title=f"t-SNE of the {dims}-d patient features ({', '.join(parts)}), "
                                     f"perplexity {perplexity:.3g}")
        png = save_png(fig, os.path.join(report, f"tsne_{dims}.png"))
        sets[dims] = {"kind": kind, "definition": DEFINITIONS[kind], "png": png,
                      "neighbour_agreement": neighbour_agreement(coords[dims], labels)}
    rows = [{"key": key, "patient_id": pid, "label": classes[int(label)], "part": part,
             "xy": {dims: [round(float(v), 4) for v in xy[i]] for dims, xy in coords.items()}}
            for i, ((key, pid, label, _, _), part) in enumerate(zip(studies, study_parts))]
    out = {"perplexity": perplexity, "seed": seed, "parts": list(parts), "classes": classes,
           "studies": len(studies), "features": sets}
    path = os.path.join(report, "tsne.json")
    write_json(path, {**out, "rows": rows})
    return {**out, "json": path}


def _checked_parts(parts):
    parts = tuple(parts.split(",")) if isinstance(parts, str) else tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown:
        raise errors.ConfigurationError(
            f"`parts` must name some of {', '.join(PARTS)}. Received: parts={','.join(parts) or 'nothing'}"
        )
    return tuple(dict.fromkeys(parts))


def _patient_run(run_dir):
    """``(summary, features path, split)`` of the patient-level run ``run_dir`` is or builds on."""
    from covid_keras.training.runs import read_json

    hint = "pass a runs/patient_level/<name> folder that `python -m train.patient_level` finished."
    if not os.path.isdir(run_dir):
        raise errors.ConfigurationError(f"{run_dir}: not a folder; {hint}")
    summary = read_json(os.path.join(run_dir, "summary.json"), f"the folder holds no finished run; {hint}")
    command = summary.get("command")
    if command == "train.ensemble" and summary.get("patient_run"):
        return _patient_run(summary["patient_run"])
    if command == "train.slice_level":
        raise errors.ConfigurationError(
            f"{run_dir}: a slice-level run keeps no per-study features; run `python -m train.patient_level "
            f"--slice-run {run_dir}` and pass its run folder."
        )
    if command != "train.patient_level" or "features" not in summary:
        raise errors.ConfigurationError(f"{run_dir}: a {command or 'unknown'} run has no paper-001 patient "
                                        f"features; {hint}")
    # The run folder's own files first: a moved run still finds them.
    features = _first_existing([os.path.join(run_dir, "features.npz"), summary["features"]], ".json", run_dir,
                               "features.npz (the extracted slice features)")
    split = _first_existing([os.path.join(run_dir, "split.json"),
                             os.path.join(summary.get("slice_run", ""), "split.json")], "", run_dir,
                            "the slice-level run's split.json")
    return summary, features, read_json(split, "")


def _first_existing(paths, companion, run_dir, what):
    """The first of ``paths`` that exists with ``path + companion``."""
    for path in paths:
        if os.path.exists(path) and os.path.exists(path + companion):
            return path
    raise errors.ConfigurationError(f"{run_dir}: {what} is gone (looked for {' and '.join(paths)}); "
                                    "run `python -m train.patient_level` again.")


def _studies_in(studies, split, parts, run_dir):
    """The studies of the patients in ``parts`` (part by part, in file order) and each one's part."""
    chosen, where = [], []
    for part in parts:
        patients = set(split.get(part) or ())
        found = [s for s in studies if s[1] in patients]
        chosen += found
        where += [part] * len(found)
    if len(chosen) < 2:
        raise errors.ConfigurationError(
            f"{run_dir}: {len(chosen)} studies in {', '.join(parts)}; t-SNE needs at least 2 (try --parts all)."
        )
    return chosen, np.array(where)
