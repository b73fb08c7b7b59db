"""Cache a dataset through one paper's preprocessing pipeline as TFRecord shards.

    python -m covid_keras.preprocess --pipeline volume3d --out cache/volume3d
    python -m covid_keras.preprocess --dataset covid-ct-md --data /data/COVID-CT-MD \\
        --pipeline ct_slices --out cache/ct_slices --preview 4

With no --data the built-in synthetic phantoms are used (CT series for
volume3d and ct_slices, radiographs for xray). The run uses every core,
shows a progress bar, and can be interrupted: running the same command
again resumes, skipping finished studies. Studies that fail are reported
by file and skipped; the run ends with a summary of what was skipped and
why. Read the cache back with covid_keras.data.records.load(OUT).
"""

import argparse
import json
import os
import sys

from covid_keras import cli, errors

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

from covid_keras.preprocess.pipelines import PIPELINES, PipelineOptions  # noqa: E402 (after the TensorFlow hook)


def _records(args):
    from covid_keras.data import datasets, synthetic

    if args.data:
        if not args.dataset:
            raise errors.ConfigurationError(
                f"--data {args.data} needs --dataset NAME to say its layout; one of "
                f"{', '.join(sorted(datasets.DATASETS))}."
            )
        options = {"task": args.task} if args.task else {}
        return args.dataset, datasets.load_dataset(args.dataset, args.data, **options)
    if args.dataset:
        raise errors.ConfigurationError(
            f"--dataset {args.dataset} needs --data DIR: the folder where you unpacked it."
        )
    if args.pipeline == "xray":
        task = args.task or "xraycnn_step1"
        return f"synthetic-xray/{task}", synthetic.xray_dataset(task)
    return "synthetic-ct", synthetic.ct_dataset()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.preprocess", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--pipeline", choices=PIPELINES, required=True,
                        help="volume3d (paper 000), ct_slices (paper 001), xray (papers 002-004)")
    parser.add_argument("--out", required=True, help="cache folder to write (resumable)")
    parser.add_argument("--dataset", help="dataset layout name, e.g. covid-ct-md (needs --data)")
    parser.add_argument("--data", help="the dataset's folder; omit to use the built-in phantoms")
    parser.add_argument("--task", help="class list for datasets that have several (e.g. xraycnn_step1, "
                                       "transfer_xray, detl_b); also picks the phantom X-ray labels")
    parser.add_argument("--size", type=int, default=0,
                        help="output side: 224 by default (64 for XrayCNN, 299 for InceptionV3)")
    parser.add_argument("--normalization", choices=("minmax", "window"), default="minmax",
                        help="grey normalisation of CT (per-volume min-max as the papers, or an HU window)")
    parser.add_argument("--brightness", type=float, default=2.0,
                        help="ct_slices brightness factor (paper 001 uses 2 for COVID-CT-MD)")
    parser.add_argument("--interpolate", type=int, default=1,
                        help="ct_slices: spline-interpolate this many slices per original (training sets)")
    parser.add_argument("--augment-minority", action="store_true",
                        help="volume3d: add paper 000's two augmented volumes for CAP and Normal (training sets)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random augmentations")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: every core; 1 = no pool)")
    parser.add_argument("--records-per-shard", type=int, default=0,
                        help="records per shard (default: 1 per CT series, 256 per image)")
    parser.add_argument("--preview", type=int, default=0, metavar="N",
                        help="also write PNG montages of N studies to OUT/preview/")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache built with other settings")
    parser.add_argument("--retry-failed", action="store_true", help="rebuild shards whose studies failed before")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("workers", "records_per_shard", "preview", "size"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative. Received: {getattr(args, name)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from covid_keras.preprocess.cache import build_cache

    options = PipelineOptions(pipeline=args.pipeline, size=args.size, normalization=args.normalization,
                              brightness=args.brightness, interpolate=args.interpolate,
                              augment_minority=args.augment_minority, seed=args.seed)
    dataset, records = _records(args)
    if args.preview:
        from covid_keras.preprocess.preview import write_previews

        written = write_previews(records, options, os.path.join(args.out, "preview"), n=args.preview)
        print(json.dumps({"previews": written}), file=sys.stderr)
    report = build_cache(records, args.out, options, dataset=dataset, workers=args.workers or None,
                         records_per_shard=args.records_per_shard or None, overwrite=args.overwrite,
                         retry_failed=args.retry_failed, progress=not args.quiet)
    print(report.summary(), file=sys.stderr)
    print(json.dumps({"cache": report.folder, "examples": report.examples, "skipped": len(report.skipped),
                      "seconds": round(report.seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
