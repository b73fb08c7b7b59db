"""Benchmark: paper 001's whole chain on the built-in phantoms, as a user first runs it.

Runs ``python -m train.slice_level``, ``python -m train.patient_level`` and
``python -m train.ensemble`` one after the other with no arguments (their
phantom defaults: seeded, repeatable on CPU) in a fresh temporary folder,
with a fresh preprocessing cache (``COVID_KERAS_CACHE``), so the times
include writing the phantom DICOM series and building the caches. Reads the
figures from the run folders' ``summary.json`` and ``split.json`` and prints
JSON: wall seconds per command, the slice classifier's accuracy and
majority-class rate on the validation and held-out test patients (slices
and patients each figure rests on), each head's and the ensemble's patient
accuracy (correct / patients), and the load average before and after (other
work on the machine slows the times, not the accuracies).

    python benchmarks/phantom_chain.py [--keep DIR]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("slice_level", "patient_level", "ensemble")


def _run(command, cwd, env):
    """Runs ``python -m train.<command>`` in ``cwd``; returns its wall seconds."""
    log = os.path.join(cwd, f"{command}.log")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", f"train.{command}"], cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"train.{command} failed (exit {proc.returncode}); the end of its output:\n{tail}")
    return seconds


def _summary(cwd, command):
    (path,) = glob.glob(os.path.join(cwd, "runs", command, "*", "summary.json"))
    with open(path) as f:
        return os.path.dirname(path), json.load(f)


def _correct(report):
    """``"correct/n"`` of a classification report (its confusion matrix's trace over its total)."""
    confusion = report["confusion"]
    return f"{sum(confusion[i][i] for i in range(len(confusion)))}/{report['n']}"


def _slice_figures(report, patients):
    return {"accuracy": report["accuracy"], "majority_rate": report["majority_rate"], "slices": report["n"],
            "patients": patients}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="run in this (new or empty) folder and keep it, instead of a temporary one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.path.abspath(args.keep) if args.keep else tmp
        os.makedirs(cwd, exist_ok=True)
        env = {**os.environ, "COVID_KERAS_CACHE": os.path.join(cwd, "cache"),
               "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        load_before = os.getloadavg()
        seconds = {f"train.{c}": round(_run(c, cwd, env), 1) for c in COMMANDS}
        load_after = os.getloadavg()

        slice_run, slices = _summary(cwd, "slice_level")
        with open(os.path.join(slice_run, "split.json")) as f:
            split = {part: len(ids) for part, ids in json.load(f).items()}
        _, heads = _summary(cwd, "patient_level")
        _, ensemble = _summary(cwd, "ensemble")

    result = {
        "benchmark": "phantom_chain",
        "commands": "python -m train.slice_level; python -m train.patient_level; python -m train.ensemble "
                    "(no arguments: the phantom defaults)",
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": {"before": [round(v, 2) for v in load_before],
                                    "after": [round(v, 2) for v in load_after]},
        "wall_s": seconds,
        "patients": split,
        "slice_classifier": {part: _slice_figures(slices["slice_report"][part], split[part])
                             for part in ("val", "test") if part in slices["slice_report"]},
        "heads_patient_correct": {name: {part: _correct(r) for part, r in parts.items()}
                                  for name, parts in heads["reports"].items()},
        "ensemble": {part: {"accuracy": r["accuracy"], "correct": _correct(r), "majority_rate": r["majority_rate"],
                            "patients": r["n"]}
                     for part, r in ensemble["reports"].items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
