"""Benchmark: paper 000's 3-D training steps with the full input pipeline vs a constant batch.

``resnet50_3d`` (weights=None) on ``--size``^3 volumes, trained (a) from a
volume3d cache of phantom CT studies (DICOM series -> ``build_cache`` with
the CAP / Normal augmented copies -> ``training.pipelines.volume_dataset``:
the selected shards -> label lookup -> shuffle -> uint8 / 255 -> batch ->
prefetch) and (b) on one constant in-memory batch repeated. Same model,
optimizer (Adam), loss (sparse categorical cross-entropy), steps and batch
size; the first steps of each fit are a warm-up, and ``--rounds`` rounds
alternate the two variants (their medians count). Both feed the model
float32 [batch, size, size, size, 1] with the same element spec: the
selection is trimmed to a multiple of the batch size, so the pipeline never
yields a short batch. Prints JSON with
volumes/s of both, the pipeline's cost as a fraction of the step time
(target: under 10 %), peak host memory, the RSS growth over the pipeline's
timed steps, peak GPU memory (null on a CPU) and the load average before
and after (another job on the machine slows both variants; the ratio of
the two, measured in the same run, is what counts).

    python benchmarks/train_step_3d.py --size 48 --depth 18 --batch-size 2 --steps 10       # CPU, a few minutes
    python benchmarks/train_step_3d.py --size 224 --depth 50 --batch-size 8 --steps 20 \\
        --mixed-precision --jit-compile --patients-per-class 4                             # on a GPU

``--mixed-precision`` (Keras' ``mixed_float16``; the model's
``probabilities`` layer stays float32) and ``--jit-compile`` (XLA) are for
GPUs: on a CPU they run, but float16 has no hardware support there, so the
JSON's note says the figures only show that it runs.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

#: Training steps of each variant before the timed ones (tracing, XLA compilation, caches).
WARMUP_STEPS = 2
#: In-plane side of the phantom CT slices (the phantom preset's, runner.load_records).
PHANTOM_SIZE = 128


def _device_name(tf):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def _vm_rss_mb():
    """This process's resident set size now (``VmRSS`` of /proc/self/status), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _peak_rss_mb():
    """This process's peak resident set size so far (``ru_maxrss``, KB on Linux), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def _gpu_peak_mb(tf, reset=False):
    """Peak GPU memory since the last reset, in MB (None without a GPU); optionally resets it."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
    return round(peak, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="side of the cubic volumes (the CPU run: e.g. 48)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50), help="ResNet depth")
    parser.add_argument("--batch-size", type=int, default=2, help="volumes per step")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of both variants (warm-up + --steps each); the medians count")
    parser.add_argument("--mixed-precision", action="store_true", help="Keras' mixed_float16 policy")
    parser.add_argument("--jit-compile", action="store_true", help="compile the training step with XLA")
    parser.add_argument("--patients-per-class", type=int, default=2,
                        help="phantom patients per class (x7 volumes with the CAP / Normal copies: more gives "
                             "the pipeline more distinct volumes per epoch)")
    args = parser.parse_args(argv)
    load_before = _loadavg()

    import keras
    import tensorflow as tf

    from covid_keras.data import synthetic
    from covid_keras.data.datasets import covid_ct_md
    from covid_keras.models.resnet3d import resnet50_3d
    from covid_keras.preprocess.cache import build_cache
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import pipelines

    keras.utils.set_random_seed(0)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_ct_dataset(os.path.join(tmp, "data"),
                                   synthetic.CTPhantomConfig(patients_per_class=args.patients_per_class,
                                                             size=PHANTOM_SIZE, seed=0))
        recs = covid_ct_md(os.path.join(tmp, "data"))
        cache = os.path.join(tmp, "cache")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_cache(recs, cache, PipelineOptions("volume3d", size=args.size, augment_minority=True),
                        classes=list(pipelines.CT_CLASSES), workers=1, progress=False)
        cache_seconds = time.perf_counter() - t0
        rows, classes = pipelines.volume_rows(cache)
        selection = pipelines.select_volumes(rows, {r.patient_id for r in rows}, classes, augmented=True)
        usable = len(selection) // args.batch_size * args.batch_size
        if not usable:
            parser.error(f"{len(selection)} volumes cannot fill one batch of {args.batch_size}: "
                         "raise --patients-per-class")
        # Full batches only, so both variants feed the model the same shape.
        selection = {k: selection[k] for k in sorted(selection)[:usable]}
        ds = pipelines.volume_dataset(cache, selection, rows, training=True, batch_size=args.batch_size,
                                      seed=0).repeat()

        model = resnet50_3d(input_shape=(args.size,) * 3 + (1,), depth=args.depth, weights=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                      jit_compile=args.jit_compile)

        x, y = next(iter(ds))
        expected = (args.batch_size, args.size, args.size, args.size, 1)
        if tuple(x.shape) != expected or x.dtype != tf.float32:
            raise AssertionError(f"the pipeline yields {x.dtype.name} {tuple(x.shape)}, not float32 {expected}")
        # That batch, held in memory, with the pipeline's element spec (batch dimension None) as well,
        # so both variants run the same traced step.
        constant = tf.data.Dataset.from_tensors((x, y)).unbatch().batch(args.batch_size).cache().repeat()
        if constant.element_spec != ds.element_spec:
            raise AssertionError(f"element specs differ: {constant.element_spec} vs {ds.element_spec}")

        class StepClock(keras.callbacks.Callback):
            """Times the steps after the warm-up inside one fit (one iterator: its start-up is warm-up too).

            A custom ``on_train_batch_end`` makes Keras wait for each step's
            loss, so the clock reads finished steps (on a GPU as well).
            """

            def on_train_batch_end(self, batch, logs=None):
                if batch == WARMUP_STEPS - 1:
                    self.rss_before, self.start = _vm_rss_mb(), time.perf_counter()
                elif batch == WARMUP_STEPS + args.steps - 1:
                    self.seconds, self.rss_after = time.perf_counter() - self.start, _vm_rss_mb()

        results = {"constant": [], "pipeline": []}
        gpu_peaks = {"constant": None, "pipeline": None}
        error = None
        try:
            for _ in range(args.rounds):  # alternating, so a change in the machine's load hits both alike
                for name, data in (("constant", constant), ("pipeline", ds)):
                    _gpu_peak_mb(tf, reset=True)
                    clock = StepClock()
                    model.fit(data, steps_per_epoch=WARMUP_STEPS + args.steps, epochs=1, verbose=0,
                              shuffle=False, callbacks=[clock])
                    results[name].append(clock)
                    peak = _gpu_peak_mb(tf)
                    if peak is not None:
                        gpu_peaks[name] = max(peak, gpu_peaks[name] or 0.0)
        except tf.errors.OpError as e:  # e.g. a kernel missing for float16 on a CPU: reported, not faked
            error = f"{type(e).__name__}: {e.message.splitlines()[0]}"

    def rates(name):
        return [args.steps * args.batch_size / c.seconds for c in results[name]]

    def rounded(value, digits):
        return None if value is None else round(value, digits)

    measured = len(results["pipeline"]) == args.rounds
    constant_vps = statistics.median(rates("constant")) if measured else None
    pipeline_vps = statistics.median(rates("pipeline")) if measured else None
    raw_fraction = 1 - pipeline_vps / constant_vps if measured else None
    piped = results["pipeline"]
    notes = []
    on_cpu = not tf.config.list_physical_devices("GPU")
    if error:
        notes.append("no figures: training failed (see error)")
        if args.mixed_precision and on_cpu and not model.jit_compile:
            notes.append("TensorFlow has no float16 CPU kernel for some of the model's ops (MaxPool3D): "
                         "--mixed-precision needs a GPU, or --jit-compile (XLA) on a CPU")
    if args.mixed_precision and on_cpu and measured:
        notes.append("mixed_float16 on a CPU: no float16 hardware support there, so these figures only show "
                     "that it runs; measure it on a GPU")
    print(json.dumps({
        "benchmark": "train_step_3d",
        "model": f"resnet{args.depth}_3d {args.size}^3 x 1, weights=None, Adam, sparse_categorical_crossentropy",
        "device": _device_name(tf),
        "arguments": vars(args),
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "jit_compile_requested": args.jit_compile,
        "jit_compile": bool(model.jit_compile),
        "steps": args.steps,
        "warmup_steps": WARMUP_STEPS,
        "input": {"shape": list(expected), "dtype": "float32"},
        "cache": {"studies": len(recs), "volumes": len(rows), "volumes_per_epoch": len(selection),
                  "build_seconds": round(cache_seconds, 1)},
        "rounds": args.rounds,
        "constant_batch_volumes_per_s": rounded(constant_vps, 3),
        "full_pipeline_volumes_per_s": rounded(pipeline_vps, 3),
        "volumes_per_s_by_round": {"constant": [round(v, 3) for v in rates("constant")],
                                   "pipeline": [round(v, 3) for v in rates("pipeline")]},
        "pipeline_cost_fraction": None if raw_fraction is None else round(max(0.0, raw_fraction), 4),
        "pipeline_cost_fraction_raw": rounded(raw_fraction, 4),
        "target_cost_fraction_max": 0.10,
        "host_memory_mb": {
            "peak_rss": round(_peak_rss_mb(), 1),
            "rss_before_pipeline_steps": round(piped[0].rss_before, 1) if piped else None,
            "rss_after_pipeline_steps": round(piped[-1].rss_after, 1) if piped else None,
            # from the first round's first timed step to the last round's last one (warm-ups between included)
            "rss_growth_pipeline_steps": round(piped[-1].rss_after - piped[0].rss_before, 1) if piped else None,
            "rss_growth_pipeline_steps_by_round": [round(c.rss_after - c.rss_before, 1) for c in piped],
        },
        "gpu_peak_memory_mb": None if gpu_peaks["pipeline"] is None else max(gpu_peaks.values()),
        "gpu_peak_memory_mb_by_variant": None if gpu_peaks["pipeline"] is None else gpu_peaks,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "error": error,
        "notes": notes,
    }, indent=2))
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
