"""Candidates come in the order of the probability they show, in every output, and that probability is
the mass of the neighbourhood the output names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geoscope.calibration import Calibration
from geoscope.cli.locate import render, skip_reason
from geoscope.geo.cells import CellHierarchy
from geoscope.geolocator import Geolocator
from geoscope.heads.base import Head, HeadOutput
from geoscope.heads.classifier import ClassifierHead
from geoscope.heads.hybrid import HybridHead
from geoscope.prediction import Prediction
from geoscope.train import make_targets


def _is_sorted(values) -> bool:
    return all(a >= b for a, b in zip(values, values[1:]))


def _outputs(pred: Prediction) -> dict[str, list[float]]:
    """The candidate probabilities as each output shows them."""
    d = json.loads(pred.to_json())
    return {
        "Prediction": [c.probability for c in pred.candidates],
        "JSON": [c["probability"] for c in d["candidates"]],
        "from JSON": [c.probability for c in Prediction.from_dict(d).candidates],
        "geo interface": [c["probability"] for c in pred.__geo_interface__["properties"]["candidates"]],
        "CLI table": _table_column(render(pred), "probability"),
    }


def _table_column(text: str, name: str) -> list[float]:
    """The values of the column whose header starts with ``name`` in ``geoscope locate``'s table."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-"))
    spans, start = [], 0
    for dashes in lines[rule].split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    col = next(k for k, (a, b) in enumerate(spans) if lines[rule - 1][a:b].startswith(name))
    a, b = spans[col]
    rows = [line for line in lines[rule + 1:] if line[:1].isdigit()]
    return [float(line[a:b]) for line in rows]


@pytest.fixture(scope="module")
def hybrid():
    """A hybrid head whose classifier is untrained (near uniform) and whose neighbour bank is real:
    the image match decides the ranking, so it differs from the classifier's order."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-50, 60, 600), rng.uniform(-170, 170, 600)
    emb = np.concatenate([np.stack([lat / 60, lon / 170], 1), rng.normal(0, 0.3, (600, 14))], 1).astype(np.float32)
    cells = CellHierarchy.adaptive(lat, lon, 5, [40])
    head = HybridHead.from_cells(16, cells, hidden=32)
    head.on_train_start(torch.from_numpy(emb), make_targets(lat, lon, cells))
    return head.eval(), cells, emb


def test_hybrid_candidates_are_sorted_in_every_output(hybrid):
    head, cells, emb = hybrid
    for calibration in (None, Calibration(temperature=1.7, point_sigma_km=80.0, cell_sigma_scale=1.0,
                                          cell_spread_km=[300.0] * len(cells.finest), fitted=True)):
        geo = Geolocator(None, head, cells, calibration=calibration, places=False)
        preds = geo.locate_embeddings(emb[:40], top_k=5)
        classifier = ClassifierHead.predict(head, emb[:40], top_k=len(cells.finest)).cell_probs
        reranked = 0
        for p, cp in zip(preds, classifier):
            for name, probs in _outputs(p).items():
                assert len(probs) == 5 and _is_sorted(probs), (name, probs)
            # the probability shown is the mass of the candidate's cell in the distribution shown
            assert [c.probability for c in p.candidates] == pytest.approx([p.cell_probs[c.cell] for c in p.candidates])
            assert p.neighbourhood == {"kind": "cell"}
            shown_cells = [c.cell for c in p.candidates]
            # what the old output showed: the classifier's probability, in the hybrid's order
            reranked += not _is_sorted(list(cp[shown_cells]))
        assert reranked > 5  # the image match reorders cells: showing the classifier's numbers would not be sorted


class ShuffledHead(Head):
    """A head (another author's, say) that returns its candidates out of order."""

    kind = "shuffled-toy"

    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        B = len(emb)
        support = np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
        probs = np.tile([0.1, 0.4, 0.2, 0.3], (B, 1))
        pick = np.tile([0, 1, 2, 3], (B, 1))
        return HeadOutput(None, support[pick], probs[:, [0, 1, 2, 3]], None, {}, support, probs,
                          candidate_support=pick, neighbourhood="gallery entry")


def test_the_geolocator_sorts_any_heads_candidates():
    geo = Geolocator(None, ShuffledHead(), places=False)
    p = geo.locate_embeddings(np.zeros((2, 3), np.float32), top_k=4)[0]
    assert [c.probability for c in p.candidates] == [0.4, 0.3, 0.2, 0.1]
    assert (p.best.lat, p.best.lon) == (10.0, 10.0)
    assert p.confidence[25] == pytest.approx(0.4) and p.neighbourhood == {"kind": "gallery entry"}
    for name, probs in _outputs(p).items():
        assert _is_sorted(probs), (name, probs)


def test_min_localizability_skips_with_a_reason():
    p = Prediction("a.jpg", localizability=0.12)
    assert skip_reason(p, 0.3) == "localizability 0.12 is below --min-localizability 0.3"
    assert skip_reason(p, None) is None and skip_reason(Prediction("b.jpg"), 0.3) is None
    assert render(p, skip_reason(p, 0.3)) == "== a.jpg: skipped: localizability 0.12 is below --min-localizability 0.3"


def test_old_prediction_json_still_loads():
    old = {"source": "x.jpg", "model": "m", "error": None,
           "candidates": [{"lat": 1.0, "lon": 2.0, "probability": 0.5, "place": None, "cell": 3}],
           "confidence": {"25": 0.1}, "exif": None, "exif_distance_km": None, "top_cells": [], "extra": {}}
    p = Prediction.from_dict(old)
    assert p.localizability is None and p.neighbourhood == {} and not p.calibrated
    assert p.to_dict()["candidates"] == old["candidates"]
