"""Starting local worker processes for the multi-worker tests: free ports, TF_CONFIG, bounded waits."""

import json
import os
import subprocess
import time

#: Seconds a group of workers may take before the test kills them.
TIMEOUT = 240


def free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def worker_env(tmp_path, ports=None, index=0):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               TMPDIR=str(tmp_path / "tmp"))  # where a worker's scratch folder goes: checked empty afterwards
    os.makedirs(env["TMPDIR"], exist_ok=True)
    if ports is not None:
        env["TF_CONFIG"] = tf_config(ports, index)
    else:
        env.pop("TF_CONFIG", None)
    return env


def start(cmd, env, log, cwd=None, stdout=None):
    """Starts ``cmd`` with its stderr to the file ``log``, and its stdout there too or to the file ``stdout``."""
    return subprocess.Popen(cmd, env=env, stdout=open(stdout or log, "w"),
                            stderr=open(log, "a") if stdout else subprocess.STDOUT, cwd=cwd)


def start_workers(tmp_path, name, count, command, *, cluster=True, cwd=None, stdout=None):
    """Starts ``command(i)`` for i < ``count``: the workers of one ``TF_CONFIG`` cluster on free 127.0.0.1 ports.

    ``cluster=False``: plain processes, no ``TF_CONFIG``. Worker i's stderr
    goes to ``<name>-w<i>.log`` with its stdout, or its stdout to
    ``stdout(i)`` when given. Returns ``(processes, logs)``.
    """
    ports = free_ports(count) if cluster else None
    procs, logs = [], []
    for i in range(count):
        logs.append(tmp_path / f"{name}-w{i}.log")
        procs.append(start(command(i), worker_env(tmp_path, ports, i), logs[-1], cwd=cwd,
                           stdout=stdout(i) if stdout else None))
    return procs, logs


def wait_all(procs, logs, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{log} (exit {p.returncode}):\n" + open(log).read()[-4000:]
