"""Train paper 001's multi-scale ResNet50 slice classifier, stage by stage.

    python -m train.slice_level                                    # built-in phantoms, a few minutes on CPU
    python -m train.slice_level --data /data/COVID-CT-MD --dataset covid-ct-md \\
        --pretrain-data /data/COVIDx-CT --pretrain-dataset covidx-ct

With --data the paper's settings are the defaults; with no --data the
built-in synthetic phantoms are used with a small preset, whose values each
flag below shows beside the paper's ("without --data, phantom preset").
Every setting comes from the recipe multiscale_resnet50
(python -m covid_keras.recipes multiscale_resnet50). The
run folder (runs/slice_level/<dataset>-<hash>/, or --run-dir) holds the
config, the patient split, CSV and TensorBoard logs and checkpoints;
running the same command again resumes an interrupted run. The model is
exported for TF Serving to saved_models/multiscale_resnet50/<version>/.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

def parse_args(argv=None):
    from covid_keras.training.slice_level import SliceLevelConfig

    # Flags, defaults, choices and the phantom preset all come from the recipe
    # (python -m covid_keras.recipes multiscale_resnet50).
    return cli.parse_recipe(argv, "python -m train.slice_level", __doc__, SliceLevelConfig, phantom=True)


def main(argv=None):
    from covid_keras.training.slice_level import train_slice_level

    config = parse_args(argv)
    summary = train_slice_level(config)
    print(json.dumps({k: summary[k] for k in ("model", "slice_report", "exported") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
