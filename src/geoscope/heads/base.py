"""What every head shares: the output type, the training targets, and the ``Head`` interface.

A head is a small ``torch.nn.Module`` over image embeddings. Training code (``geoscope.train``) only
knows this interface:

- ``head.loss(emb, batch) -> scalar tensor`` where ``batch`` is a :class:`Targets` slice;
- ``head.predict(emb, top_k) -> HeadOutput`` (no gradients, eval mode);
- ``head.fit_data(emb, targets)`` once after training, for heads that keep training data at inference
  (the hybrid head's neighbour bank, the retrieval head's default gallery);
- ``head.on_train_start(emb, targets)`` once before the first epoch (e.g. fit the input standardisation).
  A head whose class says ``streaming = True`` gets the training embeddings in these two hooks as an
  ``heads.rows.EmbeddingRows`` (read in chunks from the store's memory maps: the store may be larger
  than memory); any other head gets one float32 tensor of them, as before;
- ``head.config()`` a JSON-ready dict from which ``heads.build_head(config)`` rebuilds the module,
  after which ``load_state_dict`` restores its weights and buffers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM
from geoscope.heads.output import HeadOutput  # noqa: F401  (its home is heads/output.py: no torch)
from geoscope.heads.rows import CHUNK_ELEMENTS, EmbeddingRows, chunk_rows


@dataclass
class Targets:
    """Training targets for N samples, as tensors (kept whole in memory, sliced per batch).

    ``lat``/``lon``: (N,) float32 degrees. ``cells``: one (N,) int64 tensor per cell level (coarse to
    fine; -1 where a point lies in no cell). ``scene``: (N,) int64 scene label, -1 where unknown, or None.
    """

    lat: torch.Tensor
    lon: torch.Tensor
    cells: list[torch.Tensor] = field(default_factory=list)
    scene: torch.Tensor | None = None
    #: per-sample tensors a head precomputes once (``Head.prepare_targets``), sliced along with the rest
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lat)

    def take(self, idx: torch.Tensor | slice) -> "Targets":
        return Targets(
            self.lat[idx],
            self.lon[idx],
            [c[idx] for c in self.cells],
            None if self.scene is None else self.scene[idx],
            {k: v[idx] for k, v in self.extra.items()},
        )

    def unit(self) -> torch.Tensor:
        """(N, 3) unit vectors of the targets."""
        return latlon_to_unit(self.lat, self.lon)


def latlon_to_unit(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Unit vectors (..., 3) from degrees, in torch (differentiable); geo.sphere.to_unit is the numpy twin."""
    phi, lam = torch.deg2rad(lat), torch.deg2rad(lon)
    c = torch.cos(phi)
    return torch.stack([c * torch.cos(lam), c * torch.sin(lam), torch.sin(phi)], dim=-1)


def unit_to_latlon(xyz: torch.Tensor) -> torch.Tensor:
    """(..., 2) lat/lon degrees from (..., 3) vectors (need not be normalised)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = torch.rad2deg(torch.atan2(z, torch.hypot(x, y)))
    lon = torch.rad2deg(torch.atan2(y, x))
    return torch.stack([lat, lon], dim=-1)


def great_circle_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle km between unit vectors ``a`` and ``b`` (..., 3), stable at 0 and pi, with gradients."""
    cross = torch.linalg.cross(a, b, dim=-1).norm(dim=-1)
    dot = (a * b).sum(-1)
    return EARTH_RADIUS_KM * torch.atan2(cross, dot)


def chord_to_km(dot: torch.Tensor) -> torch.Tensor:
    """Great-circle km from cosines between unit vectors (fast path for distance matrices)."""
    return EARTH_RADIUS_KM * torch.arccos(dot.clamp(-1.0, 1.0))


