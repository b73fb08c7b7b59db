"""Audit a training run's data: leakage across its split, and shortcuts a model could learn.

    python -m evaluate.audit RUN_DIR
    python -m evaluate.audit RUN_DIR --phash-threshold 4 --permutations 1000 --strict

Reads the run's records.json and its split (split.json, and every fold of
folds.json) and writes RUN_DIR/report/audit.json and audit.md:

  leakage      patients on both sides of a split boundary (train/val,
               train/test, val/test, each fold's train/val); records of
               different patients with identical files (SHA-1 of the bytes)
               or identical pixels (a DICOM file's stored pixels, a
               picture's decoded grey levels, each CT slice in HU: a
               re-exported copy); near-duplicate images (ImageHash's
               perceptual hash, 256 bits by default, within --phash-threshold; a CT
               series on its slices at 30, 50 and 70 % of its height).
  shortcuts    a scaled logistic regression fitted on what should carry no
               diagnosis, scored by patient-grouped cross-validation and a
               permutation test (the patients' labels permuted): the image
               border outside the body (a radiograph's outer ~8 % frame,
               each cell ranked along it; for CT the voxels outside the
               body mask) and the non-identifying DICOM metadata
               (manufacturer, model, kernel, slice thickness, spacing, kVp,
               view, ...; never names, ids, dates or UIDs). A probe warns
               when p < --alpha and its accuracy is at least --min-gain
               above chance (the majority class's share). A probe with no
               features (PNG and JPEG files have no metadata) is skipped,
               saying why.

Records are named by pseudonymous patient id and record key, never by file
name. stdout holds one JSON summary line. The exit status is 0 even when
the report holds warnings (1 with --strict), 2 on bad input.
"""

import argparse
import json
import sys

from covid_keras import cli
from covid_keras.evaluation import leakage, shortcuts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evaluate.audit", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the training run's folder (records.json, split.json "
                        "and / or folds.json)")
    parser.add_argument("--phash-threshold", type=int, default=leakage.PHASH_THRESHOLD,
                        help="largest Hamming distance between two perceptual hashes at which the images count "
                        "as near duplicates (re-encoding, resizing or a grey level of noise move a hash by "
                        "2-6 bits; 0 finds only images whose hashes agree)")
    parser.add_argument("--phash-size", type=int, default=leakage.PHASH_SIZE,
                        help="side of ImageHash's DCT block: the hash has its square of bits (8 is ImageHash's "
                        "64-bit default, too coarse for chest images that all look alike)")
    parser.add_argument("--permutations", type=int, default=shortcuts.PERMUTATIONS,
                        help="label permutations of each probe's permutation test (the smallest p-value is "
                        "1 / (permutations + 1))")
    parser.add_argument("--alpha", type=float, default=shortcuts.ALPHA,
                        help="significance level: a probe warns only when its permutation p-value is below it")
    parser.add_argument("--min-gain", type=float, default=shortcuts.MIN_GAIN,
                        help="a probe warns only when its accuracy is at least this much above chance")
    parser.add_argument("--seed", type=int, default=0, help="seeds the probes' folds and permutations")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the report holds a warning")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    from covid_keras.evaluation import audit

    args = parse_args(argv)
    report = audit.audit_run(args.run_dir, phash_threshold=args.phash_threshold, phash_size=args.phash_size,
                             permutations=args.permutations, alpha=args.alpha, min_gain=args.min_gain,
                             seed=args.seed, progress=not args.quiet)
    paths = audit.write_audit(args.run_dir, report)
    print(json.dumps(audit.summary(report, paths)))
    return 1 if args.strict and report["warnings"] else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
