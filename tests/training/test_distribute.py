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
from worker_processes import TIMEOUT, free_ports, start, tf_config, wait_all, worker_env

from covid_keras import errors
from covid_keras.training import distribute

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_fit.py")
def fit(tmp_path, name, strategy="default", workers=1, extra=(), wait=True, **kwargs):
    """Runs distributed_fit.py as one process, or as ``workers`` multi-worker processes; returns their outputs."""
    ports = free_ports(workers) if strategy == "multi-worker" else None
    procs, logs, outs = [], [], []
    for i in range(workers):
        out = tmp_path / f"{name}-w{i}.npz"
        cmd = [sys.executable, SCRIPT, "--strategy", strategy, "--run-dir", str(tmp_path / f"{name}-run"),
               "--out", str(out), *extra]
        logs.append(tmp_path / f"{name}-w{i}.log")
        procs.append(start(cmd, worker_env(tmp_path, ports, i), logs[-1]))
        outs.append(out)
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

    marker = tmp_path / "epoch"
    procs, logs, _ = fit(tmp_path, "killed", "multi-worker", workers=2, wait=False,
                         extra=("--slow-from-epoch", "2", "--marker", str(marker)))
    deadline = time.monotonic() + TIMEOUT
    while not (marker.exists() and marker.read_text() == "1"):  # epochs 0 and 1 finished and backed up
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), open(logs[0]).read()[-3000:]
        time.sleep(0.05)
    time.sleep(0.6)  # two of epoch 2's six slow steps
    procs[1].send_signal(signal.SIGKILL)  # worker 1 dies mid-epoch
    procs[1].wait()
    procs[0].kill()  # the chief would wait for it: restart the pair
    procs[0].wait()
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


def test_tf_config_ranks_a_chief_first():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}
    cluster = distribute.read_tf_config({"TF_CONFIG": json.dumps(spec)})
    assert (cluster.workers, cluster.index, cluster.is_chief, cluster.task) == (3, 2, False, "worker 1")
    spec["task"] = {"type": "chief", "index": 0}
    assert distribute.read_tf_config({"TF_CONFIG": json.dumps(spec)}).is_chief
    assert distribute.read_tf_config({"TF_CONFIG": tf_config([1, 2], 0)}).is_chief


def test_shard_policy_by_file_only_for_training_with_enough_files(monkeypatch):
    import tensorflow as tf

    assert distribute.shard_options(8, training=True) is None  # one worker: nothing to split
    monkeypatch.setattr(distribute, "num_workers", lambda strategy=None: 2)
    policy = tf.data.experimental.AutoShardPolicy
    got = {(files, training): distribute.shard_options(files, training).experimental_distribute.auto_shard_policy
           for files in (1, 2, 5) for training in (True, False)}
    assert got == {(1, True): policy.DATA, (2, True): policy.FILE, (5, True): policy.FILE,
                   (1, False): policy.DATA, (2, False): policy.DATA, (5, False): policy.DATA}


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
