"""Tiny random CLIP checkpoints for tests: saved exactly like a real model, loaded through the same path.

``save_tiny_clip(dir)`` writes ``config.json`` + ``model.safetensors`` (a randomly initialised
``CLIPModel`` with a few small layers), a working CLIP BPE tokenizer over a toy vocabulary, and
optionally a ``preprocessor_config.json``. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

from geoscope import optional


def tiny_clip_tokenizer():
    """A real ``CLIPTokenizer`` (byte-level BPE, ``</w>`` word ends) over letters and a few merges."""
    optional.require("transformers", "a tiny test CLIP")
    from transformers import CLIPTokenizer

    letters = string.ascii_lowercase
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters]
    tokens += ["th", "the</w>", "in", "in</w>", "."]
    merges = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("i", "n</w>")]
    # tokenizers' BPE takes (left, right) pairs; transformers annotates merges as list[str]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)  # type: ignore[arg-type]


def save_tiny_clip(
    path: str | os.PathLike,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 16,
    hidden_size: int = 32,
    tokenizer: bool = True,
    preprocessor: dict | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny random CLIP model (and tokenizer) to ``path``; returns ``path``."""
    import torch

    optional.require("transformers", "a tiny test CLIP")
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tiny_clip_tokenizer()
    small = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(tok), max_position_embeddings=32,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(small, image_size=image_size, patch_size=patch_size),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    if tokenizer:
        tok.save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path
