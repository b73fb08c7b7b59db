"""--strategy: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy with two local workers.

The distributed runs are subprocesses (``distributed_fit.py``): logical
devices and the multi-worker collectives must be set up before TensorFlow
starts, and a worker must be killable. TensorFlow's own
``multi_process_runner`` needs its bazel build and fails from the pip
wheel, so two ``subprocess.Popen`` workers get ``TF_CONFIG`` with free
127.0.0.1 ports, and every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from worker_processes import TIMEOUT, start_workers, tf_config, wait_all, worker_env

from covid_keras import errors
from covid_keras.data import records
from covid_keras.training import distribute

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_fit.py")
def fit(tmp_path, name, strategy="default", workers=1, extra=(), wait=True, **kwargs):
    """Runs distributed_fit.py as one process, or as ``workers`` multi-worker processes; returns their outputs."""
    outs = [tmp_path / f"{name}-w{i}.npz" for i in range(workers)]
    procs, logs = start_workers(tmp_path, name, workers, lambda i: [
        sys.executable, SCRIPT, "--strategy", strategy, "--run-dir", str(tmp_path / f"{name}-run"),
        "--out", str(outs[i]), *extra], cluster=strategy == "multi-worker")
    if not wait:
        return procs, logs, outs
    wait_all(procs, logs, **kwargs)
    return [(dict(np.load(o)), json.load(open(f"{o}.json"))) for o in outs]


def max_difference(a, b):
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    [(weights, info)] = fit(tmp, "single")
    assert info["replicas"] == 1 and info["variable"] == "ResourceVariable"
    return weights


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_equals_one_device(tmp_path, single_device):
    [(weights, info)] = fit(tmp_path, "mirrored", "mirrored", extra=("--logical-cpus", "2"))
    assert info["replicas"] == 2 and info["variable"] == "MirroredVariable"
    assert max_difference(weights, single_device) < 1e-5


@pytest.mark.slow
def test_two_workers_equal_one_device_and_each_other(tmp_path, single_device):
    (w0, i0), (w1, i1) = fit(tmp_path, "mw", "multi-worker", workers=2)
    assert i0["replicas"] == i1["replicas"] == 2
    assert i0["chief"] and not i1["chief"]
    assert max_difference(w0, w1) == 0.0  # one all-reduced update on both
    assert max_difference(w0, single_device) < 1e-5
    # Only the chief wrote the run folder; worker 1 trained in a scratch folder, now removed.
    assert i0["run_path"] == str(tmp_path / "mw-run") and i1["run_path"].startswith(i1["scratch"])
    assert not os.path.exists(i1["scratch"]) and os.listdir(tmp_path / "tmp") == []
    assert sorted(os.listdir(tmp_path / "mw-run")) == ["checkpoints", "config.json", "logs", "stages", "tensorboard"]


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_finished_epoch(tmp_path):
    (u0, _), (u1, _) = fit(tmp_path, "whole", "multi-worker", workers=2)

    marker, hold = tmp_path / "marker", tmp_path / "hold"
    hold.write_text("")
    procs, logs, _ = fit(tmp_path, "killed", "multi-worker", workers=2, wait=False,
                         extra=("--hold-in-epoch", "2", "--hold", str(hold), "--marker", str(marker)))
    deadline = time.monotonic() + TIMEOUT
    while not (marker.exists() and marker.read_text() == "holding"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), open(logs[0]).read()[-3000:]
        time.sleep(0.05)
    # The chief holds after two steps of epoch 2 (the third of four), which worker 1 took with it; neither can
    # finish the epoch alone: epochs 0 and 1 are backed up, epoch 2 is under way on both.
    procs[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-epoch
    procs[1].wait()
    procs[0].kill()  # the chief would wait for it: restart the pair
    procs[0].wait()
    hold.unlink()
    assert "stage" in os.listdir(tmp_path / "killed-run" / "checkpoints")  # the backup of epoch 1

    (r0, i0), (r1, i1) = fit(tmp_path, "killed", "multi-worker", workers=2)
    assert i0["epochs_run"] == i1["epochs_run"] == 2  # epochs 2 and 3 only, on both workers
    with open(tmp_path / "killed-run" / "logs" / "stage.csv") as f:
        epochs = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]
    assert max_difference(r0, r1) == 0.0
    assert max_difference(r0, u0) < 1e-5  # as if never interrupted
    assert os.listdir(tmp_path / "tmp") == []


def test_tf_config_errors_are_one_sentence():
    with pytest.raises(errors.ConfigurationError, match="needs the TF_CONFIG variable"):
        distribute.read_tf_config({})
    with pytest.raises(errors.ConfigurationError, match="not a cluster description"):
        distribute.read_tf_config({"TF_CONFIG": "{not json"})
    with pytest.raises(errors.ConfigurationError, match="lists no"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}})})
    with pytest.raises(errors.ConfigurationError, match="worker 2, which its cluster does not list"):
        distribute.read_tf_config({"TF_CONFIG": tf_config([1, 2], 2)})
    bad = {"cluster": ["a:1"], "task": {"type": "worker", "index": 0}}
    with pytest.raises(errors.ConfigurationError, match="'cluster' must be an object"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(bad)})
    bad = {"cluster": {"worker": "a:1,b:1"}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(errors.ConfigurationError, match="must be a list of"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(bad)})
    bad = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0.5}}
    with pytest.raises(errors.ConfigurationError, match="an integer"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(bad)})
    bad = {"cluster": {"worker": ["a:1"], "evaluator": ["b:1"]}, "task": {"type": "evaluator", "index": 0}}
    with pytest.raises(errors.ConfigurationError, match="no evaluator or parameter-server"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(bad)})


def test_tf_config_ranks_a_chief_first():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}
    cluster = distribute.read_tf_config({"TF_CONFIG": json.dumps(spec)})
    assert (cluster.workers, cluster.index, cluster.is_chief, cluster.task) == (3, 2, False, "worker 1")
    spec["task"] = {"type": "chief", "index": 0}
    assert distribute.read_tf_config({"TF_CONFIG": json.dumps(spec)}).is_chief
    assert distribute.read_tf_config({"TF_CONFIG": tf_config([1, 2], 0)}).is_chief


def test_shard_policy_by_file_only_for_training_with_fair_shares(monkeypatch):
    import tensorflow as tf

    assert distribute.shard_options([5, 5], training=True) is None  # one worker: nothing to split
    monkeypatch.setattr(distribute, "num_workers", lambda strategy=None: 2)
    policy = tf.data.experimental.AutoShardPolicy

    def chosen(per_file, training=True):
        return distribute.shard_options(per_file, training).experimental_distribute.auto_shard_policy

    assert chosen([256, 256]) == chosen([180, 190, 175, 185]) == policy.FILE  # worker 0 files 0, 2; worker 1: 1, 3
    assert chosen([256]) == policy.DATA  # fewer files than workers
    assert chosen([8, 2]) == policy.DATA  # 80 % of the examples on one worker would weigh as much as the rest
    assert chosen([100, 100, 100]) == policy.DATA  # two files against one
    assert chosen([100, 0]) == policy.DATA
    assert chosen([256, 256], training=False) == policy.DATA  # evaluation and prediction keep their order


def test_image_pipeline_takes_the_shares_of_its_selection(tmp_path, monkeypatch):
    import tensorflow as tf

    from covid_keras.data.datasets import CLASS_NAMES
    from covid_keras.preprocess.cache import build_cache
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import image_level, pipelines

    _, recs = image_level.phantom_records("xraycnn_step1", 4)
    folder = str(tmp_path / "cache")
    build_cache(recs, folder, PipelineOptions(pipeline="xray", size=16), classes=list(CLASS_NAMES["xraycnn_step1"]),
                workers=1, records_per_shard=6, progress=False)  # 12 images: two shards of 6
    rows, classes, shape = pipelines.image_rows(folder)
    monkeypatch.setattr(distribute, "num_workers", lambda strategy=None: 2)
    policy = tf.data.experimental.AutoShardPolicy

    def chosen(keys, training=True):
        selection = {r.key: classes.index(r.label) for r in rows if r.key in keys}
        ds = pipelines.image_dataset(folder, selection, training=training, batch_size=4, shape=shape)
        return ds.options().experimental_distribute.auto_shard_policy

    shards = [sorted(r["key"] for r in records.read_manifest(folder)["records"] if r["shard"] == s)
              for s in records.read_manifest(folder)["shards"]]
    assert chosen(shards[0][:3] + shards[1][:3]) == policy.FILE
    assert chosen(shards[0][:3] + shards[1][:3], training=False) == policy.DATA
    assert chosen(shards[0] + shards[1][:1]) == policy.DATA  # 6 against 1


def test_cache_writes_a_shard_per_worker_at_least():
    from covid_keras.preprocess.cache import default_records_per_shard

    class Rec:
        paths = ("image.png",)

    records = [Rec()] * 300
    assert default_records_per_shard(records) == 256  # 2 shards
    assert default_records_per_shard(records, min_shards=2) == 256
    assert default_records_per_shard(records, min_shards=4) == 75  # 4 shards
    assert default_records_per_shard(records[:3], min_shards=8) == 1


def test_unknown_strategy_is_refused():
    with pytest.raises(errors.ConfigurationError, match="unknown --strategy 'tpu'"):
        distribute.make_strategy("tpu")


def test_sweep_removes_only_dead_workers_scratch(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{distribute.SCRATCH_PREFIX}1-{int(dead.stdout)}-abc"
    live = tmp_path / f"{distribute.SCRATCH_PREFIX}1-{os.getpid()}-def"
    other = tmp_path / "covid_keras-workerless"
    for folder in (stale, live, other):
        (folder / "runs").mkdir(parents=True)
    assert distribute.sweep_scratch(str(tmp_path)) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_clear_session_keeps_the_strategy_scope():
    import dataclasses

    import keras
    import tensorflow as tf

    @dataclasses.dataclass
    class Config:
        strategy: str = "mirrored"

    def variable_type():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        return type(model.weights[0]._value).__name__

    with distribute.session(Config(), log=lambda m: None):
        strategy = tf.distribute.get_strategy()
        assert isinstance(strategy, tf.distribute.MirroredStrategy) and variable_type() == "MirroredVariable"
        distribute.clear_session()  # keras.utils.clear_session() here would drop the scope
        assert tf.distribute.get_strategy() is strategy and variable_type() == "MirroredVariable"
    assert not tf.distribute.has_strategy() and distribute.current() is None


def test_the_strategy_flag_is_read_before_tensorflow_starts():
    from covid_keras import cli

    assert cli._strategy_flag(["--epochs", "2", "--strategy", "mirrored"]) == "mirrored"
    assert cli._strategy_flag(["--strategy=multi-worker"]) == "multi-worker"
    assert cli._strategy_flag(["--epochs", "2"]) is None and cli._strategy_flag(["--strategy"]) is None


def test_multi_worker_without_tf_config_is_one_sentence(tmp_path):
    env = worker_env(tmp_path)  # no TF_CONFIG
    proc = subprocess.run([sys.executable, "-m", "train.xray_cnn", "--strategy", "multi-worker", "--runs-root",
                           str(tmp_path / "runs")], env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(HERE)))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --strategy multi-worker needs the TF_CONFIG variable naming the cluster and this task")
    assert not (tmp_path / "runs").exists()
