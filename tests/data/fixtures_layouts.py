"""Builders of fixture trees that copy each public dataset's real layout, in miniature.

Every builder writes tiny but real files (PNG/JPEG through OpenCV, a real
``.npy`` label array) under ``tmp_path`` with the folder names, index files
and file-name conventions of the published dataset; nothing is downloaded.
Each image has distinct pixels, so the content-leakage check sees no
accidental duplicates.
"""

import csv
import itertools
import os

import cv2
import numpy as np

_counter = itertools.count()


def write_image(path, value=None):
    """Writes an 8x8 greyscale PNG/JPEG with pixels unique to this call."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    seed = next(_counter) if value is None else value
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")
    return str(path)


def write_csv(path, header, rows):
    """Writes a CSV with ``header`` and ``rows`` (lists of values)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


# --------------------------------------------------------------------------
# COVID-CT-MD
# --------------------------------------------------------------------------

# Index.csv rows as published: the Label Index column jumps from 42 to 44.
CTMD_INDEX = [
    ("0", "COVID-19", "./COVID-19/", "P001"),
    ("1", "COVID-19", "./COVID-19/", "P002"),
    ("42", "COVID-19", "./COVID-19/", "P043"),
    ("44", "COVID-19", "./COVID-19/", "P044"),
    ("45", "CAP", "./CAP/", "cap001"),
]
# Distinct slice-label patterns per array row (after the jump correction).
CTMD_ROWS = {0: [1, 1, 0], 1: [0, 1, 0], 42: [0, 1, 1, 0], 43: [1, 0, 0, 1], 44: [0, 0, 1, 1]}
CTMD_SLICES = {
    ("COVID-19 Cases", "P001"): ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"],
    # The GitHub sample's naming, where plain sorting would put _10 before _2.
    ("COVID-19 Cases", "P002"): ["98C14734-ASSH_1.dcm", "98C14734-ASSH_2.dcm", "98C14734-ASSH_10.dcm"],
    ("COVID-19 Cases", "P043"): ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"],
    ("COVID-19 Cases", "P044"): ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"],
    ("COVID-19 Cases", "P100"): ["IM0001.dcm", "IM0002.dcm"],  # no slice labels
    ("Cap Cases", "cap001"): ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"],
    ("Normal Cases", "normal001"): ["IM0001.dcm", "IM0002.dcm"],  # not in Index.csv
    ("Normal Cases", "normal002"): ["IM0001.dcm"],
}


def build_covid_ct_md(root):
    """COVID-CT-MD: class folders of patient folders of .dcm files + Index.csv + npy."""
    for (class_folder, pid), names in CTMD_SLICES.items():
        folder = os.path.join(root, class_folder, pid)
        os.makedirs(folder, exist_ok=True)
        for name in names:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(f"not pixels: {pid}/{name}".encode())
    write_csv(os.path.join(root, "Index.csv"),
              ["Label Index", "Diagnosis", "Relative Path", "Folder/ID"], CTMD_INDEX)
    array = np.zeros((45, 6), dtype=np.uint8)  # 45 labelled rows, up to 6 slices
    for row, values in CTMD_ROWS.items():
        array[row, : len(values)] = values
    np.save(os.path.join(root, "Slice-level-labels.npy"), array)
    return str(root)


# --------------------------------------------------------------------------
# COVIDx CT-2A
# --------------------------------------------------------------------------

COVIDX_LINES = {
    "train": [
        "NCP_96_1328_0032.png 2 10 20 300 310",
        "NCP_96_1328_0033.png 2 10 20 300 310",
        "NCP_96_1329_0001.png 2 11 21 301 311",  # second scan of the same patient
        "CP_12_3456_0001.png 1 0 0 512 512",
        "Normal_5_123_0001.png 0 5 6 500 501",
        "radiopaedia-40-51-0-0012.png 2 1 2 3 4",
        "MISSING_1_1_0001.png 0 1 1 2 2",  # listed but not on disk
    ],
    "val": [
        "CP_13_3457_0001.png 1 0 0 512 512",
        "COVIDCTMD-P001-IM0001.png 2 9 9 99 99",
    ],
    "test": [
        "Normal_6_124_0001.png 0 0 0 10 10",
        "volume-covid19-A-0003_ct-0045.png 2 4 4 40 40",
    ],
}


