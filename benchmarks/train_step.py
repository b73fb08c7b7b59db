"""Benchmark: a recipe's 2-D training steps with the full input pipeline vs a constant batch.

One recipe's model (``--recipe``, weights=None, at ``--size``: default the
recipe's image size) behind the recipe's augmentation inside the model (the
fused ``RandomAffine``, and ``SaltAndPepper`` where the recipe has
``salt_pepper``), trained (a) from a phantom cache through the recipe's
``training.pipelines`` dataset and (b) on one constant in-memory batch
repeated. Same model, optimizer (Adam 1e-4), loss, steps and batch size;
the first steps of each fit are a warm-up, and ``--rounds`` rounds
alternate the two variants (their medians count). The pipelines:

* ``multiscale_resnet50`` (paper 001, the default): phantom CT studies ->
  ct_slices cache -> ``slice_dataset`` (TFRecord shards -> label lookup ->
  cache -> shuffle -> RGB -> batch -> prefetch);
* the X-ray / CT-image recipes of papers 002-004 (``densenet``,
  ``new_densenet``, ``inceptionv3``, ``detl_cnn``, ``xray_cnn``): phantom
  images of the classes the built model trains on -> xray cache (uint8
  grey) -> ``image_dataset`` (the same steps, grey to RGB after the
  shuffle).

Both feed the model the same element spec, and the selection is trimmed to
full batches. Prints JSON with images/s of both, ``pipeline_cost`` =
1 - pipeline / constant (target: under 10 %; negative: noise), on a CPU
the same per CPU-second of the process (``pipeline_cpu_cost``: what the
pipeline takes from training on busy cores, steadier while other jobs
share them) and the load average before and after.
``resnet50_3d`` has its own script, benchmarks/train_step_3d.py.

    python benchmarks/train_step.py [--steps 6] [--batch-size 16] [--size 224]
    python benchmarks/train_step.py --recipe xray_cnn --steps 200 --batch-size 32
    python benchmarks/train_step.py --recipe densenet --size 224 --steps 4 --batch-size 8
    python benchmarks/train_step.py --batch-size 256 --steps 30 --mixed-precision --jit-compile   # on a GPU
    python benchmarks/train_step.py --strategy mirrored --batch-size 512 --steps 30 --mixed-precision  # every GPU
    python benchmarks/train_step.py --recipe xray_cnn --strategy mirrored --logical-cpus 2   # CPU smoke test

``--strategy mirrored`` trains under ``tf.distribute.MirroredStrategy`` (the
training commands' ``--strategy mirrored``): ``--batch-size`` is the global
batch, split across the replicas, and the JSON adds the replica count and
images/s per device. ``--logical-cpus`` splits the CPU into that many
logical devices (a check of the mechanics without GPUs, not a speed
figure). Multi-worker runs need a cluster; time them with the training
commands' own logs.

On a GPU, ``--mixed-precision`` (Keras' ``mixed_float16`` policy) and
``--jit-compile`` (XLA) give the figures to set beside the published ResNet50
training throughput, which the JSON of ``multiscale_resnet50`` repeats as
references (not measured here): about 2,400 images/s on one A100 with mixed
precision (NVIDIA's TensorFlow ResNet50 reference) and about 7,000 per H100
(MLPerf Training).
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

from covid_keras import recipes

#: Training steps of each fit before the timed ones (tracing, the iterator's start-up, caches).
WARMUP_STEPS = 2
#: The pipeline's cost the benchmark is held to, as a fraction of the constant batch's rate.
TARGET_COST = 0.10
#: The classes the recipe's built model trains on, where they are not the recipe's class list:
#: xray_cnn builds one step of its two-step classifier (step 1 here) and detl_cnn phase 1's
#: Data-A model (train.detl extends it to detl_b's classes later).
TRAINED_CLASSES = {"xray_cnn": "xraycnn_step1", "detl_cnn": "detl_a"}
RESNET50_REFERENCES = {
    "A100, mixed precision, NVIDIA TensorFlow reference": 2400,
    "H100, MLPerf Training (per accelerator)": 7000,
}


def _device_name(tf):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def _loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="multiscale_resnet50", choices=tuple(recipes.RECIPES),
                        help="the recipe whose model and input pipeline are timed (a 2-D one)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant and round")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the recipe's)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of both variants (warm-up + --steps each); the medians count")
    parser.add_argument("--mixed-precision", action="store_true", help="Keras' mixed_float16 policy")
    parser.add_argument("--strategy", default="default", choices=("default", "mirrored"),
                        help="tf.distribute strategy: default (one device) or mirrored (every GPU; --batch-size "
                             "is the global batch)")
    parser.add_argument("--logical-cpus", type=int, default=0,
                        help="split the CPU into this many logical devices first (to try --strategy mirrored "
                             "without GPUs)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the training step with XLA (Keras turns it off while the fused augmentation, "
                             "which has no XLA support, is in the model: use --no-augment; the JSON says "
                             "what ran)")
    parser.add_argument("--no-augment", action="store_true",
                        help="leave the recipe's augmentation (RandomAffine, salt-and-pepper) out of the model")
    parser.add_argument("--patients-per-class", type=int, default=2,
                        help="multiscale_resnet50: phantom CT patients per class in the cache")
    parser.add_argument("--images-per-class", type=int, default=32,
                        help="image recipes: phantom images per pathology in the cache")
    return parser


def _config(recipe, args, parser):
    """The recipe's config at ``--size``; refuses recipes that do not train on 2-D images."""
    config = recipes.config_class(recipe, "BenchmarkConfig")()
    kind = recipe.pipeline(config)["pipeline"]
    if kind == "volume3d":
        parser.error(f"--recipe {recipe.name} trains on 3-D volumes: benchmark it with benchmarks/train_step_3d.py")
    shape = recipe.input_shape(config)
    if kind not in ("ct_slices", "xray") or len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        parser.error(f"--recipe {recipe.name} does not train on 2-D images (input {shape}); this benchmark times "
                     "multiscale_resnet50, densenet, new_densenet, inceptionv3, detl_cnn and xray_cnn")
    return dataclasses.replace(config, image_size=args.size or config.image_size)


