"""Image preprocessing that belongs to a set of weights: resize, centre crop, normalise.

Pure PIL + numpy (no torch, no torchvision), so decoding worker processes can run it without
loading torch. It is split in two steps: ``to_uint8`` (resize + crop, done in workers, cheap to send
between processes) and ``normalize`` (a whole batch at once, done where the model runs).

The resize follows the Hugging Face ``CLIPImageProcessor`` exactly (shortest side to ``resize``,
the long side truncated to an int, PIL resampling, centre crop with ``(size - crop) // 2`` offsets,
then ``(x / 255 - mean) / std``), so a CLIP encoder here sees the same pixels as ``CLIPProcessor``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
from PIL import Image

from geoscope.data.decode import FULL_SIZE_KEY  # a JPEG decoded at reduced scale remembers its full size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_RESAMPLE_BY_CODE = {int(v): k for k, v in _RESAMPLE.items()}


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shortest side to ``resize``, centre-crop ``crop`` (h, w), normalise."""

    resize: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")
        if self.resize < max(self.crop):
            raise ValueError(f"resize ({self.resize}) must be at least the crop size {self.crop}")

    @classmethod
    def from_hf_config(cls, cfg: dict, default_size: int) -> "ImageTransform":
        """Build from a Hugging Face ``preprocessor_config.json`` dict (missing keys: CLIP defaults)."""
        size = cfg.get("size", default_size)
        if isinstance(size, dict):
            size = size.get("shortest_edge") or min(size.get("height", default_size), size.get("width", default_size))
        crop = cfg.get("crop_size", size) if cfg.get("do_center_crop", True) else size
        if isinstance(crop, dict):
            crop = (int(crop["height"]), int(crop["width"]))
        elif isinstance(crop, int):
            crop = (crop, crop)
        resample = cfg.get("resample", 3)
        resample = _RESAMPLE_BY_CODE.get(int(resample), "bicubic") if not isinstance(resample, str) else resample
        return cls(
            resize=int(size),
            # as the config has them (a one-channel mean / std broadcasts over RGB, as before)
            crop=cast(tuple[int, int], tuple(int(c) for c in crop)),
            mean=cast(tuple[float, float, float], tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN))),
            std=cast(tuple[float, float, float], tuple(float(v) for v in cfg.get("image_std", CLIP_STD))),
            resample=resample,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize and crop one image: (crop_h, crop_w, 3) uint8."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        fw, fh = image.info.get(FULL_SIZE_KEY) or (w, h)  # a JPEG decoded at reduced scale (data.decode)
        if (fw > fh) != (w > h):  # turned by its EXIF orientation after decoding
            fw, fh = fh, fw
        if fw <= fh:
            new_w, new_h = self.resize, int(self.resize * fh / fw)
        else:
            new_w, new_h = int(self.resize * fw / fh), self.resize
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=_RESAMPLE[self.resample])
        ch, cw = self.crop
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
        return np.asarray(image)[top : top + ch, left : left + cw]

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, 3, h, w) float32 ``(x / 255 - mean) / std``."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)  # one float copy only
        x *= np.float32(1 / 255)
        x -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
        x /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return x

    def __call__(self, images) -> np.ndarray:
        """One image or a list of images -> (B, 3, h, w) float32."""
        if isinstance(images, Image.Image):
            images = [images]
        return self.normalize(np.stack([self.to_uint8(im) for im in images]))


def clip_transform(size: int = 224) -> ImageTransform:
    """OpenAI CLIP preprocessing (what ``CLIPProcessor`` / ``CLIPImageProcessor`` do by default)."""
    return ImageTransform(resize=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD, resample="bicubic")


def encode_in_batches(encoder, images, batch_size: int = 32) -> np.ndarray:
    """PIL images -> (N, encoder.dim) float32 embeddings through ``encoder.preprocess`` and
    ``encoder.encode_pixels``, ``batch_size`` at a time (every encoder's ``encode_images``)."""
    images = list(images)
    out = np.zeros((len(images), encoder.dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out[start : start + len(chunk)] = encoder.encode_pixels(encoder.preprocess(chunk))
    return out
