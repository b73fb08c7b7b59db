"""A slice model defined outside the package, from docs/extending.md to the exported patient pipeline.

The module (``my_backbone.py``: a small CNN registered as recipe
``small_cnn``) and the three commands are read from docs/extending.md and
run exactly as the document shows them, in a fresh folder.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest

from doc_blocks import REPO, block


def _block(what):
    return block("test_user_backbone.py", what)


def _run(args, cwd, root, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "COVID_KERAS_CACHE": str(root / "cache")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)


@pytest.fixture(scope="module")
def documented_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_backbone")
    info, module = _block("the module")
    assert 'title="my_backbone.py"' in info
    (root / "my_backbone.py").write_text(module, encoding="utf-8")
    _, commands = _block("the commands")
    lines = [line for line in commands.splitlines() if line.strip()]
    assert [shlex.split(line)[2] for line in lines] == ["train.slice_level", "train.patient_level", "train.ensemble"]
    for line in lines:
        proc = _run(shlex.split(line)[1:], root, root)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-4000:]}"
    summaries = [json.loads((root / "runs" / name / "summary.json").read_text())
                 for name in ("small_cnn", "small_cnn_heads")]
    (ensemble_run,) = (root / "runs" / "ensemble").iterdir()
    return root, *summaries, json.loads((ensemble_run / "summary.json").read_text())


@pytest.mark.slow
def test_the_documented_backbone_trains_and_exports(documented_run):
    from covid_keras import serving

    root, slices, heads, ensemble = documented_run
    assert slices["recipe"]["recipe"] == "small_cnn"
    assert slices["recipe"]["builder"] == "my_backbone.small_cnn"
    assert slices["imports"][0]["name"] == "my_backbone"
    assert set(slices["stages"]) == {"pretrain", "last_layers", "finetune", "pseudo_label"}
    meta = serving.load_metadata(os.path.join(root, slices["exported"]))
    assert meta["name"] == "small_cnn" and meta["metadata"]["recipe"]["builder"] == "my_backbone.small_cnn"
    assert meta["class_names"] == ["Normal", "CAP", "COVID-19"]
    assert meta["input"]["shape"] == [None, 32, 32, 3]
    pipeline = serving.load_metadata(os.path.join(root, ensemble["exported"]))
    assert pipeline["head_order"] == ["maxpool"]
    assert pipeline["metadata"]["slice_recipe"]["recipe"] == "small_cnn"


@pytest.mark.slow
def test_the_exported_backbone_predicts_a_phantom_study(documented_run, tmp_path):
    from covid_keras.data import synthetic

    root, slices, _, _ = documented_run
    config = synthetic.CTPhantomConfig(patients_per_class=1, size=64, min_slices=12, max_slices=14, seed=7)
    synthetic.write_ct_dataset(str(tmp_path / "data"), config)
    study = next(d for d, _, files in os.walk(tmp_path / "data") if any(f.endswith(".dcm") for f in files))
    proc = _run(["-m", "covid_keras.predict", study, "--model", os.path.join(root, slices["exported"])], root, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout)
    assert answer["recipe"] == "small_cnn" and answer["model"] == "small_cnn"
    assert set(answer["probabilities"]) == {"Normal", "CAP", "COVID-19"}


def test_a_slice_model_without_a_features_layer_is_refused(tmp_path):
    (tmp_path / "bad_backbone.py").write_text(
        "import dataclasses, keras\n"
        "from covid_keras import recipes\n"
        "def flat(input_shape, weights=None, dropout=0.5):\n"
        "    x = keras.Input(input_shape)\n"
        "    y = keras.layers.Dense(3, activation='softmax', name='probabilities')(keras.layers.Flatten()(x))\n"
        "    return keras.Model(x, y)\n"
        "recipes.register(dataclasses.replace(recipes.get('multiscale_resnet50'), name='flat', builder=flat))\n")
    proc = _run(["-m", "train.slice_level", "--import", "bad_backbone", "--backbone", "flat", "--image-size", "32",
                 "--phantom-patients-per-class", "5", "--phantom-size", "48", "--stages", "finetune"], tmp_path, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: recipe flat:") and "'features'" in last
    assert not (tmp_path / "cache").exists()  # refused before any phantom or cache was written


def test_a_backbone_that_is_not_a_slice_recipe_is_refused(tmp_path):
    proc = _run(["-m", "train.slice_level", "--backbone", "xray_cnn"], tmp_path, tmp_path)
    assert proc.returncode == 2
    assert "is not a slice model" in proc.stderr.strip().splitlines()[-1]
