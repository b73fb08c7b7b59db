"""Preview montages: one PNG per study, with no patient id or tag value in any text or file name."""

import os

import matplotlib
import pytest

from covid_keras.data import synthetic
from covid_keras.data.datasets import Record
from covid_keras.data.privacy import pseudonymize
from covid_keras.preprocess.pipelines import PipelineOptions
from covid_keras.preprocess.preview import write_previews

matplotlib.use("Agg")

# A folder-derived id that is in fact a hospital number, and the DICOM tags' values.
RAW_ID = "MRN-0042424242"
SECRETS = (RAW_ID, "DOE^JANE", "DOE", "JANE", "SECRET-ID-123", "19450203")


@pytest.fixture
def figure_texts(monkeypatch):
    """Every text (titles, labels, tick labels) of each figure saved, in order of saving."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    saved = []
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):
        saved.append([t.get_text() for t in fig.findobj(Text)])
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


@pytest.fixture(scope="module")
def ct_record(tmp_path_factory):
    hu, labels, spacing = synthetic.phantom_volume("covid", n_slices=24, size=64, slice_spacing=5.0, seed=3)
    folder = str(tmp_path_factory.mktemp("patients") / RAW_ID)
    paths = synthetic.write_ct_series(hu, spacing, folder, seed=3, patient_name="DOE^JANE",
                                      patient_id="SECRET-ID-123", birth_date="19450203")
    slice_labels = tuple((os.path.basename(p), int(v)) for p, v in zip(paths, labels))
    return Record(patient_id=RAW_ID, label="COVID-19", paths=(folder,), dataset="covid-ct-md",
                  slice_labels=slice_labels)


def _check(written, texts, out_dir, pipeline):
    assert len(written) == len(texts) == 1 and os.path.isfile(written[0])
    joined = "\n".join(texts[0])
    for secret in SECRETS:
        assert secret not in joined, secret
        assert not any(secret in name for name in os.listdir(out_dir)), secret
    shown = pseudonymize(RAW_ID)
    assert shown in joined and pipeline in joined  # the title names the study by its pseudonym
    assert shown in os.path.basename(written[0])


@pytest.mark.parametrize("pipeline", ["ct_slices", "volume3d"])
def test_ct_previews_show_only_the_pseudonym(tmp_path, ct_record, figure_texts, pipeline):
    out = tmp_path / "preview"
    written = write_previews([ct_record], PipelineOptions(pipeline, size=32), str(out))
    _check(written, figure_texts, out, pipeline)


def test_xray_preview_shows_only_the_pseudonym(tmp_path, figure_texts):
    xray = synthetic.xray_dataset("xraycnn_step1", synthetic.XrayPhantomConfig(images_per_pathology=1, size=48))[0]
    record = Record(patient_id=RAW_ID, label=xray.label, paths=xray.paths, dataset=xray.dataset)
    out = tmp_path / "preview"
    written = write_previews([record], PipelineOptions("xray", size=32), str(out))
    _check(written, figure_texts, out, "xray")
