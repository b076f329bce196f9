"""Deprecated import path, kept for one release: import from the modules named below instead.

``geoscope.data.datasets`` used to hold samples, the dataset, its three sources, validation and
splits in one file. They now live one concept per module, and this module only re-exports the
names it had, so ``from geoscope.data.datasets import open_dataset`` keeps working until the
release after next; new code imports from the new homes:

- ``geoscope.data.samples``: ``GeoSample``, ``read_sample_bytes``, ``load_sample_image``,
  ``split_source``, ``TAR_SEP``, ``TAR_SUFFIXES``
- ``geoscope.data.issues``: ``Issue``
- ``geoscope.data.dataset``: ``Dataset``, ``open_dataset``
- ``geoscope.data.sources.manifest``: ``ManifestLayout``, ``PRESETS``, ``MANIFEST_SUFFIXES``
  (``sources.folder`` and ``sources.webdataset`` hold the other two sources)
- ``geoscope.data.sources.columns``: ``ID_COLUMNS``, ``LAT_COLUMNS``, ``LON_COLUMNS``, ``PATH_COLUMNS``
- ``geoscope.data.validate``: ``validate_dataset``, ``ValidationReport``
- ``geoscope.data.splits``: ``split_dataset``, ``DatasetSplits``, ``spatial_groups``
"""

from __future__ import annotations

from geoscope.data.dataset import Dataset, open_dataset
from geoscope.data.images import (  # importable from here before the split only because datasets.py used them
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageError,
    is_image_path,
    load_image,
    read_limited,
)
from geoscope.data.issues import Issue
from geoscope.data.samples import (
    TAR_SEP,
    TAR_SUFFIXES,
    GeoSample,
    load_sample_image,
    read_sample_bytes,
    split_source,
)
from geoscope.data.sources.columns import ID_COLUMNS, LAT_COLUMNS, LON_COLUMNS, PATH_COLUMNS
from geoscope.data.sources.manifest import MANIFEST_SUFFIXES, PRESETS, ManifestLayout
from geoscope.data.splits import DatasetSplits, spatial_groups, split_dataset
from geoscope.data.validate import ValidationReport, validate_dataset
from geoscope.errors import InputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ID_COLUMNS",
    "LAT_COLUMNS",
    "LON_COLUMNS",
    "MANIFEST_SUFFIXES",
    "PATH_COLUMNS",
    "PRESETS",
    "TAR_SEP",
    "TAR_SUFFIXES",
    "Dataset",
    "DatasetSplits",
    "GeoSample",
    "ImageError",
    "InputError",
    "Issue",
    "ManifestLayout",
    "ValidationReport",
    "is_image_path",
    "load_image",
    "load_sample_image",
    "open_dataset",
    "read_limited",
    "read_sample_bytes",
    "spatial_groups",
    "split_dataset",
    "split_source",
    "validate_dataset",
]
