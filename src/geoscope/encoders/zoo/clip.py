"""CLIP checkpoints (implementation: ``encoders/clip.py``): OpenAI CLIP, StreetCLIP, any CLIP on the hub
(``hf-hub:ORG/NAME``, alias ``hf:ORG/NAME``) or in a local ``save_pretrained`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from geoscope.encoders.hub import find_local
from geoscope.encoders.precision import build_torch
from geoscope.encoders.registry import register_encoder, register_encoder_loader


def _on_this_machine(repo: str) -> Callable[[], bool]:
    return lambda: find_local(repo) is not None


def _clip(source: str | Path, name: str, precision: str | None, **kw: Any):
    from geoscope.encoders.clip import CLIPEncoder  # torch and transformers, only when built

    return build_torch(CLIPEncoder, precision, source=source, name=name, **kw)


@register_encoder("clip-vit-l14", family="clip", dim=768, input_size=224, licence="MIT",
                  source="Hugging Face openai/clip-vit-large-patch14",
                  description="OpenAI CLIP ViT-L/14 (GeoCLIP's backbone)",
                  available=_on_this_machine("openai/clip-vit-large-patch14"))
def clip_vit_l14(precision: str | None = None, **kw: Any):
    return _clip("openai/clip-vit-large-patch14", kw.pop("name", "clip-vit-l14"), precision, **kw)


@register_encoder("clip-vit-b32", family="clip", dim=512, input_size=224, licence="MIT",
                  source="Hugging Face openai/clip-vit-base-patch32", description="OpenAI CLIP ViT-B/32",
                  available=_on_this_machine("openai/clip-vit-base-patch32"))
def clip_vit_b32(precision: str | None = None, **kw: Any):
    return _clip("openai/clip-vit-base-patch32", kw.pop("name", "clip-vit-b32"), precision, **kw)


@register_encoder("streetclip", family="clip", dim=768, input_size=336, licence="CC-BY-NC-4.0",
                  source="Hugging Face geolocal/StreetCLIP", description="CLIP ViT-L/14-336 tuned for geolocation",
                  available=_on_this_machine("geolocal/StreetCLIP"))
def streetclip(precision: str | None = None, **kw: Any):
    return _clip("geolocal/StreetCLIP", kw.pop("name", "streetclip"), precision, **kw)


@register_encoder_loader("hf-hub:", "hf:", family="clip", folders=True)
def clip_from_hub_or_folder(source: str | Path, name: str, precision: str | None = None, **kw: Any):
    """Any CLIP checkpoint: a hub id (weights looked up by ``encoders.hub``) or a local folder."""
    return _clip(source, name, precision, **kw)
