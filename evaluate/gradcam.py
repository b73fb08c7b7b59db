"""Grad-CAM montages of a run's held-out cases, correct and misclassified, or of images given to a model.

    python -m evaluate.gradcam runs/xray_cnn/synthetic-xray-1a2b3c4d
    python -m evaluate.gradcam runs/slice_level/<run> --cases 6 --seed 1
    python -m evaluate.gradcam runs/volume3d/<run> --part val --layer last_conv
    python -m evaluate.gradcam saved_models/xray_cnn/1 --images a.png b.dcm --out gradcam_xray

RUN_DIR: a finished run folder of train.slice_level, train.volume3d,
train.transfer, train.detl or train.xray_cnn. For each answer on the
held-out test part (a k-fold run: the folds' validation parts, each case
explained by its own fold's model) --cases correctly classified and
--cases misclassified cases are drawn (seeded; the run's per-case
predictions files say which are which), their inputs read from the run's
preprocessing cache exactly as the model saw them, and Grad-CAM computed
for the predicted class at exactly the named layer:

  multi-scale slice model (paper 001)  per slice: the slice, then the
                                       stage3, stage4 and stage5 maps
  other 2-D models (papers 002-004)    the image, then its last_conv map as
                                       paper 004's 0-255 jet overlay
  resnet50_3d (paper 000)              axial and coronal cuts through the
                                       3-D map at its maximum, over the
                                       volume

One row per case, its first panel titled with the pseudonymous patient id,
the true class, the predicted class and its probability. Correct and
misclassified cases go to two PNGs, <answer>_<part>_correct.png and
<answer>_<part>_misclassified.png, in RUN_DIR/report/gradcam/, with
gradcam.json listing every panel (key, patient id, true, predicted,
probability, layer, file; the cut of 3-D maps). Paper 004's two-step
answer is explained with the step model that gave it.

MODEL: an exported image model (saved_models/<name>/<version>, or its
model folder; image and two-step exports, read and preprocessed as
covid_keras.predict does) or a .keras 2-D image model (images preprocessed
as X-rays at its input size), with --images and --out: one montage of those
images' maps. stdout holds one JSON line; bad input is one sentence on
stderr and exit status 2.
"""

import argparse
import json
import os
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def _layers(text):
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evaluate.gradcam", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL",
                        help="a run folder a train.* command wrote, or a model: an export folder "
                             "(saved_models/<name>/<version>) or a .keras file, given --images")
    parser.add_argument("--cases", type=int, default=4, metavar="N",
                        help="correctly classified and misclassified cases shown per answer, N of each (fewer "
                             "when the run has fewer; gradcam.json says so)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the draw of the cases: the same seed, the same cases")
    parser.add_argument("--part", choices=("test", "val"), default=None,
                        help="the part of the split whose cases are shown; when not given: test, or the folds' "
                             "validation patients in a k-fold run (no test part)")
    parser.add_argument("--layer", type=_layers, default=None, metavar="NAME[,NAME...]",
                        help="the layers explained, comma-separated; when not given: stage3,stage4,stage5 for the "
                             "multi-scale model, last_conv for every other model")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="the folder written; when not given: RUN_DIR/report/gradcam for a run (a model needs it)")
    parser.add_argument("--images", nargs="+", default=None, metavar="FILE",
                        help="with a model: the image files explained (PNG, JPEG, DICOM)")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be at least 1. Received: {args.cases}")
    return args


def _check_path(path, images):
    from covid_keras import errors
    from covid_keras.explain import montage

    if not os.path.exists(path):
        raise errors.ConfigurationError(
            f"{path}: does not exist; pass a run folder (runs/<command>/<name>) or a model (an export folder or a "
            ".keras file)."
        )
    model = montage.is_model(path)
    if images and not model:
        raise errors.ConfigurationError(
            f"{path}: is not a model (a .keras file or an export folder); --images are explained with a model, "
            "a run folder's cases come from its own cache."
        )
    return model


def main(argv=None):
    from covid_keras.explain import montage

    args = parse_args(argv)
    log = (lambda message: None) if args.quiet else (lambda message: print(f"note: {message}", file=sys.stderr))
    if _check_path(args.path, args.images):
        result = montage.model_montage(args.path, args.images, args.out, layers=args.layer).summary
        print(json.dumps({"model": result["model"], "images": result["images"], "panels": len(result["panels"]),
                          "montages": result["montages"], "json": result["json"]}))
        return 0
    result = montage.run_montages(args.path, cases=args.cases, seed=args.seed, part=args.part, layers=args.layer,
                                  out_dir=args.out, log=log).summary
    print(json.dumps({"run": result["run"], "part": result["part"], "out": result["out"],
                      "groups": [{"answer": g["answer"], "shown": g["shown"], "available": g["available"]}
                                 for g in result["groups"]],
                      "panels": len(result["panels"]), "montages": result["montages"], "json": result["json"],
                      "notes": result["notes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