def build_covidx_ct(root, variant="2A", image_dir="2A_images"):
    """COVIDx CT: one image folder and three split files of 6-column lines."""
    for split, lines in COVIDX_LINES.items():
        with open(os.path.join(root, f"{split}_COVIDx_CT-{variant}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        for line in lines:
            name = line.split()[0]
            if not name.startswith("MISSING"):
                write_image(os.path.join(root, image_dir, name))
    return str(root)


# --------------------------------------------------------------------------
# SARS-CoV-2 CT-scan dataset
# --------------------------------------------------------------------------


def build_sars_cov2_ct(root, n_covid=3, n_non=2):
    """SARS-CoV-2 CT-scan: COVID/ and non-COVID/ folders of PNGs."""
    for i in range(1, n_covid + 1):
        write_image(os.path.join(root, "COVID", f"Covid ({i}).png"))
    for i in range(1, n_non + 1):
        write_image(os.path.join(root, "non-COVID", f"Non-Covid ({i}).png"))
    return str(root)


# --------------------------------------------------------------------------
# Chest X-Ray Images (Pneumonia), Kermany
# --------------------------------------------------------------------------

KERMANY_FILES = {
    ("train", "NORMAL"): ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-1427-0001.jpeg"],
    ("train", "PNEUMONIA"): ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg",
                             "person3_virus_15.jpeg", "person1000_virus_1681.jpeg",
                             "odd-name.jpeg"],  # fits no pattern
    ("val", "NORMAL"): ["NORMAL2-IM-1431-0001.jpeg"],
    ("val", "PNEUMONIA"): ["person1946_bacteria_4874.jpeg"],
    ("test", "NORMAL"): ["IM-0001-0001.jpeg"],
    ("test", "PNEUMONIA"): ["person100_virus_184.jpeg"],
}


def build_chest_xray(root, nested=True):
    """Kermany: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg."""
    base = os.path.join(root, "chest_xray") if nested else str(root)
    for (split, cls), names in KERMANY_FILES.items():
        for name in names:
            write_image(os.path.join(base, split, cls, name))
    with open(os.path.join(base, "train", "NORMAL", ".DS_Store"), "wb") as f:
        f.write(b"\0")
    return str(root)


# --------------------------------------------------------------------------
# COVID-19 image data collection, Cohen
# --------------------------------------------------------------------------

COHEN_HEADER = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival",
                "view", "modality", "date", "location", "folder", "filename", "doi", "url",
                "license", "clinical_notes", "other_notes", ""]
# (patientid, sex, age, finding, view, modality, folder, filename, on_disk)
COHEN_ROWS = [
    ("2", "M", "65", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "images", "covid-a.jpeg", True),
    ("2", "M", "65", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "images", "covid-b.jpeg", True),
    ("4", "F", "52", "Pneumonia/Viral/COVID-19", "L", "X-ray", "images", "covid-lateral.jpeg", True),
    ("6", "", "", "Pneumonia/Viral/COVID-19", "Axial", "CT", "images", "covid-ct.jpg", True),
    ("3", "M", "74", "Pneumonia/Viral/SARS", "AP", "X-ray", "images", "sars.jpeg", True),
    ("9", "F", "46", "Pneumonia/Viral/MERS-CoV", "PA", "X-ray", "images", "mers.png", True),
    ("20", "F", "30", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "images", "strep.jpg", True),
    ("21", "M", "40", "Pneumonia/Fungal/Pneumocystis", "AP", "X-ray", "images", "pcp.jpg", True),
    ("22", "M", "50", "Pneumonia/Lipoid", "PA", "X-ray", "images", "lipoid.jpg", True),
    ("23", "F", "60", "Pneumonia/Aspiration", "PA", "X-ray", "images", "aspiration.jpg", True),
    ("5", "", "", "Pneumonia", "PA", "X-ray", "images", "ards.png", True),
    ("30", "M", "70", "No Finding", "PA", "X-ray", "images", "normal.jpg", True),
    ("31", "", "", "todo", "PA", "X-ray", "images", "todo.jpg", True),
    ("32", "F", "35", "Tuberculosis", "PA", "X-ray", "images", "tb.jpg", True),
    ("33", "M", "58", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "images", "gone.jpg", False),
]


