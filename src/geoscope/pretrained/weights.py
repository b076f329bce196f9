"""Where a named model's weights are: the backbone (``weights=DIR``, the model's environment variable,
then the encoder registry's search: ``$GEOSCOPE_WEIGHTS``, the Hugging Face cache) and, for GeoCLIP,
the heads shipped in the ``geoclip`` pip package. Nothing here touches the network; what is missing is
said in one sentence naming how to provide it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoscope import settings
from geoscope.encoders import create_encoder
from geoscope.encoders.hub import find_local
from geoscope.errors import WeightsUnavailableError
from geoscope.pretrained.specs import MODELS, ModelSpec


def backbone_dir(spec: ModelSpec, weights: str | os.PathLike | None) -> str | None:
    """A local directory for the backbone, from ``weights`` or the model's environment variable."""
    for origin, value in (("--weights", weights), (spec.env, settings.get(spec.env) if spec.env else None)):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise WeightsUnavailableError(
                    f"{origin} points to {path}, which is not a directory: give a folder holding a "
                    f"save_pretrained copy of {spec.repo} (config.json, model.safetensors, preprocessor_config.json)"
                )
            return str(path)
    return None


def missing_sentence(spec: ModelSpec) -> str:
    return (
        f"the {spec.name!r} model needs the {spec.repo} backbone, which is not on this machine: put a "
        f"save_pretrained copy in a folder and pass --weights DIR (or weights=DIR) or set {spec.env}=DIR, "
        f"or fill the Hugging Face cache (`hf download {spec.repo}`); models that work offline are those "
        f"trained with `geoscope train` (pass their directory as --model)"
    )


def backbone_available(spec: ModelSpec) -> tuple[bool, str | None]:
    try:
        if backbone_dir(spec, None):
            return True, None
    except WeightsUnavailableError as exc:
        return False, str(exc)
    if find_local(spec.repo) is not None:
        return True, None
    return False, missing_sentence(spec)


def heads_available(spec: ModelSpec) -> tuple[bool, str | None]:
    if spec.kind != "geoclip":
        return True, None
    from geoscope.heads.geoclip_files import geoclip_file

    try:
        geoclip_file("weights/location_encoder_weights.pth")
    except WeightsUnavailableError as exc:
        return False, str(exc)
    return True, None


def create_backbone(spec: ModelSpec, source: str | None, precision: str, runtime: str | None = None, **kwargs: Any):
    """The backbone encoder from ``source`` (a folder or encoder name) or the spec's, at ``precision``,
    run by ``runtime`` (default: the spec's)."""
    try:
        return create_encoder(source or spec.backbone, precision=precision, runtime=runtime or spec.runtime,
                              **kwargs).eval()
    except WeightsUnavailableError:
        if spec.name not in MODELS or (source is not None and Path(source).is_dir()):
            raise  # the encoder layer's own sentence names the directory or hub id
        raise WeightsUnavailableError(missing_sentence(spec)) from None
