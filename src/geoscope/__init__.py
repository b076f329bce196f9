"""geoscope: where on Earth was this picture taken?

The public API is imported lazily so that ``import geoscope`` and the CLI's ``--help`` stay fast
and the geography core works without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Geolocator": "geoscope.geolocator",
    "Prediction": "geoscope.prediction",
    "Candidate": "geoscope.prediction",
    "Geocells": "geoscope.geo.cells",
    "GeoscopeError": "geoscope.errors",
    "create_encoder": "geoscope.encoders",
    "list_encoders": "geoscope.encoders",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoscope' has no attribute {name!r}")
