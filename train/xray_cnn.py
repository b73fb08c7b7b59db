"""Train paper 004's XrayCNN: the two-step X-ray classifier, exported as one SavedModel.

    python -m train.xray_cnn                                       # built-in phantom radiographs, a minute on CPU
    python -m train.xray_cnn --data /data/chest_xray --covid-data /data/covid-chestxray-dataset
    python -m train.xray_cnn --data /data/chest_xray --step xraycnn_step1        # step 1 alone

Step 1 (normal / bacterial / viral) trains on every training image; step
2 (non-viral pneumonia / COVID-19 / other viral) on the pneumonia images.
Both train the Table 1 CNN at 64 x 64 x 3 behind scale, shift, rotation,
horizontal flip and salt-and-pepper noise (--salt-pepper; training only),
on one patient split, so neither step sees a held-out patient. The
held-out report gives each step's per-class precision, recall, F1,
sensitivity and specificity and the combined 4-class answer's (Normal,
bacterial, COVID-19, other viral: paper 004's Fig. 5). The export,
saved_models/xray_cnn/<version>/, is one SavedModel whose serving_default
returns step 1's probabilities, step 2's (NaN where step 1 did not say
viral) and the combined ones (models.xraycnn.combine documents the rule).

With --data the recipe's settings are the defaults (the paper gives no
optimiser or epochs: ours, marked in --help); with no --data the built-in
phantoms run. Every setting comes from the recipe xray_cnn
(python -m covid_keras.recipes xray_cnn). The run folder
(runs/xray_cnn/<dataset>-<hash>/, or --run-dir) holds the split, one
sub-run per step (logs, TensorBoard, checkpoints, predictions) and the
combined predictions; running the same command again resumes it. stdout
holds only the JSON summary.
"""

import contextlib
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    from covid_keras.training.xray_cnn import XrayCNNConfig

    return cli.parse_recipe(argv, "python -m train.xray_cnn", __doc__, XrayCNNConfig, phantom=True)


def main(argv=None):
    from covid_keras.training.xray_cnn import train_xray_cnn

    config = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        summary = train_xray_cnn(config)
    print(json.dumps({k: summary[k] for k in ("combined_report", "reports", "exported", "run") if k in summary},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