def _cache(records, dataset, options, classes, tmp):
    """Builds the preprocessing cache of ``records`` under ``tmp``; returns its folder."""
    from covid_keras.training import pipelines

    with warnings.catch_warnings():  # the phantoms' "no patient ids" and similar warnings are about real data
        warnings.simplefilter("ignore")
        return pipelines.ensure_cache(records, dataset, options, classes, root=tmp, workers=1, progress=False)


def _full_batches(selection, batch_size):
    """The first selected ids filling whole batches, so the pipeline yields no short batch.

    Raises:
        ConfigurationError: the selection cannot fill one batch.
    """
    from covid_keras import errors

    usable = len(selection) // batch_size * batch_size
    if not usable:
        raise errors.ConfigurationError(
            f"{len(selection)} cached images cannot fill one batch of {batch_size}: raise --images-per-class "
            "(or --patients-per-class)."
        )
    return {k: selection[k] for k in sorted(selection)[:usable]}


def _slice_data(recipe, config, args, tmp):
    """Paper 001: phantom CT studies -> ct_slices cache -> ``slice_dataset``; ``(dataset, classes, images)``."""
    from covid_keras.data import synthetic
    from covid_keras.data.datasets import covid_ct_md
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import pipelines

    synthetic.write_ct_dataset(os.path.join(tmp, "data"),
                               synthetic.CTPhantomConfig(patients_per_class=args.patients_per_class, size=256,
                                                         seed=0))
    recs = covid_ct_md(os.path.join(tmp, "data"))
    folder = _cache(recs, "synthetic-ct", PipelineOptions(**recipe.pipeline(config)), pipelines.CT_CLASSES, tmp)
    rows, classes = pipelines.manifest_rows(folder)
    selection = _full_batches(pipelines.select_slices(rows, {r.patient_id for r in rows}, classes), args.batch_size)
    ds = pipelines.slice_dataset(folder, selection, training=True, batch_size=args.batch_size, seed=0)
    return ds, classes, len(selection)


