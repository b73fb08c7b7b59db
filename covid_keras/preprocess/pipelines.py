"""Turning one dataset record into network inputs, for each pipeline.

The cache builder runs :func:`process_record` in worker processes, so this
module imports neither TensorFlow nor anything heavy beyond the readers and
the pipelines themselves.
"""

import dataclasses
import hashlib
import os

import numpy as np

from covid_keras import errors

PIPELINES = ("volume3d", "ct_slices", "xray")
#: Paper 000 augments the minority classes only.
MINORITY_CLASSES = ("CAP", "Normal")

_DEFAULT_SIZE = {"volume3d": 224, "ct_slices": 224, "xray": 224}
#: Every pipeline is stored as uint8 grey levels: volume3d by lung_volume.quantize (at most 0.00196
#: off), xray as its one grey channel rounded to 0-255 (at most 0.5 off; the three model channels are
#: equal, so the cache holds one: a 224^2 X-ray takes 50 KB, not 600 KB as float32 RGB).
_DTYPE = {"volume3d": "uint8", "ct_slices": "uint8", "xray": "uint8"}


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What a cache is built with (part of its fingerprint).

    Attributes:
        pipeline: ``volume3d``, ``ct_slices`` or ``xray``.
        size: output side (volume3d: a cube of ``size``).
        normalization: volume3d / ct_slices grey normalisation.
        brightness: ct_slices brightness factor (COVID-CT-MD: 2).
        interpolate: ct_slices spline interpolation factor (1 = none);
            training sets only.
        augment_minority: volume3d minority-class augmentation; training
            sets only.
        seed: seed of the random augmentations.
    """

    pipeline: str
    size: int = 0
    normalization: str = "minmax"
    brightness: float = 2.0
    interpolate: int = 1
    augment_minority: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise errors.ConfigurationError(
                f"`pipeline` must be one of {PIPELINES}. Received: pipeline={self.pipeline!r}"
            )
        if self.size == 0:
            object.__setattr__(self, "size", _DEFAULT_SIZE[self.pipeline])
        if self.size < 8:
            raise errors.ConfigurationError(f"`size` must be at least 8. Received: size={self.size}")
        if self.interpolate < 1:
            raise errors.ConfigurationError(
                f"`interpolate` must be an integer of at least 1. Received: interpolate={self.interpolate}"
            )

    @property
    def dtype(self):
        return _DTYPE[self.pipeline]

    @property
    def input_shape(self):
        """Shape of every example's input."""
        if self.pipeline == "volume3d":
            return [self.size] * 3
        return [self.size, self.size]


@dataclasses.dataclass
class Item:
    """One network input made from a record."""

    array: np.ndarray
    slice_index: int = -1
    slice_label: int = -1
    suffix: str = ""


def _study_seed(record, seed):
    """A seed of its own for each study (its crop fractions differ from every other study's).

    Taken from the patient id and the series folder's name, not its full
    path, so a dataset moved to another disk gets the same crops.
    """
    name = "|".join([record.patient_id, *(os.path.basename(os.path.normpath(p)) for p in record.paths)])
    digest = hashlib.sha1(name.encode()).digest()
    return np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")])


def _volume3d(record, options, ct):
    from covid_keras.preprocess.lung_volume import augment_minority, quantize, volume3d

    shape = (options.size,) * 3
    base = volume3d(ct, normalization=options.normalization, output_shape=shape)
    items = [Item(quantize(base))]
    if options.augment_minority and record.label in MINORITY_CLASSES:
        extra = augment_minority(ct, seed=_study_seed(record, options.seed), normalization=options.normalization,
                                 output_shape=shape, base=base)
        items += [Item(quantize(a), suffix=f"aug{i}") for i, a in enumerate(extra)]
    return items


def slice_labels_in_volume_order(record, ct):
    """A record's slice labels (by file name) in the volume's slice order, or None."""
    if not record.slice_labels:
        return None
    by_name = dict(record.slice_labels)
    return np.array([int(by_name.get(os.path.basename(p), -1)) for p in ct.source_files])


def _ct_slices(record, options, ct):
    from covid_keras.preprocess.body_slices import ct_slices, interpolate_slices

    slices = ct_slices(ct, size=options.size, brightness=options.brightness,
                       normalization=options.normalization)
    labels = slice_labels_in_volume_order(record, ct)
    # slice_index = the slice's position on a grid `interpolate` times finer
    # than the original slices (originals at multiples of the factor), so
    # slice_index // interpolate is always the original slice before it.
    positions = np.arange(len(slices), dtype=float)
    if options.interpolate > 1:
        slices, labels, positions = interpolate_slices(slices, labels, factor=options.interpolate)
    if labels is None:
        labels = np.full(len(slices), -1)
    index = np.rint(positions * options.interpolate).astype(int)
    return [Item(s, slice_index=int(k), slice_label=int(lab)) for k, s, lab in zip(index, slices, labels)]


def _png_slice(record, options):
    from covid_keras.data import read_xray
    from covid_keras.preprocess.body_slices import covidx_slice

    img = read_xray(record.paths[0])
    box = record.extra.get("box") if record.extra else None
    infected = 0 if record.label == "Normal" else 1
    return [Item(covidx_slice(img, size=options.size, box=box), slice_label=infected)]


def _xray(record, options):
    """One X-ray -> uint8 [size, size]: :func:`~covid_keras.preprocess.radiograph.xray`'s grey channel, rounded."""
    from covid_keras.data import read_xray
    from covid_keras.preprocess.radiograph import xray

    return [Item(np.rint(xray(read_xray(record.paths[0]), size=options.size)[..., 0]).astype(np.uint8))]


def process_record(record, options):
    """Runs one record through the pipeline; returns a list of :class:`Item`.

    Raises:
        CovidKerasError: the study cannot be read or preprocessed.
    """
    path = record.paths[0]
    if options.pipeline == "xray":
        return _xray(record, options)
    if options.pipeline == "ct_slices" and not os.path.isdir(path):
        return _png_slice(record, options)
    if not os.path.isdir(path):
        raise errors.ConfigurationError(
            f"{path}: the {options.pipeline} pipeline needs a CT series folder, not a file; "
            "use --pipeline xray for images or ct_slices for PNG slices."
        )
    from covid_keras.data import read_ct_series

    ct = read_ct_series(path)
    if options.pipeline == "volume3d":
        return _volume3d(record, options, ct)
    return _ct_slices(record, options, ct)
