"""``ExportedEncoder``: an encoder served by an inference runtime from an export (numpy in, numpy out).

It has the parts of ``Encoder`` that inference uses (``name``, ``dim``, ``input_size``, ``transform``,
``preprocess``, ``encode_pixels``, ``encode_images``, ``runtime``, ``precision``) and nothing that
needs torch: importing it, building it from a cached export and running it never import torch or
transformers. It has no token features and no text tower (``has_tokens`` / ``has_text`` are False):
code that needs them asks ``create_encoder(..., runtime="torch")``. The runtimes are
``encoders/onnx_runtime.py`` and ``encoders/openvino_runtime.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from geoscope import settings
from geoscope.encoders.preprocess import ImageTransform, encode_in_batches


def runtime_threads() -> int:
    """Threads an exported encoder computes with: ``GEOSCOPE_THREADS``, else every core."""
    value = settings.get("GEOSCOPE_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return max(1, os.cpu_count() or 1)


class Background:
    """A value a runtime prepares once (a compiled model, a session): ``start()`` begins making it in a
    background thread (the runtimes release the GIL while they work), so a command can read its image
    meanwhile; ``get()`` waits for it, making it now if nothing started it. An exception raised while
    making it is raised by ``get()``, and the next ``get()`` tries again."""

    def __init__(self, make: Callable[[], object], name: str):
        self._make, self._name = make, name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._value: object = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._value = self._make()
        except BaseException as exc:  # noqa: BLE001 - raised again by get()
            self._error = exc

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def get(self):
        self.start()
        assert self._thread is not None
        self._thread.join()
        with self._lock:
            if self._error is not None:
                error, self._error, self._thread = self._error, None, None
                raise error
        return self._value


def transform_from(doc: dict) -> ImageTransform:
    mean, std = [float(v) for v in doc["mean"]], [float(v) for v in doc["std"]]
    return ImageTransform(resize=int(doc["resize"]), crop=(int(doc["crop"][0]), int(doc["crop"][1])),
                          mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
                          resample=str(doc["resample"]))


class ExportedEncoder:
    """Images -> (B, dim) float32 embeddings through an exported graph. Subclasses implement ``_run``."""

    runtime = "exported"
    has_tokens = False
    has_text = False
    device = "cpu"
    training = False

    def __init__(self, folder: Path, manifest: dict, name: str | None, precision: str):
        self.folder = Path(folder)
        self.manifest = manifest
        self.name = name or str(manifest.get("name", "encoder"))
        self.dim = int(manifest["dim"])
        self.transform = transform_from(manifest["transform"])
        self.precision = precision

    @property
    def input_size(self) -> int:
        return int(self.transform.crop[0])

    @property
    def dtype(self) -> str:
        """The precision it computes at (``fp32`` / ``bf16`` / ``int8``): not a torch dtype."""
        return self.precision

    def eval(self) -> "ExportedEncoder":
        return self

    def preprocess(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """The weights' own preprocessing: PIL images -> (B, 3, H, W) float32."""
        return self.transform(images)

    def warm(self, batch: int = 1) -> None:
        """Start preparing to encode batches of ``batch`` images in the background, where the runtime
        has something to prepare (OpenVINO compiles); a no-op here."""

    def _run(self, pixels: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_pixels(self, pixels) -> np.ndarray:
        """Preprocessed pixels (numpy or a torch tensor) -> (B, dim) float32 embeddings."""
        if hasattr(pixels, "detach"):  # a torch tensor from code written for torch encoders
            pixels = pixels.detach().float().cpu().numpy()
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._run(x), dtype=np.float32).reshape(len(x), self.dim)

    __call__ = encode_pixels

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """PIL images -> (N, dim) float32 embeddings, ``batch_size`` at a time."""
        return encode_in_batches(self, images, batch_size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, input_size={self.input_size}, "
                f"runtime={self.runtime!r}, precision={self.precision!r})")
