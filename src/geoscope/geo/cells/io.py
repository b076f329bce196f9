"""The geocells file: one JSON object, written atomically.

Current form (version 1)::

    {"format": "geoscope-cells", "version": 1,
     "levels": [{"kind": ..., "centroids": [[lat, lon], ...], "counts": [...], "params": {...}}, ...],
     "parents": [[...], ...]}          # one list per level after the first

A file holding a single level's object (no ``"levels"``) is read as a hierarchy of one level.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geoscope.atomic import write_json
from geoscope.errors import InputError

FORMAT = "geoscope-cells"
FORMAT_VERSION = 1


def make_document(level_dicts: list[dict], parents: list[list[int]]) -> dict:
    """The JSON object of a hierarchy from its levels' ``to_dict()`` and its parent maps."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "levels": level_dicts, "parents": parents}


def document_levels(d: Any, where: str = "cells") -> tuple[list[dict], list | None]:
    """The level objects and parent maps (None: not saved) of a cells JSON object, any version so far."""
    if not isinstance(d, dict):
        raise InputError(f"{where}: not a geocells file (expected a JSON object)")
    if "levels" not in d:  # a single partition
        return [d], None
    try:
        version = int(d.get("version", 0))
    except (TypeError, ValueError):
        version = -1
    if d.get("format") != FORMAT or not 0 <= version <= FORMAT_VERSION or not isinstance(d["levels"], list):
        raise InputError(f"{where}: not a geocells file of version <= {FORMAT_VERSION}")
    return d["levels"], d.get("parents")


def read_document(path: str | os.PathLike) -> dict:
    """The JSON object of a cells file; InputError naming the file when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: geocells file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the geocells file ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def write_document(path: str | os.PathLike, d: dict) -> None:
    """Write a cells JSON object atomically."""
    write_json(path, d, indent=None)
