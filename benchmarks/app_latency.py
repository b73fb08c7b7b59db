"""Benchmark: the app's warm time from upload to answer, for an X-ray (two models) and a 300-slice CT study.

Three models are exported with random weights (timing only, no answer is
meaningful): paper 004's two-step xray_cnn at its recipe's image size
(covid_keras.serving.export_two_step), DenseNet121 at 224 x 224 (recipe
"densenet") and paper 001's multi-scale ResNet50 at 224 x 224 (recipe
"multiscale_resnet50"), as benchmarks/predict_study.py exports it. The
inputs are phantoms: a 1024 x 1024 8-bit PNG X-ray (the DRR of a phantom
chest volume) and a 300-slice 512 x 512 DICOM CT series, zipped (deflate)
as a user would upload it.

The app (covid_keras.app.page.build_app over the three exports) is launched
in this process and called through gradio_client as a browser would: the
upload, the queue, the answer and the download of its pictures are all in
the round trip. Each model gets one cold call and --repeats warm calls;
their best and median seconds are reported, with the app's own split:
covid_keras.app.answers.answer_image / answer_study are wrapped while the
app runs, and their ``.seconds`` (answer, heat map(s)) recorded, besides
the "Answered in" seconds the page shows.

Baselines, alternating with the app's calls on the same loaded
SavedModels:

* X-ray: what ``python -m covid_keras.predict IMAGE --gradcam OUT.png``
  does per call, in process: covid_keras.serving.predict_study, then
  covid_keras.serving.heatmap.gradcam_png (it reads the image again, loads
  the export's Keras model and makes a Grad-CAM model of it each time);
* CT: covid_keras.serving.answer_study on the unzipped study with
  ``overlap=False`` (read, lung check, preprocessing, model in turn) and
  ``overlap=True`` (preprocessing beside the model; predict_study's and so
  covid_keras.predict's default, and the app's), no heat maps.

Ratios are baseline / app (median warm seconds). Targets on 2 cores:
X-ray with xray_cnn <= 0.5 s, DenseNet121 <= 2 s, CT study <= 15 s, from
upload to answer (the median warm round trip; the in-app answer is judged
too). Where a target is missed, one warm in-process answer of that model is
run under cProfile and its top functions reported (--no-profile skips it).
The load average (1, 5, 15 minutes) is recorded at the start and at the
end. Prints one JSON object.

    python benchmarks/app_latency.py [--repeats 3] [--slices 300] [--size 512] [--xray-side 1024] [--no-profile]
"""

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import socket
import statistics
import sys
import tempfile
import time
import warnings
import zipfile

TARGETS_S = {"xray_cnn": 0.5, "densenet121": 2.0, "ct_study": 15.0}
ANSWERED_IN = re.compile(r"Answered in ([0-9.]+) s")


# --------------------------------------------------------------------------
# Inputs and exports
# --------------------------------------------------------------------------


def _xray_png(path, side):
    """A side x side 8-bit PNG chest X-ray phantom: the DRR of a phantom COVID chest volume."""
    import cv2
    import numpy as np

    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=120, size=256, slice_spacing=2.5, seed=0)
    film = synthetic.drr(hu, spacing, size=side)  # OpenCV resize inside, [0, 1]
    cv2.imwrite(path, np.uint8(np.rint(film * 255.0)))
    return path


