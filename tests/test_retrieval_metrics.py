"""geo/retrieval_metrics: recall@k and recall@1 % against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from geoscope.errors import InputError
from geoscope.geo.retrieval_metrics import (
    one_percent_k,
    ranks_from_embeddings,
    ranks_of_truth,
    recall_at_k,
    recall_at_percent,
)


def test_hand_computed_ranks_and_recalls():
    sim = np.array([
        [0.9, 0.1, 0.2, 0.3],  # truth 0: best -> rank 1
        [0.5, 0.4, 0.6, 0.1],  # truth 1: 0.5 and 0.6 above -> rank 3
        [0.2, 0.2, 0.2, 0.9],  # truth 2: only 0.9 above (ties go to the truth) -> rank 2
    ])
    truth = [0, 1, 2]
    assert ranks_of_truth(sim, truth).tolist() == [1, 3, 2]
    r = recall_at_k(sim, truth, ks=(1, 2, 3))
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@2"] == pytest.approx(2 / 3)
    assert r["recall@3"] == pytest.approx(1.0)
    # 4 references: recall@1% uses k = floor(4 / 100) + 1 = 1
    assert r["recall@1%"] == pytest.approx(1 / 3)


def test_one_percent_of_a_large_gallery():
    assert one_percent_k(100) == 2 and one_percent_k(1000) == 11 and one_percent_k(99) == 1
    # reference j scores 1000 - j for every query, so the truth at index j has rank j + 1
    sim = np.tile(1000.0 - np.arange(1000), (5, 1))
    truth = np.array([1, 5, 11, 12, 500]) - 1
    ranks = ranks_of_truth(sim, truth)
    assert ranks.tolist() == [1, 5, 11, 12, 500]
    assert recall_at_percent(sim, truth) == pytest.approx(3 / 5)  # ranks <= 11
    assert recall_at_k(sim, truth)["recall@10"] == pytest.approx(2 / 5)


def test_ranks_from_embeddings_match_the_matrix_in_chunks():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(7, 16)), rng.normal(size=(30, 16))
    truth = rng.integers(0, 30, 7)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    assert ranks_from_embeddings(q, r, truth, chunk=3).tolist() == ranks_of_truth(qn @ rn.T, truth).tolist()


def test_bad_inputs_are_clear():
    with pytest.raises(InputError, match="one per query"):
        ranks_of_truth(np.zeros((3, 4)), [0, 1])
    with pytest.raises(InputError, match="0..3"):
        ranks_of_truth(np.zeros((2, 4)), [0, 4])
    with pytest.raises(InputError, match="same dim"):
        ranks_from_embeddings(np.zeros((2, 3)), np.zeros((4, 5)), [0, 1])
