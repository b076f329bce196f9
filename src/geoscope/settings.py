"""Every environment variable geoscope reads, in one place (the README lists the same table).

Read them through these functions, never with ``os.environ`` elsewhere, so that a user can find what
changes geoscope's behaviour in one file.
"""

from __future__ import annotations

import os
from pathlib import Path

#: name -> what it does (the README's table is generated from the same wording)
ENVIRONMENT: dict[str, str] = {
    "GEOSCOPE_CACHE": ("cache folder for exported runtimes, gallery embeddings and indexes, prompts and plain copies "
                       "of the place tables (default ~/.cache/geoscope)"),
    "GEOSCOPE_DATA": "folder of the derived border and place data (default: the packaged data, else ~/.cache/geoscope/data)",
    "GEOSCOPE_WEIGHTS": "folders (separated by the OS path separator) holding hub models as ORG/NAME/, ORG--NAME/ or NAME/",
    "GEOSCOPE_CLIP_L14": "a local copy of openai/clip-vit-large-patch14 for the geoclip model",
    "GEOSCOPE_STREETCLIP": "a local copy of geolocal/StreetCLIP for the streetclip model",
    "GEOSCOPE_DOWNLOAD": "1 allows downloading weights from the Hugging Face hub (off by default: geoscope works offline)",
    "HF_HUB_OFFLINE": "Hugging Face's own switch: 1 forbids hub downloads even when GEOSCOPE_DOWNLOAD=1",
    "GEOSCOPE_DEBUG": "1 makes the CLI print a full traceback on unexpected errors",
    "GEOSCOPE_API_TOKEN": "the token geoscope serve requires (Authorization: Bearer TOKEN); needed off loopback",
    "GEOSCOPE_API_TOKEN_FILE": "a file holding that token (what --token-file sets)",
    "GEOSCOPE_THREADS": "threads an ONNX Runtime or OpenVINO encoder computes with (default: every core)",
    "GEOSCOPE_ANN_THRESHOLD": "gallery size from which retrieval searches an HNSW index instead of every entry (default 250000)",
}

_TRUE = ("1", "true", "yes", "on")


def get(name: str) -> str | None:
    """The raw value of one of the variables above (``None`` when unset or empty)."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not a geoscope setting; add it to geoscope.settings.ENVIRONMENT")
    return os.environ.get(name) or None


def flag(name: str) -> bool:
    """True when the variable is set to 1 / true / yes / on."""
    return (get(name) or "").strip().lower() in _TRUE


def path(name: str) -> Path | None:
    value = get(name)
    return Path(value).expanduser() if value else None


def paths(name: str) -> list[Path]:
    return [Path(p).expanduser() for p in (get(name) or "").split(os.pathsep) if p]


def cache_dir() -> Path:
    """``$GEOSCOPE_CACHE`` or ``~/.cache/geoscope``."""
    return path("GEOSCOPE_CACHE") or Path.home() / ".cache" / "geoscope"
