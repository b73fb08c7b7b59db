"""t-SNE of paper 001's patient-level features (its Fig. 6), coloured by class.

    python -m evaluate.tsne runs/patient_level/<run>
    python -m evaluate.tsne runs/patient_level/<run> --perplexity 10 --seed 1 --parts all

RUN_DIR is a finished `train.patient_level` run (it holds the slice
features it extracted) or a `train.ensemble` run (its patient-level run's
features are used). Each study's patient-level vector is the per-dimension
maximum over its slices of the slice model's 1024-d features (what the
Maxpool head sees) and of the 3072-d probability-weighted features
(Maxpool-Weighted's); each set is reduced by PCA to 50 dimensions and
embedded with scikit-learn's TSNE (init="pca", seeded).

Writes RUN_DIR/report/tsne_1024.png and tsne_3072.png (one colour per
class, one marker per part of the split) and tsne.json (the settings and,
per study, its pseudonymous patient id, class, part and 2-d coordinates),
and prints a one-line JSON summary.
"""

import argparse
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def _parts(text):
    from covid_keras.explain.tsne import PARTS

    return PARTS if text == "all" else tuple(p.strip() for p in text.split(",") if p.strip())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evaluate.tsne", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a train.patient_level (or train.ensemble) run folder")
    parser.add_argument("--perplexity", type=float, default=None,
                        help="t-SNE perplexity, below the number of studies shown; default: 30, or (studies - 1) "
                             "/ 3 when fewer than 91 studies are shown")
    parser.add_argument("--seed", type=int, default=0, help="seed of PCA and t-SNE: the same seed gives the same figure (default: 0)")
    parser.add_argument("--parts", type=_parts, default=("val", "test"),
                        help="the split's parts whose studies are shown, comma-separated (train, val, test), "
                             "or 'all' (default: val,test, as in the paper)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-sentence errors")
    return parser.parse_args(argv)


def main(argv=None):
    from covid_keras.explain.tsne import tsne_report

    args = parse_args(argv)
    summary = tsne_report(args.run_dir, perplexity=args.perplexity, seed=args.seed, parts=args.parts)
    print(json.dumps({"studies": summary["studies"], "parts": summary["parts"],
                      "perplexity": summary["perplexity"], "seed": summary["seed"],
                      "figures": {dims: s["png"] for dims, s in summary["features"].items()},
                      "neighbour_agreement": {dims: round(s["neighbour_agreement"], 4)
                                              for dims, s in summary["features"].items()},
                      "json": summary["json"]}))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
