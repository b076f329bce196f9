"""A tiny random CLIP in Hugging Face layout shaped for GeoCLIP: 224 px input, 14 px patches and a
768-d projection (what GeoCLIP's image MLP takes), with a preprocessor config like OpenAI's, so the
geoclip package and geoscope load it exactly as they load openai/clip-vit-large-patch14."""

from __future__ import annotations

from pathlib import Path


def save_tiny_geoclip_backbone(path, seed: int = 0) -> Path:
    from transformers import CLIPImageProcessor

    from geoscope.encoders.testing import save_tiny_clip

    return save_tiny_clip(path, image_size=224, patch_size=14, projection_dim=768,
                          preprocessor=CLIPImageProcessor().to_dict(), seed=seed)
