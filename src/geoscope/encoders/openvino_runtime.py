"""Encoders served by OpenVINO (CPU): ``fp32``, ``bf16`` (bfloat16 where the CPU computes it natively:
AVX512-BF16 / AMX; elsewhere OpenVINO computes fp32) and ``int8`` (int8 weights, see below).

The export's ONNX is converted once to OpenVINO's own format (IR) beside it: for ``bf16`` with the
weights of its matrix products and convolutions stored as bfloat16 (half the file; rounded once from
fp32, as OpenVINO rounds fp32 weights; its other constants as fp16), so that compiling it is only
repacking them: fp16 weights were converted to bfloat16 at every compile, even from OpenVINO's cache,
22 % of a cold ViT-L/14 compile's CPU. ``fp32`` keeps them as they are. Compiled models are cached by
OpenVINO in the export folder (``CACHE_DIR``), so a later process starts in a fraction of a second.
One image at a time (what ``geoscope locate`` does) runs a model compiled for a batch of one, which
needs no shape-dependent work at its first call; other batch sizes share one model with a dynamic
batch axis. ``warm(batch)`` starts compiling in a background thread (OpenVINO releases the GIL while it
compiles), so a caller can read its image, its head and its place names meanwhile; the first call for
that batch size waits for it.
Models are compiled with ``ENABLE_CPU_PINNING`` off (:data:`COMPILE_CONFIG`).

``int8`` stores the weights of the linear layers (and convolutions) as int8, one scale per output
channel (NNCF's ``compress_weights``, symmetric, made once from the export's fp32 ONNX and cached in a
folder named after those settings: :data:`INT8_WEIGHTS`); OpenVINO turns them back into bf16 (fp32
without native bfloat16) as it multiplies, and quantises the activations of those products per group
of 32 (its ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` default) where the CPU has int8 instructions. Half the
bytes of the bf16 model: compiling it from OpenVINO's cache (what a cold start waits for) takes less
CPU (ViT-L/14 on 2 cores: 0.57 s against 1.0 s when bf16's weights were stored as fp16, about 0.75 s
with them stored as bfloat16), while a steady image takes about a quarter
more CPU than bf16 (0.58 s against 0.47 s, ``benchmarks/bench_cold_start.py``, on a shared machine), so
``precision="auto"`` stays bf16; int8 is for a one-photo cold start. Embeddings stay at cosine >= 0.9998
to fp32 and bf16 on ViT-L/14, with the same top-1 through GeoCLIP's head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from geoscope.encoders.export import ONNX_FILE, derived
from geoscope.encoders.exported import Background, ExportedEncoder, runtime_threads
from geoscope.encoders.precision import cpu_has_bf16
from geoscope.errors import InputError
from geoscope.optional import require

PRECISIONS = ("fp32", "bf16", "int8")
_HINT = {"fp32": "f32", "bf16": "bf16"}
#: how the int8-weight model is made: part of its folder's name, so other settings make another model
INT8_WEIGHTS: dict[str, Any] = {"tool": "nncf.compress_weights", "mode": "int8_sym", "group_size": -1, "ratio": 1.0, "version": 1}
#: OpenVINO CPU settings every compiled model gets. ``ENABLE_CPU_PINNING`` off: OpenVINO pins its
#: inference threads to cores by default on Linux, so on a machine whose cores other processes also use
#: a pinned thread waits for its own core instead of taking a free one (see the module docstring).
COMPILE_CONFIG: dict[str, Any] = {"ENABLE_CPU_PINNING": False}
#: folders an earlier geoscope made for the bf16 model (fp16-stored weights, converted at every compile):
#: removed once ``openvino-bf16w`` exists
SUPERSEDED = ("openvino-f16w",)


def int8_dir_name(settings: dict[str, Any] | None = None) -> str:
    """``openvino-i8w-<hash of the compression settings>``: the folder of the int8-weight model."""
    doc = json.dumps(INT8_WEIGHTS if settings is None else settings, sort_keys=True).encode()
    return "openvino-i8w-" + hashlib.sha256(doc).hexdigest()[:12]


def convert_ir(source: Path, folder: Path, input_size: int, weights: str = "f32") -> None:
    """Write ``model.xml`` (batch axis dynamic) and ``model_b1.xml`` (batch of one) from an ONNX file, with
    the weights stored as ``weights``: ``"f32"`` (as they are) or ``"bf16"`` (see :func:`_bf16_weights`)."""
    ov = require("openvino", "the openvino runtime")
    if weights not in ("f32", "bf16"):
        raise InputError(f"OpenVINO models store their weights as f32 or bf16, not {weights!r}")
    _save_ir(ov, ov.Core().read_model(str(source)), folder, input_size, bf16_weights=weights == "bf16")


def _save_ir(ov, model, folder: Path, input_size: int, bf16_weights: bool = False) -> None:
    """Save ``model`` as ``model.xml`` (batch axis as it is: dynamic) and ``model_b1.xml`` (a batch of one)."""
    for name, shape in (("model.xml", None), ("model_b1.xml", [1, 3, input_size, input_size])):
        if shape is not None:
            model.reshape({model.inputs[0]: shape})
        path = str(folder / name)
        ov.save_model(model, path, compress_to_fp16=bf16_weights)
        if bf16_weights:
            ov.save_model(_bf16_weights(ov, ov.Core().read_model(path), model), path + ".tmp.xml",
                          compress_to_fp16=False)
            for ext in (".xml", ".bin"):  # over the fp16 files just written (the folder is derived()'s tmp)
                Path(path + ".tmp" + ext).replace(Path(path).with_suffix(ext))


#: the operations whose weights are stored as bfloat16 (multiplied in bfloat16 by OpenVINO's CPU plugin)
_BF16_USERS = frozenset({"MatMul", "Convolution"})


def _bf16_weights(ov, compressed, original):
    """``compressed`` (saved with fp16 weights) with those weights stored as bfloat16 instead, rounded
    (to nearest even) from ``original``'s fp32 values: one rounding, the one OpenVINO makes from fp32 weights.

    OpenVINO's CPU plugin multiplies in bfloat16 (``INFERENCE_PRECISION_HINT`` bf16) and converts every
    fp16 weight to bfloat16 each time it compiles the model, in every process, even from its cache; weights
    already in bfloat16 are only repacked (ViT-L/14: 22 % less CPU to compile from the cache, see
    ``benchmarks/bench_cold_start.py``). The fp16 save gives each weight its constant and a Convert marked
    as decompression (so OpenVINO keeps the constant as it is); only the constant's type is changed here, for
    the weights of matrix products and convolutions (the other constants stay fp16)."""
    fp32 = {op.get_friendly_name(): op for op in original.get_ops() if op.get_type_name() == "Constant"}
    for op in compressed.get_ordered_ops():
        if op.get_type_name() != "Convert" or not any(k.startswith("decompression") for k in op.get_rt_info().keys()):
            continue
        const = op.input_value(0).get_node()
        if const.get_type_name() != "Constant" or const.get_element_type() != ov.Type.f16:
            continue
        if not all(t.get_node().get_type_name() in _BF16_USERS for t in op.output(0).get_target_inputs()):
            continue  # biases, norms, embeddings: small, and not all of them are used in bfloat16
        source = fp32.get(op.get_friendly_name())
        values = (source.get_data() if source is not None and source.get_element_type() == ov.Type.f32
                  else const.get_data()).astype(np.float32)
        if values.shape != tuple(const.get_output_shape(0)):
            values = const.get_data().astype(np.float32)
        bits = values.view(np.uint32)
        bits = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        tensor = ov.Tensor(ov.Type.bf16, ov.Shape(list(values.shape)))
        tensor.data.view(np.uint16)[...] = bits
        bf16 = ov.op.Constant(tensor)
        bf16.set_friendly_name(const.get_friendly_name())
        op.input(0).replace_source_output(bf16.output(0))
    compressed.validate_nodes_and_infer_types()
    return compressed


def convert_ir_int8(source: Path, folder: Path, input_size: int, settings: dict[str, Any] | None = None) -> None:
    """``convert_ir``'s two models with int8 weights (per output channel, symmetric): see :data:`INT8_WEIGHTS`."""
    ov = require("openvino", "the openvino runtime")
    nncf = require("nncf", "int8-weight OpenVINO models")
    settings = INT8_WEIGHTS if settings is None else settings
    if settings.get("mode") not in ("int8_sym", "int8_asym"):
        raise InputError(f"int8 weight compression mode must be int8_sym or int8_asym, not {settings.get('mode')!r}")
    noisy = logging.getLogger("nncf")
    level = noisy.level
    noisy.setLevel(logging.ERROR)  # its table of compressed layers
    try:  # its progress bar goes to stdout, which is a command's answer (--json): sent to stderr
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.compress_weights(ov.Core().read_model(str(source)),
                                          mode=nncf.CompressWeightsMode(settings["mode"]),
                                          group_size=int(settings["group_size"]), ratio=float(settings["ratio"]))
    finally:
        noisy.setLevel(level)
    _save_ir(ov, model, folder, input_size)


