"""A patient head defined outside the package, from docs/extending.md to the served patient pipeline.

The module (``my_heads.py``: an attention-MIL head) and the three commands
are read from docs/extending.md and run exactly as the document shows them,
in a fresh folder, so the document and this test cannot drift. Then a fresh
process serves the exported pipeline, and another loads the head's
``.keras`` file with ``safe_mode=True`` once ``my_heads`` is imported.
"""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from covid_keras import errors

from doc_blocks import REPO, block


def _block(what):
    return block("test_user_heads.py", what)


def _env(root):
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3",
            "COVID_KERAS_CACHE": str(root / "cache"), "COVID_KERAS_ID_SALT": "test-salt"}


def _python(args, cwd, env, timeout=600):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def documented_run(tmp_path_factory):
    """The document's module written into a fresh folder and its commands run there, in order."""
    root = tmp_path_factory.mktemp("user_heads")
    info, module = _block("the module")
    assert info.startswith("python") and 'title="my_heads.py"' in info
    (root / "my_heads.py").write_text(module, encoding="utf-8")
    _, commands = _block("the commands")
    lines = [line for line in commands.splitlines() if line.strip()]
    assert [shlex.split(line)[:3] for line in lines] == [
        ["python", "-m", "train.slice_level"], ["python", "-m", "train.patient_level"],
        ["python", "-m", "train.ensemble"]]
    for line in lines:
        _python(shlex.split(line)[1:], cwd=root, env=_env(root))

    def summary(command):
        (folder,) = (root / "runs" / command).iterdir()
        return json.loads((folder / "summary.json").read_text())

    return root, summary("slice_level"), summary("patient_level"), summary("ensemble")


@pytest.mark.slow
def test_the_documented_commands_train_and_export_the_users_head(documented_run):
    root, _, heads, ensemble = documented_run
    assert heads["head_order"] == ["maxpool", "attention_mil"]
    assert heads["head_specs"]["attention_mil"] == {"features": "features", "builder": "my_heads.attention_mil_head"}
    assert heads["imports"] == [{"module": "my_heads", "name": "my_heads", "file": str(root / "my_heads.py")}]
    assert ensemble["head_order"] == ["maxpool", "attention_mil"]
    from covid_keras import serving

    meta = serving.load_metadata(os.path.join(root, ensemble["exported"]))
    assert meta["head_order"] == ["maxpool", "attention_mil"]
    assert meta["head_features"] == {"maxpool": "features", "attention_mil": "features"}
    assert meta["class_names"] == ensemble["classes"]
    assert meta["metadata"]["recipe"]["recipe"] == "ensemble_mlp"
    assert meta["metadata"]["recipe"]["builder_args"]["num_heads"] == 2
    assert [h["builder"] for h in meta["metadata"]["heads"]] == ["covid_keras.models.patient_heads.maxpool_head",
                                                                 "my_heads.attention_mil_head"]
    assert meta["metadata"]["slice_recipe"]["recipe"] == "multiscale_resnet50"


_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = [signature(slices=tf.constant(s))["probabilities"].numpy()[0].tolist() for s in np.load(sys.argv[2]).values()]
assert "my_heads" not in sys.modules and "covid_keras" not in sys.modules  # the SavedModel needs neither
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_fresh_process_serves_a_study_as_the_ensemble_answered(documented_run, tmp_path):
    from covid_keras.training import pipelines

    root, first, _, ensemble = documented_run
    classes = ensemble["classes"]
    wanted = {p["key"]: {"probabilities": [p["probabilities"][c] for c in classes]}
              for part in ("val", "test")
              for p in json.loads((root / ensemble["predictions"][part]).read_text())["rows"]}
    studies = {key: np.asarray(pipelines.to_rgb(slices), dtype="float32")
               for key, _, _, slices, _, _ in pipelines.study_slices(first["cache"], set(wanted))}
    assert len(studies) == len(wanted) >= 2
    np.savez(tmp_path / "studies.npz", *studies.values())
    env = {k: v for k, v in _env(root).items() if k != "PYTHONPATH"}
    proc = _python(["-c", _SERVE, str(root / ensemble["exported"]), str(tmp_path / "studies.npz")],
                   cwd=tmp_path, env=env, timeout=300)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, probabilities in zip(studies, got):
        np.testing.assert_allclose(probabilities, wanted[key]["probabilities"], atol=1e-5, err_msg=key)


