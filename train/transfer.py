"""Train paper 002's transfer-learning classifiers: DenseNet, New-DenseNet and InceptionV3 on X-rays or CT images.

    python -m train.transfer                                   # DenseNet121 on the built-in phantoms, minutes on CPU
    python -m train.transfer --all-models                      # the paper's three models on one split, side by side
    python -m train.transfer --model inceptionv3 --data /data/chest_xray --dataset chest-xray-pneumonia \\
        --covid-data /data/covid-chestxray-dataset             # COVID-19 / Pneumonia / Normal X-rays
    python -m train.transfer --task transfer_ct --data /data/sarscov2-ctscan --dataset sars-cov2-ct

--model picks the recipe (densenet, new_densenet or inceptionv3:
python -m covid_keras.recipes densenet shows every setting); the flags
below are that recipe's (shown: --model densenet; inceptionv3 has no
--variant and a default --image-size of 299). With --data the paper's
settings are the defaults: ImageNet weights, Adam 1e-4, 50 epochs, an
80 / 20 split by patient; with no --data the built-in phantoms run with a
small preset, whose values each flag shows ("without --data, phantom
preset"). ImageNet weights need the internet once (Keras caches them in
~/.keras/models); offline, --weights none trains from scratch.

The run folder (runs/transfer/<model>-<dataset>-<hash>/, or --run-dir)
holds the config, the patient split, CSV and TensorBoard logs,
checkpoints, the held-out report and one row per held-out image
(predictions_test.json); running the same command again resumes it. The
model is exported for TF Serving to saved_models/<model>/<version>/
(--task transfer_ct: saved_models/<model>_ct/, its classes differ). stdout
holds only the JSON summary (with --all-models: the three test
accuracies beside the paper's).
"""

import contextlib
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

PROG = "python -m train.transfer"
MODELS = ("densenet", "new_densenet", "inceptionv3")


def _model_arguments(parser):
    parser.add_argument("--model", choices=MODELS, default="densenet",
                        help="the paper's model: densenet (DenseNet121; --variant 169 / 201), new_densenet "
                             "(DenseNet + extra convolution and dense head) or inceptionv3 (299 x 299) "
                             "(default: densenet)")
    parser.add_argument("--all-models", action="store_true",
                        help="train the three models on the same patient split and print their accuracies side "
                             "by side (paper 002's Tables III / IV); --model is then ignored")


def parse_args(argv=None):
    """``(config or {model: config}, all_models)``."""
    import argparse

    from covid_keras.training.transfer import CONFIGS, configs_for_all_models

    pre = argparse.ArgumentParser(add_help=False)
    _model_arguments(pre)
    known, _ = pre.parse_known_args(argv)
    config_cls = CONFIGS[known.model]
    parser = cli.recipe_parser(PROG, __doc__, config_cls.recipe, phantom=True)
    _model_arguments(parser)
    config, args = cli.parse_recipe_args(parser, argv, config_cls, phantom=True)
    if not args.all_models:
        return config, False
    typed = {k: v for k, v in vars(args).items() if k not in ("debug", "model", "all_models")}
    return configs_for_all_models(typed, phantom=config.data is None), True


def main(argv=None):
    from covid_keras.training.transfer import train_all_models, train_transfer

    config, all_models = parse_args(argv)
    # Keras' progress goes to stderr with the log, so that stdout holds the JSON summary only.
    with contextlib.redirect_stdout(sys.stderr):
        result = train_all_models(config) if all_models else train_transfer(config)
    if all_models:
        print(json.dumps({"task": result["task"], "table": result["table"], "note": result["note"],
                          "runs": {k: v["run"] for k, v in result["runs"].items()}}, indent=2))
    else:
        print(json.dumps({k: result[k] for k in ("model", "report", "exported", "run") if k in result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
