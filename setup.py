"""Package discovery (everything else is in pyproject.toml).

pipelines/ and cli/ sit at the top of the repository but install inside the `sfa_cache`
namespace, so nothing named `cli` or `pipelines` lands at the top of site-packages. setuptools'
`find` cannot rename what it finds, so the packages are found here, under each folder, and
mapped: a new package (a folder with an `__init__.py`) is picked up without being listed.
"""

from setuptools import find_packages, setup

MAPPED = {"sfa_cache.pipelines": "pipelines", "sfa_cache.cli": "cli"}

packages = find_packages(include=["sfa_cache", "sfa_cache.*"])
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(where=folder))]

setup(packages=packages, package_dir=MAPPED)