class Head(nn.Module):
    """Base class. A subclass is registered with ``@register_head("name")`` (which sets ``kind``),
    implements ``loss``, ``predict``, ``config`` and ``from_config``, and states its rules below."""

    kind: ClassVar[str] = "head"
    #: ``geoscope train`` can train it (False: built another way, e.g. from text prompts)
    trainable: ClassVar[bool] = True
    #: predicts over geocells: training needs ``--cells`` and ``create`` receives them
    needs_cells: ClassVar[bool] = False
    #: takes ``scene_labels=`` from a store's ``scene`` column (an auxiliary scene task)
    uses_scene_labels: ClassVar[bool] = False
    #: searches a GPS gallery (``set_gallery``), which ``geoscope train --gallery`` fills
    uses_gallery: ClassVar[bool] = False
    #: peak learning rate when the training config gives none
    default_lr: ClassVar[float] = 1e-3
    #: ``on_train_start`` / ``fit_data`` accept an ``EmbeddingRows`` (read in chunks), so training never
    #: holds the store as float32; False: they get one float32 tensor of the training embeddings
    streaming: ClassVar[bool] = False
    #: the number of finest cells this head predicts over (0 for heads without cells)
    n_cells: int = 0

    @classmethod
    def create(cls, in_dim: int, cells=None, **options) -> "Head":
        """A fresh head for ``in_dim``-dimensional embeddings (``cells`` is given when ``needs_cells``)."""
        return cls(in_dim, **options)

    @classmethod
    def from_config(cls, config: dict) -> "Head":  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, emb: torch.Tensor, batch: Targets) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def config(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def fit_data(self, emb, targets: Targets) -> None:
        """Keep whatever training data the head needs at inference (default: nothing). ``emb``: a tensor, or
        an ``EmbeddingRows`` when the class is ``streaming``."""

    def on_train_start(self, emb, targets: Targets) -> None:
        """Called once before the first epoch with the training data (default: nothing). ``emb``: a tensor,
        or an ``EmbeddingRows`` when the class is ``streaming``."""

    def prepare_targets(self, targets: Targets) -> Targets:
        """Precompute per-sample training targets once (default: none); returns the targets to train on."""
        return targets


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block in eval mode (no dropout), restoring the module's training flag afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def as_float_tensor(emb) -> torch.Tensor:
    """Embeddings from numpy (any float dtype) or torch as a float32 tensor."""
    if isinstance(emb, np.ndarray):
        emb = torch.from_numpy(np.ascontiguousarray(emb))
    return emb.float()


def check_dim(emb: torch.Tensor, dim: int, kind: str) -> None:
    if emb.shape[-1] != dim:
        raise InputError(
            f"the {kind} head expects {dim}-dimensional embeddings but got {emb.shape[-1]}; "
            "the embeddings come from a different encoder than the one the head was trained on"
        )


#: A dimension whose spread is below this share of the median spread counts as constant (Standardize).
CONSTANT_SPREAD = 1e-3
@torch.no_grad()
def streamed_mean_std(rows: EmbeddingRows, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (n - 1) of every row, in one pass over chunks, in float64
    (chunks merged as in Chan et al.'s parallel variance), so memory stays O(chunk x dim): by default
    chunks of 2M values (16 MB in float64)."""
    chunk = chunk or chunk_rows(rows.dim, CHUNK_ELEMENTS // 2)
    n, mean, m2 = 0, torch.zeros(rows.dim, dtype=torch.float64), torch.zeros(rows.dim, dtype=torch.float64)
    for part in rows.chunks(chunk):
        x = part.double()
        del part
        nb = len(x)
        mb = x.mean(0)
        m2b = x.sub_(mb).square_().sum(0)
        delta = mb - mean
        total = n + nb
        mean += delta * (nb / total)
        m2 += m2b + delta**2 * (n * nb / total)
        n = total
    std = (m2 / (n - 1)).sqrt() if n > 1 else torch.zeros_like(m2)
    return mean.float(), std.float()


class Standardize(nn.Module):
    """Per-dimension standardisation of embeddings, with statistics taken from the training data."""

    mean: torch.Tensor  # buffers, declared so that they are typed as tensors
    inv_std: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, emb) -> None:
        """Statistics of ``emb``: a tensor (of 65,536 evenly spaced rows when it has more), or an
        ``EmbeddingRows`` (every row, in one streaming pass)."""
        if isinstance(emb, EmbeddingRows):
            mean, std = streamed_mean_std(emb)
        else:
            flat = emb.reshape(-1, emb.shape[-1])
            sample = flat[torch.linspace(0, len(flat) - 1, min(len(flat), 65536)).long()].float()
            mean, std = sample.mean(0), sample.std(0)
        # A dimension (nearly) constant over the training data holds nothing a head can learn from, and
        # 1/std would blow up whatever it holds at inference: a dead feature of a CNN is 0 on every
        # training picture and 0.01 on a new one (z ~ 10^4, which outvotes every other feature). Such
        # dimensions get weight 0 instead.
        live = std > max(CONSTANT_SPREAD * float(std.median()), 1e-12)
        self.mean.copy_(mean)
        self.inv_std.copy_(torch.where(live, 1.0 / std.clamp_min(1e-12), torch.zeros_like(std)))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (emb - self.mean) * self.inv_std


def load_head_state(head: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that also accepts buffers whose size is data (galleries, neighbour banks).

    Parameters must match exactly; a buffer of another shape is replaced by the stored one.
    """
    own = dict(head.named_buffers())
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            module_name, _, name = key.rpartition(".")
            module = head.get_submodule(module_name) if module_name else head
            module.register_buffer(name, value.clone().to(own[key].dtype), persistent=True)
    head.load_state_dict(state, strict=True)
