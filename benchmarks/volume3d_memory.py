"""Benchmark: peak host memory of paper 000's phantom training command, N studies vs 2N.

Runs ``python -m train.volume3d`` (the phantom preset, shortened to
``--epochs`` epochs, ``--no-final``, ``--export-dir none``, ``--workers 1``
so the preprocessing runs in the measured process) twice, one child process
at a time: with
``--phantom-patients-per-class N`` and then ``2N``. Each run has a fresh
run folder and a fresh ``COVID_KERAS_CACHE`` (a temporary folder), so its
phantom dataset and its volume3d cache are built inside the measured run.
Each child's own peak resident set size comes from ``os.wait4`` (its
``ru_maxrss``, not the maximum over every child waited for, which
``RUSAGE_CHILDREN`` would give). On Linux that figure is the larger of the
command's own peak and those of the processes it waited for: each fold
trains in a process of its own, and its peak counts. Volumes stream from the cache shards
(``training.pipelines.volume_dataset``), so the peak should not grow with
the studies: the target is a ratio 2N / N within 1.10. Prints JSON with both
peaks, their ratio, the studies and volumes each run used (from its
summary.json, crossval.json and the cache's manifest), the run seconds and
the load average before and after each run.

    python benchmarks/volume3d_memory.py [--patients-per-class 8] [--epochs 2] [--keep]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

#: What the package reads for its cache folder (covid_keras.data.privacy.cache_dir).
CACHE_ENV = "COVID_KERAS_CACHE"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def run_once(patients_per_class, epochs, folder):
    """One ``train.volume3d`` child in ``folder``; returns its measurements."""
    run_dir = os.path.join(folder, "run")
    env = {**os.environ, CACHE_ENV: os.path.join(folder, "cache")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "train.volume3d", "--phantom-patients-per-class", str(patients_per_class),
               "--epochs", str(epochs), "--workers", "1", "--export-dir", "none", "--no-final", "--verbose", "0",
               "--run-dir", run_dir, "--runs-root", os.path.join(folder, "runs")]
    load_before = _loadavg()
    start = time.perf_counter()
    with open(os.path.join(folder, "stdout.txt"), "wb") as out, open(os.path.join(folder, "stderr.txt"), "wb") as err:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    seconds = time.perf_counter() - start
    result = {
        "patients_per_class": patients_per_class,
        "command": " ".join(command[1:]),
        "returncode": child.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KB on Linux
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }
    if child.returncode != 0:
        with open(os.path.join(folder, "stderr.txt"), errors="replace") as f:
            result["stderr_tail"] = f.read()[-2000:]
        return result
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    crossval = _read_json(os.path.join(run_dir, "crossval.json"))
    manifest = _read_json(os.path.join(summary["cache"], "manifest.json"))
    records = manifest["records"]
    folds = []
    for entry in crossval["folds"]:
        counts = _read_json(os.path.join(run_dir, "folds", f"fold_{entry['fold']}", "volumes.json"))["counts"]
        folds.append({side: sum(counts[side].values()) for side in ("train_before", "train_after", "val")})
    result.update({
        "studies": summary["studies"],
        "cache_volumes": {"total": len(records), "augmented_copies": sum(1 for r in records if r.get("suffix")),
                          "shape": manifest.get("input_shape"), "dtype": manifest.get("dtype")},
        "fold_volumes": folds,
        "accuracy_mean": crossval["mean"].get("accuracy"),
    })
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients-per-class", type=int, default=8, help="N: the base run's phantom patients "
                                                                         "per class (the second run: 2N)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fold (the phantom preset: 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (their paths are printed)")
    args = parser.parse_args(argv)

    top = tempfile.mkdtemp(prefix="volume3d_memory-")
    runs = []
    try:
        for n in (args.patients_per_class, 2 * args.patients_per_class):  # the base count first
            folder = os.path.join(top, f"ppc{n}")
            os.makedirs(folder)
            runs.append(run_once(n, args.epochs, folder))
            if runs[-1]["returncode"] != 0:
                break
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    ok = len(runs) == 2 and all(r["returncode"] == 0 for r in runs)
    ratio = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"] if ok else None
    print(json.dumps({
        "benchmark": "volume3d_memory",
        "device": f"CPU ({os.cpu_count()} cores)",
        "arguments": vars(args),
        "command": "python -m train.volume3d (phantom preset) --epochs E --workers 1 --export-dir none --no-final "
                   "--verbose 0, fresh run folder and COVID_KERAS_CACHE per run",
        "measure": "os.wait4 ru_maxrss of each child (its own peak RSS)",
        "base_peak_rss_mb": runs[0]["peak_rss_mb"],
        "double_peak_rss_mb": runs[1]["peak_rss_mb"] if len(runs) > 1 else None,
        "peak_rss_ratio": None if ratio is None else round(ratio, 4),
        "target_ratio_max": 1.10,
        "within_target": None if ratio is None else ratio <= 1.10,
        "runs": runs,
        "kept": top if args.keep else None,
    }, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
