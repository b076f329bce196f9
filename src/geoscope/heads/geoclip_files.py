"""Files of the installed ``geoclip`` package (weights, GPS gallery), found without importing it or torch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from geoscope.errors import WeightsUnavailableError

#: the published head's weight files, under the package's ``model/`` folder
WEIGHT_FILES = ("weights/location_encoder_weights.pth", "weights/image_encoder_mlp_weights.pth",
                "weights/logit_scale_weights.pth")
GALLERY_FILE = "gps_gallery/coordinates_100K.csv"


def geoclip_file(relative: str) -> Path:
    """A file shipped inside the installed ``geoclip`` package (under its ``model/`` folder).

    Found without importing the package (its ``__init__`` imports training code that needs
    torchvision and geopy). Raises :class:`WeightsUnavailableError` when absent.
    """
    path = geoclip_package_dir() / "model" / relative
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the installed geoclip package lacks {path}: reinstall it with "
            "`pip install --no-deps --force-reinstall geoclip==1.3.0`"
        )
    return path


def geoclip_package_dir() -> Path:
    """The folder of the installed ``geoclip`` package, found without importing it."""
    module = sys.modules.get("geoclip")
    locations = list(getattr(module, "__path__", []) or [])
    if not locations:
        try:
            spec = importlib.util.find_spec("geoclip")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WeightsUnavailableError(
            "GeoCLIP's published heads are not installed: run `pip install --no-deps geoclip==1.3.0` "
            "(MIT; it ships the location encoder, image MLP and GPS gallery)"
        )
    return Path(locations[0])
