"""The Encoder interface: a pretrained backbone that carries its own preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from geoscope.encoders.preprocess import ImageTransform, encode_in_batches
from geoscope.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' (or a torch dtype) -> torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).replace("torch.", "")]
    except KeyError:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


class Encoder(torch.nn.Module):
    """Images -> embeddings. Subclasses set ``name``, ``dim``, ``transform`` and implement ``forward``.

    ``forward(pixels)`` takes the output of ``preprocess`` and returns the pooled (B, dim)
    embedding; ``forward_tokens(pixels)`` returns (B, T, d) token / patch features when
    ``has_tokens``. ``encode_images`` is the convenience path: PIL images in, float32 numpy out.
    """

    name: str = "encoder"
    dim: int = 0
    has_tokens: bool = False
    transform: ImageTransform
    #: what computes it (exported encoders, ``encoders.exported``, say ``onnx`` / ``openvino``)
    runtime: str = "torch"

    @property
    def input_size(self) -> int:
        return int(self.transform.crop[0])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``: the precision vocabulary's name for the parameter dtype."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        """The weights' own preprocessing: PIL images -> (B, 3, H, W) float32 tensor."""
        return torch.from_numpy(self.transform(images))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"encoder {self.name!r} has no token features")

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Preprocessed pixels -> (B, dim) float32 numpy embeddings."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        return self.forward(pixels).float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """PIL images -> (N, dim) float32 numpy embeddings, ``batch_size`` at a time."""
        return encode_in_batches(self, images, batch_size)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}"
