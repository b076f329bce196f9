"""Why was the image located there? Attributions over image regions.

Everything here works on a generic score function ``f(images: uint8 array (B, H, W, 3)) -> (B,)``:
the probability a model gives the target (the top cell, a chosen cell, or a country) for each image
of a batch. ``score_function(geolocator, target)`` builds one from any Geolocator; tests and other
models can pass their own. Hidden regions are replaced by a blurred copy of the image (or its mean
colour, or black), so "hiding" a region removes its detail but not its overall colour.

- ``occlusion(f, image)``: hide one region at a time (a grid or superpixels); a region's value is
  how much the score drops without it. Cheap: one evaluation per region.
- ``shap_attribution(f, image, method="partition")``: SHAP values with the ``shap`` library's
  Partition explainer and Image masker (a hierarchy of rectangles, so ``max_evals`` buys finer detail),
  or ``method="permutation"``: exact-in-expectation Shapley values of the regions (grid/superpixels)
  with shap's Permutation explainer.
- Each returns an ``Attribution``: per-pixel contributions (positive pushed the score up), the
  score of the full and of the fully hidden image, and the evaluations spent.
- ``save_overlay(image, attribution, path)``: a PNG with the image and the attribution on a
  diverging colour map (red: towards the target, blue: away from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from collections.abc import Callable

import numpy as np

from geoscope import optional
from geoscope.atomic import write_figure
from geoscope.errors import InputError

ScoreFn = Callable[[np.ndarray], np.ndarray]

METHODS = ("occlusion", "partition", "permutation")
BACKGROUNDS = ("blur", "mean", "black")


@dataclass
class Attribution:
    """How much each part of an image moved the score of the target."""

    method: str
    #: (H, W) contribution of each pixel (a region's value spread evenly over its pixels); their sum
    #: approximates ``full_score - base_score`` for the SHAP methods
    values: np.ndarray
    full_score: float  # f(image)
    base_score: float  # f(everything hidden)
    n_evals: int  # score-function evaluations spent
    target: str = "score"
    #: (H, W) region id of each pixel and the value of each region, for the region methods
    segments: np.ndarray | None = None
    region_values: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def block_sums(self, rows: int, cols: int) -> np.ndarray:
        """The contributions summed over a ``rows x cols`` grid of the image: (rows, cols)."""
        seg = grid_segments(self.values.shape[0], self.values.shape[1], rows, cols)
        return np.bincount(seg.ravel(), weights=self.values.ravel(), minlength=rows * cols).reshape(rows, cols)

    def to_dict(self) -> dict:
        v = self.values
        return {"method": self.method, "target": self.target, "full_score": float(self.full_score),
                "base_score": float(self.base_score), "n_evals": int(self.n_evals),
                "sum": float(v.sum()), "positive_sum": float(v[v > 0].sum()), "negative_sum": float(v[v < 0].sum()),
                "block_sums_4x4": self.block_sums(4, 4).round(6).tolist(), **self.extra}


# ----------------------------------------------------------------------------------- regions
def grid_segments(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """(H, W) int region ids of a ``rows x cols`` grid, row-major from the top left."""
    if rows < 1 or cols < 1 or rows > height or cols > width:
        raise InputError(f"grid {rows}x{cols} does not fit an image of {height}x{width} pixels")
    r = (np.arange(height) * rows) // height
    c = (np.arange(width) * cols) // width
    return (r[:, None] * cols + c[None, :]).astype(np.int64)


def superpixel_segments(image: np.ndarray, n_segments: int = 50) -> np.ndarray:
    """(H, W) int region ids of SLIC superpixels (needs scikit-image)."""
    optional.require("skimage")  # a grid of regions needs nothing more
    from skimage.segmentation import slic
    seg = slic(image, n_segments=n_segments, compactness=10.0, start_label=0)
    _, seg = np.unique(seg, return_inverse=True)  # ids 0..S-1 without gaps
    return seg.reshape(image.shape[:2]).astype(np.int64)


def background(image: np.ndarray, kind: str = "blur") -> np.ndarray:
    """What a hidden region is replaced by: a strong blur of the image, its mean colour, or black."""
    if kind == "blur":
        from PIL import Image, ImageFilter

        radius = max(2.0, max(image.shape[:2]) / 12.0)
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)), dtype=np.uint8)
    if kind == "mean":
        return np.broadcast_to(image.reshape(-1, 3).mean(0).round().astype(np.uint8), image.shape).copy()
    if kind == "black":
        return np.zeros_like(image)
    raise InputError(f"background must be one of {', '.join(BACKGROUNDS)}, got {kind!r}")


def as_image_array(image: Any) -> np.ndarray:
    """A (H, W, 3) uint8 array from a PIL image or an array; other shapes are an InputError."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image must be an RGB array of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


