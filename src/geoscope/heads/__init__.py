"""Small models over embeddings: classify / regress / retrieve / hybrid / zero-shot.

Each head registers itself beside its class with ``@register_head("name")`` and carries its rules
(``trainable``, ``needs_cells``, ``uses_scene_labels``, ``uses_gallery``, ``default_lr``) as class
attributes. ``build_head(config)`` rebuilds any head from its ``head.config()`` dict (weights then
come from ``heads.base.load_head_state``); ``create_head(kind, in_dim, cells, **options)`` makes a
fresh one for training; ``list_heads(trainable=True)`` is what ``geoscope train --head`` accepts.
Importing this package does not import torch.
"""

from __future__ import annotations

from geoscope.heads.registry import build_head, create_head, head_class, list_heads, register_head

__all__ = ["HEAD_KINDS", "build_head", "create_head", "head_class", "list_heads", "register_head"]


def __getattr__(name: str):
    if name == "HEAD_KINDS":  # the trainable heads registered now (heads register as they are imported)
        return tuple(list_heads(trainable=True))
    raise AttributeError(f"module 'geoscope.heads' has no attribute {name!r}")
