"""Train paper 001's ensemble over the four patient heads, export the patient pipeline.

    python -m train.ensemble                           # uses the newest runs/patient_level/* run
    python -m train.ensemble --patient-run runs/patient_level/<run>

Concatenates the four heads' class probabilities (12) -> Dense 10 -> Dense 3
softmax, class-weighted cross-entropy, L1 1e-5 + L2 1e-4, Adam 1e-3, batch
64, 200 epochs, best validation accuracy kept. Reports validation and
held-out test accuracy, per-class sensitivity and the majority-class rate,
and exports slice model + heads + ensemble as one SavedModel (one study's
slices in, the patient's probabilities out) to
saved_models/patient_pipeline/<version>/.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

HELP = {
    "patient_run": "patient-level run folder (default: the newest finished one under --runs-root)",
    "learning_rate": "Adam learning rate",
    "batch_size": "studies per batch",
    "epochs": "epochs",
    "l1": "L1 kernel regularisation", "l2": "L2 kernel regularisation",
    "seed": "random seed: repeatable on CPU",
    "run_dir": "run folder (default: runs/ensemble/<config hash>)",
    "runs_root": "where run folders are",
    "export_dir": "TF Serving base folder for the patient pipeline (none: do not export)",
    "fresh": "delete an earlier run in the run folder and start over",
    "verbose": "Keras progress output: 0 silent, 1 bar, 2 one line per epoch",
    "quiet": "hide progress and messages",
}


def parse_args(argv=None):
    from covid_keras.training.patient_level import EnsembleConfig

    return cli.parse_config(argv, "python -m train.ensemble", __doc__, EnsembleConfig, HELP)


def main(argv=None):
    from covid_keras.training.patient_level import train_ensemble

    summary = train_ensemble(parse_args(argv))
    print(json.dumps({k: summary[k] for k in ("model", "reports", "exported") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
