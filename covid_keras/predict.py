"""Classify one CT study (a DICOM series folder) or one image with an exported model.

    python -m covid_keras.predict path/to/series_folder --model saved_models/multiscale_resnet50/1
    python -m covid_keras.predict chest.png --model saved_models/xray_cnn
    python -m covid_keras.predict study_folder --model ... --series-uid ...12345678
    python -m covid_keras.predict path/to/series_folder --model saved_models/resnet50_3d
    python -m covid_keras.predict chest.png --model saved_models/xray_cnn --gradcam chest_gradcam.png

Prints one JSON object: {"probabilities": {class: p}, "predicted_class",
"slices", "model", "model_version", "recipe" (when the export records it),
"kind", "aggregation", "input", "patient_id" (pseudonymous, CT only)}. The input is preprocessed as the
model's training data was (the export's assets.extra/covid_keras.json says
how). A slice classifier's answer for a study is the mean of its slice
probabilities; a patient pipeline answers for the patient directly; a
volume model (paper 000's 3-D ResNet, "kind": "volume") answers for the
series' one volume ("aggregation": "volume", "slices": the slices read)
and takes CT series folders only. It always refuses a series without lungs
(--no-lung-check does not apply: its volume3d pipeline needs the lungs).
A two-step export (paper 004's train.xray_cnn, "kind": "two_step") answers
an X-ray in the combined four classes and adds "steps": {"step1": {class:
p}, "step2": {class: p} or null where step 1 did not say viral, "routed"}.
X-ray inputs are read as training read them (MONOCHROME1 inverted, VOI LUT
or window applied) and rounded to the cache's 8-bit grey levels.
--model may be a version folder or a model folder (its latest version).
A folder holding several series is read as its largest axial CT series (with
a warning listing the others); --series-uid picks another.
--gradcam OUT.png (image files given to image models only) also writes
the Grad-CAM heat map of the answer at layer last_conv, for the predicted
class, as paper 004's figures show it: the map in [0, 1] scaled to 0-255,
jet-coloured and blended over the grey image the model saw, enlarged by
an integer factor (nearest) to at least 256 px on its shorter side (see
covid_keras.serving.heatmap); the JSON gains "gradcam": {"path", "layer",
"class"} (a two-step export explains the step that answered: also "step"
and "step_class"). A CT series folder, a volume model or a patient
pipeline has no heat map: --gradcam is refused for them.
Bad input is one sentence on stderr and exit status 2.
"""

import argparse
import json
import sys

from covid_keras import cli

cli.quiet_tensorflow(__name__)  # before anything imports TensorFlow


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.predict", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("path", help="a CT series folder (DICOM files) or an image file (PNG, JPEG, DICOM)")
    parser.add_argument("--model", required=True,
                        help="exported model: saved_models/<name>/<version> (or saved_models/<name>)")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per model call (slice classifiers)")
    parser.add_argument("--series-uid", default=None,
                        help="the series to read from a study folder holding several: its SeriesInstanceUID, "
                             "the end of it as the warning lists it (...12345678), or its se- id")
    parser.add_argument("--no-lung-check", action="store_true",
                        help="predict a CT series even when no lungs are found (by default a head or abdomen "
                             "series is refused); volume models refuse it regardless, their pipeline needs "
                             "the lungs")
    parser.add_argument("--gradcam", default=None, metavar="OUT.png",
                        help="also write the Grad-CAM heat map (layer last_conv, predicted class) over the "
                             "image as a PNG; image files given to image models only")
    parser.add_argument("--timings", action="store_true",
                        help="add wall-clock seconds of load, read, preprocess and model")
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1. Received: {args.batch_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from covid_keras.serving.predict import load_model, predict_study

    model = args.model
    if args.gradcam:
        from covid_keras.serving import heatmap

        model = load_model(args.model)  # loaded once for the answer and its heat map
        heatmap.check_supported(args.path, model, args.gradcam)  # before the model runs
    result = predict_study(args.path, model, batch_size=args.batch_size, timings=args.timings,
                           check_lungs=not args.no_lung_check, series_uid=args.series_uid)
    if args.gradcam:
        result["gradcam"] = heatmap.gradcam_png(args.path, model, args.gradcam, prediction=result).record()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
