"""Benchmark: paper 001's augmentation, one fused warp vs six stock Keras layers.

Times ``covid_keras.augment.paper001_augmentation`` (``RandomAffine``: one
``ImageProjectiveTransformV3`` per batch, then brightness) against
``separate_layers_augmentation`` (``RandomRotation``, ``RandomTranslation``,
``RandomZoom``, ``RandomShear``, ``RandomBrightness``, ``RandomFlip``: four
resamplings per batch) on the same float32 batches of raw pixels, in training
mode, in the same process. Both run inside ``tf.function`` so the graph-mode
cost (what ``fit`` and ``tf.data`` pay) is compared, not Python overhead.
Each is warmed up (tracing included), then timed ``--repeats`` times over
``--batches`` batches; the best run counts. Runs on the default device (the
GPU when TensorFlow sees one). Prints JSON.

    python benchmarks/augmentation.py [--size 224] [--batch 64] [--batches 5] [--repeats 5]
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

from covid_keras.augment import paper001_augmentation, separate_layers_augmentation


def _images_per_s(fn, batches, repeats):
    for x in batches[:2]:
        fn(x).numpy()  # warm-up: trace, allocate
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for x in batches:
            out = fn(x)
        out.numpy()
        best = min(best, time.perf_counter() - t)
    return sum(int(x.shape[0]) for x in batches) / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image rows = columns (default 224)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--batches", type=int, default=5, help="batches per timed run (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, best counts (default 5)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
               for _ in range(args.batches)]
    fused = paper001_augmentation(seed=0)
    separate = separate_layers_augmentation(seed=0, image_size=(args.size, args.size))
    fused_fn = tf.function(lambda x: fused(x, training=True))
    separate_fn = tf.function(lambda x: separate(x, training=True))

    fused_rate = _images_per_s(fused_fn, batches, args.repeats)
    separate_rate = _images_per_s(separate_fn, batches, args.repeats)
    gpus = tf.config.list_physical_devices("GPU")
    print(json.dumps({
        "benchmark": "augmentation",
        "images": f"{args.batch}x{args.size}x{args.size}x3 float32, training=True, tf.function",
        "device": "GPU" if gpus else f"CPU ({os.cpu_count()} cores)",
        "batches_per_run": args.batches,
        "repeats": args.repeats,
        "fused_random_affine_images_per_s": round(fused_rate, 1),
        "six_keras_layers_images_per_s": round(separate_rate, 1),
        "speedup": round(fused_rate / separate_rate, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
