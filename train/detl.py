"""Train paper 003's DETL: a 12-layer CNN on Data-A, then domain extension to Data-B, 5-fold cross-validated.

    python -m train.detl                                          # built-in phantom radiographs, minutes on CPU
    python -m train.detl --data /data/ChestXray-NIHCC --covid-data /data/covid-chestxray-dataset
    python -m train.detl --data ... --covid-data ... --phase2-epochs 50   # phase 1 is reused, not retrained

Phase 1 trains detl_cnn from scratch on Data-A (NIH ChestX-ray14: normal
vs disease; Adam 1e-3 cosine-annealed over 100 epochs, rotation /
scaling / mirroring, best weights on a class-balanced validation set
sampled from the training patients). Phase 2 extends it to Data-B's four
classes (normal / other_disease / pneumonia from NIH, covid from the
COVID-19 image data collection, --covid-data): a new 4-way softmax,
everything before the last convolution block frozen, SGD 1e-4 momentum
0.9; 5-fold cross-validation by patient (per fold and mean +- std
accuracy: the paper reports 95.3 % +- 0.02), then a final model on every
Data-B patient, exported to saved_models/detl_cnn/<version>/.

With --data the paper's settings are the defaults; with no --data the
built-in phantoms run with a small preset ("without --data, phantom
preset" beside each flag). Every setting comes from the recipe detl_cnn
(python -m covid_keras.recipes detl_cnn).

Run folders: phase 1 in runs/detl/phase1-<hash of phase 1's settings>/
(shared by every phase 2 run that uses the same phase 1; resumable),
phase 2 in runs/detl/phase2-<dataset>-<hash>/ (folds.json, folds/fold_<i>/,
final/, crossval.json, summary.json); with --run-dir both go inside it.
stdout holds only the JSON summary (Keras' progress and the log go to stderr).
"""

import contextlib
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    from covid_keras.training.detl import DETLConfig

    return cli.parse_recipe(argv, "python -m train.detl", __doc__, DETLConfig, phantom=True)


def main(argv=None):
    from covid_keras.training.detl import train_detl

    config = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        summary = train_detl(config)
    print(json.dumps({k: summary[k] for k in ("phase1", "crossval", "model", "exported", "run") if k in summary},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
