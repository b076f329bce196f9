"""Encoders served by OpenVINO (CPU): ``fp32`` and ``bf16`` (bfloat16 where the CPU computes it natively:
AVX512-BF16 / AMX; elsewhere OpenVINO computes fp32).

The export's ONNX is converted once to OpenVINO's own format (IR) beside it: for ``bf16`` with its
weights stored as fp16 (half the file; converted to bfloat16 when compiled, a finer rounding than
bfloat16's own), for ``fp32`` as they are. Compiled models are cached by OpenVINO in the export folder
(``CACHE_DIR``), so a later process starts in a fraction of a second. One image at a time (what
``geoscope locate`` does) runs a model compiled for a batch of one, which needs no shape-dependent work
at its first call; other batch sizes share one model with a dynamic batch axis. ``warm(batch)`` starts
compiling in a background thread (OpenVINO releases the GIL while it compiles), so a caller can read
its image, its head and its place names meanwhile; the first call for that batch size waits for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from geoscope.encoders.export import ONNX_FILE, derived
from geoscope.encoders.exported import ExportedEncoder, runtime_threads
from geoscope.errors import InputError
from geoscope.optional import require

PRECISIONS = ("fp32", "bf16")
_HINT = {"fp32": "f32", "bf16": "bf16"}


def convert_ir(source: Path, folder: Path, input_size: int, fp16_weights: bool) -> None:
    """Write ``model.xml`` (batch axis dynamic) and ``model_b1.xml`` (batch of one) from an ONNX file."""
    ov = require("openvino", "the openvino runtime")
    model = ov.Core().read_model(str(source))
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=fp16_weights)
    model.reshape({model.inputs[0]: [1, 3, input_size, input_size]})
    ov.save_model(model, str(folder / "model_b1.xml"), compress_to_fp16=fp16_weights)


class OpenVINOEncoder(ExportedEncoder):
    runtime = "openvino"

    def __init__(self, folder: Path, manifest: dict, name: str | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise InputError(f"the openvino runtime runs {' and '.join(PRECISIONS)}, not {precision}: "
                             "use runtime='onnx' for int8")
        super().__init__(folder, manifest, name, precision)
        ov = require("openvino", "the openvino runtime")
        fp16 = precision == "bf16"
        size = self.input_size
        self.ir = derived(folder, "openvino-f16w" if fp16 else "openvino-f32",
                          lambda tmp: convert_ir(folder / ONNX_FILE, tmp, size, fp16),
                          f"the OpenVINO model of {self.name}")
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(self.ir / "compiled")})
        self.config = {"INFERENCE_NUM_THREADS": runtime_threads(), "INFERENCE_PRECISION_HINT": _HINT[precision],
                       "PERFORMANCE_HINT": "LATENCY"}
        self._compiled: dict[bool, object] = {}
        self._warming: dict[bool, threading.Thread] = {}
        self._failed: dict[bool, BaseException] = {}
        self._lock = threading.Lock()

    def _compile(self, single: bool) -> None:
        xml = self.ir / ("model_b1.xml" if single else "model.xml")
        try:
            self._compiled[single] = self.core.compile_model(str(xml), "CPU", self.config)
        except BaseException as exc:  # noqa: BLE001 - raised again where the model is used
            self._failed[single] = exc

    def warm(self, batch: int = 1) -> None:
        """Start compiling the model for batches of ``batch`` in a background thread (once)."""
        single = batch == 1
        with self._lock:
            if single in self._compiled or single in self._warming:
                return
            thread = threading.Thread(target=self._compile, args=(single,), name="geoscope-openvino-compile",
                                      daemon=True)
            self._warming[single] = thread
            thread.start()

    def compiled(self, batch: int):
        """The compiled model for a batch of ``batch`` images (one of one, or the dynamic one)."""
        single = batch == 1
        if single not in self._compiled:
            with self._lock:
                thread = self._warming.pop(single, None)
            if thread is not None:
                thread.join()
            else:
                self._compile(single)
            if single in self._failed:
                raise self._failed.pop(single)
        return self._compiled[single]

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        out = self.compiled(len(pixels))(pixels)[0]
        return np.array(out, dtype=np.float32, copy=True)  # the request reuses its output buffer
