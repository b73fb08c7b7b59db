"""Train paper 000's 3-D ResNet50 on whole CT volumes: 4-fold cross-validation by patient, then a final model.

    python -m train.volume3d                                        # built-in phantoms, a few minutes on CPU
    python -m train.volume3d --data /data/COVID-CT-MD --dataset covid-ct-md
    python -m train.volume3d --data ... --depth 18 --no-final       # the folds only, a shallower ResNet
    python -m train.volume3d --data ... --mixed-precision            # on a GPU: float16 compute, float32 loss

With --data the paper's settings are the defaults (224^3 Volume3D
volumes, ResNet50 inflated from ImageNet, Adam 2e-4 halved every 40 epochs,
120 epochs, 4 folds); with no --data the built-in phantoms run with a small
preset, whose values each flag shows beside the paper's ("without --data,
phantom preset"). Every setting comes from the recipe resnet50_3d
(python -m covid_keras.recipes resnet50_3d).

The CAP and Normal studies get the paper's two augmented volumes (a second
resampling and random centre crops) in the preprocessing cache; each fold
trains on its own training patients' copies only, and the log prints the
class counts before and after, as the paper's Table 1 does.

The run folder (runs/volume3d/<dataset>-<hash>/, or --run-dir) holds
folds.json, one sub-run per fold (folds/fold_<i>/: logs, checkpoints,
report.json, predictions.json), final/ and crossval.json; running the same
command again resumes where it stopped, inside a fold from its last
finished epoch. The final model is exported for TF Serving to
saved_models/resnet50_3d/<version>/. The command prints a JSON summary:
per fold and as mean / std, accuracy, COVID-19 sensitivity and
specificity (Table 4's columns) and every class's sensitivity; it is the
only thing on stdout (Keras' progress and the log go to stderr).
"""

import contextlib
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    from covid_keras.training.volume_level import Volume3DConfig

    return cli.parse_recipe(argv, "python -m train.volume3d", __doc__, Volume3DConfig, phantom=True)


def main(argv=None):
    from covid_keras.training.volume_level import train_volume3d

    config = parse_args(argv)
    # Keras' progress goes to stderr with the log, so that stdout holds the JSON summary only.
    with contextlib.redirect_stdout(sys.stderr):
        summary = train_volume3d(config)
    print(json.dumps({k: summary[k] for k in ("crossval", "model", "exported", "run") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
