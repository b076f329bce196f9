"""Named pretrained planet-scale geolocators: ``Geolocator.from_pretrained(name)`` builds them from here.

- ``geoclip``: OpenAI CLIP ViT-L/14 (image tower) + GeoCLIP's published heads (image MLP, location
  encoder, logit scale, 100K GPS gallery; MIT, shipped in the ``geoclip`` pip package). Same answers as
  ``GeoCLIP.predict()``; gallery embeddings are computed once and cached on disk.
- ``streetclip``, ``clip-zeroshot``, ``zeroshot:ENCODER``: zero-shot hierarchical prompts (country ->
  region -> town, StreetCLIP style) with any CLIP that has a text tower; prompt embeddings cached on disk.

The package is split along its seams: ``specs`` (what each model is made of), ``weights`` (where the
backbone and heads are found, without network), ``catalog`` (``list_models``), ``zeroshot`` (the
zero-shot head builder), ``loading`` (``load_parts``, ``cache_dir``). Precision (``fp32`` reference,
``bf16``, ``int8``, ``auto``) is the encoder layer's (``encoders.precision``); drift against fp32 is
measured by ``benchmarks/geoclip_speed.py``. Missing weights raise ``WeightsUnavailableError`` at once
with one sentence saying how to provide them; nothing is downloaded unless the encoder layer is
allowed to (``GEOSCOPE_DOWNLOAD=1``).
"""

from __future__ import annotations

from geoscope.encoders.precision import PRECISIONS, cpu_has_bf16, quantize_int8, resolve_precision
from geoscope.pretrained.catalog import PretrainedInfo, list_models
from geoscope.pretrained.loading import cache_dir, load_parts
from geoscope.pretrained.specs import MODELS, ModelSpec, is_model_name, model_names, resolve_model

__all__ = [
    "MODELS", "PRECISIONS", "ModelSpec", "PretrainedInfo", "cache_dir", "cpu_has_bf16", "is_model_name",
    "list_models", "load_parts", "model_names", "quantize_int8", "resolve_model", "resolve_precision",
]
