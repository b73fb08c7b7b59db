"""Modules of your own that register heads, slice recipes or layers (``--import``).

``train.slice_level --import my_backbone`` and ``train.patient_level
--import my_heads`` import them before anything is looked up; the run
records them and later commands import them again (:func:`reimport_modules`),
so a user never repeats ``--import``. Nothing here imports TensorFlow
(``python -m covid_keras.recipes --import`` stays fast).
"""

import importlib
import os
import sys

from covid_keras import errors


def import_modules(specs, log=print):
    """Imports the modules that register researchers' heads (``--import``).

    Args:
        specs: module names (importable from the current folder or
            ``sys.path``) or paths to ``.py`` files (imported under their
            file name, from their folder).
        log: where one-line messages go.

    Returns:
        What a run records to import them again (:func:`reimport_modules`):
        ``[{"module": as given, "name": module name, "file": absolute path}]``.

    Raises:
        ConfigurationError: a module cannot be found or fails to import.
    """
    records = []
    for spec in specs:
        if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
            path = os.path.abspath(spec)
            if not os.path.isfile(path):
                raise errors.ConfigurationError(
                    f"--import {spec}: no such file; give a module name or the path of a .py file."
                )
            module = _import(os.path.splitext(os.path.basename(path))[0], os.path.dirname(path), spec,
                             expected_file=path)
        else:
            module = _import(spec, os.getcwd(), spec, first=False)
        file = os.path.abspath(module.__file__) if getattr(module, "__file__", None) else None
        log(f"imported {spec} ({file})")
        records.append({"module": spec, "name": module.__name__, "file": file})
    return records


def reimport_modules(records, where):
    """Imports again the modules a patient-level run imported (its summary's ``imports``).

    Each is imported by its recorded name from the folder of its recorded
    file, so a later command needs no ``--import`` and loads the run's heads
    (their custom layers) with ``safe_mode=True``.

    Raises:
        ConfigurationError: a recorded module's file is gone or fails to import.
    """
    for record in records:
        name, file = record["name"], record.get("file")
        if name in sys.modules:
            continue
        if not file or not os.path.isfile(file):
            raise errors.ConfigurationError(
                f"{where}: the run's models need the module {record['module']!r} ({file}), which is not there any "
                "more; put it back or train the run again."
            )
        root = os.path.dirname(file)
        if os.path.basename(file) == "__init__.py":
            root = os.path.dirname(root)
        for _ in name.split(".")[1:]:
            root = os.path.dirname(root)
        _import(name, root, record["module"], expected_file=file)


def _import(name, root, what, expected_file=None, first=True):
    """``importlib.import_module(name)`` with ``root`` on ``sys.path`` meanwhile (first, or last)."""
    added = root not in sys.path
    if added and first:
        sys.path.insert(0, root)
    elif added:
        sys.path.append(root)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise errors.ConfigurationError(
                f"--import {what}: no module {name!r} in the current folder or on sys.path; give a module name "
                "or the path of a .py file."
            ) from None
        raise errors.ConfigurationError(f"--import {what}: the module failed to import ({e}).") from e
    except Exception as e:  # the module's own code failed: say which module, keep the cause for --debug
        raise errors.ConfigurationError(
            f"--import {what}: the module failed to import ({type(e).__name__}: {e})."
        ) from e
    finally:
        if added:
            sys.path.remove(root)
    found = os.path.abspath(getattr(module, "__file__", None) or "")
    if expected_file is not None and found != os.path.abspath(expected_file):
        raise errors.ConfigurationError(
            f"--import {what}: another module named {name!r} ({found}) is imported already; rename the file."
        )
    return module
