"""Exception types that covid_keras raises on bad input.

Every error a user can cause with a file, a folder or an argument is one of
these, carrying one sentence that names the thing, the problem and what to
do about it. Command lines print that sentence and exit non-zero.
"""


class CovidKerasError(Exception):
    """Base of every error covid_keras raises on bad input."""


class DicomReadError(CovidKerasError):
    """A file could not be read as DICOM (empty, truncated, corrupt, undecodable)."""


class NoDicomError(CovidKerasError):
    """A folder holds no DICOM image at all, or is empty."""


class SeriesGeometryError(CovidKerasError):
    """A series' slices cannot be stacked into a faithful volume.

    Missing position/orientation/spacing, mixed slice sizes, duplicate
    positions, missing slices, non-parallel slices or gantry tilt.
    """


class ModalityError(CovidKerasError):
    """The images are not of the modality the caller asked for."""


class ImageReadError(CovidKerasError):
    """An X-ray image (DICOM, PNG or JPEG) could not be read."""


class DatasetLayoutError(CovidKerasError):
    """A dataset folder is missing or does not have the expected layout."""


class SplitError(CovidKerasError):
    """A train/validation/test split is impossible or leaks data."""


class LeakageError(SplitError):
    """A patient or an identical image falls on both sides of a split."""


class PreprocessingError(CovidKerasError):
    """A study cannot be turned into a network input by a paper's pipeline."""


class NoLungError(PreprocessingError):
    """No lungs were found (a head CT, a series that misses the chest)."""


class CacheError(CovidKerasError):
    """A preprocessing cache folder is missing, incomplete or built otherwise."""


class WeightsError(CovidKerasError):
    """Pretrained weights cannot be found, downloaded or loaded."""


class ServingError(CovidKerasError):
    """A model folder is not a servable model exported by covid_keras.serving.

    No ``saved_model.pb``, no version folder, or no ``assets.extra``
    metadata saying its classes and preprocessing.
    """


class ConfigurationError(CovidKerasError, ValueError):
    """An argument or a combination of arguments is invalid.

    Also a ``ValueError``, as Keras and keras-hub raise for bad arguments.
    """


__all__ = [
    "CovidKerasError",
    "DicomReadError",
    "NoDicomError",
    "SeriesGeometryError",
    "ModalityError",
    "ImageReadError",
    "DatasetLayoutError",
    "SplitError",
    "LeakageError",
    "PreprocessingError",
    "NoLungError",
    "CacheError",
    "WeightsError",
    "ServingError",
    "ConfigurationError",
]
