"""Nearest neighbours over large galleries of unit vectors: exact below a size threshold, HNSW above.

A gallery (GPS embeddings of a retrieval head, overhead tiles of a cross-view area) is searched by
inner product of unit vectors (= cosine). Up to :func:`ann_threshold` entries (default 250,000;
``GEOSCOPE_ANN_THRESHOLD``) the search is exact (one matrix product, ~20 ms per query for 100K x 512
on 2 cores). Above it, an HNSW graph (faiss ``IndexHNSWFlat``, inner-product metric) answers in about a
millisecond or less, hundreds of times faster than exact search on a million entries, with recall@10
near 0.99 against it (``benchmarks/bench_ann.py``: 0.988 at efSearch 128 on a clustered 1M x 512
gallery built with efConstruction 64; a larger ``EF_CONSTRUCTION`` builds a better graph, slower). The
graph is built once (minutes for millions of entries, with progress in the log) and stored as a file
beside the gallery's other cached data, keyed by what the gallery holds; a damaged or stale file is
rebuilt, never trusted.

**Repair.** faiss inserts entries in parallel batches, and on galleries of many tight clusters some
entries end up with no link from their own cluster: no search reaches them, however broad (on the
benchmark's clustered 1M x 512 gallery, 3.5 % of the entries could not find themselves, and recall@10
stayed at 0.988 from efSearch 128 to 256). After the build, :func:`repair` asks the graph for every
entry; each one it cannot find gets its nearest entries as neighbours and is linked from them, in
free slots or in place of their least similar neighbour (recall@10 0.994 at efSearch 128 there).

Heads that need a full softmax over the gallery (probabilities that sum to one over every entry)
compute it exactly; the index gives the candidates (see ``heads.retrieval``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from geoscope import settings
from geoscope.atomic import atomic_path
from geoscope.optional import require

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 250_000
#: HNSW graph degree, construction and search breadth (benchmarks/bench_ann.py)
HNSW_M = 32
EF_CONSTRUCTION = 64
EF_SEARCH = 128


def ann_threshold() -> int:
    """Gallery size from which searches use an HNSW index (``GEOSCOPE_ANN_THRESHOLD``, default 250,000)."""
    value = settings.get("GEOSCOPE_ANN_THRESHOLD")
    try:
        return int(value) if value else DEFAULT_THRESHOLD
    except ValueError:
        return DEFAULT_THRESHOLD


def exact_search(gallery: np.ndarray, queries: np.ndarray, k: int, chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each query with the gallery: (scores (B, k), indices (B, k)),
    best first. Scans the gallery in chunks, so memory stays (B, chunk)."""
    gallery = np.asarray(gallery, dtype=np.float32)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(int(k), len(gallery))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(gallery), chunk):
        s = queries @ gallery[start : start + chunk].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
        best_i = np.concatenate([best_i, part + start], 1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def _level0(index) -> tuple[np.ndarray, np.ndarray, int]:
    """(the graph's neighbour table as a numpy copy, each entry's first level-0 slot, slots per entry)."""
    faiss = require("faiss", "an HNSW index")
    hnsw = index.hnsw
    cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    return faiss.vector_to_array(hnsw.neighbors), offsets[: index.ntotal] + cum[0], int(cum[1] - cum[0])


def repair(index, vectors: np.ndarray, ef_check: int = 64, links: int = 16, back_links: int = 6,
           batch: int = 100_000) -> tuple[int, int]:
    """Link the entries the HNSW graph cannot reach (see the module docstring); returns (entries that
    could not find themselves, links added back to them). ``vectors`` are the indexed vectors."""
    faiss = require("faiss", "an HNSW index")
    params = faiss.SearchParametersHNSW()
    params.efSearch = int(ef_check)
    n = int(index.ntotal)
    lost = []
    for start in range(0, n, batch):
        part = np.ascontiguousarray(vectors[start : start + batch], dtype=np.float32)
        _, found = index.search(part, 1, params=params)
        lost.append(np.flatnonzero(found[:, 0] != np.arange(start, start + len(part))) + start)
        log.info("HNSW repair: checked %d / %d entries, %d unreachable", start + len(part), n, sum(map(len, lost)))
    unreachable = np.concatenate(lost) if lost else np.zeros(0, np.int64)
    if not len(unreachable):
        return 0, 0
    params.efSearch = max(int(ef_check) * 2, links + 1)
    _, near = index.search(np.ascontiguousarray(vectors[unreachable], dtype=np.float32), links + 1, params=params)
    table, first, width = _level0(index)
    added = 0
    for m, found_near in zip(unreachable.tolist(), near.tolist()):
        cand = [c for c in found_near if c != m and c >= 0][:links]
        row = table[first[m] : first[m] + width]
        merged = list(dict.fromkeys(cand + row[row >= 0].tolist()))
        if len(merged) > width:  # keep the most similar
            sims = vectors[merged] @ vectors[m]
            merged = [merged[i] for i in np.argsort(-sims, kind="stable")[:width]]
        table[first[m] : first[m] + width] = -1
        table[first[m] : first[m] + len(merged)] = merged
        for v in cand[:back_links]:
            other = table[first[v] : first[v] + width]  # a view: writes go to the table
            if (other == m).any():
                continue
            free = np.flatnonzero(other < 0)
            if free.size:
                other[free[0]] = m
            else:
                sims = vectors[other] @ vectors[v]
                worst = int(np.argmin(sims))
                if float(vectors[m] @ vectors[v]) <= float(sims[worst]):
                    continue
                other[worst] = m
            added += 1
    faiss.copy_array_to_vector(table, index.hnsw.neighbors)
    log.warning("HNSW repair: %d of %d entries were unreachable; %d links added to them", len(unreachable), n, added)
    return int(len(unreachable)), added


class AnnIndex:
    """An HNSW graph over ``n`` unit vectors of ``dim`` dimensions (inner-product metric)."""

    def __init__(self, index, ef_search: int = EF_SEARCH):
        self.index = index
        self.ef_search = int(ef_search)

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION,
              ef_search: int = EF_SEARCH, what: str = "gallery") -> "AnnIndex":
        faiss = require("faiss", "an HNSW index")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexHNSWFlat(x.shape[1], int(m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        t0 = time.perf_counter()
        log.warning("building an HNSW index over %s entries of the %s once (minutes for millions)", f"{len(x):,}", what)
        step = 200_000
        for start in range(0, len(x), step):
            index.add(x[start : start + step])
            log.info("HNSW index: %d / %d entries, %.0f s", min(start + step, len(x)), len(x), time.perf_counter() - t0)
        repair(index, x)
        return cls(index, ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (B, k), indices (B, k)) of the (approximately) ``k`` nearest entries, best first."""
        faiss = require("faiss", "an HNSW index")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(int(k), self.n)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        scores, idx = self.index.search(q, k, params=params)
        return scores, idx.astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the index atomically (a killed write leaves no file that loads)."""
        faiss = require("faiss", "an HNSW index")
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        return path

    @classmethod
    def load(cls, path: str | Path, n: int | None = None, dim: int | None = None,
             ef_search: int = EF_SEARCH) -> "AnnIndex | None":
        """The index in ``path``, or None when it is missing, unreadable or not of ``n`` x ``dim``."""
        faiss = require("faiss", "an HNSW index")
        path = Path(path)
        if not path.is_file():
            return None
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, OSError):
            return None
        if (n is not None and index.ntotal != n) or (dim is not None and index.d != dim):
            return None
        return cls(index, ef_search)


#: In index file names: the graph was repaired after its build (:func:`repair`).
REPAIRED = "r1"


def index_file_name(key: str) -> str:
    """The file name of the index of a gallery keyed ``key``, with the graph's parameters in it (an index
    built with other parameters is another file)."""
    return f"{key}-hnsw{HNSW_M}-{EF_CONSTRUCTION}-{REPAIRED}.faiss"


def _unrepaired_name(path: Path) -> Path:
    """Where an index built before graphs were repaired was kept (the name without the repair tag)."""
    return path.with_name(path.name.replace(f"-{REPAIRED}.faiss", ".faiss"))


def cached_index(vectors: np.ndarray, path: str | Path, what: str = "gallery") -> AnnIndex:
    """The HNSW index of ``vectors`` stored at ``path``: read when there and fitting, else built and saved
    (an index built before repairs existed is read, repaired and saved under the new name: no rebuild)."""
    path = Path(path)
    found = AnnIndex.load(path, n=len(vectors), dim=vectors.shape[1])
    if found is not None:
        return found
    old = _unrepaired_name(path)
    index = AnnIndex.load(old, n=len(vectors), dim=vectors.shape[1]) if old != path else None
    if index is not None:
        repair(index.index, np.ascontiguousarray(vectors, dtype=np.float32))
    else:
        index = AnnIndex.build(vectors, what=what)
    try:
        index.save(path)
    except OSError:
        pass  # a read-only cache costs time, not answers
    return index
