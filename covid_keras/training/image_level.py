"""Papers 002-004: 2-D image classifiers (X-rays, CT images) trained from one recipe.

The steps the three image commands share, each reading the recipe::

    records -> xray cache (uint8 grey images, one per record, preprocess.xray's grey channel)
            -> select_images by patient (and, for a model trained on part of the
               cache's classes, a relabelling: paper 004's two steps)
            -> image_dataset (shuffle, RGB, batch) -> augmenting model (the recipe's
               fused RandomAffine, and salt-and-pepper noise where the recipe has it)
            -> run_stages -> held-out report (paper 004's Fig. 5 columns) and per-image predictions

``train.transfer`` (paper 002) and ``train.xray_cnn`` (paper 004) train on
a patient hold-out (:func:`train_holdout`); ``train.detl`` (paper 003)
trains phase 1 that way and cross-validates phase 2.
"""

import dataclasses

import numpy as np

from covid_keras import errors
from covid_keras.evaluation import classification_report
from covid_keras.training import pipelines
from covid_keras.training.stages import StageData, run_stages

#: Side of the built-in phantom radiographs before the pipeline resizes them.
PHANTOM_SIDE = 128


@dataclasses.dataclass(frozen=True)
class ImageCache:
    """A built xray cache: its folder, rows, classes and image shape."""

    folder: str
    rows: tuple
    classes: list
    shape: list

    def patients(self):
        return sorted({r.patient_id for r in self.rows})


def phantom_records(task, images_per_class, seed=0):
    """``(dataset name, records)`` of the built-in phantoms for one paper's class list.

    ``transfer_ct`` gets phantom CT images in the SARS-CoV-2 CT-scan
    layout, read by its own adapter; every other task phantom radiographs
    (:func:`covid_keras.data.synthetic.xray_dataset`), ``seed`` choosing
    another set of images (paper 003's Data-A and Data-B must not share
    them).
    """
    import warnings

    from covid_keras.data import synthetic

    if task == "transfer_ct":
        config = synthetic.CTImagePhantomConfig(images_per_class=images_per_class, seed=seed)
        with warnings.catch_warnings():  # the adapter's "no patient ids" warning is about real data
            warnings.simplefilter("ignore")
            return "synthetic-sars-ct", synthetic.sars_ct_dataset(config)
    config = synthetic.XrayPhantomConfig(images_per_pathology=images_per_class, size=PHANTOM_SIDE, seed=seed)
    return "synthetic-xray", synthetic.xray_dataset(task, config)


def image_cache(records, dataset, options, classes, config, log):
    """Builds (or reuses) the xray cache of ``records``; returns an :class:`ImageCache`.

    Records the pipeline refuses (an unreadable file, a DICOM without an
    image) are skipped and named in the log; the run goes on without them.
    """
    folder = pipelines.ensure_cache(records, dataset, options, classes, workers=getattr(config, "workers", 0) or None,
                                    progress=not config.quiet, log=log)
    rows, cache_classes, shape = pipelines.image_rows(folder)
    if cache_classes != list(classes):
        raise errors.CacheError(f"{folder}: its classes {cache_classes} are not the recipe's {list(classes)}.")
    if not rows:
        raise errors.ConfigurationError(
            f"{folder}: the preprocessing refused every image of the dataset (see the log above); nothing to train on."
        )
    return ImageCache(folder, tuple(rows), list(classes), shape)