def _ct_zip(tmp, slices, size):
    """A COVID phantom series written as DICOM (as predict_study.py writes it) and its deflated .zip."""
    from covid_keras.data import synthetic

    folder = os.path.join(tmp, "study")
    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=slices, size=size, slice_spacing=1.0, seed=0)
    synthetic.write_ct_series(hu, spacing, folder, seed=0)
    archive = os.path.join(tmp, "study.zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, name), arcname=name)
    return folder, archive


def _recipe_record(name, **settings):
    from covid_keras.recipes import RECIPES, config_class

    recipe = RECIPES[name]
    return recipe.export_metadata(config_class(recipe, "Config")(**settings))


def _export_xray_cnn(root):
    """Paper 004's two-step export at the recipe's image size (random weights)."""
    from covid_keras import models, serving

    record = _recipe_record("xray_cnn")
    side = record["pipeline"]["size"]
    step1, step2 = (models.xray_cnn(input_shape=(side, side, 3), num_classes=3) for _ in range(2))
    return serving.export_two_step(step1, step2, root, metadata={"recipe": record}), side


def _export_densenet(root, side):
    from covid_keras import models, serving

    model = models.densenet_classifier(input_shape=(side, side, 3), num_classes=3, weights=None)
    record = _recipe_record("densenet", image_size=side, weights=None)
    return serving.export(model, root, metadata={"recipe": record})


def _export_multiscale(root, side):
    from covid_keras import models, serving

    model = models.multiscale_resnet50(input_shape=(side, side, 3), weights=None)
    record = _recipe_record("multiscale_resnet50", image_size=side, weights=None)
    return serving.export(model, root, metadata={"recipe": record})


def _exports(root, input_size):
    """The three exports' version folders, and the seconds each export took."""
    out, seconds = {}, {}
    for key, make in (("xray_cnn", lambda: _export_xray_cnn(root)),
                      ("densenet121", lambda: (_export_densenet(root, input_size), input_size)),
                      ("ct_study", lambda: (_export_multiscale(root, input_size), input_size))):
        t = time.perf_counter()
        out[key] = make()
        seconds[key] = round(time.perf_counter() - t, 1)
    return out, seconds


# --------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Recorder:
    """Wraps covid_keras.app.answers.answer_image / answer_study while the app runs; keeps each call's ``.seconds``."""

    def __init__(self):
        self.calls = []

    @contextlib.contextmanager
    def wrapping(self):
        from covid_keras.app import answers

        originals = answers.answer_image, answers.answer_study

        def wrap(function):
            def recorded(*args, **kwargs):
                answer = function(*args, **kwargs)
                self.calls.append(dict(answer.seconds))
                return answer
            return recorded

        answers.answer_image, answers.answer_study = (wrap(f) for f in originals)
        try:
            yield self
        finally:
            answers.answer_image, answers.answer_study = originals

    def last(self):
        return self.calls[-1] if self.calls else {}


@contextlib.contextmanager
def _running_app(served_models):
    """The app over ``served_models``, launched in this process: yields (url, workspace)."""
    from covid_keras.app import page, uploads

    workspace = uploads.Workspace()
    demo = page.build_app(served_models, workspace, keep_outputs=600)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                quiet=True)
        yield url, workspace
    finally:
        with contextlib.redirect_stdout(sys.stderr):  # gradio prints "Closing server ..." on stdout: keep it JSON
            demo.close()
        workspace.close()


def _app_call(client, recorder, endpoint, label, upload):
    """One round trip through the page's endpoint: (seconds, in-app seconds split, "Answered in" seconds)."""
    from gradio_client import handle_file

    from covid_keras import errors

    args = (label, handle_file(upload)) + (("",) if endpoint == "/ct" else ())
    t = time.perf_counter()
    out = client.predict(*args, api_name=endpoint)
    seconds = time.perf_counter() - t
    status = out[0]
    if not status.startswith(("**Answer:**", "**Patient answer:**")):
        raise errors.ServingError(f"the app did not answer {endpoint}: {status}")
    shown = ANSWERED_IN.search(status)
    return seconds, recorder.last(), float(shown.group(1)) if shown else None


# --------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------


def _xray_baseline(png, served, out_png):
    """What ``python -m covid_keras.predict PNG --gradcam OUT.png`` does per call (the export already loaded)."""
    from covid_keras import serving
    from covid_keras.serving import heatmap

    t = time.perf_counter()
    result = serving.predict_study(png, served)
    heatmap.gradcam_png(png, served, out_png, prediction=result)
    return time.perf_counter() - t


def _ct_baseline(folder, served, overlap):
    """serving.answer_study on the unzipped study: (seconds, its own timings)."""
    from covid_keras import serving

    t = time.perf_counter()
    answer = serving.answer_study(folder, served, timings=True, overlap=overlap)
    seconds = time.perf_counter() - t
    return seconds, {k: round(v, 3) if isinstance(v, float) else v for k, v in answer.result["seconds"].items()}


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------


def _spread(values):
    """{"best", "median", "runs"} of warm seconds."""
    return {"best": round(min(values), 3), "median": round(statistics.median(values), 3),
            "runs": [round(v, 3) for v in values]}


