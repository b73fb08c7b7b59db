"""Look at medical images and datasets from the command line.

    python -m covid_keras.data demo                      # phantoms -> read back -> summary
    python -m covid_keras.data info PATH                 # a CT series folder or an X-ray file
    python -m covid_keras.data phantoms [--kind ct|xray] # generate the built-in data, print where
    python -m covid_keras.data list --dataset NAME --data DIR   # a real dataset's records

Output is JSON on stdout. Patient identities never appear: ids are
pseudonymous (``pt-<hex>``) or the dataset's own pseudonyms.
"""

import argparse
import collections
import json
import os
import sys

import numpy as np

from covid_keras import cli, errors


def _series_summary(ct):
    return {
        "patient_id": ct.patient_id,
        "shape_zyx": list(ct.hu.shape),
        "spacing_zyx_mm": [round(float(s), 4) for s in ct.spacing],
        "hu_min": float(ct.hu.min()),
        "hu_max": float(ct.hu.max()),
        "hu_mean": round(float(ct.hu.mean()), 1),
        "meta": ct.meta,
    }


def cmd_info(args):
    from covid_keras import data

    path = args.path
    if os.path.isdir(path):
        out = _series_summary(data.read_ct_series(path, modalities=None if args.any_modality else ("CT",)))
    else:
        img = data.read_xray(path)
        out = {
            "shape_hw": list(img.shape),
            "min": float(img.min()),
            "max": float(img.max()),
            "mean": round(float(img.mean()), 4),
        }
    print(json.dumps(out, indent=2))


def cmd_phantoms(args):
    from covid_keras.data import synthetic

    if args.kind == "ct":
        folder = synthetic.ct_dataset_dir(synthetic.CTPhantomConfig(patients_per_class=args.count, seed=args.seed))
    else:
        folder = synthetic.xray_dataset_dir(synthetic.XrayPhantomConfig(images_per_pathology=args.count, seed=args.seed))
    print(json.dumps({"kind": args.kind, "folder": folder}))


def _record_summary(records):
    by_label = collections.Counter(r.label for r in records)
    patients = {r.patient_id for r in records}
    return {"records": len(records), "patients": len(patients), "per_class": dict(sorted(by_label.items()))}


def cmd_list(args):
    from covid_keras.data import datasets

    if not args.data:
        raise errors.ConfigurationError("`list` needs --data DIR: the folder of the downloaded dataset.")
    records = datasets.load_dataset(args.dataset, args.data)
    print(json.dumps({"dataset": args.dataset, **_record_summary(records)}, indent=2))


def cmd_demo(args):
    """Generates the CT phantoms, reads every series back, and summarises."""
    from tqdm import tqdm

    from covid_keras.data import read_ct_series, synthetic

    records = synthetic.ct_dataset(synthetic.CTPhantomConfig(patients_per_class=args.count, seed=args.seed))
    rows = []
    for r in tqdm(records, desc="reading phantom series", disable=args.quiet, file=sys.stderr):
        ct = read_ct_series(r.paths[0])
        lungs = (ct.hu < -500) & (ct.hu > -950)
        labelled = sum(v for _, v in r.slice_labels) if r.slice_labels else None
        rows.append({
            "patient_id": r.patient_id,
            "label": r.label,
            "slices": ct.hu.shape[0],
            "spacing_zyx_mm": [round(float(s), 3) for s in ct.spacing],
            "lung_fraction": round(float(lungs.mean()), 3),
            "lesion_slices": labelled,
        })
    print(json.dumps({"dataset": "synthetic-ct (COVID-CT-MD layout)", **_record_summary(records),
                      "median_slices": float(np.median([r["slices"] for r in rows])),
                      "series": rows}, indent=2))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covid_keras.data", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the CT phantoms, read them back, summarise",
                       formatter_class=cli.HelpFormatter)
    p.add_argument("--count", type=int, default=8, help="phantom patients per class")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    cli.add_common_arguments(p)

    p = sub.add_parser("info", help="read a CT series folder or an X-ray file and summarise it",
                       formatter_class=cli.HelpFormatter)
    p.add_argument("path", help="a folder of DICOM files (CT series) or one image file (X-ray)")
    p.add_argument("--any-modality", action="store_true", help="read a series even if it is not CT")
    cli.add_common_arguments(p)

    p = sub.add_parser("phantoms", help="generate the built-in synthetic data and print its folder",
                       formatter_class=cli.HelpFormatter)
    p.add_argument("--kind", choices=("ct", "xray"), default="ct", help="CT series or radiographs")
    p.add_argument("--count", type=int, default=None,
                   help="patients per class (ct, default 8) or images per pathology (xray, default 24)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    cli.add_common_arguments(p)

    p = sub.add_parser("list", help="list a real dataset's records per class",
                       formatter_class=cli.HelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset layout name, e.g. covid-ct-md")
    p.add_argument("--data", help="the dataset's folder")
    cli.add_common_arguments(p)

    args = parser.parse_args(argv)
    if getattr(args, "count", 1) is None:
        args.count = 8 if args.kind == "ct" else 24
    if getattr(args, "count", 1) < 1:
        parser.error(f"--count must be at least 1. Received: {args.count}")
    return args


def main(argv=None):
    args = parse_args(argv)
    {"demo": cmd_demo, "info": cmd_info, "phantoms": cmd_phantoms, "list": cmd_list}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
