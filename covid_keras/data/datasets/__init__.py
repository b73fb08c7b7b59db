"""One adapter per public dataset layout, yielding patient-labelled records.

Each adapter reads a dataset exactly as its publisher ships it (folder names,
index files, file-name conventions), harmonises the labels to one paper's
class list (``CLASS_NAMES``, after torchxrayvision's ``relabel_dataset``) and
returns a sorted list of :class:`Record`, each carrying a ``patient_id`` so
that :mod:`covid_keras.data.splits` can keep every patient on one side of a
split. Adapters only look at files and tables; they never decode pixels.

Patient ids are the dataset's own pseudonyms (COVID-CT-MD ``P001``, NIH
``nih-00001``, Kermany ``person1``, the COVID-19 image data collection
``cxr-<patientid>``) or, where a dataset publishes none,
:func:`covid_keras.data.privacy.pseudonymize` of the file's relative path.
Names and birth dates are never read.

Example:
    >>> from covid_keras.data import datasets
    >>> records = datasets.load_dataset("covid-ct-md", "data/COVID-CT-MD")  # doctest: +SKIP
    >>> records[0].patient_id, records[0].label                             # doctest: +SKIP
    ('P001', 'COVID-19')
"""

from covid_keras.data.datasets._layout import IMAGE_EXTENSIONS, parse_age, parse_sex
from covid_keras.data.datasets.chest_xray_pneumonia import chest_xray_pneumonia
from covid_keras.data.datasets.covid_chestxray import covid_chestxray, finding_category
from covid_keras.data.datasets.covid_ct_md import covid_ct_md
from covid_keras.data.datasets.covidx_ct import (
    COVIDX_CT_CLASSES,
    COVIDX_CT_SPLITS,
    covidx_ct,
    covidx_patient_id,
)
from covid_keras.data.datasets.nih_chestxray14 import (
    DETL_OTHER_DISEASES,
    NIH_FINDINGS,
    NIH_SUBSETS,
    detl_data_b,
    nih_chestxray14,
)
from covid_keras.data.datasets.records import CLASS_NAMES, Record
from covid_keras.data.datasets.registry import DATASETS, load_dataset
from covid_keras.data.datasets.sars_cov2_ct import sars_cov2_ct

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "Record",
    "load_dataset",
    "covid_ct_md",
    "covidx_ct",
    "covidx_patient_id",
    "sars_cov2_ct",
    "chest_xray_pneumonia",
    "covid_chestxray",
    "finding_category",
    "nih_chestxray14",
    "detl_data_b",
    "parse_age",
    "parse_sex",
]
