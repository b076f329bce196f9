"""Numeric precision of an encoder, one vocabulary for every runtime: ``auto``, ``fp32``, ``bf16``, ``int8``.

``create_encoder(name, precision=...)`` is the one place a precision is chosen; ``auto`` becomes
``bf16`` where the CPU computes bfloat16 natively (AVX512-BF16 / AMX) and ``fp32`` elsewhere. A torch
encoder runs ``fp32`` / ``bf16`` as its parameter dtype; ``int8`` is dynamic int8 quantisation of its
linear layers (weights int8, activations quantised per batch: about 2x faster than fp32 on x86, small
drift). Other runtimes (ONNX Runtime, OpenVINO) interpret the same names in their own builders.
Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Callable

from geoscope.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: torch parameter dtype per concrete precision (int8 quantises an fp32 model)
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": "float32"}


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
    """Dynamic int8 quantisation of every ``nn.Linear`` in a torch encoder, in place."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        from torch.ao.quantization import quantize_dynamic

        for name, child in list(encoder.named_children()):
            setattr(encoder, name, quantize_dynamic(child, {torch.nn.Linear}, dtype=torch.qint8))


def build_torch(factory: Callable[..., Any], precision: str | None, **kwargs: Any):
    """Build a torch encoder with ``factory(**kwargs)`` at ``precision`` (None: the factory's own dtype,
    or ``dtype=`` when the caller gave one).

    ``fp32`` / ``bf16`` become the ``dtype`` argument; ``int8`` builds in fp32, then quantises.
    """
    if precision is not None:
        if kwargs.get("dtype") is not None:
            raise InputError("give an encoder either precision= or dtype=, not both")
        kwargs["dtype"] = TORCH_DTYPES[resolve_precision(precision)]
    encoder = factory(**kwargs)
    if precision is not None and resolve_precision(precision) == "int8":
        quantize_int8(encoder)
    return encoder.eval()
