"""Train paper 001's four patient-level heads on a finished slice-level run.

    python -m train.patient_level                      # uses the newest runs/slice_level/* run
    python -m train.patient_level --slice-run runs/slice_level/<run>

Extracts the slice classifier's per-slice features once per study (1024-d
features A and 3072-d probability-weighted features B), then trains
Maxpool, Maxpool-Weighted, BiLSTM and BiLSTM-Weighted on padded, masked
slice sequences (any slice count; padding never changes the answer) with
class-weighted cross-entropy, L1 1e-5 + L2 1e-4, Adam 1e-3, batch 64,
25 epochs, keeping each head's best-validation-accuracy weights. Reports
validation and held-out test accuracy and per-class sensitivity.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

HELP = {
    "slice_run": "slice-level run folder (default: the newest finished one under --runs-root)",
    "heads": "heads to train: maxpool maxpool_weighted bilstm bilstm_weighted",
    "learning_rate": "Adam learning rate",
    "batch_size": "studies per batch",
    "epochs": "epochs per head",
    "l1": "L1 kernel regularisation", "l2": "L2 kernel regularisation",
    "lstm_units": "LSTM units per direction of the BiLSTM heads",
    "seed": "random seed: repeatable on CPU",
    "run_dir": "run folder (default: runs/patient_level/<config hash>)",
    "runs_root": "where run folders are",
    "fresh": "delete an earlier run in the run folder and start over",
    "verbose": "Keras progress output: 0 silent, 1 bar, 2 one line per epoch",
    "quiet": "hide progress and messages",
}


def parse_args(argv=None):
    from covid_keras.training.patient_level import PatientLevelConfig

    return cli.parse_config(argv, "python -m train.patient_level", __doc__, PatientLevelConfig, HELP)


def main(argv=None):
    from covid_keras.training.patient_level import train_patient_level

    summary = train_patient_level(parse_args(argv))
    print(json.dumps({"heads": summary["heads"],
                      "test": {h: r.get("test", r.get("val")) for h, r in summary["reports"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
