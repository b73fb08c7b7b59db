"""Pseudonymous ids: salted, stable with one salt, different with another.

tests/conftest.py sets a fixed COVID_KERAS_ID_SALT for every test; the tests
here unset it so that the random salt file is created and used.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from covid_keras.data import privacy
from covid_keras.data.privacy import pseudonymize

RAW_ID = "SECRET-ID-123"

# Run in a fresh interpreter: its own salt cache, its own reading of the salt file.
_CHILD = """
import json, sys
from covid_keras.data import read_ct_series
from covid_keras.data.privacy import pseudonymize
ct = read_ct_series(sys.argv[1])
print(json.dumps({"read": ct.patient_id, "direct": pseudonymize(sys.argv[2])}))
"""


def _unsalted(value):
    """Plain SHA-256 hashes of the value, as an unsalted pseudonym would be made."""
    out = set()
    for text in (value, f"patient|{value}", f"|patient|{value}"):
        hexdigest = hashlib.sha256(text.encode()).hexdigest()
        out |= {hexdigest[:12], f"pt-{hexdigest[:12]}"}
    return out


def _ids_in_child(folder, cache, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COVID_KERAS_ID_SALT"}
    env["COVID_KERAS_CACHE"] = str(cache)
    proc = subprocess.run([sys.executable, "-c", _CHILD, folder, RAW_ID], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def no_env_salt(monkeypatch):
    monkeypatch.delenv("COVID_KERAS_ID_SALT", raising=False)


def test_two_salts_give_different_ids(monkeypatch):
    monkeypatch.setenv("COVID_KERAS_ID_SALT", "salt-one")
    one = pseudonymize(RAW_ID)
    assert pseudonymize(RAW_ID) == one and re.fullmatch(r"pt-[0-9a-f]{12}", one)
    monkeypatch.setenv("COVID_KERAS_ID_SALT", "salt-two")
    two = pseudonymize(RAW_ID)
    assert two != one
    assert not {one, two} & _unsalted(RAW_ID)
    assert RAW_ID not in one + two


def test_salt_file_is_created_and_shared_across_processes(tmp_path, phantom_series, no_env_salt):
    folder = phantom_series[0]
    cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
    first = _ids_in_child(folder, cache_a, tmp_path)
    salt_a = (cache_a / "id_salt").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", salt_a)
    second = _ids_in_child(folder, cache_a, tmp_path)
    assert first == second and first["read"] == first["direct"]
    assert (cache_a / "id_salt").read_text().strip() == salt_a  # read again, not replaced
    other = _ids_in_child(folder, cache_b, tmp_path)
    assert (cache_b / "id_salt").read_text().strip() != salt_a
    assert other["read"] != first["read"]
    assert not {first["read"], other["read"]} & _unsalted(RAW_ID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COVID_KERAS_ID_SALT", "test-salt")
        assert pseudonymize(RAW_ID) not in (first["read"], other["read"])
        # The salt file's salt is the salt: set as the variable, it gives the same id.
        mp.setenv("COVID_KERAS_ID_SALT", salt_a)
        assert pseudonymize(RAW_ID) == first["read"]


def test_salt_follows_the_cache_folder_within_one_process(tmp_path, monkeypatch, no_env_salt):
    monkeypatch.setenv("COVID_KERAS_CACHE", str(tmp_path / "a"))
    in_a = pseudonymize(RAW_ID)
    monkeypatch.setenv("COVID_KERAS_CACHE", str(tmp_path / "b"))
    in_b = pseudonymize(RAW_ID)
    assert (tmp_path / "a" / "id_salt").exists() and (tmp_path / "b" / "id_salt").exists()
    assert in_a != in_b
    monkeypatch.setenv("COVID_KERAS_CACHE", str(tmp_path / "a"))
    assert pseudonymize(RAW_ID) == in_a


def test_a_salt_file_written_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch, no_env_salt):
    """Two processes creating the salt at once must end up with one salt, not one each."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("COVID_KERAS_CACHE", str(cache))
    winner = "a" * 32

    def token_hex(nbytes):
        # Another process finishes its salt file between our check and our write.
        (cache / "id_salt").write_text(winner)
        return "b" * (2 * nbytes)

    monkeypatch.setattr(privacy.secrets, "token_hex", token_hex)
    got = pseudonymize(RAW_ID)
    assert (cache / "id_salt").read_text().strip() == winner
    assert [n for n in os.listdir(cache) if n != "id_salt"] == []  # no temporary file left
    monkeypatch.setenv("COVID_KERAS_ID_SALT", winner)
    assert got == pseudonymize(RAW_ID)