def _split(calls):
    """Median of each part of the app's own ``.seconds`` over the warm calls, and of their total."""
    parts = {k: round(statistics.median(c[k] for c in calls), 3) for k in calls[0]}
    parts["total"] = round(statistics.median(sum(c.values()) for c in calls), 3)
    return parts


def _app_summary(cold, warm):
    seconds = [w[0] for w in warm]
    in_app = _split([w[1] for w in warm])
    shown = [w[2] for w in warm if w[2] is not None]
    return {
        "cold_round_trip_s": round(cold[0], 3),
        "cold_in_app_s": {k: round(v, 3) for k, v in cold[1].items()},
        "warm_round_trip_s": _spread(seconds),
        "warm_in_app_median_s": in_app,
        "warm_answered_in_shown_median_s": round(statistics.median(shown), 2) if shown else None,
        "warm_outside_answer_median_s": round(statistics.median(s - sum(w[1].values()) for s, w in
                                                                zip(seconds, warm)), 3),
    }


def _profile(fn, top=14):
    """cProfile of one call of ``fn``: its top functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.runcall(fn)
    seconds = time.perf_counter() - t

    def rows(sort):
        stats = pstats.Stats(profiler, stream=io.StringIO()).sort_stats(sort)
        out = []
        for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
            out.append((cumulative if sort == "cumulative" else own, own, cumulative, calls,
                        f"{os.path.relpath(file) if file.startswith('/') else file}:{line}({name})"))
        out.sort(reverse=True)
        return [{"function": f, "cumulative_s": round(c, 3), "own_s": round(o, 3), "calls": n}
                for _, o, c, n, f in out[:top]]

    return {"seconds": round(seconds, 3), "by_cumulative": rows("cumulative"), "by_own_time": rows("tottime")}


# --------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------


def _xray_runs(client, recorder, label, png, served, tmp, repeats):
    """The app and the CLI-style baseline for one X-ray model, alternating after their cold calls."""
    out_png = os.path.join(tmp, "baseline_gradcam.png")
    cold = _app_call(client, recorder, "/xray", label, png)
    baseline_cold = _xray_baseline(png, served, out_png)
    warm, baseline = [], []
    for _ in range(repeats):
        warm.append(_app_call(client, recorder, "/xray", label, png))
        baseline.append(_xray_baseline(png, served, out_png))
    result = _app_summary(cold, warm)
    result["baseline_predict_gradcam"] = {"cold_s": round(baseline_cold, 3), "warm_s": _spread(baseline)}
    return result, statistics.median(baseline)


def _ct_runs(client, recorder, label, archive, folder, served, repeats):
    """The app, answer_study with overlap and without, alternating after their cold calls."""
    cold = _app_call(client, recorder, "/ct", label, archive)
    colds = {overlap: _ct_baseline(folder, served, overlap) for overlap in (True, False)}
    warm, runs = [], {True: [], False: []}
    for _ in range(repeats):
        warm.append(_app_call(client, recorder, "/ct", label, archive))
        for overlap in (True, False):
            runs[overlap].append(_ct_baseline(folder, served, overlap))
    result = _app_summary(cold, warm)
    for overlap, key in ((True, "answer_study_overlap"), (False, "answer_study_sequential")):
        best = min(runs[overlap], key=lambda r: r[0])
        result[key] = {"cold_s": round(colds[overlap][0], 3), "warm_s": _spread([r[0] for r in runs[overlap]]),
                       "best_warm_timings_s": best[1]}
    seq, ovl = (statistics.median(r[0] for r in runs[k]) for k in (False, True))
    result["predict_sequential_over_overlap"] = round(seq / ovl, 3)
    return result, seq


def _unzip_seconds(archive, tmp):
    """Seconds the app's covid_keras.app.uploads.unzip_study takes for the study (once)."""
    from covid_keras.app import uploads

    folder = tempfile.mkdtemp(dir=tmp)
    t = time.perf_counter()
    uploads.unzip_study(archive, folder)
    return round(time.perf_counter() - t, 3)


def _judge(results):
    """Pass / fail per target: the median warm round trip, and the in-app answer alone."""
    return {key: {"target_s": target,
                  "round_trip_median_s": results[key]["warm_round_trip_s"]["median"],
                  "pass": results[key]["warm_round_trip_s"]["median"] <= target,
                  "in_app_median_s": results[key]["warm_in_app_median_s"]["total"],
                  "in_app_pass": results[key]["warm_in_app_median_s"]["total"] <= target}
            for key, target in TARGETS_S.items() if key in results}


