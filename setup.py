"""covid_keras: five published COVID-19 chest-imaging methods in Keras 3."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-r")]


setup(
    name="covid_keras",
    version="0.1.0",
    description="Five published COVID-19 chest CT / X-ray methods as one Keras 3 library",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["covid_keras", "covid_keras.*", "train", "train.*", "evaluate", "evaluate.*"]),
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": [r for r in _requirements("requirements-dev.txt")]},
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
