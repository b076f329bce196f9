"""The named pretrained models: what each is made of and where its parts come from (data only)."""

from __future__ import annotations

from dataclasses import dataclass

from geoscope.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "geoclip" | "zeroshot"
    backbone: str  # encoder registry name
    repo: str  # hub id of the backbone
    env: str  # environment variable naming a local backbone directory ("" for none)
    source: str
    size: str
    licence: str
    description: str
    #: how the backbone runs (``encoders.runtimes``): geoclip needs only image embeddings, so the fastest
    #: runtime ("auto"); zero-shot models need the text tower, which only torch has
    runtime: str = "torch"


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "geoclip", "geoclip", "clip-vit-l14", "openai/clip-vit-large-patch14", "GEOSCOPE_CLIP_L14",
            "Hugging Face openai/clip-vit-large-patch14 + PyPI geoclip 1.3.0 (heads, 100K gallery)",
            "1.7 GB backbone + 42 MB heads", "MIT",
            "GeoCLIP (NeurIPS 2023): image-to-GPS retrieval; Im2GPS3k 14.1/34.5/50.7/69.7/83.8 % at 1/25/200/750/2500 km",
            runtime="auto",
        ),
        ModelSpec(
            "streetclip", "zeroshot", "streetclip", "geolocal/StreetCLIP", "GEOSCOPE_STREETCLIP",
            "Hugging Face geolocal/StreetCLIP", "1.7 GB", "CC-BY-NC-4.0",
            "StreetCLIP zero-shot: country -> region -> town prompts",
        ),
        ModelSpec(
            "clip-zeroshot", "zeroshot", "clip-vit-l14", "openai/clip-vit-large-patch14", "GEOSCOPE_CLIP_L14",
            "Hugging Face openai/clip-vit-large-patch14", "1.7 GB", "MIT",
            "OpenAI CLIP ViT-L/14 zero-shot: country -> region -> town prompts",
        ),
    )
}

#: ``zeroshot:ENCODER``: zero-shot prompts over any CLIP encoder with a text tower
ZEROSHOT_PREFIX = "zeroshot:"


def model_names() -> list[str]:
    return list(MODELS)


def is_model_name(name: str) -> bool:
    """True for a named model or ``zeroshot:ENCODER`` (which may still fail to load)."""
    return name in MODELS or (name.startswith(ZEROSHOT_PREFIX) and len(name) > len(ZEROSHOT_PREFIX))


def resolve_model(name: str) -> tuple[ModelSpec, str | None]:
    """The spec for ``name`` and, for ``zeroshot:ENCODER``, the encoder to build instead of its backbone."""
    if name in MODELS:
        return MODELS[name], None
    if is_model_name(name):
        encoder = name[len(ZEROSHOT_PREFIX):]
        spec = ModelSpec(name, "zeroshot", encoder, encoder, "", encoder, "?", "?",
                         f"zero-shot prompts over {encoder}")
        return spec, encoder
    raise InputError(
        f"unknown pretrained model {name!r}: choose one of {', '.join(MODELS)}, {ZEROSHOT_PREFIX}ENCODER "
        "(any CLIP with a text tower), a model directory saved by geoscope, or hf-hub:ORG/NAME"
    )