def _profiles(judged, served, inputs, keras_models):
    """cProfile of one warm in-process answer of each model that missed its target."""
    from covid_keras.app import answers

    out = {}
    for key, verdict in judged.items():
        if verdict["pass"] and verdict["in_app_pass"]:
            continue
        answer = answers.answer_study if key == "ct_study" else answers.answer_image
        answer(inputs[key], served[key], keras_models)  # loads the Keras model: the profiled call is warm
        out[key] = _profile(lambda a=answer, k=key: a(inputs[k], served[k], keras_models))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per model after the cold one (default 3)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT study (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of its DICOM (default 512)")
    parser.add_argument("--input-size", type=int, default=224, help="DenseNet121 and ResNet50 input side")
    parser.add_argument("--xray-side", type=int, default=1024, help="side of the PNG X-ray (default 1024)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of a model missing its target")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1. Received: {args.repeats}")

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio
    import tensorflow as tf
    from gradio_client import Client

    from covid_keras import serving
    from covid_keras.app import answers

    gpus = tf.config.list_physical_devices("GPU")
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        png = _xray_png(os.path.join(tmp, "xray.png"), args.xray_side)
        folder, archive = _ct_zip(tmp, args.slices, args.size)
        generate_s = time.perf_counter() - t
        exported, export_s = _exports(os.path.join(tmp, "saved_models"), args.input_size)
        served = {key: serving.load_model(path) for key, (path, _) in exported.items()}
        inputs = {"xray_cnn": png, "densenet121": png, "ct_study": folder}
        result = {
            "benchmark": "app_latency",
            "weights": "random (timing only: the answers mean nothing)",
            "device": gpus[0].name if gpus else f"CPU ({os.cpu_count()} cores)",
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "gradio": gradio.__version__,
            "inputs": {"xray": f"{args.xray_side}x{args.xray_side} 8-bit PNG (DRR of a phantom chest volume), "
                               f"{os.path.getsize(png) / 1e6:.2f} MB",
                       "ct": f"{args.size}x{args.size}x{args.slices} DICOM phantom series, zipped (deflate) "
                             f"{os.path.getsize(archive) / 1e6:.0f} MB"},
            "models": {"xray_cnn": f"two-step xray_cnn {exported['xray_cnn'][1]}x{exported['xray_cnn'][1]}",
                       "densenet121": f"densenet_classifier 121 {args.input_size}x{args.input_size}",
                       "ct_study": f"multiscale_resnet50 {args.input_size}x{args.input_size}"},
            "generate_s": round(generate_s, 1),
            "export_s": export_s,
            "repeats": args.repeats,
            "load_average_before": load_before,
        }
        results, ratios = {}, {}
        recorder = _Recorder()
        with recorder.wrapping(), _running_app(list(served.values())) as (url, _):
            client = Client(url, verbose=False, download_files=os.path.join(tmp, "downloads"))
            for key in ("xray_cnn", "densenet121"):
                results[key], baseline = _xray_runs(client, recorder, answers.describe(served[key]), png,
                                                    served[key], tmp, args.repeats)
                ratios[f"{key}_predict_gradcam_over_app_round_trip"] = round(
                    baseline / results[key]["warm_round_trip_s"]["median"], 2)
                ratios[f"{key}_predict_gradcam_over_app_in_app"] = round(
                    baseline / results[key]["warm_in_app_median_s"]["total"], 2)
            results["ct_study"], sequential = _ct_runs(client, recorder, answers.describe(served["ct_study"]),
                                                       archive, folder, served["ct_study"], args.repeats)
            results["ct_study"]["unzip_study_s"] = _unzip_seconds(archive, tmp)
            ratios["ct_sequential_predict_over_app_round_trip"] = round(
                sequential / results["ct_study"]["warm_round_trip_s"]["median"], 2)
            ratios["ct_sequential_predict_over_overlap_predict"] = results["ct_study"][
                "predict_sequential_over_overlap"]
        result.update(results)
        result["ratios_baseline_over_app"] = ratios
        result["targets"] = _judge(results)
        if not args.no_profile:
            result["profiles"] = _profiles(result["targets"], served, inputs, answers.KerasModels())
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
