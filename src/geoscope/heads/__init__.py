"""Small models over embeddings: classify / regress / retrieve / hybrid.

``build_head(config)`` rebuilds any head from its ``head.config()`` dict (weights then come from
``heads.base.load_head_state``); ``create_head(kind, in_dim, cells, **options)`` makes a fresh one
for training. ``HEAD_KINDS`` lists the kinds ``geoscope train --head`` accepts.
"""

from __future__ import annotations

import importlib

from geoscope.errors import InputError

#: kind -> (module, class name)
_HEADS = {
    "classifier": ("geoscope.heads.classifier", "ClassifierHead"),
    "regressor": ("geoscope.heads.regressor", "RegressorHead"),
    "retrieval": ("geoscope.heads.retrieval", "RetrievalHead"),
    "hybrid": ("geoscope.heads.hybrid", "HybridHead"),
    "zeroshot": ("geoscope.heads.zeroshot", "ZeroShotHead"),  # prompts, not trained: not in HEAD_KINDS
}
HEAD_KINDS = tuple(k for k in _HEADS if k != "zeroshot")


def head_class(kind: str):
    if kind not in _HEADS:
        raise InputError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    module, name = _HEADS[kind]
    return getattr(importlib.import_module(module), name)


def build_head(config: dict):
    """Rebuild a head (untrained weights, right shapes) from its ``config()`` dict."""
    if not isinstance(config, dict) or "kind" not in config:
        raise InputError("a head config must be a dict with a 'kind' entry")
    return head_class(config["kind"]).from_config(config)


def create_head(kind: str, in_dim: int, cells=None, **options):
    """A new head of ``kind`` for ``in_dim``-dimensional embeddings.

    Cell-based heads (classifier, hybrid) need ``cells`` (a ``CellHierarchy`` or ``Geocells``);
    the others ignore it. ``options`` go to the head's constructor.
    """
    if kind not in HEAD_KINDS:
        raise InputError(f"cannot train a {kind!r} head; choose one of {', '.join(HEAD_KINDS)}")
    cls = head_class(kind)
    try:
        if kind in ("classifier", "hybrid"):
            if cells is None:
                raise InputError(f"the {kind} head needs geocells (--cells)")
            return cls.from_cells(in_dim, cells, **options)
        return cls(in_dim, **options)
    except TypeError as exc:  # an option the constructor does not take, or of the wrong type
        raise InputError(f"bad option for the {kind} head ({', '.join(sorted(options)) or 'none'}): {exc}") from None