def _image_data(recipe, config, args, tmp):
    """Papers 002-004: phantom images -> xray cache -> ``image_dataset``; ``(dataset, classes, images)``."""
    from covid_keras.data.datasets import CLASS_NAMES
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import image_level, pipelines

    task = TRAINED_CLASSES.get(recipe.name, recipe.class_key(config))
    dataset, recs = image_level.phantom_records(task, args.images_per_class)
    folder = _cache(recs, dataset, PipelineOptions(**recipe.pipeline(config)), CLASS_NAMES[task], tmp)
    rows, classes, shape = pipelines.image_rows(folder)
    selection = _full_batches(pipelines.select_images(rows, {r.patient_id for r in rows}, classes), args.batch_size)
    ds = pipelines.image_dataset(folder, selection, training=True, batch_size=args.batch_size, seed=0, shape=shape)
    return ds, classes, len(selection)


def _trainer(recipe, config, args, classes):
    """The recipe's model (weights=None) behind its augmenting layers, compiled.

    Raises:
        ConfigurationError: the model's outputs are not one per class.
    """
    import keras

    from covid_keras import errors
    from covid_keras.training import image_level

    no_weights = {"weights": None} if "weights" in recipe.builder_args(config) else {}
    model = recipe.build(config, **no_weights)
    if model.output_shape[-1] != len(classes):
        raise errors.ConfigurationError(
            f"--recipe {recipe.name} builds {model.output_shape[-1]} outputs for {len(classes)} phantom classes; "
            "add the classes its model trains on to TRAINED_CLASSES."
        )
    affine = {} if args.no_augment else recipe.augmentation(config)
    trainer = image_level.augmenting_model(model, recipe.input_shape(config), 0, affine, _salt_pepper(config, args))
    if args.mixed_precision:  # the loss on float32 probabilities, as Keras' mixed-precision guide advises
        trainer = keras.Model(trainer.inputs, keras.layers.Activation("linear", dtype="float32")(trainer.outputs[0]))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                    jit_compile=args.jit_compile)
    return trainer


def _salt_pepper(config, args):
    return 0.0 if args.no_augment else float(getattr(config, "salt_pepper", 0.0))


def _constant_like(ds, tf):
    """The pipeline's first batch, held in memory and repeated, with the pipeline's element spec.

    The same spec (batch dimension None) makes both variants run the same
    traced training step.
    """
    x, y = next(iter(ds))
    constant = tf.data.Dataset.from_tensors((x, y)).unbatch().batch(int(x.shape[0])).cache().repeat()
    if constant.element_spec != ds.element_spec:
        raise AssertionError(f"element specs differ: {constant.element_spec} vs {ds.element_spec}")
    return constant


def _step_clock(keras, steps):
    """A callback timing the ``steps`` steps after the warm-up within one fit (``seconds``, ``cpu_seconds``).

    A custom ``on_train_batch_end`` makes Keras wait for each step's loss,
    so the clock reads finished steps (on a GPU as well).
    """

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == WARMUP_STEPS - 1:
                self.start, self.cpu_start = time.perf_counter(), time.process_time()
            elif batch == WARMUP_STEPS + steps - 1:
                self.seconds = time.perf_counter() - self.start
                self.cpu_seconds = time.process_time() - self.cpu_start

    return StepClock()


def _measure(keras, trainer, variants, args):
    """``{variant: [clock of each round]}``, the variants alternating so that a change of load hits all alike."""
    clocks = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, data in variants.items():
            clock = _step_clock(keras, args.steps)
            trainer.fit(data, steps_per_epoch=WARMUP_STEPS + args.steps, epochs=1, verbose=0, shuffle=False,
                        callbacks=[clock])
            clocks[name].append(clock)
    return clocks


