"""The encoder registry: one factory, ``create_encoder(name)``, and ``list_encoders()``.

Encoders are registered beside their family, timm-style, by decorating a *builder* function:

    @register_encoder("clip-vit-l14", family="clip", dim=768, input_size=224, licence="MIT",
                      source="Hugging Face openai/clip-vit-large-patch14", available=...)
    def clip_vit_l14(precision=None, **kw):
        from geoscope.encoders.clip import CLIPEncoder          # torch only when built
        return build_torch(CLIPEncoder, precision, source="openai/clip-vit-large-patch14", **kw)

The registrations of the built-in families live in ``geoscope.encoders.zoo`` (one light module per
family; the torch implementation sits in ``encoders/<family>.py``). The first lookup imports every
module of the zoo, so listing encoders never imports torch; a builder imports its implementation when
called. A module elsewhere (a plug-in, a test) registers by being imported.

An entry carries one builder per **runtime** (``torch``, ``onnx``, ``openvino``;
``@register_encoder(name, runtime="onnx")`` on another builder adds a runtime to an existing entry), and
every builder takes ``precision`` (``encoders.precision``). ``create_encoder(name, precision=...,
runtime=...)`` is the one place both are chosen, so adding a runtime touches no caller:
``runtime=None`` is torch (the reference) where torch computes the precision, ``"auto"`` the fastest
runtime measured for the family (``encoders.runtimes``).

Open-ended names (``hf-hub:ORG/NAME`` and its alias ``hf:ORG/NAME``, a local model folder) go to
*loaders*: ``@register_encoder_loader("hf-hub:", "hf:", folders=True)``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable

from geoscope.encoders.precision import PRECISIONS
from geoscope.encoders.runtimes import choose_runtime
from geoscope.errors import InputError

Builder = Callable[..., Any]
DEFAULT_RUNTIME = "torch"
#: the prefix written for a model on the Hugging Face hub, as open_clip writes it; ``hf:`` is an alias
HUB_PREFIX = "hf-hub:"


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
    runtimes: tuple[str, ...] = (DEFAULT_RUNTIME,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["runtimes"] = list(self.runtimes)
        return d


@dataclass
class EncoderEntry:
    """A registered encoder: its description, a builder per runtime, and an offline check."""

    info: EncoderInfo  # ``offline`` and ``runtimes`` are filled in when listed
    builders: dict[str, Builder] = field(default_factory=dict)
    available: Callable[[], bool] = lambda: False

    def describe(self) -> EncoderInfo:
        return replace(self.info, offline=bool(self.available()), runtimes=tuple(self.builders))


@dataclass
class EncoderLoader:
    """Builds encoders for open-ended names: ``prefixes`` (the rest is a hub id) and/or local folders."""

    family: str
    prefixes: tuple[str, ...]
    folders: bool
    builders: dict[str, Builder] = field(default_factory=dict)
    #: for folder loaders: does this folder hold this family's files? None: any folder (tried last)
    recognises: Callable[[Path], bool] | None = None


_ENTRIES: dict[str, EncoderEntry] = {}
_LOADERS: list[EncoderLoader] = []
_discovered = False


def register_encoder(
    name: str,
    *,
    runtime: str = DEFAULT_RUNTIME,
    family: str | None = None,
    dim: int | None = None,
    input_size: int | None = None,
    source: str = "",
    licence: str = "",
    description: str = "",
    available: Callable[[], bool] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(precision=None, **kw) -> Encoder`` as encoder ``name`` for ``runtime``.

    The first registration of a name describes it (``family``, ``dim``, ``input_size``, ``source``,
    ``licence``, ``description``; ``available()`` says without network or torch whether its weights are
    on this machine). A later registration of the same name with another ``runtime`` only adds that
    runtime's builder.
    """

    def decorate(builder: Builder) -> Builder:
        entry = _ENTRIES.get(name)
        if entry is None:
            if family is None or dim is None or input_size is None:
                raise ValueError(f"the first registration of encoder {name!r} needs family, dim and input_size")
            info = EncoderInfo(name, family, int(dim), int(input_size), source, licence, False, description)
            entry = _ENTRIES[name] = EncoderEntry(info, {}, available or (lambda: False))
        old = entry.builders.get(runtime)
        if old is not None and (old.__module__, old.__qualname__) != (builder.__module__, builder.__qualname__):
            raise ValueError(f"encoder {name!r} already has a {runtime} builder ({old.__module__}.{old.__qualname__})")
        entry.builders[runtime] = builder
        return builder

    return decorate


