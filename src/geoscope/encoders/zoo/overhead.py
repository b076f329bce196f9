"""Overhead-tile encoders saved as folders (implementation: ``encoders/overhead.py``): a frozen CNN plus a
trained ring-descriptor projection, the embedding ``geoscope demo``'s overhead-retrieval model uses. A
folder holding ``overhead.json`` is recognised, so ``create_encoder(folder)`` and a model folder with the
encoder in ``encoder/`` (``geoscope locate -m runs/demo/model-overhead``) load it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geoscope.encoders.registry import register_encoder_loader
from geoscope.errors import InputError

FAMILY = "overhead"
CONFIG_FILE = "overhead.json"
WEIGHTS_FILE = "projection.safetensors"


def is_overhead_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


@register_encoder_loader(family=FAMILY, folders=True, recognises=is_overhead_folder)
def overhead_from_folder(source: str | Path, name: str, precision: str | None = None, **kw: Any):
    """The saved encoder; its backbone is rebuilt by the name it records (at ``precision`` when given)."""
    from geoscope.encoders.overhead import OverheadEncoder  # torch, only when built
    from geoscope.encoders.registry import create_encoder

    cfg_path = Path(source) / CONFIG_FILE
    try:
        backbone_name = json.loads(cfg_path.read_text(encoding="utf-8"))["backbone"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{cfg_path} is not a readable overhead-encoder config: {exc}") from None
    options = {"precision": precision} if precision not in (None, "auto") else {}
    backbone = create_encoder(str(backbone_name), runtime=kw.pop("runtime", "auto"), **options)
    return OverheadEncoder.load(source, backbone=backbone)
