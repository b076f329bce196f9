"""Pretrained backbones, each carrying its own preprocessing (timm / open_clip style).

``create_encoder(name, precision=..., runtime=...)`` -> an ``Encoder`` (``torch.nn.Module`` with
``dim``, ``input_size``, ``transform``, ``preprocess``, ``forward``, ``forward_tokens``,
``encode_images``; CLIP also ``encode_text``). ``list_encoders()`` -> ``EncoderInfo`` rows.
``@register_encoder`` adds one (see ``encoders.registry``). Importing this package does not import
torch; ``Encoder`` and the families load on first use.
"""

from geoscope.encoders.precision import PRECISIONS
from geoscope.encoders.preprocess import ImageTransform, clip_transform
from geoscope.encoders.registry import (
    EncoderInfo,
    create_encoder,
    list_encoders,
    register_encoder,
    register_encoder_loader,
)

__all__ = [
    "PRECISIONS", "Encoder", "EncoderInfo", "ImageTransform", "clip_transform", "create_encoder", "list_encoders",
    "register_encoder", "register_encoder_loader",
]


def __getattr__(name: str):
    if name == "Encoder":
        from geoscope.encoders.base import Encoder

        return Encoder
    raise AttributeError(name)
