"""Benchmark: one 300-slice 512x512 DICOM study -> JSON answer through an exported slice model.

A COVID phantom series is generated and written as DICOM, paper 001's
multi-scale ResNet50 (224 x 224, random weights: timing only) is exported
with covid_keras.serving.export, and covid_keras.serving.predict_study runs
DICOM -> read_ct_series -> ct_slices -> SavedModel serving_default (batches
of --batch-size slices) -> mean of slice probabilities. The model is loaded
once; the first run (cold: graph warm-up) and the best of --repeats warm
runs are reported with read, preprocess and model seconds apart.
``overlap_vs_sequential`` then times covid_keras.serving.answer_study with
overlap (preprocessing beside the model, the default) and without, runs
alternating on the same loaded model and study: the best warm run of each,
their ratio, the median totals, and whether inputs and per-slice
probabilities were identical.
With overlap, ``preprocess`` is the preprocessing's busy time (mostly
beside the model) and ``model`` the time from the first batch to the last
answer. The load average (1, 5, 15 minutes) is recorded at the start and at
the end. Prints JSON.

    python benchmarks/predict_study.py [--slices 300] [--size 512] [--repeats 2] [--patient-pipeline]
"""

import argparse
import json
import os
import tempfile
import time
import warnings


def _study(folder, slices, size):
    from covid_keras.data import synthetic

    hu, _, spacing = synthetic.phantom_volume("covid", n_slices=slices, size=size, slice_spacing=1.0, seed=0)
    synthetic.write_ct_series(hu, spacing, folder, seed=0)


def _recipe_metadata(args):
    """The export's recipe record (classes and pipeline come from it: nothing is guessed)."""
    from covid_keras.recipes import MULTISCALE_RESNET50, config_class

    config = config_class(MULTISCALE_RESNET50, "Config")(image_size=args.input_size, weights=None)
    return {"recipe": MULTISCALE_RESNET50.export_metadata(config)}


def _pipeline_metadata(args):
    """The patient pipeline's records: the ensemble's recipe, and the slice model's (as train.ensemble writes)."""
    from covid_keras.recipes import ENSEMBLE, config_class

    slice_record = _recipe_metadata(args)["recipe"]
    ensemble = ENSEMBLE.export_metadata(config_class(ENSEMBLE, "Config")())
    return {"recipe": {**ensemble, "pipeline": slice_record["pipeline"]}, "slice_recipe": slice_record}


def _pipeline_parts(slice_model):
    from covid_keras import models

    heads = {
        "maxpool": models.maxpool_head(feature_dim=1024),
        "maxpool_weighted": models.maxpool_head(feature_dim=3072),
        "bilstm": models.bilstm_head(feature_dim=1024),
        "bilstm_weighted": models.bilstm_head(feature_dim=3072),
    }
    return heads, models.ensemble_mlp()


def _time_model(folder, version_dir, repeats, batch_size):
    from covid_keras import serving

    t = time.perf_counter()
    served = serving.load_model(version_dir)
    served.signature  # noqa: B018 - load the SavedModel now
    load_s = time.perf_counter() - t
    cold = serving.predict_study(folder, served, batch_size=batch_size, timings=True)
    warm = [serving.predict_study(folder, served, batch_size=batch_size, timings=True) for _ in range(repeats)]
    best = min(warm, key=lambda r: r["seconds"]["total"]) if warm else cold
    answer = {k: best[k] for k in ("predicted_class", "slices", "model", "model_version", "aggregation")}
    return {
        "load_savedmodel_s": round(load_s, 2),
        "cold_s": cold["seconds"],
        "warm_s": best["seconds"],
        "warm_model_slices_per_s": round(best["slices"] / best["seconds"]["model"], 1),
        "answer": answer,
    }


def _compare_overlap(folder, version_dir, repeats, batch_size):
    """answer_study with and without overlap, alternating, on one loaded model: best warm run of each."""
    import numpy as np

    from covid_keras import serving

    served = serving.load_model(version_dir)
    reference = serving.answer_study(folder, served, batch_size=batch_size, overlap=False)  # cold run, not timed
    runs, identical = {True: [], False: []}, True
    for _ in range(max(repeats, 1)):
        for overlap in (True, False):
            got = serving.answer_study(folder, served, batch_size=batch_size, timings=True, overlap=overlap)
            identical &= bool(np.array_equal(got.inputs, reference.inputs)
                              and np.array_equal(got.per_slice, reference.per_slice))
            runs[overlap].append(got.result["seconds"])
            del got  # the next run does not find this one's 180 MB of inputs still held
    best = {overlap: min(seconds, key=lambda s: s["total"]) for overlap, seconds in runs.items()}
    median = {overlap: float(np.median([s["total"] for s in seconds])) for overlap, seconds in runs.items()}
    return {
        "repeats": max(repeats, 1),
        "overlap_warm_s": best[True],
        "sequential_warm_s": best[False],
        "sequential_over_overlap": round(best[False]["total"] / best[True]["total"], 3),
        "median_total_s": {"overlap": round(median[True], 3), "sequential": round(median[False], 3)},
        "identical": identical,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300, help="slices in the study (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of the DICOM (default 512)")
    parser.add_argument("--input-size", type=int, default=224, help="model input side (default 224)")
    parser.add_argument("--repeats", type=int, default=2, help="warm runs after the cold one; the best is kept")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per SavedModel call")
    parser.add_argument("--patient-pipeline", action="store_true",
                        help="also export and time the whole patient pipeline (slice model + 4 heads + ensemble)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from covid_keras import models, serving

    gpus = tf.config.list_physical_devices("GPU")
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = os.path.join(tmp, "study")
        t = time.perf_counter()
        _study(folder, args.slices, args.size)
        generate_s = time.perf_counter() - t

        slice_model = models.multiscale_resnet50(input_shape=(args.input_size, args.input_size, 3), weights=None)
        t = time.perf_counter()
        version_dir = serving.export(slice_model, os.path.join(tmp, "saved_models"), metadata=_recipe_metadata(args))
        export_s = time.perf_counter() - t
        result = {
            "benchmark": "predict_study",
            "study": f"{args.size}x{args.size}x{args.slices} DICOM (uncompressed, phantom)",
            "model": f"multiscale_resnet50 {args.input_size}x{args.input_size}, random weights, SavedModel",
            "device": gpus[0].name if gpus else f"CPU ({os.cpu_count()} cores)",
            "batch_size": args.batch_size,
            "generate_s": round(generate_s, 2),
            "export_s": round(export_s, 2),
            "slice_model": _time_model(folder, version_dir, args.repeats, args.batch_size),
            "overlap_vs_sequential": _compare_overlap(folder, version_dir, args.repeats, args.batch_size),
            "load_average_before": load_before,
        }
        if args.patient_pipeline:
            heads, ensemble = _pipeline_parts(slice_model)
            t = time.perf_counter()
            pipeline_dir = serving.export_patient_pipeline(slice_model, heads, ensemble,
                                                           os.path.join(tmp, "saved_models"),
                                                           metadata=_pipeline_metadata(args))
            result["patient_pipeline_export_s"] = round(time.perf_counter() - t, 2)
            result["patient_pipeline"] = _time_model(folder, pipeline_dir, args.repeats, args.batch_size)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
