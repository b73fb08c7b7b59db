"""The dataset registry: adapters by name, and ``load_dataset``."""

from covid_keras import errors
from covid_keras.data.datasets.chest_xray_pneumonia import chest_xray_pneumonia
from covid_keras.data.datasets.covid_chestxray import covid_chestxray
from covid_keras.data.datasets.covid_ct_md import covid_ct_md
from covid_keras.data.datasets.covidx_ct import covidx_ct
from covid_keras.data.datasets.nih_chestxray14 import nih_chestxray14
from covid_keras.data.datasets.sars_cov2_ct import sars_cov2_ct


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

DATASETS = {
    "covid-ct-md": covid_ct_md,
    "covidx-ct": covidx_ct,
    "sars-cov2-ct": sars_cov2_ct,
    "chest-xray-pneumonia": chest_xray_pneumonia,
    "covid-chestxray": covid_chestxray,
    "nih-chestxray14": nih_chestxray14,
}


def load_dataset(name, root, **options):
    """Reads a dataset by its registry name.

    Args:
        name: one of the keys of ``DATASETS``.
        root: the dataset folder (what ``--data`` points at).
        **options: keyword arguments of that dataset's adapter.

    Returns:
        The adapter's sorted list of :class:`Record`.

    Raises:
        ConfigurationError: ``name`` is not a registered dataset.
        DatasetLayoutError: the folder does not hold that dataset.

    Example:
        >>> records = load_dataset("chest-xray-pneumonia", "data/chest_xray")  # doctest: +SKIP
    """
    if name not in DATASETS:
        raise errors.ConfigurationError(
            f"Unknown dataset {name!r}; use one of {', '.join(sorted(DATASETS))} with --dataset."
        )
    return DATASETS[name](root, **options)
