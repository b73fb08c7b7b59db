"""Hand-made run folders for the audit tests: phantom studies, a patient split, records.json.

Plain functions (not fixtures), imported by ``test_audit.py``: each writes
what a training command would leave for ``evaluate.audit`` to read,
``config.json``, ``split.json`` (or ``folds.json``) and ``records.json``,
with no training.
"""

import dataclasses
import json
import os
import shutil

import cv2
import numpy as np

from covid_keras.data import synthetic
from covid_keras.data.datasets import Record
from covid_keras.training.runner import split_patients
from covid_keras.training.runs import RunFolder, write_json, write_records

#: The phantom pathologies of the X-ray runs, and their class names (paper 004's step 1 names). The
#: COVID-19 phantoms are left out: 12 of them against 12 normal films give a border probe that is
#: significant for some fold draws (accuracy up to 0.8) and not at 48 a class, a small-sample
#: fluctuation that would make the clean test depend on the fold draw.
XRAY_CLASSES = {"normal": "normal", "viral": "viral"}
#: Side of the planted marker, as a fraction of the image side.
MARKER_FRACTION = 0.12


def xray_phantoms(root, images_per_pathology=12, size=64, seed=0):
    """Writes the package's phantom radiographs under ``root``; returns ``root``."""
    config = synthetic.XrayPhantomConfig(images_per_pathology=images_per_pathology, size=size, seed=seed)
    synthetic.write_xray_dataset(str(root), config)
    return str(root)


def xray_records(root, classes=XRAY_CLASSES):
    """Records of the phantom radiographs of ``classes`` (pathology -> class), one patient per image."""
    records = synthetic.xray_records(root, "xraycnn_step1")
    return [dataclasses.replace(r, label=classes[r.extra["pathology"]]) for r in records
            if r.extra["pathology"] in classes]


def burn_marker(path, corner="top-left", value=255, fraction=MARKER_FRACTION):
    """Burns a bright square into a corner of an 8-bit picture, in place (a hospital's marker)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    side = max(2, round(fraction * min(image.shape[:2])))
    rows = slice(0, side) if corner.startswith("top") else slice(-side, None)
    cols = slice(0, side) if corner.endswith("left") else slice(-side, None)
    image[rows, cols] = value
    cv2.imwrite(path, image)


def marked_copy(records, folder, label, corner="top-left"):
    """Copies every record's picture into ``folder``, burning a marker into those of class ``label``."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for r in records:
        path = os.path.join(folder, os.path.basename(r.paths[0]))
        shutil.copyfile(r.paths[0], path)
        if r.label == label:
            burn_marker(path, corner)
        out.append(dataclasses.replace(r, paths=(path,)))
    return out