def register_encoder_loader(
    *prefixes: str, family: str, folders: bool = False, runtime: str = DEFAULT_RUNTIME,
    recognises: Callable[[Path], bool] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: ``builder(source, name=..., precision=None, **kw)`` builds encoders named
    ``PREFIX + ORG/NAME`` (``source`` is the hub id) and, with ``folders=True``, local model folders
    (``source`` is the path). A folder goes to the first loader whose ``recognises(folder)`` is true,
    else to the first loader registered without ``recognises`` (CLIP's: any Hugging Face folder)."""

    def decorate(builder: Builder) -> Builder:
        for loader in _LOADERS:
            if loader.family == family and loader.prefixes == prefixes and loader.folders == folders:
                loader.builders[runtime] = builder
                return builder
        _LOADERS.append(EncoderLoader(family, tuple(prefixes), folders, {runtime: builder}, recognises))
        return builder

    return decorate


def _discover() -> None:
    """Import every module of ``geoscope.encoders.zoo`` once (light: no torch), so entries register."""
    global _discovered
    if _discovered:
        return
    zoo = importlib.import_module("geoscope.encoders.zoo")
    for info in sorted(pkgutil.iter_modules(zoo.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{zoo.__name__}.{info.name}")
    _discovered = True


def list_encoders() -> list[EncoderInfo]:
    """Every registered encoder, with ``offline`` telling whether its weights are on this machine."""
    _discover()
    return [e.describe() for e in _ENTRIES.values()]


def encoder_names() -> list[str]:
    _discover()
    return list(_ENTRIES)


def hub_prefixes() -> list[str]:
    """The name prefixes that mean "a model on the hub" (``hf-hub:`` first)."""
    _discover()
    return [p for loader in _LOADERS for p in loader.prefixes]


def _pick(builders: dict[str, Builder], family: str, precision: str | None, runtime: str | None, what: str) -> Builder:
    runtime = choose_runtime(family, precision, builders, runtime)
    if runtime not in builders:
        raise InputError(f"{what} has no {runtime!r} runtime; it runs on {', '.join(builders)}")
    return builders[runtime]


def create_encoder(name: str | Path, /, *, precision: str | None = None, runtime: str | None = None, **kwargs: Any):
    """Build an encoder by registered name, ``hf-hub:ORG/NAME`` (alias ``hf:ORG/NAME``; any CLIP on the
    hub) or a local model folder.

    ``precision``: one of ``auto``, ``fp32``, ``bf16``, ``int8`` (None: the encoder's default, fp32).
    ``runtime``: which builder runs it: ``torch``, ``onnx``, ``openvino``, ``auto`` (the fastest for the
    family on a CPU, see ``encoders.runtimes``), or None: torch where it computes the precision, else
    auto (int8 runs on ONNX Runtime). Other keyword arguments go to the builder (e.g.
    ``allow_download=True``; ``dtype="bfloat16"`` is the older spelling of a torch precision).
    Missing weights raise ``WeightsUnavailableError`` at once; an unknown name raises ``InputError``.
    """
    _discover()
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    text = str(name)
    if text in _ENTRIES:
        entry = _ENTRIES[text]
        builder = _pick(entry.builders, entry.info.family, precision, runtime, f"encoder {text!r}")
        return builder(precision=precision, **kwargs)
    for loader in _LOADERS:
        prefix = next((p for p in loader.prefixes if text.startswith(p)), None)
        if prefix is not None:
            repo = text[len(prefix):]
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise InputError(f"encoder {text!r}: a hub model is written {HUB_PREFIX}ORG/NAME")
            builder = _pick(loader.builders, loader.family, precision, runtime, f"encoder {text!r}")
            return builder(repo, name=kwargs.pop("name", text), precision=precision, **kwargs)
    path = Path(text).expanduser()
    if path.is_dir():
        folder_loaders = [ld for ld in _LOADERS if ld.folders]
        chosen = next((ld for ld in folder_loaders if ld.recognises is not None and ld.recognises(path)), None)
        chosen = chosen or next((ld for ld in folder_loaders if ld.recognises is None), None)
        if chosen is not None:
            builder = _pick(chosen.builders, chosen.family, precision, runtime, f"encoder folder {path}")
            return builder(path, name=kwargs.pop("name", text), precision=precision, **kwargs)
    raise InputError(
        f"unknown encoder {text!r}: use one of {', '.join(_ENTRIES)}, {HUB_PREFIX}ORG/NAME (or hf:ORG/NAME) for a "
        "CLIP model on the Hugging Face hub, or a local model directory"
    )
