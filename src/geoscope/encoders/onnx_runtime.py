"""Encoders served by ONNX Runtime (CPU): ``fp32`` runs the export as it is; ``int8`` runs a copy whose
matrix products are quantised dynamically (int8 weights, activations quantised per batch), made once with
``onnxruntime.quantization.quantize_dynamic`` and cached beside the export. ONNX Runtime has no bfloat16
kernels on CPU, so ``bf16`` is refused here (OpenVINO and torch run it).

int8 quantises ``MatMul`` / ``Gemm`` only (the linear layers, as torch's dynamic quantisation did): a
ViT's work is almost all there; a convolutional net such as EfficientNet has none in its image tower,
so its int8 model computes what its fp32 one does.

A session packs its weights for this CPU's matrix kernels when it starts (about 0.45 s of CPU for
ViT-L/14's int8 weights on 2 cores). The first session on a machine saves its optimised graph with the
packed weights beside the export (``onnx-<precision>-packed-<key>``, the key naming this ONNX Runtime and
this CPU's instruction sets, since packed weights are only valid there); later sessions load that and
pack nothing: ViT-L/14 int8 starts in 0.26 s instead of 0.7-1.2 s, with the same outputs.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from pathlib import Path

import numpy as np

from geoscope.encoders.export import ONNX_FILE, derived
from geoscope.encoders.exported import Background, ExportedEncoder, runtime_threads
from geoscope.errors import InputError
from geoscope.optional import require

PRECISIONS = ("fp32", "int8")
INT8_DIR = "onnx-int8"
DATA_SUFFIX = ".data"

log = logging.getLogger(__name__)


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


def machine_key() -> str:
    """What packed weights depend on: this ONNX Runtime's version and this CPU (its instruction sets)."""
    import onnxruntime as ort

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line for line in f if line.startswith(("flags", "Features"))), cpu)
    except OSError:
        pass
    return hashlib.sha256(f"{ort.__version__}|{platform.machine()}|{cpu}".encode()).hexdigest()[:12]


def packed_dir_name(precision: str) -> str:
    return f"onnx-{precision}-packed-{machine_key()}"


def _options(ort):
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # it warns that a saved optimised graph is for this machine only: it is
    return options


def save_packed(source: Path, folder: Path) -> None:
    """Write ``folder/model.onnx`` (+ ``.data``): ``source``'s graph optimised for this machine, with
    its weights saved packed for this CPU's kernels."""
    ort = require("onnxruntime", "the onnx runtime")
    options = _options(ort)
    options.optimized_model_filepath = str(folder / ONNX_FILE)
    for key, value in (("session.optimized_model_external_initializers_file_name", ONNX_FILE + DATA_SUFFIX),
                       ("session.optimized_model_external_initializers_min_size_in_bytes", "1024"),
                       ("session.save_external_prepacked_constant_initializers", "1")):
        options.add_session_config_entry(key, value)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def packed_model(folder: Path, source: Path, precision: str, name: str) -> Path | None:
    """The packed copy of ``source`` for this machine, made once (older machines' copies are removed);
    None, with a warning, where this ONNX Runtime cannot save one (the session then packs as it starts)."""
    target = packed_dir_name(precision)
    stale = [p.name for p in folder.glob(f"onnx-{precision}-packed-*") if p.name != target]
    try:
        return derived(folder, target, lambda tmp: save_packed(source, tmp),
                       f"the {precision} ONNX model of {name} packed for this CPU", supersedes=stale) / ONNX_FILE
    except Exception as exc:  # noqa: BLE001 - an optimisation of the start-up only: run unpacked
        log.warning("could not save packed weights for %s (%s); ONNX Runtime packs them at every start", name, exc)
        return None


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
        self.model_path = model
        options = _options(ort)
        packed = packed_model(folder, model, precision, self.name)
        if packed is not None:  # already optimised for this machine, weights packed: load it as it is
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            model = packed
        self._session = Background(lambda: self._open_session(ort, model, options), "geoscope-onnx-session")

    def _open_session(self, ort, model: Path, options):
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def warm(self, batch: int = 1) -> None:
        """Start the session in a background thread (loading, and packing the weights where no packed
        copy could be saved): a command reads its image meanwhile."""
        self._session.start()

    @property
    def session(self):
        return self._session.get()

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        session = self.session
        return session.run(None, {session.get_inputs()[0].name: pixels})[0]
