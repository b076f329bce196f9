"""Training streams the store: batches are read from the memory-mapped shards, never the whole store as
float32, so a store larger than the process may hold as float32 still trains (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _features import location_features

from geoscope.geo.cells import CellHierarchy, save_cells
from geoscope.heads.base import Standardize
from geoscope.heads.rows import EmbeddingRows
from geoscope.store import EmbeddingStore
from geoscope.train import TrainConfig, train_from_store


class ReadGuard:
    """Stands in for a store's embeddings: serves rows like the memory map, records the largest single
    read, and refuses any read of more than ``cap`` rows (what a float32 copy of the store would do)."""

    def __init__(self, array, cap: int):
        self.array, self.cap, self.largest = array, cap, 0
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, 2

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        out = self.array[key]
        rows = len(out) if out.ndim == 2 else 1
        assert rows <= self.cap, f"{rows} rows read at once (cap {self.cap}): the store is being copied"
        self.largest = max(self.largest, rows)
        return out

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole store was turned into one array")


def _store(tmp_path, n, dim, seed=0, levels=(80, 25)):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.9, n)))
    lon = rng.uniform(-180, 180, n)
    emb = np.empty((n, dim), np.float16)
    for s in range(0, n, 8192):  # (never the whole store in float32 here either)
        emb[s: s + 8192] = location_features(lat[s: s + 8192], lon[s: s + 8192], dim=dim, seed=seed)
    EmbeddingStore.from_arrays(tmp_path / "store", range(n), emb, lat, lon, encoder="synthetic")
    cells = CellHierarchy.adaptive(lat, lon, 5, list(levels))
    save_cells(cells, tmp_path / "cells.json")
    return tmp_path / "store", cells


@pytest.mark.parametrize("head", ["classifier", "hybrid", "regressor", "retrieval"])
def test_training_never_reads_more_than_a_batch_or_chunk_of_the_store_at_once(tmp_path, head):
    n, cap = 12_000, 8192  # the streaming reads: batches (512), chunks of statistics, bank, prediction (<= 8192)
    path, cells = _store(tmp_path, n, 16)
    store = EmbeddingStore.open(path)
    guard = ReadGuard(store.embeddings, cap)
    store.embeddings = guard
    options = {"regressor": {"d_model": 16, "n_heads": 2}, "retrieval": {"queue_size": 256}}.get(head, {"hidden": 32})
    geo, result = train_from_store(store, head, tmp_path / "model", cells=cells, head_options=options,
                                   config=TrainConfig(epochs=1, batch_size=512), progress=False, calibrate=False)
    assert len(result.history) == 1 and (tmp_path / "model" / "model.safetensors").is_file()
    assert 512 <= guard.largest <= cap  # it read batches, and nothing bigger than a chunk
    # every row with coordinates was used (training or validation)
    assert result.report["n_train"] + result.report["n_val"] == n


def test_streamed_standardisation_matches_the_statistics_of_the_whole_array():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30_000, 5, generator=g) * torch.tensor([1.0, 3.0, 0.1, 2.0, 1.0]) + 4.0
    x[:, 4] = 1.0  # constant: weight 0
    whole, streamed = Standardize(5), Standardize(5)
    whole.fit(x)  # the tensor path (a 65,536-row sample: here every row)
    streamed.fit(EmbeddingRows(x.numpy().astype(np.float32)))  # in chunks of 8192
    torch.testing.assert_close(streamed.mean, whole.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(streamed.inv_std, whole.inv_std, rtol=1e-5, atol=0)
    assert streamed.inv_std[4] == 0


_MEMORY_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from geoscope.geo.cells import load_cells
    from geoscope.store import EmbeddingStore
    from geoscope.train import TrainConfig, train_from_store

    store_dir, cells_file, out, margin = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    store, cells = EmbeddingStore.open(store_dir), load_cells(cells_file)
    float32_bytes = len(store) * store.dim * 4

    def train(store, out):
        return train_from_store(store, "classifier", out, cells=cells, head_options={"hidden": 32},
                                config=TrainConfig(epochs=1, batch_size=2048), progress=False, calibrate=False)

    # the same training on 1,000 rows first: what is set up once (lazy imports, torch's thread pools and
    # kernels, about 100 MB) is in the baseline, not in the cap
    tiny = EmbeddingStore.from_arrays(out + "-tiny-store", store.ids[:1000], store.embeddings[:1000],
                                      store.lat[:1000], store.lon[:1000], encoder=store.encoder)
    train(tiny, out + "-tiny")
    del tiny

    def data_kb():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmData:")).split()[1])
    # from here on the process may hold `margin` x a float32 copy of the store, no more
    # (RLIMIT_DATA counts heap and anonymous memory, not the read-only memory map of the store)
    limit = data_kb() * 1024 + int(margin * float32_bytes)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        np.asarray(store.embeddings, dtype=np.float32)  # what training did before: it must not fit
        copy = "fits"
    except MemoryError:
        copy = "MemoryError"
    geo, result = train(store, out)
    print(json.dumps({"copy": copy, "epochs": len(result.history), "float32_mb": float32_bytes / 2**20,
                      "limit_mb": margin * float32_bytes / 2**20}))
''')


@pytest.mark.slow
def test_a_store_larger_than_the_process_may_hold_as_float32_still_trains(tmp_path):
    n, dim = 60_000, 1024  # float16 on disk: 117 MiB; a float32 copy: 234 MiB; the process may hold half that
    path, _ = _store(tmp_path, n, dim, levels=(400,))
    # big blocks are mapped (and returned when freed) rather than left in the heap: the cap then counts what
    # training holds, not how the allocator's heap happened to fragment
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), str(tmp_path / "cells.json"),
                           str(tmp_path / "model"), "0.5"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["copy"] == "MemoryError", out  # the cap is real: the float32 copy does not fit under it
    assert out["epochs"] == 1 and (tmp_path / "model" / "model.safetensors").is_file()