class OpenVINOEncoder(ExportedEncoder):
    runtime = "openvino"

    def __init__(self, folder: Path, manifest: dict, name: str | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise InputError(f"the openvino runtime runs {', '.join(PRECISIONS)}, not {precision}")
        super().__init__(folder, manifest, name, precision)
        ov = require("openvino", "the openvino runtime")
        size = self.input_size
        source = folder / ONNX_FILE
        if precision == "int8":
            self.ir = derived(folder, int8_dir_name(), lambda tmp: convert_ir_int8(source, tmp, size),
                              f"the int8-weight OpenVINO model of {self.name}")
            hint = "bf16" if cpu_has_bf16() else "f32"  # what the int8 weights are multiplied in
        else:
            bf16 = precision == "bf16"
            self.ir = derived(folder, "openvino-bf16w" if bf16 else "openvino-f32",
                              lambda tmp: convert_ir(source, tmp, size, "bf16" if bf16 else "f32"),
                              f"the OpenVINO model of {self.name}", supersedes=SUPERSEDED if bf16 else ())
            hint = _HINT[precision]
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(self.ir / "compiled")})
        self.config = {"INFERENCE_NUM_THREADS": runtime_threads(), "INFERENCE_PRECISION_HINT": hint,
                       "PERFORMANCE_HINT": "LATENCY", **COMPILE_CONFIG}
        self._compiled = {single: Background(functools.partial(self._compile, single), "geoscope-openvino-compile")
                          for single in (True, False)}

    def _compile(self, single: bool):
        xml = self.ir / ("model_b1.xml" if single else "model.xml")
        return self.core.compile_model(str(xml), "CPU", self.config)

    def warm(self, batch: int = 1) -> None:
        """Start compiling the model for batches of ``batch`` in a background thread (once)."""
        self._compiled[batch == 1].start()

    def compiled(self, batch: int):
        """The compiled model for a batch of ``batch`` images (one of one, or the dynamic one)."""
        return self._compiled[batch == 1].get()

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        out = self.compiled(len(pixels))(pixels)[0]
        return np.array(out, dtype=np.float32, copy=True)  # the request reuses its output buffer
