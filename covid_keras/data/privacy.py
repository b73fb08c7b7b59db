"""Pseudonymous patient ids: identifying values never leave the reader.

PatientName, PatientID and birth dates must never reach logs, outputs or file
names. Readers turn whatever identifies a patient into ``pt-<12 hex>``, a
salted SHA-256, so the same patient gets the same id across a run (which the
patient-grouped splits need) without the id revealing who it is.

The salt comes from the ``COVID_KERAS_ID_SALT`` environment variable; without
it, a random salt is created once and kept in ``~/.cache/covid_keras/id_salt``
(or ``$COVID_KERAS_CACHE/id_salt``), so ids are stable on one machine but
cannot be reversed by hashing a guessed PatientID elsewhere.
"""

import hashlib
import os
import secrets
from pathlib import Path

_SALT_ENV = "COVID_KERAS_ID_SALT"
_salt_cache = None


def cache_dir():
    """Returns the covid_keras cache folder (created on demand)."""
    root = os.environ.get("COVID_KERAS_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "covid_keras"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _salt():
    global _salt_cache
    env = os.environ.get(_SALT_ENV)
    if env:
        return env
    salt_file = cache_dir() / "id_salt"
    # Kept per salt file: a process that changes COVID_KERAS_CACHE uses that folder's salt.
    if _salt_cache is None or _salt_cache[0] != salt_file:
        if not salt_file.exists():
            _create_salt_file(salt_file)
        _salt_cache = (salt_file, salt_file.read_text().strip())
    return _salt_cache[1]


def _create_salt_file(salt_file):
    """Writes a random salt file, unless another process has just written one.

    The salt is written to a temporary file and hard-linked into place, which
    fails when the file exists: processes starting together (cache workers)
    all end up with the first one's salt, never with one each. On a file
    system without hard links it falls back to check-then-replace, where two
    processes starting at the same instant can still each keep their own.
    """
    tmp = salt_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(secrets.token_hex(16))
    try:
        os.link(tmp, salt_file)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not salt_file.exists():
            os.replace(tmp, salt_file)
    finally:
        tmp.unlink(missing_ok=True)


def pseudonymize(value, namespace="patient", prefix="pt"):
    """Returns ``pt-<12 hex>``: a salted hash of an identifying value.

    Args:
        value: the identifying string (a PatientID, or a study UID when the
            PatientID is empty).
        namespace: keeps ids of different kinds from colliding.
        prefix: the id's prefix (``pt`` for patients).

    Returns:
        A string such as ``"pt-3fa94c0e1b2d"``.
    """
    digest = hashlib.sha256(f"{_salt()}|{namespace}|{value}".encode("utf-8"))
    return f"{prefix}-{digest.hexdigest()[:12]}"
