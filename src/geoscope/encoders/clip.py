"""CLIP image (and text) towers through ``transformers``: OpenAI CLIP, StreetCLIP, any CLIP checkpoint.

Weights come from a local ``save_pretrained`` directory or the hub id resolved by ``encoders.hub``
(never a silent download). ``forward`` gives the projected image embedding, the same vector as
``CLIPModel.get_image_features`` (what GeoCLIP's image MLP expects from ViT-L/14: 768-d);
``forward_tokens`` the last hidden states; ``encode_text`` the projected text embedding, for
zero-shot prompts. Embeddings are not L2-normalised: callers normalise when they need cosines.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from geoscope import optional
from geoscope.encoders import hub
from geoscope.encoders.base import Encoder, parse_dtype
from geoscope.encoders.preprocess import ImageTransform
from geoscope.errors import InputError, WeightsUnavailableError


_model_dir = hub.model_dir  # the older name


class CLIPEncoder(Encoder):
    """A CLIP checkpoint (``model_type`` "clip", or "clip_vision_model" for an image tower alone)."""

    has_tokens = True

    def __init__(
        self,
        source: str | Path,
        name: str | None = None,
        dtype: str | torch.dtype | None = None,
        allow_download: bool | None = None,
    ):
        super().__init__()
        optional.require("transformers")
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        self.source = str(source)
        self.path = _model_dir(source, allow_download)
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.path / 'config.json'} is not readable JSON: {exc}") from None
        model_type = config.get("model_type")
        # transformers' model classes are built dynamically; their attributes are not typed
        classes: dict[str, Any] = {"clip": CLIPModel, "clip_vision_model": CLIPVisionModelWithProjection}
        if model_type not in classes:
            raise InputError(f"{self.path / 'config.json'} describes a {model_type!r} model, not a CLIP model")
        self.model = classes[model_type].from_pretrained(self.path, dtype=parse_dtype(dtype), local_files_only=True)
        self.model.eval()
        self.has_text = model_type == "clip"
        vision_cfg = self.model.config.vision_config if self.has_text else self.model.config
        self.dim = int(self.model.visual_projection.out_features)
        self.name = name or self.source
        pre = self.path / "preprocessor_config.json"
        pre_cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        self.transform = ImageTransform.from_hf_config(pre_cfg, default_size=int(vision_cfg.image_size))
        self._tokenizer: Any = None  # a transformers tokenizer, loaded on first use

    def _vision(self, pixels: torch.Tensor):
        return self.model.vision_model(pixel_values=self._input(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, dim) projected image embeddings (``image_embeds``)."""
        return self.model.visual_projection(self._vision(pixels).pooler_output)

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, hidden) last hidden states of the vision transformer."""
        return self._vision(pixels).last_hidden_state

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not self.has_text:
                raise InputError(f"encoder {self.name!r} is an image tower only: it cannot encode text")
            optional.require("transformers")
            from transformers import AutoTokenizer

            files = [self.path / "tokenizer.json"], [self.path / "vocab.json", self.path / "merges.txt"]
            problem = "" if any(all(f.is_file() for f in group) for group in files) else "no such files"
            if not problem:
                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                except (OSError, ValueError, TypeError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
            if problem:
                raise WeightsUnavailableError(
                    f"no usable tokenizer beside the weights in {self.path}: text prompts need tokenizer.json "
                    f"(or vocab.json and merges.txt) there ({problem})"
                )
        return self._tokenizer

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(N, dim) float32 projected text embeddings for zero-shot prompts."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        tokenizer = self.tokenizer
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        max_len = int(self.model.config.text_config.max_position_embeddings)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            tok = tokenizer(chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            pooled = self.model.text_model(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            ).pooler_output
            out[start : start + len(chunk)] = self.model.text_projection(pooled).float().cpu().numpy()
        return out
