"""Benchmark: the cache builder's studies per second, one process vs every core.

Writes 20 generated CT phantom studies (DICOM, 256x256, 60-100 slices),
then builds the volume3d cache (224^3 float32 per study) twice into fresh
folders: ``workers=1`` (in this process) and ``workers=os.cpu_count()``
(spawned processes, which pay their start-up inside the timing). Reading,
preprocessing and writing the TFRecord shards are all timed. Prints JSON.

    python benchmarks/preprocess_dataset.py [--studies 20] [--pipeline volume3d]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

from covid_keras.data import synthetic
from covid_keras.data.datasets import covid_ct_md
from covid_keras.preprocess.cache import build_cache
from covid_keras.preprocess.pipelines import PipelineOptions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="studies to cache (default 20)")
    parser.add_argument("--pipeline", default="volume3d", choices=("volume3d", "ct_slices"),
                        help="pipeline to run (default volume3d)")
    parser.add_argument("--size", type=int, default=256, help="phantom rows = columns (default 256)")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.studies // 3)
        config = synthetic.CTPhantomConfig(patients_per_class=per_class, size=args.size,
                                           min_slices=60, max_slices=100, seed=0)
        synthetic.write_ct_dataset(os.path.join(tmp, "data"), config)
        records = covid_ct_md(os.path.join(tmp, "data"))[: args.studies]
        options = PipelineOptions(args.pipeline)
        results = {}
        for workers in (1, cores):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = build_cache(records, os.path.join(tmp, f"cache-{workers}"), options,
                                     workers=workers, progress=False)
            seconds = time.perf_counter() - t
            assert report.examples >= len(records) and not report.skipped
            results[workers] = seconds

    print(json.dumps({
        "benchmark": "preprocess_dataset",
        "pipeline": args.pipeline,
        "studies": len(records),
        "study": f"{args.size}x{args.size}, 60-100 slices, DICOM",
        "cores": cores,
        "one_process_s": round(results[1], 2),
        "one_process_studies_per_s": round(len(records) / results[1], 2),
        "all_cores_s": round(results[cores], 2),
        "all_cores_studies_per_s": round(len(records) / results[cores], 2),
        "speedup": round(results[1] / results[cores], 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
