"""Audit a training run's data: leakage across its split, and shortcuts a model could learn.

    python -m evaluate.audit RUN_DIR
    python -m evaluate.audit RUN_DIR --max-difference 1.0 --permutations 1000 --strict

Reads the run's records.json and its split (split.json, and every fold of
folds.json) and writes RUN_DIR/report/audit.json and audit.md:

  leakage      patients on both sides of a split boundary (train/val,
               train/test, val/test, each fold's train/val); records of
               different patients with identical files (SHA-1 of the bytes)
               or identical pixels (a DICOM file's stored pixels, a
               picture's decoded grey levels, each CT slice in HU: a
               re-exported copy); near-duplicate images: ImageHash's
               perceptual hash (256 bits by default) within
               --phash-threshold bits finds candidates, and the images'
               16x16 thumbnails (their mean brightness taken out) within
               --max-difference grey levels (root mean square, of 255)
               confirm them; a CT series is compared on its slices at 30,
               50 and 70 % of its height, each within both.
  shortcuts    a scaled, class-weighted logistic regression fitted on what
               should carry no
               diagnosis, scored by patient-grouped cross-validation and a
               permutation test (the patients' labels permuted): the image
               border outside the body (a radiograph's outer ~8 % frame,
               each cell ranked along it; for CT the voxels outside the
               body mask) and the non-identifying DICOM metadata
               (manufacturer, model, kernel, slice thickness, spacing, kVp,
               view, ...; never names, ids, dates or UIDs). The probe is
               scored by balanced accuracy (the mean of the classes'
               recalls, so that chance is 1 / K for K classes however
               imbalanced they are) and warns when p < --alpha and its
               balanced accuracy is at least --min-gain above chance. A
               probe with no features (PNG and JPEG files have no
               metadata) is skipped, saying why.

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
    parser.add_argument("--phash-threshold", type=int, default=None,
                        help="largest Hamming distance between two perceptual hashes at which the images are "
                        "near-duplicate candidates, for --max-difference to confirm (copies of phantom films "
                        "move a 256-bit hash by up to 16-24 bits, of CT slices, nearly left-right symmetric, "
                        "by up to 54; distinct phantom films come within 4); default: a quarter of the bits, "
                        f"{leakage.PHASH_THRESHOLD} of {leakage.PHASH_SIZE ** 2}")
    parser.add_argument("--phash-size", type=int, default=leakage.PHASH_SIZE,
                        help="side of ImageHash's DCT block: the hash has its square of bits (8 is ImageHash's "
                        "64-bit default, too coarse for chest images that all look alike)")
    parser.add_argument("--max-difference", type=float, default=leakage.MAX_DIFFERENCE,
                        help="largest difference, in grey levels of 255, between two candidates' 16x16 "
                        "thumbnails (root mean square, each thumbnail's mean taken out) at which they are near "
                        "duplicates: copies of phantoms re-encoded, noised by a grey level, a grey level "
                        "brighter or resized down stay within 0.35, distinct phantom films were 1.0 or more "
                        "apart among 480 (0.66 among 960; the measurements are in "
                        "covid_keras.evaluation.leakage.MAX_DIFFERENCE's comment)")
    parser.add_argument("--permutations", type=int, default=shortcuts.PERMUTATIONS,
                        help="label permutations of each probe's permutation test (the smallest p-value is "
                        "1 / (permutations + 1))")
    parser.add_argument("--alpha", type=float, default=shortcuts.ALPHA,
                        help="significance level: a probe warns only when its permutation p-value is below it")
    parser.add_argument("--min-gain", type=float, default=shortcuts.MIN_GAIN,
                        help="a probe warns only when its balanced accuracy is at least this much above chance "
                        "(1 / number of classes)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the probes' folds and permutations")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the report holds a warning")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    from covid_keras.evaluation import audit

    args = parse_args(argv)
    report = audit.audit_run(args.run_dir, phash_threshold=args.phash_threshold, phash_size=args.phash_size,
                             max_difference=args.max_difference, permutations=args.permutations, alpha=args.alpha,
                             min_gain=args.min_gain, seed=args.seed, progress=not args.quiet)
    paths = audit.write_audit(args.run_dir, report)
    print(json.dumps(audit.summary(report, paths)))
    return 1 if args.strict and report["warnings"] else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
