"""CLIP checkpoints (implementation: ``encoders/clip.py``): OpenAI CLIP, StreetCLIP, any CLIP on the hub
(``hf-hub:ORG/NAME``, alias ``hf:ORG/NAME``) or in a local ``save_pretrained`` folder.

Runtimes: torch (the reference, with the text tower and token features) and ONNX Runtime / OpenVINO
serving an export of the image tower (projected image embeddings, what GeoCLIP's MLP takes), made once
from the torch weights and cached; a cached export loads without importing torch or transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Callable

from geoscope.encoders.export import exported_model
from geoscope.encoders.hub import checkpoint_files, find_local, model_dir
from geoscope.encoders.precision import build_torch
from geoscope.encoders.registry import register_encoder, register_encoder_loader
from geoscope.encoders.runtimes import build_exported, concrete_precision

FAMILY = "clip"


def _on_this_machine(repo: str) -> Callable[[], bool]:
    return lambda: find_local(repo) is not None


def _clip(source: str | Path, name: str, precision: str | None, **kw: Any):
    from geoscope.encoders.clip import CLIPEncoder  # torch and transformers, only when built

    return build_torch(CLIPEncoder, precision, source=source, name=name, **kw)


def clip_exported(runtime: str, source: str | Path, name: str, precision: str | None,
                  allow_download: bool | None = None):
    """The image tower of a CLIP checkpoint served by ``runtime`` from its export (made once)."""
    folder = model_dir(source, allow_download)

    def build():
        from geoscope.encoders.clip import CLIPEncoder  # torch and transformers, only to export

        enc = CLIPEncoder(folder)
        facts = {"name": name, "dim": enc.dim, "input_size": enc.input_size, "transform": enc.transform.to_dict()}
        return enc, facts

    export, manifest = exported_model(FAMILY, checkpoint_files(folder), {"output": "image_embeds"}, build,
                                      f"the image tower of {name}")
    return build_exported(runtime, export, manifest, name, concrete_precision(FAMILY, precision))


def _named(name: str, repo: str, runtime: str) -> None:
    """Register the ``runtime`` builder of the named checkpoint ``name`` (hub id ``repo``)."""
    def builder(precision: str | None = None, **kw: Any):
        if runtime == "torch":
            return _clip(repo, kw.pop("name", name), precision, **kw)
        return clip_exported(runtime, repo, kw.pop("name", name), precision, **kw)

    builder.__qualname__ = f"{name}[{runtime}]"
    register_encoder(name, runtime=runtime)(builder)


@register_encoder("clip-vit-l14", family=FAMILY, dim=768, input_size=224, licence="MIT",
                  source="Hugging Face openai/clip-vit-large-patch14",
                  description="OpenAI CLIP ViT-L/14 (GeoCLIP's backbone)",
                  available=_on_this_machine("openai/clip-vit-large-patch14"))
def clip_vit_l14(precision: str | None = None, **kw: Any):
    return _clip("openai/clip-vit-large-patch14", kw.pop("name", "clip-vit-l14"), precision, **kw)


@register_encoder("clip-vit-b32", family=FAMILY, dim=512, input_size=224, licence="MIT",
                  source="Hugging Face openai/clip-vit-base-patch32", description="OpenAI CLIP ViT-B/32",
                  available=_on_this_machine("openai/clip-vit-base-patch32"))
def clip_vit_b32(precision: str | None = None, **kw: Any):
    return _clip("openai/clip-vit-base-patch32", kw.pop("name", "clip-vit-b32"), precision, **kw)


@register_encoder("streetclip", family=FAMILY, dim=768, input_size=336, licence="CC-BY-NC-4.0",
                  source="Hugging Face geolocal/StreetCLIP", description="CLIP ViT-L/14-336 tuned for geolocation",
                  available=_on_this_machine("geolocal/StreetCLIP"))
def streetclip(precision: str | None = None, **kw: Any):
    return _clip("geolocal/StreetCLIP", kw.pop("name", "streetclip"), precision, **kw)


for _name, _repo in (("clip-vit-l14", "openai/clip-vit-large-patch14"), ("clip-vit-b32", "openai/clip-vit-base-patch32"),
                     ("streetclip", "geolocal/StreetCLIP")):
    for _runtime in ("onnx", "openvino"):
        _named(_name, _repo, _runtime)


@register_encoder_loader("hf-hub:", "hf:", family=FAMILY, folders=True)
def clip_from_hub_or_folder(source: str | Path, name: str, precision: str | None = None, **kw: Any):
    """Any CLIP checkpoint: a hub id (weights looked up by ``encoders.hub``) or a local folder."""
    return _clip(source, name, precision, **kw)


def _loader(runtime: str) -> None:
    def builder(source: str | Path, name: str, precision: str | None = None, **kw: Any):
        return clip_exported(runtime, source, name, precision, **kw)

    builder.__qualname__ = f"clip_from_hub_or_folder[{runtime}]"
    register_encoder_loader("hf-hub:", "hf:", family=FAMILY, folders=True, runtime=runtime)(builder)


for _runtime in ("onnx", "openvino"):
    _loader(_runtime)
