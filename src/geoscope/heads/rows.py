"""``EmbeddingRows``: training embeddings that need not fit in memory as float32.

Training reads a store's rows from its memory-mapped float16 shards, a batch at a time; the heads'
training hooks (``Head.on_train_start``, ``Head.fit_data``) get the same kind of view, so state fitted
on the whole training set (input standardisation, a neighbour bank) is built in chunks too. A view is
a store (or any 2-D array, e.g. a memory map or a tensor) and the rows of it that it stands for:

- ``len(rows)``, ``rows.dim``, ``rows.shape``;
- ``rows.read(idx)``: positions ``idx`` of the view as a (B, dim) float32 tensor (read in file order);
- ``rows.take(idx)``: a smaller view (positions, a boolean mask, or a tensor of either), nothing read;
- ``rows.chunks(size)``: every row in order, ``size`` rows at a time, as float32 tensors;
- ``rows.to_tensor()``: all of it as one float32 tensor, the copy streaming avoids (for code that needs it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

#: values (rows x dim) per chunk when a hook walks the whole training set: 16 MB of float32
CHUNK_ELEMENTS = 1 << 22
#: rows per chunk at the usual widths (768-d: 5461 rows), kept for callers that give rows
CHUNK_ROWS = 8192


def chunk_rows(dim: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Rows per chunk of ``dim``-d embeddings so that a chunk holds about ``elements`` values."""
    return max(1, min(CHUNK_ROWS, elements // max(1, dim)))


class EmbeddingRows:
    """A read-only view of some rows of ``data``: an ``EmbeddingStore``, a numpy array / memory map, or a
    tensor, each (N, dim). ``rows``: the indices into ``data`` this view stands for (default: all, in order)."""

    def __init__(self, data, rows=None):
        self.data = data
        n = len(data)
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        self.dim = int(data.dim if hasattr(data, "read_rows") else data.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.dim)

    def __repr__(self) -> str:
        return f"EmbeddingRows({len(self)} of {len(self.data)} rows, dim={self.dim})"

    def _source_rows(self, idx) -> np.ndarray:
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        if isinstance(idx, slice):
            return self.rows[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean index of shape {idx.shape} for {len(self)} rows")
            return self.rows[idx]
        return self.rows[idx.astype(np.int64, copy=False)]

    def take(self, idx) -> "EmbeddingRows":
        """The view of positions ``idx`` (indices, a slice or a boolean mask over this view); nothing is read."""
        return EmbeddingRows(self.data, self._source_rows(idx))

    def read(self, idx=None) -> torch.Tensor:
        """Positions ``idx`` of this view (default: all) as a (B, dim) float32 tensor."""
        rows = self.rows if idx is None else self._source_rows(idx)
        data = self.data
        if isinstance(data, torch.Tensor):
            return data.index_select(0, torch.from_numpy(rows)).float()
        if hasattr(data, "read_rows"):  # an EmbeddingStore: sorted reads from its memory maps
            return torch.from_numpy(data.read_rows(rows))
        order = np.argsort(rows, kind="stable")  # a memory map is read fastest in file order
        out = np.empty((len(rows), self.dim), np.float32)
        out[order] = np.asarray(data[rows[order]], dtype=np.float32)
        return torch.from_numpy(out)

    def chunks(self, size: int | None = None) -> Iterator[torch.Tensor]:
        """Every row of the view in order, ``size`` at a time (default ``chunk_rows(dim)``), as float32 tensors."""
        size = size or chunk_rows(self.dim)
        for start in range(0, len(self), size):
            yield self.read(slice(start, start + size))

    def to_tensor(self) -> torch.Tensor:
        """Everything as one (N, dim) float32 tensor: the whole copy, for code that cannot stream."""
        if isinstance(self.data, torch.Tensor) and len(self.rows) == len(self.data) and \
                np.array_equal(self.rows, np.arange(len(self.data))):
            return self.data.float()
        return self.read()


def as_rows(emb) -> EmbeddingRows:
    """``emb`` as an ``EmbeddingRows``: a view is returned as it is; a tensor or array is wrapped (not copied)."""
    if isinstance(emb, EmbeddingRows):
        return emb
    if isinstance(emb, np.ndarray) and emb.ndim == 2:
        return EmbeddingRows(emb)
    if isinstance(emb, torch.Tensor) and emb.dim() == 2:
        return EmbeddingRows(emb)
    raise TypeError(f"expected (N, dim) embeddings or EmbeddingRows, got {type(emb).__name__}")