def _rates(clocks, images, field):
    """Images per second of ``field`` (``seconds``: wall clock; ``cpu_seconds``: this process's CPU time)."""
    return {name: [images / getattr(c, field) for c in runs] for name, runs in clocks.items()}


def _cost(rates):
    """``(constant median, pipeline median, 1 - pipeline / constant)``."""
    constant, pipeline = (statistics.median(rates[k]) for k in ("constant", "pipeline"))
    return constant, pipeline, 1 - pipeline / constant


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    load_before = _loadavg()
    recipe = recipes.get(args.recipe)
    config = _config(recipe, args, parser)

    import keras
    import tensorflow as tf

    from covid_keras.training import distribute

    if args.logical_cpus:  # before TensorFlow makes its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    strategy = distribute.make_strategy(args.strategy)
    keras.utils.set_random_seed(0)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    source = _slice_data if recipe.pipeline(config)["pipeline"] == "ct_slices" else _image_data
    with tempfile.TemporaryDirectory() as tmp:
        ds, classes, images = source(recipe, config, args, tmp)
        with strategy.scope():  # model, optimizer and metrics under the strategy, as the training commands do
            trainer = _trainer(recipe, config, args, classes)
        clocks = _measure(keras, trainer, {"constant": _constant_like(ds, tf), "pipeline": ds.repeat()}, args)

    report = _report(recipe, config, args, trainer, classes, images, clocks, _device_name(tf), load_before)
    report.update(strategy=args.strategy, replicas=strategy.num_replicas_in_sync,
                  logical_cpus=args.logical_cpus or None,
                  full_pipeline_images_per_s_per_device=round(report["full_pipeline_images_per_s"]
                                                              / strategy.num_replicas_in_sync, 2))
    print(json.dumps(report, indent=2))
    return 0


def _report(recipe, config, args, trainer, classes, images, clocks, device, load_before):
    """The JSON the benchmark prints: what ran, both variants' rates, the pipeline's cost."""
    rates = _rates(clocks, args.steps * args.batch_size, "seconds")
    constant_ips, pipeline_ips, cost = _cost(rates)
    on_cpu = device.startswith("CPU")
    cpu_constant, cpu_pipeline, cpu_cost = _cost(_rates(clocks, args.steps * args.batch_size, "cpu_seconds"))
    out = {
        "benchmark": "train_step",
        "recipe": recipe.name,
        "model": f"{recipe.builder_name} {config.image_size}x{config.image_size}, weights=None, Adam 1e-4",
        "device": device,
        "size": config.image_size,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "augmentation_in_model": not args.no_augment and bool(recipe.augmentation(config)),
        "salt_pepper": _salt_pepper(config, args),
        "jit_compile_requested": args.jit_compile,
        "jit_compile": bool(trainer.jit_compile),
        "steps": args.steps,
        "warmup_steps": WARMUP_STEPS,
        "rounds": args.rounds,
        "classes": classes,
        "cached_images_per_epoch": images,
        "constant_batch_images_per_s": round(constant_ips, 2),
        "full_pipeline_images_per_s": round(pipeline_ips, 2),
        "images_per_s_by_round": {k: [round(v, 2) for v in rates[k]] for k in rates},
        "pipeline_cost": round(cost, 4),
        "pipeline_cost_fraction": round(max(0.0, cost), 4),
        "target_cost_fraction_max": TARGET_COST,
        # On a CPU, the same per CPU-second of this process (every thread): what the pipeline takes from
        # training when the cores are the limit, steadier than the wall clock while other jobs share them.
        "images_per_cpu_s": {"constant": round(cpu_constant, 2), "pipeline": round(cpu_pipeline, 2)} if on_cpu
        else None,
        "pipeline_cpu_cost": round(cpu_cost, 4) if on_cpu else None,
        # another job on the machine slows both variants; their ratio, measured in the same run, is what counts
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }
    if recipe.name == "multiscale_resnet50":
        out["published_resnet50_reference_images_per_s"] = RESNET50_REFERENCES
    return out


if __name__ == "__main__":
    sys.exit(main())
