"""The labelled-sample record every dataset adapter returns, and the class lists."""

from dataclasses import dataclass, field

# The papers' class lists (docs/papers.md, "Class lists"); the order is the index order
# of each model's softmax output.
CLASS_NAMES = {
    "ct3": ("Normal", "CAP", "COVID-19"),
    "transfer_xray": ("COVID-19", "Pneumonia", "Normal"),
    "transfer_ct": ("COVID-19", "Normal"),
    "detl_a": ("normal", "disease"),
    "detl_b": ("normal", "other_disease", "pneumonia", "covid"),
    "xraycnn_step1": ("normal", "bacterial", "viral"),
    "xraycnn_step2": ("non-viral pneumonia", "COVID-19", "other viral"),
    "xraycnn_4class": ("Normal", "bacterial", "COVID-19", "other viral"),
}


@dataclass(frozen=True)
class Record:
    """One labelled sample: an image, or a CT series folder, of one patient.

    Attributes:
        patient_id: pseudonymous patient id; splits group by it.
        label: a class name from one of the ``CLASS_NAMES`` lists.
        paths: image files, or a single DICOM series folder for CT volumes.
        dataset: the registry name of the dataset it came from.
        slice_labels: CT only, a tuple of ``(file_name, 0 or 1)`` pairs in
            slice order (1 = infected), or None when the dataset has none.
        age: age in years, or None.
        sex: ``"M"``, ``"F"`` or None.
        extra: dataset-specific details (split name, view, raw finding, box).
    """

    patient_id: str
    label: str
    paths: tuple[str, ...]
    dataset: str
    slice_labels: tuple | None = None
    age: float | None = None
    sex: str | None = None
    extra: dict = field(default_factory=dict, hash=False)
