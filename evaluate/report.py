"""Evaluate a training run: metrics with 95 % intervals, ROC / PR curves, calibration, k-fold tables.

    python -m evaluate.report runs/transfer/densenet-synthetic-xray-1a2b3c4d
    python -m evaluate.report RUN_DIR --ci clopper-pearson --bootstrap 5000

Works on the run folder of any training command (train.slice_level,
train.patient_level, train.ensemble, train.volume3d, train.transfer,
train.detl, train.xray_cnn): it reads the per-case predictions the run
wrote (predictions_<part>.json, and each fold's) and writes RUN_DIR/report/:

  metrics.json  per section (an answer on a group of cases: a model's test
                images, a head's validation studies, ...): per class
                sensitivity, specificity, PPV, NPV, precision, recall, F1
                and the accuracy, each {"value", "ci95", "method", "k", "n"};
                the confusion matrix (rows true, columns predicted); per
                class ROC AUC and PR AUC with a patient-level bootstrap
                interval; the expected calibration error; for k-fold runs
                the per-fold table with mean and std (ddof 0); paper 004's
                PPV / NPV with Bonferroni family-wise intervals; the paper's
                reported figures beside this run's
  report.md     the same as tables, with the figures
  *.png         ROC, precision-recall, reliability and confusion figures

A slice model's predictions give a slice-level section and a patient-level
one (the mean of all of a patient's slice probabilities). Binomial intervals
treat cases as independent; the AUC intervals resample patients, never
slices. A run on the built-in phantoms is said to be one: its numbers test
the code and do not compare with the papers'. stdout holds one JSON line.
"""

import argparse
import json
import sys

from covid_keras import cli


def parse_args(argv=None):
    from covid_keras.evaluation.stats import CI_METHODS

    parser = argparse.ArgumentParser(prog="python -m evaluate.report", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder a train.* command wrote (runs/<command>/...)")
    parser.add_argument("--ci", choices=CI_METHODS, default="wilson",
                        help="binomial interval of the proportions: Wilson score or Clopper-Pearson exact")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="patient-level bootstrap resamples for the ROC / PR AUC intervals")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (the same seed, the same intervals)")
    parser.add_argument("--out", default=None, metavar="DIR", help="the report folder (default: RUN_DIR/report)")
    parser.add_argument("--no-figures", action="store_true", help="write metrics.json and report.md only")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    from covid_keras.evaluation.report import write_report

    args = parse_args(argv)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    written = write_report(args.run_dir, out_dir=args.out, ci=args.ci, n_boot=args.bootstrap, seed=args.seed,
                           figures=not args.no_figures, log=log)
    print(json.dumps({k: v for k, v in written.items() if k != "figures"} | {"figures": len(written["figures"])}))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
