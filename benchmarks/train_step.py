"""Benchmark: slice-level training steps with the full input pipeline vs a constant batch.

The multi-scale ResNet50 at 224 x 224 with paper 001's fused augmentation
inside the model, trained (a) from the ct_slices cache through
``training.pipelines.slice_dataset`` (TFRecord shards -> label lookup ->
cache -> shuffle -> RGB -> batch -> prefetch) and (b) on one constant
in-memory batch repeated. Same model, optimizer, steps and batch size; the
first steps of each are a warm-up. Prints JSON with images/s of both and
the pipeline's cost as a fraction of the step time (target: under 10 %).

    python benchmarks/train_step.py [--steps 6] [--batch-size 16] [--size 224]
    python benchmarks/train_step.py --batch-size 256 --steps 30 --mixed-precision --jit-compile   # on a GPU

On a GPU, ``--mixed-precision`` (Keras' ``mixed_float16`` policy) and
``--jit-compile`` (XLA) give the figures to set beside the published ResNet50
training throughput, which the JSON repeats as references (not measured
here): about 2,400 images/s on one A100 with mixed precision (NVIDIA's
TensorFlow ResNet50 reference) and about 7,000 per H100 (MLPerf Training).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings


def _device_name(tf):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--size", type=int, default=224, help="slice side in pixels")
    parser.add_argument("--mixed-precision", action="store_true", help="Keras' mixed_float16 policy")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the training step with XLA (Keras turns it off while the fused augmentation, "
                             "which has no XLA support, is in the model: use --no-augment; the JSON says "
                             "what ran)")
    parser.add_argument("--no-augment", action="store_true", help="leave paper 001's fused augmentation out")
    parser.add_argument("--patients-per-class", type=int, default=2,
                        help="phantom patients per class in the cache (more gives the pipeline more distinct slices)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from covid_keras.augment import RandomAffine
    from covid_keras.data import synthetic
    from covid_keras.data.datasets import covid_ct_md
    from covid_keras.models import multiscale_resnet50
    from covid_keras.preprocess.cache import build_cache
    from covid_keras.preprocess.pipelines import PipelineOptions
    from covid_keras.training import pipelines

    keras.utils.set_random_seed(0)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_ct_dataset(os.path.join(tmp, "data"),
                                   synthetic.CTPhantomConfig(patients_per_class=args.patients_per_class, size=256,
                                                             seed=0))
        recs = covid_ct_md(os.path.join(tmp, "data"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_cache(recs, os.path.join(tmp, "cache"), PipelineOptions("ct_slices", size=args.size),
                        classes=list(pipelines.CT_CLASSES), workers=1, progress=False)
        rows, classes = pipelines.manifest_rows(os.path.join(tmp, "cache"))
        selection = pipelines.select_slices(rows, {r.patient_id for r in rows}, classes)
        ds = pipelines.slice_dataset(os.path.join(tmp, "cache"), selection, training=True,
                                     batch_size=args.batch_size).repeat()

        model = multiscale_resnet50(input_shape=(args.size, args.size, 3), weights=None)
        inputs = keras.Input((args.size, args.size, 3))
        outputs = model(inputs if args.no_augment else RandomAffine(seed=0)(inputs))
        if args.mixed_precision:  # the loss on float32 probabilities, as Keras' mixed-precision guide advises
            outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
        trainer = keras.Model(inputs, outputs)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                        jit_compile=args.jit_compile)

        x, y = next(iter(ds))
        constant = tf.data.Dataset.from_tensors((x, y)).repeat()

        def timed(data):
            trainer.fit(data, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # warm-up: trace, caches
            start = time.perf_counter()
            trainer.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0, shuffle=False)
            return args.steps * args.batch_size / (time.perf_counter() - start)

        constant_ips = timed(constant)
        pipeline_ips = timed(ds)

    print(json.dumps({
        "benchmark": "train_step",
        "model": f"multiscale_resnet50 {args.size}x{args.size}, weights=None",
        "device": _device_name(tf),
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "augmentation_in_model": not args.no_augment,
        "jit_compile_requested": args.jit_compile,
        "jit_compile": bool(trainer.jit_compile),
        "steps": args.steps,
        "constant_batch_images_per_s": round(constant_ips, 2),
        "full_pipeline_images_per_s": round(pipeline_ips, 2),
        "pipeline_cost_fraction": round(max(0.0, 1 - pipeline_ips / constant_ips), 4),
        "target_cost_fraction_max": 0.10,
        "published_resnet50_reference_images_per_s": {
            "A100, mixed precision, NVIDIA TensorFlow reference": 2400,
            "H100, MLPerf Training (per accelerator)": 7000,
        },
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
