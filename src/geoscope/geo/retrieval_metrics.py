"""Retrieval metrics for cross-view matching: recall@k and recall@1 % over a gallery of references.

Each query (a photo) has one true reference (the overhead tile of its own position) among N. The
rank of the truth is 1 + the number of references scored strictly higher than it (ties go to the
truth, as in the CVUSA / CVACT evaluation code). recall@k is the share of queries whose truth ranks
within the top k; recall@1 % uses k = floor(N / 100) + 1, the convention of the cross-view literature.
Pure numpy; similarities can be given whole or computed from embeddings in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geoscope.errors import InputError


def _check_truth(true_index, n_queries: int, n_refs: int) -> np.ndarray:
    t = np.asarray(true_index)
    if t.shape != (n_queries,):
        raise InputError(f"true indices: expected one per query ({n_queries}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError("true indices must be whole numbers (positions in the reference gallery)")
    if n_queries and (t.min() < 0 or t.max() >= n_refs):
        raise InputError(f"true indices must lie in 0..{n_refs - 1} (the gallery has {n_refs} references)")
    return t.astype(np.int64)


def ranks_of_truth(similarity, true_index) -> np.ndarray:
    """1-based rank of each query's true reference in a (queries, references) similarity matrix."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] == 0:
        raise InputError(f"the similarity matrix must be (queries, references), got shape {sim.shape}")
    t = _check_truth(true_index, sim.shape[0], sim.shape[1])
    true_sim = sim[np.arange(sim.shape[0]), t]
    if not np.isfinite(true_sim).all():
        raise InputError("the similarity of a query to its true reference is not a finite number")
    return 1 + (sim > true_sim[:, None]).sum(axis=1)


def ranks_from_embeddings(queries, references, true_index, chunk: int = 1024) -> np.ndarray:
    """As :func:`ranks_of_truth` with cosine similarities of embeddings, ``chunk`` queries at a time."""
    q = np.asarray(queries, dtype=np.float32)
    r = np.asarray(references, dtype=np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise InputError(f"query and reference embeddings must be (n, dim) with the same dim, got {q.shape} and {r.shape}")
    t = _check_truth(true_index, len(q), len(r))
    q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    r = r / (np.linalg.norm(r, axis=1, keepdims=True) + 1e-12)
    out = np.empty(len(q), dtype=np.int64)
    for a in range(0, len(q), chunk):
        out[a:a + chunk] = ranks_of_truth(q[a:a + chunk] @ r.T, t[a:a + chunk])
    return out


def one_percent_k(n_references: int) -> int:
    """The k of recall@1 %: floor(N / 100) + 1."""
    return int(n_references) // 100 + 1


def recall_from_ranks(ranks, n_references: int, ks: Sequence[int] = (1, 5, 10), percents: Sequence[float] = (1.0,)) -> dict:
    """``{"recall@1": ..., "recall@5": ..., "recall@1%": ...}`` (fractions in 0..1) from 1-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise InputError("no queries to evaluate")
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    for p in percents:
        k = one_percent_k(n_references) if p == 1.0 else int(n_references * p / 100.0) + 1
        out[f"recall@{p:g}%"] = float(np.mean(ranks <= k))
    return out


def recall_at_k(similarity, true_index, ks: Sequence[int] = (1, 5, 10), percents: Sequence[float] = (1.0,)) -> dict:
    """recall@k for each k and recall@p % for each p, from a (queries, references) similarity matrix."""
    sim = np.asarray(similarity)
    return recall_from_ranks(ranks_of_truth(sim, true_index), sim.shape[1], ks, percents)


def recall_at_percent(similarity, true_index, percent: float = 1.0) -> float:
    """recall@``percent`` %: the share of queries whose truth is within the top floor(N * p / 100) + 1."""
    return recall_at_k(similarity, true_index, ks=(), percents=(percent,))[f"recall@{percent:g}%"]