_LOAD_HEAD = """
import json, sys
import numpy as np
import keras
try:
    keras.saving.load_model(sys.argv[1], safe_mode=True)
    print("loaded without my_heads")
except Exception:
    pass
import my_heads
head = keras.saving.load_model(sys.argv[1], safe_mode=True)
x = np.random.default_rng(0).normal(size=(1, 4, head.inputs[0].shape[-1])).astype("float32")
padded = np.concatenate([x, np.full((1, 3, x.shape[-1]), 7.0, "float32")], axis=1)
mask = np.arange(7)[None] < 4
a = head({"slice_features": x, "slice_mask": np.ones((1, 4), bool)})
b = head({"slice_features": padded, "slice_mask": mask})
print(json.dumps({"layer": type(head.get_layer("attention")).__name__, "a": np.asarray(a).tolist(),
                  "b": np.asarray(b).tolist()}))
"""


@pytest.mark.slow
def test_the_users_head_loads_with_safe_mode_once_its_module_is_imported(documented_run):
    root, _, heads, ensemble = documented_run
    for path in (root / heads["heads"]["attention_mil"],
                 root / ensemble["exported"] / "assets.extra" / "attention_mil.keras"):
        proc = _python(["-c", _LOAD_HEAD, str(path)], cwd=root, env=_env(root), timeout=300)
        assert "loaded without my_heads" not in proc.stdout  # its layer is the module's, registered on import
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["layer"] == "AttentionMILPooling"
        # The documented head gives padded slices no weight, as a head must (docs/extending.md).
        np.testing.assert_allclose(out["b"], out["a"], atol=1e-6)


# --------------------------------------------------------------------------
# --import and --heads errors: one sentence naming the module or the head
# --------------------------------------------------------------------------


def _config(tmp_path, **kwargs):
    from covid_keras.training.patient_level import PatientLevelConfig

    return PatientLevelConfig(runs_root=str(tmp_path / "runs"), quiet=True, **kwargs)


def test_a_module_that_cannot_be_imported_is_named(tmp_path, monkeypatch):
    from covid_keras.training.patient_level import train_patient_level

    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ConfigurationError, match=r"--import no_such_heads_module: no module"):
        train_patient_level(_config(tmp_path, import_modules=("no_such_heads_module",)))
    (tmp_path / "broken_heads.py").write_text("raise RuntimeError('a bug in the module')\n")
    with pytest.raises(errors.ConfigurationError, match=r"--import broken_heads\.py: .*RuntimeError: a bug"):
        train_patient_level(_config(tmp_path, import_modules=("broken_heads.py",)))
    with pytest.raises(errors.ConfigurationError, match=r"--import missing/heads\.py: no such file"):
        train_patient_level(_config(tmp_path, import_modules=("missing/heads.py",)))
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made


def test_an_unknown_head_lists_the_registered_ones(tmp_path, monkeypatch):
    from covid_keras.training.patient_level import train_patient_level

    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ConfigurationError, match=r"unknown head 'attention_mil'; registered heads: maxpool, "
                                                        r"maxpool_weighted, bilstm, bilstm_weighted"):
        train_patient_level(_config(tmp_path, heads=("maxpool", "attention_mil")))
    with pytest.raises(errors.ConfigurationError, match="each once"):
        _config(tmp_path, heads=("maxpool", "maxpool"))


def test_an_imported_file_registers_its_heads_and_is_recorded(tmp_path, monkeypatch):
    """A .py path is imported under its file name from its folder; reimport_modules finds it again there."""
    from covid_keras import models
    from covid_keras import extensions
    from covid_keras.models import heads as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test's head goes with it
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "ck_test_extra_heads.py").write_text(
        "from covid_keras import models\n"
        "models.register_head('ck_test_extra', models.maxpool_head, features='weighted')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "ck_test_extra_heads", raising=False)
    records = extensions.import_modules([os.path.join("elsewhere", "ck_test_extra_heads.py")], log=lambda m: None)
    assert records == [{"module": os.path.join("elsewhere", "ck_test_extra_heads.py"), "name": "ck_test_extra_heads",
                        "file": str(folder / "ck_test_extra_heads.py")}]
    assert models.get_head("ck_test_extra").features == "weighted"
    assert str(folder) not in sys.path  # only while importing
    del sys.modules["ck_test_extra_heads"]
    extensions.reimport_modules(records, "run")
    assert sys.modules["ck_test_extra_heads"].__file__ == str(folder / "ck_test_extra_heads.py")
    del sys.modules["ck_test_extra_heads"]
    os.remove(folder / "ck_test_extra_heads.py")
    with pytest.raises(errors.ConfigurationError, match=r"run: the run.s models need the module .*not there any more"):
        extensions.reimport_modules(records, "run")
