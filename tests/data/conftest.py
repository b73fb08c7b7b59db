"""Fixtures: miniature copies of each public dataset layout under tmp_path.

The builders live in ``fixtures_layouts.py`` (a plain module the tests also
import); each fixture builds one tree and returns its root folder.
"""

import pytest

from fixtures_layouts import (
    build_chest_xray,
    build_covid_chestxray,
    build_covid_ct_md,
    build_covidx_ct,
    build_nih,
    build_sars_cov2_ct,
)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def ct_md_root(tmp_path):
    return build_covid_ct_md(tmp_path / "COVID-CT-MD")


@pytest.fixture
def covidx_root(tmp_path):
    root = tmp_path / "covidxct"
    root.mkdir()
    return build_covidx_ct(root)


@pytest.fixture
def sars_root(tmp_path):
    return build_sars_cov2_ct(tmp_path / "sarscov2")


@pytest.fixture
def kermany_root(tmp_path):
    return build_chest_xray(tmp_path / "kermany")


@pytest.fixture
def cohen_root(tmp_path):
    return build_covid_chestxray(tmp_path / "covid-chestxray-dataset")


@pytest.fixture
def nih_root(tmp_path):
    return build_nih(tmp_path / "ChestXray-NIHCC")
