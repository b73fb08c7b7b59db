"""Training on several GPUs or machines with ``tf.distribute`` (``--strategy``), for every training command.

``--strategy`` picks TensorFlow's own engine; nothing here distributes
anything itself:

=================  ===========================================================
``default``        one device (TensorFlow's default strategy)
``mirrored``       ``tf.distribute.MirroredStrategy``: every GPU of this
                   machine (the CPU when it has none), one replica each
``multi-worker``   ``tf.distribute.MultiWorkerMirroredStrategy``: several
                   machines, each running the same command, configured by
                   the standard ``TF_CONFIG`` variable (cluster and task)
=================  ===========================================================

:func:`distributed` wraps a command's training function: it makes the
strategy and runs the whole command inside ``strategy.scope()``, so models,
optimizers and metrics are built under it. ``--batch-size`` stays the
global batch (split across the replicas) and the learning rate is the
recipe's, never rescaled for the replica count.

Under ``multi-worker`` every worker runs the whole command (TensorFlow's
collectives need each of them to call ``fit``, ``evaluate``, ``predict``
and the export in the same order); only the chief (worker 0) writes: the
other workers' run folders and exports go to a temporary folder that is
removed when the command ends (or, after a kill, by the next worker
started on that machine). A worker starts from a copy of the chief's
run folder (without TensorBoard logs), so a restarted cluster resumes
every worker from the chief's last finished epoch; the run folder must
therefore be on a filesystem every worker sees (one machine, or a shared
mount), as with TensorFlow's own ``BackupAndRestore``.

Training pipelines are split across workers by file
(``AutoShardPolicy.FILE``, each worker reads only its shards) when there
are at least as many shards as workers and they give every worker a
share of the same size (within 10 %), else by example (``DATA``);
evaluation and prediction pipelines always by example, which keeps their
outputs in order (:func:`shard_options`).
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile

from covid_keras import errors

#: The values of ``--strategy``.
STRATEGIES = ("default", "mirrored", "multi-worker")
#: What a worker does not copy from the chief's run folder.
NOT_COPIED = ("tensorboard", ".tmp-*", "*.tmp", "*.tmp.npz")  # logs, and files the chief is writing
#: A non-chief worker's scratch folder: ``<temp>/covid_keras-worker<index>-<pid>-<random>``.
SCRATCH_PREFIX = "covid_keras-worker"

_strategies = {}  # one strategy of each kind per process: MultiWorkerMirroredStrategy can be made only once
_active = []  # the sessions entered (a command calling another command's function shares its session)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a ``TF_CONFIG`` cluster."""

    workers: int  # tasks that train ("chief" + "worker")
    index: int  # this task's rank among them: 0 is the chief
    task: str  # e.g. "worker 1"

    @property
    def is_chief(self):
        return self.index == 0


def read_tf_config(environ=None):
    """The :class:`Cluster` described by ``TF_CONFIG``.

    Raises:
        ConfigurationError: the variable is missing, not JSON, or names no
            workers or a task outside the cluster.
    """
    environ = os.environ if environ is None else environ
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise errors.ConfigurationError(
            f"--strategy multi-worker needs the TF_CONFIG variable naming the cluster and this task, e.g. {example}"
        )
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], task["index"]
        if not isinstance(cluster, dict) or not isinstance(index, int) or isinstance(index, bool):
            raise TypeError("'cluster' must be an object and the task's 'index' an integer")
        for job, addresses in cluster.items():
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                raise TypeError(f"cluster {job!r} must be a list of \"host:port\" strings")
    except (ValueError, KeyError, TypeError) as e:
        raise errors.ConfigurationError(
            f"TF_CONFIG is not a cluster description ({type(e).__name__}: {e}); it should look like {example}"
        ) from None
    if kind not in ("chief", "worker"):
        raise errors.ConfigurationError(
            f"TF_CONFIG's task is {kind} {index}: --strategy multi-worker runs on \"chief\" and \"worker\" tasks "
            "only (no evaluator or parameter-server tasks)."
        )
    ranks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    ranks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    if not ranks:
        raise errors.ConfigurationError(f"TF_CONFIG's cluster lists no \"worker\" addresses; e.g. {example}")
    if (kind, index) not in ranks:
        raise errors.ConfigurationError(
            f"TF_CONFIG's task is {kind} {index}, which its cluster does not list "
            f"({len(cluster.get('worker', []))} workers, {len(cluster.get('chief', []))} chief)."
        )
    return Cluster(workers=len(ranks), index=ranks.index((kind, index)), task=f"{kind} {index}")


