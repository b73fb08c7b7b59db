"""Train patient-level heads (paper 001's four, or your own) on a finished slice-level run.

    python -m train.patient_level                      # uses the newest runs/slice_level/* run
    python -m train.patient_level --slice-run runs/slice_level/<run>
    python -m train.patient_level --import my_heads --heads maxpool attention_mil

Extracts the slice classifier's per-slice features once per study (1024-d
`features` and 3072-d probability-weighted `weighted` ones), then trains
each head of --heads (default: paper 001's Maxpool, Maxpool-Weighted,
BiLSTM and BiLSTM-Weighted) on padded, masked slice sequences (any slice
count; padding never changes the answer) with class-weighted
cross-entropy, L1 1e-5 + L2 1e-4, Adam 1e-3, batch 64, 25 epochs, keeping
each head's best-validation-accuracy weights. Reports validation and
held-out test accuracy and per-class sensitivity. --import imports modules
that register heads of their own (covid_keras.models.register_head; see
docs/extending.md); train.ensemble imports them again by itself.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    from covid_keras.training.patient_level import PatientLevelConfig

    return cli.parse_recipe(argv, "python -m train.patient_level", __doc__, PatientLevelConfig)


def main(argv=None):
    from covid_keras.training.patient_level import train_patient_level

    summary = train_patient_level(parse_args(argv))
    print(json.dumps({"heads": summary["heads"],
                      "test": {h: r.get("test", r.get("val")) for h, r in summary["reports"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
