"""The head registry: ``@register_head("name")`` beside each head class, and the lookups over it.

A head class carries its own rules as class attributes (``heads.base.Head``): ``trainable``,
``needs_cells``, ``uses_scene_labels``, ``uses_gallery``, ``default_lr``, and the classmethod
``create(in_dim, cells, **options)`` that builds a fresh one. Training, ``create_head`` and
``geoscope train --head`` ask the class, never a list of names.

The built-in heads register themselves when their module is imported; the first lookup imports
every module of the ``geoscope.heads`` package, so a new head is a new file there and nothing else.
A head defined anywhere else (a plug-in, a test) is registered by the decorator when its module is
imported. Importing this module does not import torch; a lookup does (the heads are torch modules).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from geoscope.errors import InputError

if TYPE_CHECKING:  # the registry stays importable without torch
    from geoscope.heads.base import Head

T = TypeVar("T", bound="type[Head]")

_HEADS: dict[str, type[Head]] = {}
_discovered = False


def register_head(name: str) -> Callable[[T], T]:
    """Class decorator: register a head class under ``name`` (its ``kind``, recorded in model configs).

    Registering another class under a taken name is an error; registering the same class again (a
    module imported twice) replaces the entry.
    """
    if not isinstance(name, str) or not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"a head name is a short identifier such as 'classifier', got {name!r}")

    def decorate(cls: T) -> T:
        old = _HEADS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"a head named {name!r} is already registered ({old.__module__}.{old.__qualname__})")
        cls.kind = name
        _HEADS[name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import every module of ``geoscope.heads`` once, so the built-in heads register themselves."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("geoscope.heads")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"geoscope.heads.{info.name}")
    _discovered = True


def list_heads(trainable: bool | None = None) -> list[str]:
    """Registered head names, sorted; ``trainable=True`` only those ``geoscope train`` can train."""
    _discover()
    return sorted(k for k, cls in _HEADS.items() if trainable is None or bool(cls.trainable) == trainable)


def head_class(kind: str) -> Any:
    """The class registered as ``kind``; ``InputError`` naming the registered ones otherwise."""
    _discover()
    if kind not in _HEADS:
        raise InputError(f"unknown head kind {kind!r}; choose one of {', '.join(list_heads())}")
    return _HEADS[kind]


def build_head(config: dict):
    """Rebuild a head (untrained weights, right shapes) from its ``config()`` dict."""
    if not isinstance(config, dict) or "kind" not in config:
        raise InputError("a head config must be a dict with a 'kind' entry")
    return head_class(config["kind"]).from_config(config)


def create_head(kind: str, in_dim: int, cells=None, **options):
    """A new head of ``kind`` for ``in_dim``-dimensional embeddings, to be trained.

    Heads whose class says ``needs_cells`` get ``cells`` (a ``CellHierarchy`` or ``Geocells``); the
    others ignore it. ``options`` go to the head's constructor.
    """
    cls = head_class(kind)
    if not cls.trainable:
        raise InputError(f"cannot train a {kind!r} head; choose one of {', '.join(list_heads(trainable=True))}")
    if cls.needs_cells and cells is None:
        raise InputError(f"the {kind} head needs geocells (--cells)")
    try:
        return cls.create(in_dim, cells, **options)
    except TypeError as exc:  # an option the constructor does not take, or of the wrong type
        raise InputError(f"bad option for the {kind} head ({', '.join(sorted(options)) or 'none'}): {exc}") from None
