"""Encoders served by ONNX Runtime (CPU): ``fp32`` runs the export as it is; ``int8`` runs a copy whose
matrix products are quantised dynamically (int8 weights, activations quantised per batch), made once with
``onnxruntime.quantization.quantize_dynamic`` and cached beside the export. ONNX Runtime has no bfloat16
kernels on CPU, so ``bf16`` is refused here (OpenVINO and torch run it).

int8 quantises ``MatMul`` / ``Gemm`` only (the linear layers, as torch's dynamic quantisation did): a
ViT's work is almost all there; a convolutional net such as EfficientNet has none in its image tower,
so its int8 model computes what its fp32 one does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geoscope.encoders.export import ONNX_FILE, derived
from geoscope.encoders.exported import ExportedEncoder, runtime_threads
from geoscope.errors import InputError
from geoscope.optional import require

PRECISIONS = ("fp32", "int8")
INT8_DIR = "onnx-int8"


def quantize_int8(source: Path, folder: Path) -> None:
    """Write ``folder/model.onnx``: ``source`` with its MatMul / Gemm weights in int8 (dynamic quantisation)."""
    require("onnxruntime", "int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises, on the root logger, a pre-processing step it does not need here
    try:
        quantize_dynamic(str(source), str(folder / ONNX_FILE), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=False)
    finally:
        root.setLevel(level)


class OnnxEncoder(ExportedEncoder):
    runtime = "onnx"

    def __init__(self, folder: Path, manifest: dict, name: str | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise InputError(f"the onnx runtime runs {' and '.join(PRECISIONS)}, not {precision}: "
                             "use runtime='openvino' or 'torch' for bf16")
        super().__init__(folder, manifest, name, precision)
        ort = require("onnxruntime", "the onnx runtime")
        model = folder / ONNX_FILE
        if precision == "int8":
            model = derived(folder, INT8_DIR, lambda tmp: quantize_int8(folder / ONNX_FILE, tmp),
                            f"the int8 ONNX model of {self.name}") / ONNX_FILE
        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.model_path = model
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: pixels})[0]
