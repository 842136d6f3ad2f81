"""The configs stay at the top of the repository (configs/) and install inside the package (dftlab/configs),
which pyproject.toml alone cannot say beside a package search."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "dftlab.configs"],
    package_dir={"": "src", "dftlab.configs": "configs"},
)
