"""Train paper 001's multi-scale ResNet50 slice classifier, stage by stage.

    python -m train.slice_level                                    # built-in phantoms, a few minutes on CPU
    python -m train.slice_level --data /data/COVID-CT-MD --dataset covid-ct-md \
        --pretrain-data /data/COVIDx-CT --pretrain-dataset covidx-ct

With no --data the built-in synthetic phantoms are used with a small preset
(64 x 64 slices, every 2nd slice, 10/2/2/2 epochs, batch 16, weights=None,
no augmentation, BatchNormalization momentum 0.9);
with --data the paper's settings are the defaults (224 x 224, Adam 1e-3 /
1e-4 / 1e-5 / 1e-5, 10/10/10/25 epochs, batch 64, ImageNet weights). The
run folder (runs/slice_level/<dataset>-<hash>/, or --run-dir) holds the
config, the patient split, CSV and TensorBoard logs and checkpoints;
running the same command again resumes an interrupted run. The model is
exported for TF Serving to saved_models/multiscale_resnet50/<version>/.
"""

import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow

HELP = {
    "data": "dataset folder (omit to use the built-in phantoms)",
    "dataset": "layout of --data: covid-ct-md (DICOM series) or covidx-ct (PNG slices)",
    "pretrain_data": "stage 1's pre-training dataset folder (COVIDx-CT in the paper); without it stage 1 "
                     "runs on the training slices",
    "pretrain_dataset": "layout of --pretrain-data",
    "weights": "imagenet, none, or a weights file (default: imagenet with --data, none on phantoms)",
    "image_size": "slice side in pixels (paper: 224)",
    "brightness": "COVID-CT-MD brightness factor",
    "interpolate": "spline interpolation of the training patients' series: n-1 slices added between "
                   "neighbouring slices of the same label (paper 001, which gives no factor; ours: 2; "
                   "1 = off; the phantom preset uses 1)",
    "batch_size": "batch size (paper: 64)",
    "stages": "stages to run, in order: pretrain last_layers finetune pseudo_label",
    "pretrain_lr": "stage 1 (whole model) Adam learning rate",
    "pretrain_epochs": "stage 1 epochs",
    "last_layers_lr": "stage 2 (last two layers) learning rate",
    "last_layers_epochs": "stage 2 epochs",
    "finetune_lr": "stage 3 (all but BatchNormalization) learning rate",
    "finetune_epochs": "stage 3 epochs",
    "pseudo_lr": "stage 4 (pseudo-labelling) learning rate (ours: the paper gives none)",
    "pseudo_epochs": "stage 4 epochs",
    "pseudo_threshold": "probability of the patient's class a slice needs to be pseudo-labelled infected",
    "dropout": "dropout before the features layer (ours: the paper gives no rate)",
    "bn_momentum": "BatchNormalization momentum (Keras' 0.99; the phantom preset trains from scratch with 0.9)",
    "augment": "paper 001's fused augmentation (rotation, shift, zoom, shear, flip, brightness)",
    "val_fraction": "fraction of patients for validation (best-weights selection)",
    "test_fraction": "fraction of patients held out for the final test report",
    "slice_stride": "use every n-th slice (the phantom preset uses 2)",
    "phantom_patients_per_class": "phantom patients per class when no --data is given",
    "phantom_size": "rows = columns of the phantom CT slices when no --data is given",
    "seed": "random seed (splits, shuffling, augmentation, initial weights): repeatable on CPU",
    "workers": "processes for building the preprocessing cache (0: every core)",
    "run_dir": "run folder (default: runs/slice_level/<dataset>-<config hash>)",
    "runs_root": "where default run folders go",
    "export_dir": "TF Serving base folder for the exported model (none: do not export)",
    "fresh": "delete an earlier run in the run folder and start over",
    "verbose": "Keras progress output: 0 silent, 1 bar, 2 one line per epoch",
    "quiet": "hide progress and messages",
}


def parse_args(argv=None):
    from covid_keras.training.slice_level import PHANTOM_PRESET, SliceLevelConfig

    return cli.parse_config(argv, "python -m train.slice_level", __doc__, SliceLevelConfig, HELP,
                            preset_for=lambda args: PHANTOM_PRESET if getattr(args, "data", None) is None else {})


def main(argv=None):
    from covid_keras.training.slice_level import train_slice_level

    config = parse_args(argv)
    summary = train_slice_level(config)
    print(json.dumps({k: summary[k] for k in ("model", "slice_report", "exported") if k in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
