"""Train paper 001's ensemble over the trained patient heads, export the patient pipeline.

    python -m train.ensemble                           # uses the newest runs/patient_level/* run
    python -m train.ensemble --patient-run runs/patient_level/<run>

Concatenates the class probabilities of every head the patient-level run
trained, in its --heads order (paper 001: 4 heads x 3 = 12) -> Dense 10 ->
Dense 3 softmax, class-weighted cross-entropy, L1 1e-5 + L2 1e-4, Adam
1e-3, batch 64, 200 epochs, best validation accuracy kept. Reports
validation and held-out test accuracy, per-class sensitivity and the
majority-class rate, and exports slice model + heads + ensemble as one
SavedModel (one study's slices in, the patient's probabilities out) to
saved_models/patient_pipeline/<version>/. Modules the patient-level run
imported (--import) are imported again from the run.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    from covid_keras.training.patient_level import EnsembleConfig

    return cli.parse_recipe(argv, "python -m train.ensemble", __doc__, EnsembleConfig)


def main(argv=None):
    from covid_keras.training.patient_level import train_ensemble

    summary = train_ensemble(parse_args(argv))
    print(json.dumps({k: summary[k] for k in ("model", "reports", "exported") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
