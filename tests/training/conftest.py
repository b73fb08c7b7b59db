"""Fixtures shared by the training tests."""

import pytest


@pytest.fixture(scope="session")
def phantom_slice_cache(tmp_path_factory):
    """A small ct_slices cache of written phantoms (2 patients per class, 16 x 16 slices), built once."""
    from covid_keras.data import synthetic
    from covid_keras.data.datasets import covid_ct_md
    from covid_keras.preprocess.cache import build_cache
    from covid_keras.preprocess.pipelines import PipelineOptions

    root = tmp_path_factory.mktemp("slices")
    config = synthetic.CTPhantomConfig(patients_per_class=2, size=48, min_slices=8, max_slices=10, seed=4)
    synthetic.write_ct_dataset(str(root / "data"), config)
    build_cache(covid_ct_md(str(root / "data")), str(root / "cache"), PipelineOptions("ct_slices", size=16),
                workers=1, progress=False)
    return str(root / "cache")
