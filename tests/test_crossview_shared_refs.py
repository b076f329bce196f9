"""Training pairs that share reference tiles and pairs that only give their reference to the gallery (the
cross-view demo's extra training places and its guard around held-out queries)."""

from __future__ import annotations

import numpy as np
import pytest

import _crossviewfixtures  # noqa: F401  (registers test-thumbs)
from _crossviewfixtures import ThumbEncoder, place_image, synthetic_pairs
from geoscope.crossview.pairs import Pairs, concat_pairs
from geoscope.crossview.train import CrossViewConfig, _recall, query_view_items, reference_view_items, train_crossview
from geoscope.errors import InputError


def _extra(base: Pairs, n: int) -> Pairs:
    """n more query views of base's places (another crop of the same synthetic place), sharing its references."""
    idx = np.arange(n) % len(base)
    return Pairs([f"e{i:04d}" for i in range(n)], base.lat[idx], base.lon[idx],
                 lambda i: place_image(1000 + int(idx[i]), source="b").rotate(3 * (i % 5)),
                 lambda i: place_image(1000 + int(idx[i]), source="a"), {"kind": "extra", "n": n},
                 reference_ids=[base.ids[int(j)] for j in idx])


def test_shared_references_are_embedded_once_and_gallery_only_queries_never():
    base = synthetic_pairs(10)
    base.gallery_only = np.arange(10) >= 7
    joined = concat_pairs(base, _extra(base, 6))
    cfg = CrossViewConfig(views=2)
    q_ids = [pid for pid, *_ in query_view_items(joined, cfg)]
    r_ids = [pid for pid, *_ in reference_view_items(joined, cfg)]
    assert r_ids == base.ids  # the extra pairs' references are the base's, once each
    assert len(q_ids) == 2 * (7 + 6) and not any(pid.startswith(("s0007", "s0008", "s0009")) for pid in q_ids)
    ids, first = joined.gallery()
    assert ids == base.ids and first.tolist() == list(range(10))
    assert joined.trainable().sum() == 13 and joined.key() != concat_pairs(synthetic_pairs(10), _extra(base, 6)).key()
    # the joined loaders reach the right part
    assert np.array_equal(np.asarray(joined.query(12)), np.asarray(place_image(1002, source="b").rotate(6)))
    with pytest.raises(InputError, match="repeat pair ids"):
        concat_pairs(base, base)


def test_training_with_shared_and_gallery_only_references(tmp_path):
    base = synthetic_pairs(40)
    base.gallery_only = np.arange(40) % 4 == 0  # 10 places give only their reference
    joined = concat_pairs(base, _extra(base, 40))
    cfg = CrossViewConfig(views=1, epochs=2, batch_size=32, out_dim=16, hidden=32, val_fraction=0.2)
    enc = ThumbEncoder()
    geo, res = train_crossview(joined, tmp_path / "m", cfg, progress=False, encoders=(enc, enc))
    assert res.report["pairs_used"] == 30 + 40
    # the gallery: every distinct reference once, gallery-only ones included, at its place
    assert len(geo.head.gallery_emb) == 40
    assert np.allclose(geo.head.gallery_latlon.numpy(), np.stack([base.lat, base.lon], 1), atol=1e-4)
    # validation keeps whole places: no place on both sides
    rows = np.flatnonzero(joined.trainable())  # the rows trained on; train_idx / val_idx index them
    tr = {(round(a, 4), round(b, 4)) for a, b in zip(joined.lat[rows[res.train_idx]], joined.lon[rows[res.train_idx]])}
    va = {(round(a, 4), round(b, 4)) for a, b in zip(joined.lat[rows[res.val_idx]], joined.lon[rows[res.val_idx]])}
    assert tr and va and not tr & va


def test_recall_counts_a_shared_reference_once():
    import torch

    from geoscope.heads.crossview.head import CrossViewHead

    head = CrossViewHead(4, 4, out_dim=4, hidden=8)
    q = torch.randn(6, 4)
    r = torch.randn(3, 4)[torch.tensor([0, 0, 1, 1, 2, 2])]  # two queries per place, the reference repeated
    with torch.no_grad():
        sim = head.query(q) @ head.reference(r).T
    # by place: a query hits when its place's reference ranks first among the 3 places
    expected = float(np.mean(sim.numpy()[:, [0, 2, 4]].argmax(1) == np.array([0, 0, 1, 1, 2, 2])))
    assert _recall(head, q, r, np.array([0, 0, 1, 1, 2, 2])) == pytest.approx(expected)
