"""Reading medical images and datasets: DICOM CT series, X-rays, layouts, splits.

Names are loaded on first use, so reading DICOM does not import
scikit-learn or OpenCV.

Example:
    >>> from covid_keras import data
    >>> ct = data.read_ct_series("path/to/series")        # doctest: +SKIP
    >>> img = data.read_xray("chest.dcm")                  # doctest: +SKIP
"""

import importlib

_EXPORTS = {
    "CTSeries": "covid_keras.data.dicom",
    "read_ct_series": "covid_keras.data.dicom",
    "read_xray": "covid_keras.data.images",
    "DATASETS": "covid_keras.data.datasets",
    "Record": "covid_keras.data.datasets",
    "load_dataset": "covid_keras.data.datasets",
}
_SUBMODULES = ("dicom", "dicom_files", "images", "datasets", "splits", "synthetic", "privacy", "records")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"covid_keras.data.{name}")
    else:
        raise AttributeError(f"module 'covid_keras.data' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
