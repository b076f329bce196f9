"""Pretrained backbones, each carrying its own preprocessing (timm / open_clip style).

``create_encoder(name)`` -> an ``Encoder`` (``torch.nn.Module`` with ``dim``, ``input_size``,
``transform``, ``preprocess``, ``forward``, ``forward_tokens``, ``encode_images``; CLIP also
``encode_text``). ``list_encoders()`` -> ``EncoderInfo`` rows. Importing this package does not import
torch; ``Encoder`` and the families load on first use.
"""

from geoscope.encoders.preprocess import ImageTransform, clip_transform
from geoscope.encoders.registry import EncoderInfo, create_encoder, list_encoders

__all__ = ["Encoder", "EncoderInfo", "ImageTransform", "clip_transform", "create_encoder", "list_encoders"]


def __getattr__(name: str):
    if name == "Encoder":
        from geoscope.encoders.base import Encoder

        return Encoder
    raise AttributeError(name)
