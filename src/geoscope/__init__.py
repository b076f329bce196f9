"""geoscope: where on Earth was this picture taken?

The public API, imported lazily so that ``import geoscope`` and ``geoscope --help`` stay fast and the
geography core works without torch. Editors and type checkers see the real types through the
``TYPE_CHECKING`` block; ``dir(geoscope)`` lists the same names.

Locate::

    from geoscope import Geolocator
    geo = Geolocator.from_pretrained("runs/demo/model")
    pred = geo.locate(["photo.jpg"], top_k=5)[0]

Build a geolocator for your own imagery: ``open_dataset`` -> ``embed_dataset`` (an
``EmbeddingStore``) -> ``CellHierarchy`` -> ``train_from_store`` -> ``evaluate_model``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    # locating
    "Geolocator": "geoscope.geolocator",
    "Prediction": "geoscope.prediction",
    "Candidate": "geoscope.prediction",
    "list_models": "geoscope.pretrained",
    # encoders and heads
    "create_encoder": "geoscope.encoders",
    "list_encoders": "geoscope.encoders",
    "create_head": "geoscope.heads",
    # geocells and places
    "Geocells": "geoscope.geo.cells",
    "CellHierarchy": "geoscope.geo.cells",
    "load_cells": "geoscope.geo.cells",
    "save_cells": "geoscope.geo.cells",
    "Place": "geoscope.geo.places",
    "place_at": "geoscope.geo.places",
    "reverse_geocode": "geoscope.geo.places",
    "haversine_km": "geoscope.geo.sphere",
    # datasets and the embedding store
    "open_dataset": "geoscope.data.datasets",
    "split_dataset": "geoscope.data.datasets",
    "validate_dataset": "geoscope.data.datasets",
    "load_image": "geoscope.data.images",
    "read_exif": "geoscope.data.exif",
    "EmbeddingStore": "geoscope.store",
    "embed_dataset": "geoscope.store",
    # training, evaluation, explanation, verification
    "TrainConfig": "geoscope.train",
    "train_from_store": "geoscope.train",
    "evaluate_model": "geoscope.evaluate",
    "verify_prediction": "geoscope.verify",
    # cross-view matching
    "CrossViewModel": "geoscope.crossview.model",
    "CrossViewConfig": "geoscope.crossview.train",
    "train_crossview": "geoscope.crossview.train",
    # errors
    "GeoscopeError": "geoscope.errors",
    "InputError": "geoscope.errors",
    "WeightsUnavailableError": "geoscope.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - seen by type checkers and editors only
    # `import X as X` marks each name as re-exported (PEP 484), since __all__ is computed from _LAZY
    from geoscope.crossview.model import CrossViewModel as CrossViewModel
    from geoscope.crossview.train import CrossViewConfig as CrossViewConfig, train_crossview as train_crossview
    from geoscope.data.datasets import (
        open_dataset as open_dataset,
        split_dataset as split_dataset,
        validate_dataset as validate_dataset,
    )
    from geoscope.data.exif import read_exif as read_exif
    from geoscope.data.images import load_image as load_image
    from geoscope.encoders import create_encoder as create_encoder, list_encoders as list_encoders
    from geoscope.errors import (
        GeoscopeError as GeoscopeError,
        InputError as InputError,
        WeightsUnavailableError as WeightsUnavailableError,
    )
    from geoscope.evaluate import evaluate_model as evaluate_model
    from geoscope.geo.cells import (
        CellHierarchy as CellHierarchy,
        Geocells as Geocells,
        load_cells as load_cells,
        save_cells as save_cells,
    )
    from geoscope.geo.places import Place as Place, place_at as place_at, reverse_geocode as reverse_geocode
    from geoscope.geo.sphere import haversine_km as haversine_km
    from geoscope.geolocator import Geolocator as Geolocator
    from geoscope.heads import create_head as create_head
    from geoscope.prediction import Candidate as Candidate, Prediction as Prediction
    from geoscope.pretrained import list_models as list_models
    from geoscope.store import EmbeddingStore as EmbeddingStore, embed_dataset as embed_dataset
    from geoscope.train import TrainConfig as TrainConfig, train_from_store as train_from_store
    from geoscope.verify import verify_prediction as verify_prediction


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"__doc__", "__file__", "__name__", "__path__", "__spec__"})
