"""Which runtime runs an encoder, and at which precisions: the rule behind ``runtime="auto"``.

Runtimes: ``torch`` (the reference: every feature, token features, text towers, gradients),
``onnx`` (ONNX Runtime) and ``openvino`` (OpenVINO), both serving an export of the torch weights made
once and cached (``encoders.export``), importing neither torch nor transformers.

=========  =================  ============================================================
runtime    precisions         how
=========  =================  ============================================================
torch      fp32, bf16         parameter dtype
onnx       fp32, int8         int8: ONNX Runtime dynamic quantisation of the linear layers;
                              weights packed for this CPU once, then loaded packed
openvino   fp32, bf16, int8   OpenVINO's inference precision (bf16 natively on AVX512-BF16 / AMX);
                              int8: int8 weights (NNCF), multiplied in bf16 / fp32
=========  =================  ============================================================

``runtime="auto"`` takes, for the encoder's family, the first runtime of :data:`PREFERENCE` that is
registered for it, installed, and computes the precision asked for. The preference is static, from
``benchmarks/bench_runtimes.py`` on a 2-core x86 (AVX512 / AMX) machine: for EfficientNet-Lite,
OpenVINO and ONNX Runtime run fp32 several times faster than torch (its depthwise convolutions are
slow on CPU), OpenVINO ahead; for CLIP ViTs, OpenVINO bf16 is the fastest way to run bf16 and starts
in a fraction of the time (no transformers import), and at fp32 OpenVINO is ahead of ONNX Runtime.
int8 (torch's own dynamic quantisation is deprecated) has its own order, :data:`PRECISION_PREFERENCE`:
ONNX Runtime's dynamic quantisation first, from weights packed once for this machine
(``encoders.onnx_runtime``); on ViT-L/14, 2 cores, quiet, a batch of one takes 0.118 s there against 0.184 s
on OpenVINO's int8 weights (and 0.151 s in OpenVINO bf16), and a cold ``geoscope locate --precision int8``
0.66 s against 0.96 s. ``precision="auto"`` never picks int8: its activations are quantised too, and its
drift on real CLIP weights is unmeasured here (cosine 0.9998 to fp32 on random ViT-L/14 weights). Where neither
runtime package is installed, ``auto`` falls back to torch.

``runtime=None`` (``create_encoder``'s default) is the reference, torch, wherever torch computes the
precision asked for, and ``auto`` otherwise (int8).

``precision="auto"`` is bf16 where the CPU computes it natively, except for families in
:data:`NO_AUTO_BF16`: EfficientNet's features drift too far in bf16 (cosine 0.994 to fp32, median, on
photos and Blue Marble tiles), so its ``auto`` is fp32.
"""

from __future__ import annotations

from collections.abc import Iterable

from geoscope.encoders.precision import resolve_precision
from geoscope.errors import InputError
from geoscope.optional import available

RUNTIMES = ("torch", "onnx", "openvino")
RUNTIME_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
#: the Python package each runtime needs
PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}
#: what a runtime needs besides its package to make a precision's model (once: a cached one runs without it)
PRECISION_PACKAGES = {("openvino", "int8"): "nncf"}
#: the order ``runtime="auto"`` tries, per family (measured: see the module docstring)
PREFERENCE: dict[str, tuple[str, ...]] = {
    "efficientnet": ("openvino", "onnx", "torch"),
    "clip": ("openvino", "onnx", "torch"),
}
#: families registered elsewhere: torch first (their other runtimes are unmeasured)
DEFAULT_PREFERENCE = ("torch", "openvino", "onnx")
#: the order for one precision of a family, where it differs from PREFERENCE; ``(None, precision)``
#: is every other family's
PRECISION_PREFERENCE: dict[tuple[str | None, str], tuple[str, ...]] = {
    (None, "int8"): ("onnx", "openvino", "torch"),
}
#: families whose ``precision="auto"`` is fp32
NO_AUTO_BF16 = frozenset({"efficientnet"})


def concrete_precision(family: str, precision: str | None) -> str:
    """``fp32`` / ``bf16`` / ``int8`` for a precision as given (None: fp32, the encoders' default)."""
    if precision is None:
        return "fp32"
    if precision == "auto" and family in NO_AUTO_BF16:
        return "fp32"
    return resolve_precision(precision)


def installed(runtime: str, precision: str | None = None) -> bool:
    """True when ``runtime``'s package (and what it needs to make ``precision``'s model) is installed."""
    extra = PRECISION_PACKAGES.get((runtime, precision or ""))
    return available(PACKAGES.get(runtime, runtime)) and (extra is None or available(extra))


def computes(runtime: str, precision: str) -> bool:
    """True when ``runtime`` computes ``precision`` (a runtime this module does not know: assumed so)."""
    return precision in RUNTIME_PRECISIONS.get(runtime, (precision,))


def choose_runtime(family: str, precision: str | None, offered: Iterable[str], runtime: str | None = None) -> str:
    """The runtime to build with: ``runtime`` as asked (None: torch where it computes the precision,
    else auto; "auto": the preference for ``family``), among the ``offered`` (registered) ones."""
    offered = list(offered)
    concrete = concrete_precision(family, precision)
    if runtime not in (None, "auto"):
        return runtime
    if runtime is None and "torch" in offered and computes("torch", concrete):
        return "torch"
    order = PRECISION_PREFERENCE.get((family, concrete)) or PRECISION_PREFERENCE.get((None, concrete)) \
        or PREFERENCE.get(family, DEFAULT_PREFERENCE)
    candidates = [r for r in order if r in offered] + [r for r in offered if r not in order]
    for r in candidates:
        if computes(r, concrete) and installed(r, concrete):
            return r
    able = [r for r in candidates if computes(r, concrete)]
    if able:  # registered but not installed: building it says which extra installs it
        return able[0]
    runs = "; ".join(r + ": " + ", ".join(RUNTIME_PRECISIONS.get(r, ("?",))) for r in offered)
    raise InputError(f"no runtime of this encoder computes {concrete}: it runs on {', '.join(offered)} ({runs})")


def build_exported(runtime: str, folder, manifest: dict, name: str | None, precision: str):
    """An ``ExportedEncoder`` of ``runtime`` over an export folder."""
    if runtime == "onnx":
        from geoscope.encoders.onnx_runtime import OnnxEncoder

        return OnnxEncoder(folder, manifest, name, precision)
    if runtime == "openvino":
        from geoscope.encoders.openvino_runtime import OpenVINOEncoder

        return OpenVINOEncoder(folder, manifest, name, precision)
    raise InputError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)} or auto")
