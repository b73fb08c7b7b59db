"""covid_keras: five published COVID-19 chest-imaging methods in Keras 3.

The papers are numbered 000-004 (000 Volume3D, 001 MultiScale, 002 Transfer,
003 DETL, 004 XrayCNN) in docs/papers.md, which cites each and lists its
steps, numbers and our choices.

Submodules are imported lazily so that ``import covid_keras`` and the data
readers do not pay for importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "data",
    "preprocess",
    "augment",
    "models",
    "training",
    "evaluation",
    "explain",
    "serving",
    "errors",
)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"covid_keras.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'covid_keras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