def augmenting_model(model, input_shape, seed, affine, salt_pepper=0.0):
    """``model`` behind its training-only augmentation: the fused ``RandomAffine``, then salt-and-pepper noise.

    Returns ``model`` itself when there is nothing to add. Both layers are
    the identity outside training, so the model exported is ``model``.
    """
    import keras

    from covid_keras import augment

    if not affine and not salt_pepper:
        return model
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = augment.RandomAffine(**affine, seed=seed, name="augmentation")(inputs) if affine else inputs
    if salt_pepper:
        x = augment.SaltAndPepper(density=salt_pepper, seed=seed + 1, name="salt_and_pepper")(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_training")


def set_bn_momentum(model, momentum):
    """Sets every BatchNormalization layer's momentum (the builders' models are flat: no nested models)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def counts_by_class(selection, classes):
    """``{class: images}`` of a selection, every class listed."""
    counts = np.bincount(np.fromiter(selection.values(), dtype=int), minlength=len(classes))
    return {c: int(counts[i]) for i, c in enumerate(classes)}


#: Images turned into one float32 RGB array at a time when predicting (48 MB at 224^2).
PREDICT_CHUNK = 256


def image_chunks(cache, selection, size=PREDICT_CHUNK):
    """Yields ``(keys, float32 [n, H, W, 3])`` of the selected images, ``size`` at a time, in cache order.

    Held-out sets of real datasets do not fit in memory as float32 RGB
    (DETL's 20,000 validation images at 224^2: 12 GB), so they are read and
    predicted chunk by chunk.
    """
    keys, images = [], []
    for key, image in pipelines.iter_images(cache.folder, selection):
        keys.append(key)
        images.append(image)
        if len(keys) == size:
            yield keys, np.repeat(np.stack(images)[..., None], 3, axis=-1).astype(np.float32)
            keys, images = [], []
    if keys:
        yield keys, np.repeat(np.stack(images)[..., None], 3, axis=-1).astype(np.float32)


def predict_images(model, cache, selection, batch_size):
    """``(keys, y_true, probabilities)`` of the selected images, in cache order."""
    keys, probs = [], []
    for chunk_keys, x in image_chunks(cache, selection):
        keys += chunk_keys
        probs.append(model.predict(x, batch_size=batch_size, verbose=0))
    if not keys:
        return [], np.zeros(0, int), np.zeros((0, 0), np.float32)
    return keys, np.asarray([selection[k] for k in keys]), np.concatenate(probs)


def prediction_rows(cache, keys, y_true, probs, classes, records=None):
    """One :func:`covid_keras.evaluation.predictions.case_row` per image (with the record's covariates)."""
    from covid_keras.evaluation.predictions import case_row
    from covid_keras.preprocess.cache import record_key

    patient = {r.key: r.patient_id for r in cache.rows}
    by_key = {record_key(r): r for r in records or ()}
    return [case_row(k, patient[k], classes[int(t)], p, classes, record=by_key.get(k))
            for k, t, p in zip(keys, y_true, probs)]


def evaluate(model, cache, selection, classes, batch_size, records=None):
    """``(report, predictions)`` on the selected images: Fig. 5-style report and one row per image."""
    keys, y_true, probs = predict_images(model, cache, selection, batch_size)
    report = classification_report(y_true, probs.reshape(len(keys), len(classes)), classes)
    return report, prediction_rows(cache, keys, y_true, probs, classes, records)


def write_image_predictions(path, rows, classes, answer, part, fold=None):
    """Writes image rows as a predictions file (:mod:`covid_keras.evaluation.predictions`)."""
    from covid_keras.evaluation.predictions import write_predictions

    return write_predictions(path, rows, classes=classes, level="image", answer=answer, part=part, fold=fold)


def describe_selection(name, selection, classes):
    return f"{name}: " + ", ".join(f"{c} {n}" for c, n in counts_by_class(selection, classes).items())


def train_holdout(model, run, cache, split, classes, stages, config, *, relabel=None, trainer=None,
                  class_weights=True, log=print):
    """Trains ``model`` through ``stages`` on the split's training patients, validating on its validation ones.

    Args:
        model: the model built from the recipe.
        run: the run folder (stages, checkpoints, logs, TensorBoard).
        cache: the :class:`ImageCache`.
        split: ``{"train": [...], "val": [...], "test": [...]}`` patient ids.
        classes: the model's class list.
        stages: ``config.stage_list()``.
        config: the recipe's config (batch size, seed, verbose).
        relabel: cache label -> the model's class or None (see
            :func:`covid_keras.training.pipelines.select_images`).
        trainer: ``model`` behind its augmentation (:func:`augmenting_model`).
        class_weights: weight the loss by the balanced class weights of
            the training labels; False: plain cross-entropy.

    Returns:
        ``{stage: StageResult}``; ``model`` holds the kept weights.
    """
    train = pipelines.select_images(cache.rows, split["train"], classes, relabel)
    val = pipelines.select_images(cache.rows, split["val"], classes, relabel)
    log(describe_selection("training images", train, classes) + "; " + describe_selection("validation", val, classes))
    check_classes(train, classes, "training")
    return run_stages(model, run, stages, stage_data(cache, train, val, config), classes, trainer=trainer,
                      class_weights=class_weights, verbose=config.verbose, log=log)


def stage_data(cache, train, val, config):
    """``stage -> StageData`` training on the ``train`` selection and validating on ``val`` (may be empty)."""
    def data(stage):
        return StageData(
            train=pipelines.image_dataset(cache.folder, train, training=True, batch_size=config.batch_size,
                                          seed=config.seed, shape=cache.shape),
            val=pipelines.image_dataset(cache.folder, val, training=False, batch_size=config.batch_size,
                                        shape=cache.shape) if val else None,
            labels=np.fromiter(train.values(), dtype=int), what="images",
            counts={"train": len(train), "val": len(val)})

    return data


def check_classes(selection, classes, what):
    """Every class of the model has training images: a softmax class never seen in training answers nothing real.

    Raises:
        ConfigurationError: a class has no image (e.g. Kermany's X-rays for
            paper 002 without --covid-data: no COVID-19).
    """
    present = {classes[i] for i in selection.values()}
    missing = [c for c in classes if c not in present]
    if missing:
        raise errors.ConfigurationError(
            f"the {what} images hold no {', '.join(missing)} images (only {', '.join(sorted(present)) or 'none'}); "
            f"the model's classes are {', '.join(classes)}: check --data, --dataset and --covid-data."
        )


def held_out_reports(model, run, cache, split, classes, batch_size, *, answer, relabel=None, parts=("val", "test"),
                     records=None):
    """Reports on the split's validation and held-out test patients, and their ``predictions_<part>.json``.

    ``answer`` names the model in the predictions files; ``records`` (the
    run's records) adds each image's covariates (age, sex, ...) to its row.
    """
    reports = {}
    for part in parts:
        selection = pipelines.select_images(cache.rows, split.get(part, ()), classes, relabel)
        if not selection:
            continue
        reports[part], rows = evaluate(model, cache, selection, classes, batch_size, records)
        write_image_predictions(run.file(f"predictions_{part}.json"), rows, classes, answer, part)
    return reports


def check_cached(records, cache, log):
    """The records the cache holds (the pipeline may have refused some); logs how many were left out."""
    from covid_keras.preprocess.cache import record_key

    cached = {r.key for r in cache.rows}
    kept = [r for r in records if record_key(r) in cached]
    if len(kept) < len(records):
        log(f"{len(records) - len(kept)} of {len(records)} images were refused by the preprocessing; "
            f"{len(kept)} take part")
    return kept
