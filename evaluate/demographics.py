"""Paper 004's logistic regression of correctness on age, sex, BMI and ethnicity, from a run's predictions.

    python -m evaluate.demographics runs/xray_cnn/<name>
    python -m evaluate.demographics RUN_DIR --part val --formula "correct ~ age + C(sex)"

Each held-out case (--part test) or validation case (--part val) of the
run is correct when its arg-max class is its true class; statsmodels'
formula API fits a logistic regression of that on the covariates the
run's records carry (by default correct ~ age * C(sex) + bmi +
C(ethnicity), built from the covariates present and varying; the others
are left out and named). One fit per answer (model or head) of the part:
image-, study- or volume-level cases as they are; a slice model's slices
aggregated per patient (mean of the slice probabilities against the
patient's class); k folds' validation cases pooled.

Writes RUN_DIR/report/demographics.json and demographics.md: odds ratios
with 95 % intervals and p-values, n, the likelihood-ratio p-value and
McFadden's pseudo R2, how many cases lacked a covariate, and plain-word
flags when the fit did not converge, the data are (quasi-)separated, the
design is rank-deficient, there are too few errors per term, or every
answer is correct (no regression possible). The built-in phantoms carry
synthetic covariates independent of the class: expect no association.
stdout holds one JSON summary line.
"""

import argparse
import json
import sys

from covid_keras import cli

PROG = "python -m evaluate.demographics"


def parse_args(argv=None):
    """The parsed command line (``run_dir``, ``part``, ``formula``, ``answer``, ``debug``, ``quiet``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder a training command wrote (runs/<command>/<name>)")
    parser.add_argument("--part", choices=("test", "val"), default="test",
                        help="which cases: test (the held-out patients) or val (the validation patients; "
                             "every fold's, pooled, in k-fold runs) (default: test)")
    parser.add_argument("--formula", default=None,
                        help="a statsmodels formula over correct and the columns age, sex, bmi, ethnicity and "
                             "label (the true class), e.g. \"correct ~ age + C(sex)\" (the right-hand side "
                             "alone is accepted); default: built from the covariates present")
    parser.add_argument("--answer", default=None,
                        help="fit only this answer's predictions (a model or head name of the run, e.g. "
                             "xraycnn_step1, 'xray_cnn two-step'); default: every answer of the part, one fit each")
    cli.add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    from covid_keras.evaluation.demographics import demographics_report

    args = parse_args(argv)
    summary = demographics_report(args.run_dir, part=args.part, formula=args.formula, answer=args.answer)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