def make_strategy(name):
    """The ``tf.distribute`` strategy of ``--strategy name`` (made once per process)."""
    if name not in STRATEGIES:
        raise errors.ConfigurationError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name not in _strategies:
        import tensorflow as tf

        if name == "default":
            _strategies[name] = tf.distribute.get_strategy()
        elif name == "mirrored":
            _strategies[name] = tf.distribute.MirroredStrategy()
        else:
            read_tf_config()  # a clear sentence before TensorFlow's own parsing
            _strategies[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _strategies[name]


def num_workers(strategy=None):
    """How many workers share the training: 1 except under ``MultiWorkerMirroredStrategy``."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


#: How much more one worker may get than another for a training pipeline to be split by file.
FILE_SHARD_BALANCE = 1.1


def shard_options(per_file, training):
    """``tf.data.Options`` splitting a pipeline across workers, or None with one worker.

    ``per_file``: how many selected examples each file read holds, in the
    order read. TensorFlow's ``FILE`` policy gives worker ``w`` files
    ``w, w + n, ...`` and each worker then cycles through its own examples,
    so a training pipeline is split by file only where that is fair: at
    least one file per worker and no worker's share more than
    :data:`FILE_SHARD_BALANCE` times another's; else, and for evaluation
    and prediction (whose gathered outputs must stay in order), by example
    (``DATA``: every worker reads every file and keeps its part of each batch).
    """
    workers = num_workers()
    if workers <= 1:
        return None
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    shares = [sum(per_file[w::workers]) for w in range(workers)]
    by_file = training and len(per_file) >= workers and min(shares) > 0 and \
        max(shares) <= FILE_SHARD_BALANCE * min(shares)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.FILE if by_file else policy.DATA
    return options


@dataclasses.dataclass
class Session:
    """One command's training under a strategy (see :func:`distributed`)."""

    name: str
    strategy: object
    cluster: Cluster
    scratch: str = None  # a non-chief worker's temporary folder (removed at the end)
    copies: dict = dataclasses.field(default_factory=dict)  # chief's run folder -> this worker's copy
    _scope: object = dataclasses.field(default=None, repr=False)  # the entered strategy.scope()

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def describe(self):
        line = f"strategy {self.name}: {self.replicas} replica{'s' * (self.replicas != 1)} in sync"
        if self.name == "multi-worker":
            role = "the chief" if self.cluster.is_chief else "not the chief: writes to a temporary folder"
            line += f", {self.cluster.task} of {self.cluster.workers} workers ({role})"
        return line

    def run_path(self, path, fresh=False):
        """Where this worker keeps the run folder ``path``: itself on the chief; a copy in its scratch otherwise."""
        if self.scratch is None:
            return path
        key = os.path.abspath(path)
        if key not in self.copies:  # copied once, when first opened: later the copy holds this worker's progress
            mine = os.path.join(self.scratch, "runs", str(len(self.copies)))
            if os.path.isdir(path) and not fresh:
                _copy_run(path, mine)
            self.copies[key] = mine
        return self.copies[key]

    def enter_scope(self):
        if self.strategy is not None:
            self._scope = self.strategy.scope()
            self._scope.__enter__()

    def exit_scope(self):
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.__exit__(None, None, None)

    def config_for_worker(self, config):
        """``config`` with a non-chief worker's export in its scratch folder."""
        if self.scratch is None or not getattr(config, "export_dir", None):
            return config
        return dataclasses.replace(config, export_dir=os.path.join(self.scratch, "export"))


def _copy_run(path, mine, attempts=5):
    """Copies the chief's run folder; again when a file vanished meanwhile (the chief renaming its writes).

    The chief rewrites some files when it starts (``records.json``, with a
    temporary name and a rename); nothing it writes later can change what a
    worker resumes from, as every epoch it finishes needs this worker.
    """
    import time

    for attempt in range(attempts):
        shutil.rmtree(mine, ignore_errors=True)
        try:
            shutil.copytree(path, mine, ignore=shutil.ignore_patterns(*NOT_COPIED))
            return
        except (shutil.Error, FileNotFoundError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


def sweep_scratch(root=None):
    """Removes the scratch folders of workers that were killed (their process is gone); returns their paths.

    A worker's scratch folder is removed when its command ends; one that
    was killed (``SIGKILL``, a lost machine) cannot, so the next worker on
    the machine does it.
    """
    root = root or tempfile.gettempdir()
    removed = []
    for name in os.listdir(root):
        parts = name[len(SCRATCH_PREFIX):].split("-") if name.startswith(SCRATCH_PREFIX) else []
        if len(parts) != 3 or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        if not os.path.exists(os.path.join(root, name)):
            removed.append(os.path.join(root, name))
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_onednn(strategy, log):
    """A warning when oneDNN's CPU kernels may meet an empty per-replica batch (see cli.quiet_tensorflow)."""
    import tensorflow as tf

    if (strategy.num_replicas_in_sync > 1 and not tf.config.list_logical_devices("GPU")
            and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"):
        log("warning: TensorFlow's oneDNN CPU convolution fails on the empty batch a replica gets when a last "
            "batch is shorter than the replica count; start with TF_ENABLE_ONEDNN_OPTS=0 (the train.* commands "
            "set it under --strategy on a machine without an NVIDIA GPU).")


def current():
    """The :class:`Session` being run, or None outside :func:`distributed`."""
    return _active[-1] if _active else None


def run_path(path, fresh=False):
    """The folder this process keeps run ``path`` in (:meth:`Session.run_path`; ``path`` outside a session)."""
    session = current()
    return session.run_path(path, fresh) if session is not None else path


@contextlib.contextmanager
def session(config, log=print, strategy_here=True):
    """Runs the body under ``config.strategy``'s scope; yields the config this worker runs (see module doc).

    ``strategy_here=False``: this process only keeps the worker's folders
    (scratch, run copy, export) and makes no strategy; the processes it
    starts for the training each open a session of their own
    (``train.volume3d``'s folds: a ``MultiWorkerMirroredStrategy`` binds
    ``TF_CONFIG``'s port, so only one process per worker may hold it).
    """
    if _active:  # one command inside another: already distributed
        yield _active[-1].config_for_worker(config)
        return
    name = getattr(config, "strategy", "default") or "default"
    strategy = make_strategy(name) if strategy_here else None
    cluster = read_tf_config() if name == "multi-worker" else Cluster(1, 0, "worker 0")
    from covid_keras.training import multiworker_fix

    scratch = None
    if not cluster.is_chief:
        sweep_scratch()
        scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{cluster.index}-{os.getpid()}-")
        os.makedirs(os.path.join(scratch, "runs"))
    current_session = Session(name, strategy, cluster, scratch)
    if name != "default" and strategy is not None:
        log(current_session.describe())
        _check_onednn(strategy, log)
    _active.append(current_session)
    try:
        with multiworker_fix.installed() if name == "multi-worker" and strategy else contextlib.nullcontext():
            current_session.enter_scope()
            try:
                yield current_session.config_for_worker(config)
            finally:
                current_session.exit_scope()
    finally:
        _active.pop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def clear_session():
    """``keras.utils.clear_session()`` that keeps the command's strategy scope.

    Keras' ``clear_session`` resets TensorFlow's default graph, which holds
    the stack of entered strategy scopes: inside ``strategy.scope()`` it
    drops the scope (later models are built without it, and leaving the
    scope fails). Here the scope is left first and entered again after.
    """
    import keras

    session = current()
    if session is None or session._scope is None:
        keras.utils.clear_session()
        return
    session.exit_scope()
    keras.utils.clear_session()
    session.enter_scope()


def distributed(train=None, *, strategy_here=True):
    """Decorates a command's training function ``train(config, ...)`` to run it in :func:`session`.

    ``@distributed(strategy_here=False)``: for a function whose training
    runs in processes it starts (see :func:`session`).
    """
    def decorate(train):
        @functools.wraps(train)
        def wrapper(config, *args, **kwargs):
            from covid_keras.training.fitting import printer

            log = kwargs.get("log") or next((a for a in args[:1] if callable(a)), None) \
                or printer(getattr(config, "quiet", False))
            with session(config, log, strategy_here=strategy_here) as worker_config:
                return train(worker_config, *args, **kwargs)
        return wrapper
    return decorate(train) if train is not None else decorate
