"""Cross-view matchers: what area search needs from a model, and the frozen-feature baseline.

A *matcher* puts ground photos (queries) and overhead tiles (references) into one embedding space,
where a photo lies close to the tile of the ground it was taken on. Area search needs only
:class:`CrossViewMatcher`: ``embed_queries(images, headings=None)`` and ``embed_references(images)``,
each returning (N, D) float32 rows (unit rows for queries; references are normalised here too).
A trained cross-view model (two branches in one space) implements it; so does
:class:`FrozenEncoderMatcher`, any registry encoder used for both sides (the frozen-feature baseline:
no training, works offline with ``efficientnet-lite0``).

Headings. A photo faces a compass heading (degrees clockwise from north). A matcher says how it
deals with headings in ``heading_mode``:

- ``"query"``: ``embed_queries(images, headings)`` embeds each photo *as if* taken facing that
  heading, to be compared with north-up reference tiles (the frozen matcher turns the photo back to
  north up). Area search then tries several headings on the query side: references are embedded once.
- ``"reference"``: the model compares photos with tiles turned to the photo's heading (pairs built
  with ``crossview build --rotate-to-heading``). Area search then embeds every reference tile at each
  heading tried, and queries once.

``load_matcher`` is the one place where ``-m/--model`` becomes a matcher.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from collections.abc import Sequence

import numpy as np
from PIL import Image

from geoscope.errors import InputError

#: side of the central square kept from every image, as a fraction of its side: the largest square that
#: stays inside the picture however it is turned, so a turned photo has no empty corners
ROTATION_SAFE_CROP = 1.0 / math.sqrt(2.0)

HEADING_MODES = ("query", "reference")


@runtime_checkable
class CrossViewMatcher(Protocol):
    """What area search needs from a cross-view model."""

    #: a name that identifies the model and its settings (part of the reference cache's key)
    name: str
    #: embedding width
    dim: int

    def embed_queries(self, images: Sequence[Any], headings: Sequence[float | None] | None = None) -> np.ndarray:
        """Ground photos (PIL images or (H, W, 3) uint8 arrays) -> (N, D) unit rows; ``headings``: the
        compass heading each photo faces, or None where unknown."""
        ...

    def embed_references(self, images: Sequence[Any]) -> np.ndarray:
        """Overhead tiles (PIL images or (H, W, 3) uint8 arrays, north up unless the model turns
        references) -> (N, D) rows."""
        ...


def heading_mode(matcher: Any) -> str:
    """``matcher.heading_mode`` ("query" or "reference"); "query" when a matcher does not say."""
    mode = getattr(matcher, "heading_mode", "query")
    if mode not in HEADING_MODES:
        raise InputError(f"matcher {getattr(matcher, 'name', matcher)!r} has heading_mode {mode!r}; "
                         f"expected one of {', '.join(HEADING_MODES)}")
    return mode


def matcher_key(matcher: Any) -> str:
    """What identifies a matcher's reference embeddings: its ``cache_key`` when it has one, else its name."""
    return str(getattr(matcher, "cache_key", None) or matcher.name)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"an image for matching must be a PIL image or (H, W, 3) uint8 array, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr, "RGB")


def centre_square(image: Image.Image, fraction: float) -> Image.Image:
    """The central square of ``image`` whose side is ``fraction`` of the shorter side."""
    w, h = image.size
    side = max(1, int(round(min(w, h) * fraction)))
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


class FrozenEncoderMatcher:
    """The frozen-feature baseline: one pretrained image encoder embeds photos and tiles alike.

    Both sides keep the central :data:`ROTATION_SAFE_CROP` square (so photo and tile show the same
    ground whatever the heading), are resized to ``input_px`` (default: the encoder's input size) and
    embedded with the encoder's normalisation; rows are unit vectors (cosine similarity). A photo with
    a heading is turned back to north up first (``heading_mode = "query"``).
    """

    heading_mode = "query"

    def __init__(self, encoder: Any, input_px: int | None = None, crop: float = ROTATION_SAFE_CROP,
                 batch_size: int = 32):
        if not 0.0 < crop <= 1.0:
            raise InputError(f"crop must be a fraction in (0, 1], got {crop}")
        self.encoder = encoder
        self.input_px = int(input_px or encoder.input_size)
        self.crop = float(crop)
        self.batch_size = int(batch_size)
        self.dim = int(encoder.dim)
        self.name = f"frozen:{encoder.name}"
        runtime = getattr(encoder, "runtime", "torch")
        precision = getattr(encoder, "precision", None) or getattr(encoder, "dtype", "fp32")
        self.cache_key = f"{self.name}|{self.input_px}px|crop{self.crop:.4f}|{runtime}|{precision}"
        t = encoder.transform
        self._mean = np.asarray(t.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(t.std, np.float32).reshape(1, 3, 1, 1)
        self._resample = getattr(Image.Resampling, str(getattr(t, "resample", "bicubic")).upper(), Image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        return f"FrozenEncoderMatcher({self.encoder.name!r}, input_px={self.input_px}, crop={self.crop:.3f})"

    def _pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        arr = np.stack([np.asarray(centre_square(im, self.crop).resize((self.input_px, self.input_px), self._resample),
                                   dtype=np.float32) for im in images])
        arr = arr.transpose(0, 3, 1, 2) / 255.0
        return np.ascontiguousarray((arr - self._mean) / self._std, dtype=np.float32)

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), np.float32)
        for a in range(0, len(images), self.batch_size):
            chunk = images[a:a + self.batch_size]
            out[a:a + len(chunk)] = self.encoder.encode_pixels(self._pixels(chunk))
        return unit_rows(out)

    def embed_queries(self, images: Sequence[Any], headings: Sequence[float | None] | None = None) -> np.ndarray:
        ims = [as_pil(im) for im in images]
        if headings is not None:
            if len(headings) != len(ims):
                raise InputError(f"{len(ims)} photos but {len(headings)} headings")
            # a photo facing heading h shows north turned h degrees anticlockwise: turn it back clockwise
            ims = [im if h is None or float(h) % 360.0 == 0.0 else im.rotate(-float(h), resample=Image.Resampling.BICUBIC)
                   for im, h in zip(ims, headings)]
        return self._embed(ims)

    def embed_references(self, images: Sequence[Any]) -> np.ndarray:
        return self._embed([as_pil(im) for im in images])


