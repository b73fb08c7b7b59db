"""Benchmark: read_ct_series on a generated 512x512x300 series vs a bare pydicom loop.

The baseline is the loop every tutorial writes (``dcmread`` + ``pixel_array``
per file, sort by position, stack, rescale) with none of the checks.
Both read the same files, after one untimed pass that warms the page cache.
Prints JSON.

    python benchmarks/read_ct_series.py [--slices 300] [--size 512] [--repeats 3]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import pydicom

from covid_keras.data import read_ct_series, synthetic


def bare_pydicom(folder):
    """The straightforward loop, no checks."""
    slices = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    vol = np.stack([ds.pixel_array for ds in slices]).astype(np.float32)
    return vol * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept)


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300, help="slices in the series (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "series")
        t = time.perf_counter()
        hu = np.empty((args.slices, args.size, args.size), np.float32)
        rng = np.random.default_rng(0)
        px = 380.0 / args.size
        coords = (np.arange(args.size) - (args.size - 1) / 2) * px
        xx, yy = np.meshgrid(coords, coords)
        geom = synthetic.PhantomGeometry()
        for k in range(args.slices):
            hu[k], _ = synthetic.phantom_slice((k + 0.5) / args.slices, [], xx, yy, geom, rng)
        synthetic.write_ct_series(hu, (1.0, px, px), folder, seed=0)
        generate_s = time.perf_counter() - t
        bare_pydicom(folder)  # warm the page cache

        bare_s, bare = _best(lambda: bare_pydicom(folder), args.repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_s, ct = _best(lambda: read_ct_series(folder), args.repeats)
        assert np.array_equal(ct.hu, bare), "read_ct_series and the bare loop disagree"

    print(json.dumps({
        "benchmark": "read_ct_series",
        "series": f"{args.size}x{args.size}x{args.slices} uncompressed, shuffled names",
        "cores": os.cpu_count(),
        "generate_s": round(generate_s, 2),
        "read_ct_series_s": round(ours_s, 3),
        "read_ct_series_slices_per_s": round(args.slices / ours_s, 1),
        "bare_pydicom_s": round(bare_s, 3),
        "bare_pydicom_slices_per_s": round(args.slices / bare_s, 1),
        "ratio_vs_bare": round(bare_s / ours_s, 2),
        "target_slices_per_s": 400,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
