"""The ``geoclip`` package's own ``GeoCLIP`` class, as a test oracle and benchmark baseline.

``import geoclip`` runs the package's ``__init__``, which imports its training code (torchvision and
geopy, neither needed for inference nor installed here). So a bare package object pointing at the
installed folder is planted in ``sys.modules`` first and ``geoclip.model.GeoCLIP`` is imported
directly; the model code itself runs unchanged. This changes the import state of the process, which
is why it lives here, for tests and benchmarks, and not in the library.
"""

from __future__ import annotations

import importlib
import sys
import types

from geoscope.heads.location_encoder import geoclip_package_dir


def reference_geoclip_class():
    """``geoclip.model.GeoCLIP.GeoCLIP`` from the installed package (``WeightsUnavailableError`` if absent)."""
    if "geoclip" not in sys.modules:
        pkg = types.ModuleType("geoclip")
        pkg.__path__ = [str(geoclip_package_dir())]
        sys.modules["geoclip"] = pkg
    return importlib.import_module("geoclip.model.GeoCLIP").GeoCLIP