def load_matcher(model: str, weights: str | None = None, precision: str | None = None,
                 runtime: str | None = None, input_px: int | None = None) -> CrossViewMatcher:
    """The matcher for ``-m/--model``: a cross-view model folder, or a registry encoder name (the
    frozen-feature baseline, e.g. ``efficientnet-lite0``).

    This is the one function that turns ``--model`` into a matcher: a new kind of model is one branch here.
    An encoder runs on the fastest installed runtime (``runtime="auto"``: OpenVINO, ONNX Runtime, else
    torch) unless ``runtime`` is given; ``input_px`` other than the encoder's own size needs torch.
    """
    folder = Path(str(model)).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return _load_crossview_folder(folder, weights, precision)
    from geoscope.encoders import create_encoder, list_encoders

    names = {info.name for info in list_encoders()}
    if str(model) not in names and not str(model).startswith(("hf:", "hf-hub:")) and not folder.is_dir():
        raise InputError(f"--model {model!r} is neither a cross-view model folder nor an image encoder "
                         f"(known encoders: {', '.join(sorted(names))})")
    if weights is not None and not Path(weights).expanduser().is_dir():
        raise InputError(f"--weights points to {weights}, which is not a folder")

    def build(run: str):
        kwargs: dict = {"precision": precision or "fp32", "runtime": run}
        if weights is not None:
            return create_encoder(str(Path(weights).expanduser()), name=str(model), **kwargs).eval()
        return create_encoder(str(model), **kwargs).eval()

    # only embeddings are needed: the fastest installed runtime (exported runtimes take the native input size only)
    encoder = build(runtime or "auto")
    exported = getattr(encoder, "runtime", "torch") != "torch"
    if runtime is None and input_px is not None and input_px != encoder.input_size and exported:
        encoder = build("torch")
    return FrozenEncoderMatcher(encoder, input_px=input_px)


class NamedMatcher:
    """A matcher object given the ``name`` and ``cache_key`` area search records (e.g. a cross-view model)."""

    heading_mode = "query"

    def __init__(self, model: Any, name: str, cache_key: str):
        self.model, self.name, self.cache_key = model, name, cache_key
        self.dim = int(model.dim)
        self.heading_mode = getattr(model, "heading_mode", "query")

    def embed_queries(self, images: Sequence[Any], headings: Sequence[float | None] | None = None) -> np.ndarray:
        return self.model.embed_queries([as_pil(im) for im in images], headings=headings)

    def embed_references(self, images: Sequence[Any]) -> np.ndarray:
        return self.model.embed_references([as_pil(im) for im in images])


def _load_crossview_folder(folder: Path, weights: str | None, precision: str | None) -> CrossViewMatcher:
    """A trained cross-view model folder (``geoscope crossview train``): query embeddings turn photos back to
    north up by their heading (or pool rotations when it is unknown), references are north-up tiles."""
    import hashlib
    import importlib

    try:
        config_bytes = (folder / "config.json").read_bytes()
    except OSError as exc:
        raise InputError(f"{folder / 'config.json'} cannot be read ({exc})") from None
    try:
        module = importlib.import_module("geoscope.crossview.model")
    except ModuleNotFoundError:
        raise InputError(f"{folder} is a model folder, but this geoscope has no cross-view models to load it with; "
                         "give an image encoder name (e.g. efficientnet-lite0) for the frozen-feature baseline") from None
    options = {k: v for k, v in {"weights": weights, "precision": precision}.items() if v is not None}
    model = module.CrossViewModel.from_pretrained(folder, **options)
    # config.json records the SHA-256 of every model file: its own digest identifies the weights
    key = hashlib.sha256(config_bytes).hexdigest()[:16]
    return NamedMatcher(model, f"crossview:{folder.name}", f"crossview:{key}|{precision or 'fp32'}")
