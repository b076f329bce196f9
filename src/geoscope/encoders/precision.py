"""Numeric precision of an encoder, one vocabulary for every runtime: ``auto``, ``fp32``, ``bf16``, ``int8``.

``create_encoder(name, precision=...)`` is the one place a precision is chosen; ``auto`` becomes
``bf16`` where the CPU computes bfloat16 natively (AVX512-BF16 / AMX) and ``fp32`` elsewhere (a family
may keep fp32: ``encoders.runtimes.NO_AUTO_BF16``). A torch encoder runs ``fp32`` / ``bf16`` as its
parameter dtype. ``int8`` replaced torch's deprecated ``torch.ao.quantization.quantize_dynamic``: for
CLIP ViTs it is OpenVINO's int8 weights (``encoders/openvino_runtime.py``), elsewhere ONNX Runtime's
dynamic quantisation of the linear layers (int8 weights, activations quantised per batch;
``encoders/onnx_runtime.py``): ``create_encoder(name, precision="int8")`` builds it there.
Which runtime computes which precision is in ``encoders.runtimes``. Importing this module does not
import torch.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from geoscope.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: torch parameter dtype per precision the torch runtime computes
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """A concrete precision (``fp32`` / ``bf16`` / ``int8``) for one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


def quantize_int8(encoder) -> None:
    """Removed: torch's dynamic quantisation (``torch.ao.quantization``) is deprecated.

    int8 encoders run on ONNX Runtime: ``create_encoder(name, precision="int8")``.
    """
    raise InputError("int8 runs on the onnx or openvino runtime now (torch's dynamic quantisation is deprecated): "
                     "build the encoder with create_encoder(name, precision='int8')")


def build_torch(factory: Callable[..., Any], precision: str | None, **kwargs: Any):
    """Build a torch encoder with ``factory(**kwargs)`` at ``precision`` (None: the factory's own dtype,
    or ``dtype=`` when the caller gave one).

    ``fp32`` / ``bf16`` become the ``dtype`` argument. ``int8`` is not a torch precision any more: it
    raises ``InputError`` pointing to the onnx runtime (``create_encoder`` sends int8 there itself).
    """
    if precision is not None:
        if kwargs.get("dtype") is not None:
            raise InputError("give an encoder either precision= or dtype=, not both")
        concrete = resolve_precision(precision)
        if concrete == "int8":
            raise InputError("the torch runtime computes fp32 and bf16; int8 runs on the onnx or openvino runtime "
                             "(create_encoder(name, precision='int8') or runtime='onnx')")
        kwargs["dtype"] = TORCH_DTYPES[concrete]
    return factory(**kwargs).eval()