# ----------------------------------------------------------------------------------- evaluation
class _CountingScore:
    """Wraps f: uint8 batches of at most ``batch_size``, counts evaluations, drives a progress bar."""

    def __init__(self, f: ScoreFn, budget: int, batch_size: int, progress: bool, desc: str):
        self.f, self.batch_size, self.n = f, max(1, int(batch_size)), 0
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=budget, desc=desc, unit="eval", leave=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i: i + self.batch_size]
            s = np.asarray(self.f(chunk), dtype=np.float64).reshape(-1)
            if s.shape != (len(chunk),):
                raise InputError(f"the score function returned {s.size} values for a batch of {len(chunk)} images")
            out.append(s)
            self.n += len(chunk)
            if self.bar is not None:
                self.bar.update(len(chunk))
        return np.concatenate(out) if out else np.zeros(0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _regions(image: np.ndarray, segments: np.ndarray | None, grid: int | tuple[int, int]) -> np.ndarray:
    if segments is None:
        rows, cols = (grid, grid) if isinstance(grid, int) else grid
        return grid_segments(image.shape[0], image.shape[1], rows, cols)
    segments = np.asarray(segments)
    if segments.shape != image.shape[:2]:
        raise InputError(f"segments have shape {segments.shape} but the image is {image.shape[:2]}")
    _, inv = np.unique(segments, return_inverse=True)
    return inv.reshape(segments.shape).astype(np.int64)


def _compose(image: np.ndarray, bg: np.ndarray, seg: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Images (N, H, W, 3) showing the regions where ``keep`` (N, S) is true and ``bg`` elsewhere."""
    shown = np.asarray(keep, dtype=bool)[:, seg]  # (N, H, W)
    return np.where(shown[..., None], image[None], bg[None])


def _spread(seg: np.ndarray, region_values: np.ndarray) -> np.ndarray:
    sizes = np.bincount(seg.ravel(), minlength=len(region_values)).astype(np.float64)
    return (region_values / np.maximum(sizes, 1))[seg]


def occlusion(
    f: ScoreFn,
    image: Any,
    *,
    segments: np.ndarray | None = None,
    grid: int | tuple[int, int] = 8,
    background_kind: str = "blur",
    batch_size: int = 32,
    progress: bool = True,
    target: str = "score",
) -> Attribution:
    """Hide each region in turn; its value is ``f(image) - f(image without it)``."""
    image = as_image_array(image)
    seg = _regions(image, segments, grid)
    n_regions = int(seg.max()) + 1
    bg = background(image, background_kind)
    score = _CountingScore(f, n_regions + 2, batch_size, progress, "occlusion")
    try:
        ends = score(np.stack([image, bg]))
        full, base = float(ends[0]), float(ends[1])
        drops = np.empty(n_regions)
        for start in range(0, n_regions, batch_size):
            idx = np.arange(start, min(start + batch_size, n_regions))
            keep = np.ones((len(idx), n_regions), dtype=bool)
            keep[np.arange(len(idx)), idx] = False
            drops[idx] = full - score(_compose(image, bg, seg, keep))
    finally:
        score.close()
    return Attribution("occlusion", _spread(seg, drops), full, base, score.n, target, seg, drops,
                       {"background": background_kind, "regions": n_regions})


def shap_attribution(
    f: ScoreFn,
    image: Any,
    *,
    method: str = "partition",
    max_evals: int = 500,
    segments: np.ndarray | None = None,
    grid: int | tuple[int, int] = 8,
    background_kind: str = "blur",
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
    target: str = "score",
) -> Attribution:
    """SHAP values of the image for ``f`` with the ``shap`` library, within ``max_evals`` evaluations.

    ``method="partition"``: shap's Partition explainer over the pixels with an Image masker whose
    hidden value is the blurred image (a hierarchy of rectangles: owen values). ``method="permutation"``:
    shap's Permutation explainer over the regions (``segments`` or a ``grid``), whose Shapley values
    add up exactly to ``f(image) - f(all hidden)``; it needs at least ``2 * regions + 1`` evaluations.
    """
    shap = optional.require("shap")

    if method not in ("partition", "permutation"):
        raise InputError(f"SHAP method must be 'partition' or 'permutation', got {method!r}")
    if int(max_evals) < 10:
        raise InputError(f"max_evals must be at least 10, got {max_evals}")
    image = as_image_array(image)
    bg = background(image, background_kind)
    if method == "partition":
        score = _CountingScore(f, int(max_evals) + 2, batch_size, progress, "SHAP partition")
        try:
            masker = shap.maskers.Image(bg.astype(np.float64), image.shape)
            explainer = shap.explainers.Partition(score, masker)
            sv = explainer(image[None].astype(np.float64), max_evals=int(max_evals), batch_size=batch_size,
                           silent=True)
            values = np.asarray(sv.values)[0].reshape(image.shape).sum(axis=-1)
            ends = score(np.stack([image, bg]))
        finally:
            score.close()
        return Attribution("shap-partition", values, float(ends[0]), float(ends[1]), score.n, target,
                           extra={"background": background_kind, "max_evals": int(max_evals)})

    seg = _regions(image, segments, grid)
    n_regions = int(seg.max()) + 1
    evals = max(int(max_evals), 2 * n_regions + 1)
    score = _CountingScore(f, evals + 2, batch_size, progress, "SHAP permutation")

    def on_regions(keep: np.ndarray) -> np.ndarray:
        keep = np.asarray(keep) > 0.5
        return np.concatenate([score(_compose(image, bg, seg, keep[i: i + batch_size]))
                               for i in range(0, len(keep), batch_size)])

    try:
        masker = shap.maskers.Independent(np.zeros((1, n_regions)))
        explainer = shap.explainers.Permutation(on_regions, masker, seed=seed)
        sv = explainer(np.ones((1, n_regions)), max_evals=evals, batch_size=batch_size, silent=True)
        region_values = np.asarray(sv.values)[0].reshape(n_regions)
        ends = score(np.stack([image, bg]))
    finally:
        score.close()
    return Attribution("shap-permutation", _spread(seg, region_values), float(ends[0]), float(ends[1]), score.n,
                       target, seg, region_values,
                       {"background": background_kind, "regions": n_regions, "max_evals": evals})


def explain_image(f: ScoreFn, image: Any, method: str = "partition", **kw: Any) -> Attribution:
    """Dispatch to ``occlusion`` or ``shap_attribution`` by ``method`` (one of ``METHODS``)."""
    if method == "occlusion":
        kw.pop("max_evals", None)
        kw.pop("seed", None)
        return occlusion(f, image, **kw)
    if method in ("partition", "permutation"):
        return shap_attribution(f, image, method=method, **kw)
    raise InputError(f"explanation method must be one of {', '.join(METHODS)}, got {method!r}")


# ----------------------------------------------------------------------------------- targets
def score_function(geolocator: Any, target: str | int = "top", image: Any = None,
                   top_k: int = 1) -> tuple[ScoreFn, str]:
    """A score function over a Geolocator, and a description of its target.

    ``target``: ``"top"`` (the most probable cell of ``image``), a cell index (``int`` or ``"cell:N"``),
    or ``"country:CC"`` (the probability of all cells whose centroid lies in country CC).
    """
    from PIL import Image

    def cell_probs(images: np.ndarray) -> np.ndarray:
        pils = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
        head, encoder = getattr(geolocator, "head", None), getattr(geolocator, "encoder", None)
        if head is not None and encoder is not None:  # straight through encoder and head: no place names
            emb = encoder.encode_images(pils, batch_size=len(pils))
            distribution = getattr(geolocator, "distribution", None)  # the calibrated probabilities users see
            probs = (distribution(emb, top_k=1) if distribution is not None else head.predict(emb, top_k=1)).cell_probs
            if probs is None:
                raise InputError("this model gives no cell distribution, so it cannot be explained per cell")
            return np.asarray(probs, dtype=np.float64)
        preds = geolocator.locate(pils, top_k=top_k)
        rows = []
        for p in preds:
            if p.cell_probs is None:
                raise InputError(f"model {p.model!r} gives no cell distribution, so it cannot be explained per cell")
            rows.append(np.asarray(p.cell_probs, dtype=np.float64))
        return np.stack(rows)

    cells = getattr(geolocator, "cells", None)
    finest = None if cells is None else cells.finest
    n_cells = None if finest is None else len(finest)
    text = str(target)
    if text == "top":
        if image is None:
            raise InputError("target 'top' needs the image to find its most probable cell")
        cell = int(np.argmax(cell_probs(as_image_array(image)[None])[0]))
        return (lambda ims: cell_probs(ims)[:, cell]), f"cell {cell} (the most probable)"
    if text.startswith("country:"):
        code = text.split(":", 1)[1].strip().upper()
        if finest is None:
            raise InputError("this model has no geocells, so a country target cannot be used")
        from geoscope.geo.places import country_codes

        cen = np.asarray(finest.centroids)
        members = np.flatnonzero(np.asarray(country_codes(cen[:, 0], cen[:, 1])) == code)
        if len(members) == 0:
            raise InputError(f"target {text!r}: no geocell of this model has its centroid in country {code!r}")
        return (lambda ims: cell_probs(ims)[:, members].sum(axis=1)), f"country {code} ({len(members)} cells)"
    try:
        cell = int(text.split(":", 1)[1] if text.startswith("cell:") else text)
    except ValueError:
        raise InputError(f"target must be 'top', 'cell:N' or 'country:CC', got {text!r}") from None
    if n_cells is not None and not 0 <= cell < n_cells:
        raise InputError(f"target cell {cell} does not exist (the model has {n_cells} cells)")
    return (lambda ims: cell_probs(ims)[:, cell]), f"cell {cell}"


# ----------------------------------------------------------------------------------- pictures
def save_overlay(image: Any, attribution: Attribution, path: str | Path | BinaryIO, title: str | None = None,
                 dpi: int = 110) -> Any:
    """Write a PNG: the image, and the attribution over a greyed copy on a diverging colour map
    centred on zero (red: pushed towards the target, blue: pushed away), with a colour bar.
    ``path`` may be a binary file object (e.g. ``io.BytesIO``) instead of a file name."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    image = as_image_array(image)
    values = np.asarray(attribution.values, dtype=np.float64)
    if values.shape != image.shape[:2]:
        raise InputError(f"attribution has shape {values.shape} but the image is {image.shape[:2]}")
    lim = float(np.abs(values).max()) or 1e-12
    h, w = image.shape[:2]
    fig = Figure(figsize=(11.0, 5.2 * h / max(w, 1) + 0.8), dpi=dpi)
    FigureCanvasAgg(fig)
    ax0, ax1 = fig.subplots(1, 2)
    ax0.imshow(image)
    ax0.set_title("image", fontsize=10)
    grey = image.mean(axis=2)
    ax1.imshow(grey, cmap="gray", alpha=0.45)
    im = ax1.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim), alpha=0.75,
                    interpolation="nearest")
    if attribution.segments is not None:
        ax1.contour(attribution.segments, levels=np.arange(attribution.segments.max()) + 0.5, colors="k",
                    linewidths=0.3, alpha=0.4)
    ax1.set_title(title or f"{attribution.method}: {attribution.target}\n"
                  f"score {attribution.full_score:.3g} (hidden: {attribution.base_score:.3g}), "
                  f"{attribution.n_evals} evaluations", fontsize=9)
    cb = fig.colorbar(im, ax=ax1, shrink=0.8)
    cb.set_label("contribution (red: towards, blue: away)")
    for ax in (ax0, ax1):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return write_figure(path, fig)  # a binary file object (e.g. BytesIO) or a path