def noised_copy(src, dst, sigma=1.0, seed=0):
    """Writes ``src`` (an 8-bit picture) to ``dst`` with Gaussian noise of ``sigma`` grey levels."""
    image = cv2.imread(src, cv2.IMREAD_UNCHANGED).astype(np.float64)
    noisy = image + np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    cv2.imwrite(dst, np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return dst


def _jpeg(grey, quality):
    return cv2.imdecode(cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


def _noised(grey, sigma, seed=0):
    noisy = grey + np.random.default_rng(seed).normal(0.0, sigma, grey.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _resized(grey, factor):
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(grey, None, fx=factor, fy=factor, interpolation=interpolation)


#: Copies that are still the same picture (uint8 grey -> uint8 grey): what the near-duplicate check must find.
SLIGHT_COPIES = {
    "re-encoded as JPEG q90": lambda g: _jpeg(g, 90),
    "noised (sigma 1 grey level)": lambda g: _noised(g, 1.0),
    "one grey level brighter": lambda g: np.minimum(g.astype(np.int16) + 1, 255).astype(np.uint8),
    "resized x0.75": lambda g: _resized(g, 0.75),
    "resized x0.5": lambda g: _resized(g, 0.5),
}
#: A radiograph resized up is found too (a CT slice's sharper edges move further: not caught).
FILM_COPIES = {**SLIGHT_COPIES, "resized x2 (bicubic)": lambda g: _resized(g, 2.0)}


def default_ct_grey(config=None):
    """The representative lung-window slices of the built-in CT phantoms (``CTPhantomConfig`` defaults), as uint8.

    The volumes are those :func:`covid_keras.data.synthetic.write_ct_dataset`
    writes (its per-patient sizes, spacings and seeds), HU rounded as DICOM
    stores them, without writing the files.

    Returns:
        A list, one per series, of its uint8 [size, size] slices.
    """
    from covid_keras.evaluation.audit import series_grey
    from covid_keras.evaluation.leakage import to_grey_u8

    config = config or synthetic.CTPhantomConfig()
    pathology_of = {v: k for k, v in synthetic.CT_LABELS.items()}
    series = []
    for label in ("COVID-19", "CAP", "Normal"):
        for i in range(config.patients_per_class):
            n, dz, px, seed = synthetic._ct_patient_params(config, label, i)
            hu, _, _ = synthetic.phantom_volume(pathology_of[label], n_slices=n, size=config.size,
                                                pixel_spacing=px, slice_spacing=dz, seed=seed)
            series.append([to_grey_u8(g) for g in series_grey(np.rint(hu))[1]])
    return series


def write_run(run_dir, records, split=None, folds=None, seed=0):
    """A run folder as a training command leaves it: config, split (made by patient) or folds, records.

    Args:
        run_dir: the folder to create.
        records: the run's :class:`Record` list.
        split: ``{"train", "val", "test"}`` patient lists; None makes one with
            the training commands' patient split (20 % validation, 30 % test).
        folds: instead of a split, ``[(train patients, val patients), ...]``.

    Returns:
        ``(run_dir, split or folds)`` as written.
    """
    run = RunFolder.open(str(run_dir), {"recipe": "audit-test", "seed": seed})
    if folds is not None:
        write_json(run.file("folds.json"), {"k": len(folds), "seed": seed, "folds": [
            {"fold": i, "train": sorted(t), "val": sorted(v)} for i, (t, v) in enumerate(folds, start=1)]})
        written = folds
    else:
        written = split if split is not None else split_patients(records, 0.2, 0.3, seed)
        write_json(run.file("split.json"), written)
    write_records(run, records)
    return str(run_dir), written


def read_split(run_dir):
    with open(os.path.join(run_dir, "split.json")) as f:
        return json.load(f)


def ct_series_records(root, n_per_class=8, size=48, n_slices=12, manufacturers=None, seed=0):
    """Writes small CT phantom series (one DICOM folder per patient) and returns their records.

    Args:
        manufacturers: ``{label: Manufacturer}`` written into each class's
            files (a planted scanner shortcut); None keeps the phantom's own.
    """
    from pydicom import dcmread

    records = []
    for c, (pathology, label) in enumerate((("normal", "Normal"), ("covid", "COVID-19"))):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, c, i])
            spacing = float(rng.choice([2.5, 3.0, 4.0, 5.0]))
            hu, _, voxel = synthetic.phantom_volume(pathology, n_slices=n_slices, size=size, slice_spacing=spacing,
                                                    pixel_spacing=float(380.0 / size * rng.uniform(0.92, 1.08)),
                                                    seed=int(rng.integers(2**31)))
            pid = f"ct-{label.lower()}-{i:02d}"
            folder = os.path.join(str(root), pid)
            paths = synthetic.write_ct_series(hu, voxel, folder, patient_id=f"PHANTOM-{pid}",
                                              patient_name=f"PHANTOM^{pid}", seed=int(rng.integers(2**31)))
            if manufacturers is not None:
                for path in paths:
                    ds = dcmread(path)
                    ds.Manufacturer = manufacturers[label]
                    ds.save_as(path)
            records.append(Record(patient_id=pid, label=label, paths=(folder,), dataset="covid-ct-md"))
    return records


def write_dicom_radiograph(picture, path, *, manufacturer="covid_keras phantom", view="PA", patient="PHANTOM^XRAY"):
    """Writes an 8-bit phantom picture as a DX radiograph (12 bits stored, MONOCHROME2) with made-up identity tags."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    grey = cv2.imread(picture, cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient, f"{patient}-ID", "19450203"
    ds.Modality, ds.Manufacturer, ds.ViewPosition, ds.KVP = "DX", manufacturer, view, "110"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = grey.shape
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = grey.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_radiograph_records(records, folder, views=None):
    """The phantom pictures of ``records`` written as DX DICOM files; ``views``: ``{label: ViewPosition}``."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for r in records:
        path = os.path.join(folder, os.path.splitext(os.path.basename(r.paths[0]))[0] + ".dcm")
        write_dicom_radiograph(r.paths[0], path, view=(views or {}).get(r.label, "PA"),
                               patient=f"PHANTOM^{r.patient_id}")
        out.append(dataclasses.replace(r, paths=(path,)))
    return out