def build_covid_chestxray(root):
    """covid-chestxray-dataset: metadata.csv (current columns) and images/."""
    rows = []
    for pid, sex, age, finding, view, modality, folder, filename, on_disk in COHEN_ROWS:
        rows.append([pid, "0", sex, age, finding, "", "", view, modality, "2020", "", folder,
                     filename, "", "", "", "notes, with a comma", "", ""])
        if on_disk:
            write_image(os.path.join(root, folder, filename))
    write_csv(os.path.join(root, "metadata.csv"), COHEN_HEADER, rows)
    return str(root)


def build_covid_chestxray_flat(root):
    """An early release: `Patientid` header, flat findings, no modality/folder."""
    header = ["Patientid", "offset", "sex", "age", "finding", "survival", "view", "date",
              "location", "filename", "doi", " url", "license", "notes"]
    rows = [
        ("1", "COVID-19", "PA", "flat-covid.jpg"),
        ("3", "SARS", "PA", "flat-sars.jpeg"),
        ("8", "Streptococcus", "PA", "flat-strep.jpg"),
        ("10", "COVID-19, ARDS", "AP", "flat-covid-ards.jpg"),
        ("11", "COVID-19", "CT", "flat-ct.jpg"),
        ("12", "ARDS", "PA", "flat-ards.png"),
    ]
    out = []
    for pid, finding, view, filename in rows:
        out.append([pid, "0", "M", "50", finding, "", view, "2020", "", filename, "", "", "", ""])
        write_image(os.path.join(root, "images", filename))
    write_csv(os.path.join(root, "metadata.csv"), header, out)
    return str(root)


# --------------------------------------------------------------------------
# NIH ChestX-ray14
# --------------------------------------------------------------------------

# The real header: its bracketed names hold unquoted commas.
NIH_HEADER_LINE = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                   "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
NIH_OTHERS = ("Atelectasis", "Cardiomegaly", "Infiltration", "Effusion", "Nodule", "Mass")


def nih_findings():
    """Finding Labels per image, in CSV order: a miniature ChestX-ray14."""
    findings = ["No Finding"] * 12
    findings += ["Pneumonia"] * 5
    findings += ["Pneumonia|Effusion", "Infiltration|Pneumonia"]
    for name in NIH_OTHERS:
        findings += [name] * 4
    findings += ["Effusion|Mass", "Emphysema", "Hernia|Pleural_Thickening"]
    return findings


def build_nih(root, missing=1):
    """NIH: Data_Entry_2017.csv and PNGs spread over images_001/images, images_002/images."""
    os.makedirs(root, exist_ok=True)
    lines = [NIH_HEADER_LINE]
    findings = nih_findings()
    for i, finding in enumerate(findings):
        patient = i // 2 + 1
        name = f"{patient:08d}_{i % 2:03d}.png"
        lines.append(f"{name},{finding},{i % 2},{patient},{20 + i},{'MF'[i % 2]},PA,2048,2500,0.139,0.139,")
        if i < len(findings) - missing:  # the last `missing` images are not on disk
            folder = "images_001" if i % 2 == 0 else "images_002"
            write_image(os.path.join(root, folder, "images", name))
    with open(os.path.join(root, "Data_Entry_2017.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(root)
