"""The cross-view model end to end on synthetic places: training, the same-place classifier, save / load,
the cached gallery, resuming, and the bad inputs that get one sentence each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _crossviewfixtures import ThumbEncoder, place_image, synthetic_pairs
from geoscope.crossview.model import CrossViewModel
from geoscope.crossview.train import CrossViewConfig, train_crossview
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km
from geoscope.geolocator import Geolocator
from geoscope.heads.crossview import CrossViewHead

CFG = dict(encoder="test-thumbs", views=2, epochs=8, batch_size=32, out_dim=32, hidden=64, val_fraction=0.25,
           rotation=0, strength=0.3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("xv") / "model"
    enc = ThumbEncoder()
    geo, res = train_crossview(synthetic_pairs(120), out, CrossViewConfig(**CFG), progress=False, encoders=(enc, enc))
    return out, geo, res


def test_training_learns_to_match_across_sources(trained):
    _, _, res = trained
    r1 = [h["val_recall@1"] for h in res.history]
    assert max(r1) >= 0.5 and max(r1) > r1[0] + 0.2  # 30 held-out places: chance is 3 %
    assert res.report["val_pairs"] == 30 and all(h["samples_per_s"] > 0 for h in res.history)


def test_same_place_classifier_separates_true_from_shuffled_pairs(trained):
    out, geo, res = trained
    model = CrossViewModel(geo)
    val = res.val_idx
    pairs = synthetic_pairs(120)
    q = model.embed_queries([pairs.query(int(i)) for i in val])
    r = model.embed_references([pairs.reference(int(i)) for i in val])
    p_true = model.same_place_probability(q, r)
    p_shuffled = model.same_place_probability(q, np.roll(r, 1, axis=0))
    assert p_true.mean() > p_shuffled.mean() + 0.3
    assert ((p_true > 0.5).mean() + (p_shuffled < 0.5).mean()) / 2 >= 0.75
    cal = res.report["same_place_calibration"]
    assert cal["status"] == "fitted" and cal["log_loss_after"] <= cal["log_loss_before"] + 1e-9
    # unit rows, one per image
    assert q.shape == (len(val), 32) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_save_load_round_trip_and_locate(trained, tmp_path):
    out, geo, _ = trained
    loaded = Geolocator.from_pretrained(out, encoder=ThumbEncoder())
    assert isinstance(loaded.head, CrossViewHead) and len(loaded.head.gallery_emb) == 120
    for k, v in geo.head.state_dict().items():
        assert torch.equal(v, loaded.head.state_dict()[k]), k
    pairs = synthetic_pairs(120)
    imgs = [pairs.query(i) for i in range(5)]
    a = CrossViewModel(geo).embed_queries(imgs)
    b = CrossViewModel(loaded).embed_queries(imgs)
    assert np.allclose(a, b, atol=1e-6)
    # Geolocator.locate returns candidates at reference positions (refined between neighbours), with places
    preds = loaded.locate(imgs, top_k=3)
    assert all(p.error is None and len(p.candidates) == 3 for p in preds)
    assert preds[0].neighbourhood == {"kind": "gallery entry"}
    probs = [c.probability for c in preds[0].candidates]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    same = CrossViewModel(loaded).locate(imgs, top_k=3)
    assert [c.lat for c in same[0].candidates] == pytest.approx([c.lat for c in preds[0].candidates])
    # a second save of the loaded model is byte-identical in its weights
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["head"] == geo.head.config()


def test_cached_gallery_is_reused_and_refused_for_another_encoder(trained, tmp_path):
    out, _, _ = trained
    enc = ThumbEncoder()
    model = CrossViewModel(Geolocator.from_pretrained(out, encoder=enc))
    made = []

    def tiles():
        for i in range(10):
            def make(i=i):
                made.append(i)
                return place_image(5000 + i, source="a")
            yield f"g{i}", make, float(i), float(2 * i)

    store = tmp_path / "gallery"
    assert model.build_gallery(tiles, store, progress=False) == 10
    calls, n_made = enc.calls, len(made)
    assert calls >= 10 and n_made == 10
    emb = model.head.gallery_emb.clone()
    assert model.build_gallery(tiles, store, progress=False) == 10
    assert enc.calls == calls and len(made) == n_made  # nothing made or embedded again
    assert torch.equal(model.head.gallery_emb, emb)
    other = CrossViewModel(Geolocator.from_pretrained(out, encoder=ThumbEncoder("test-thumbs-b", seed=1)))
    with pytest.raises(InputError, match="embedded with encoder 'test-thumbs' but the model uses 'test-thumbs-b'"):
        other.build_gallery(tiles, store, progress=False)


def test_empty_gallery_and_mismatched_embeddings_are_one_sentence(trained):
    _, geo, _ = trained
    head = CrossViewHead.from_config(geo.head.config())
    with pytest.raises(InputError, match="reference gallery is empty"):
        head.predict(np.zeros((1, 48), np.float32))
    with pytest.raises(InputError, match="expects 48-dimensional embeddings but got 12"):
        geo.head.predict(np.zeros((1, 12), np.float32))
    with pytest.raises(InputError, match="one shape"):
        geo.head.same_place_probability(np.zeros((2, 32)), np.zeros((3, 32)))


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    enc = ThumbEncoder()
    cfg = CrossViewConfig(**{**CFG, "epochs": 4})
    pairs = synthetic_pairs(60, seed=3)
    _, full = train_crossview(pairs, tmp_path / "full", cfg, progress=False, encoders=(enc, enc))

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop()

    with pytest.raises(Stop):
        train_crossview(pairs, tmp_path / "cut", cfg, progress=False, encoders=(enc, enc), log=stop_after_two)
    assert (tmp_path / "cut.train" / "checkpoint.pt").is_file()
    seen = []
    _, resumed = train_crossview(pairs, tmp_path / "cut", cfg, progress=False, encoders=(enc, enc),
                                 log=lambda r: seen.append(r["epoch"]))
    assert seen == [2, 3, 4]  # epoch 1 came from the checkpoint; epoch 2 was cut before its checkpoint
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for k, v in full.head.state_dict().items():
        assert torch.allclose(v, resumed.head.state_dict()[k], atol=1e-6), k
    # other settings against the same checkpoint: refused, not silently mixed
    other = CrossViewConfig(**{**CFG, "epochs": 4, "lr": 5e-3})
    (tmp_path / "cut.train" / "checkpoint.pt").touch()
    with pytest.raises(InputError, match="another head, data or settings"):
        train_crossview(pairs, tmp_path / "cut", other, progress=False, encoders=(enc, enc))


def test_headings_turn_queries_back_to_north_up(trained):
    _, geo, _ = trained
    model = CrossViewModel(geo)
    img = place_image(77, source="b")
    turned = img.rotate(90)  # the image's top faces east (heading 90): north is on its left
    north = model.embed_queries([img], headings=[0.0])
    back = model.embed_queries([turned], headings=[90.0])
    wrong = model.embed_queries([turned], headings=[-90.0])
    assert float((north @ back.T)[0, 0]) > 0.999 > float((north @ wrong.T)[0, 0])
    with pytest.raises(InputError, match="one per image"):
        model.embed_queries([img, img], headings=[0.0])


def test_consistency_prefers_a_patch_of_similar_references_over_a_lone_match(trained):
    _, geo, _ = trained
    head = CrossViewHead.from_config({**geo.head.config(), "consistency": 0.5})
    # a row of 30 gallery entries 1 degree apart; the query resembles entries 2-6, and entry 20 alone a bit more
    lat = np.zeros(30)
    lon = np.arange(30, dtype=float)
    head.set_gallery_embeddings(torch.nn.functional.normalize(torch.randn(30, 32), dim=1), np.stack([lat, lon], 1))
    sim = torch.zeros(1, 30)
    sim[0, 1:8] = torch.tensor([0.1, 0.6, 0.65, 0.7, 0.65, 0.6, 0.1])
    sim[0, 20] = 0.8
    head.query_similarity = lambda feats: sim  # the branches are not what this test is about
    assert int(torch.argmax(sim)) == 20
    scores = head.gallery_scores(np.zeros((1, 48), np.float32))
    # entry 4: 0.5 x 0.7 + 0.5 x mean(0.65, 0.65, 0.6, 0.6, 0.1, 0.1, 0, 0) = 0.51875; entry 20: 0.5 x 0.8 = 0.4
    assert int(torch.argmax(scores)) == 4 and float(scores[0, 4]) == pytest.approx(0.51875, abs=1e-6)
    assert int(head.predict(np.zeros((1, 48), np.float32), top_k=1).extra["gallery_index"][0, 0]) == 4
    with pytest.raises(InputError, match="consistency is a share"):
        CrossViewHead(48, consistency=1.0)


def test_verifier_is_used_by_locate_and_saved_with_the_model(trained, tmp_path):
    from geoscope.crossview.verifier_train import fit_verifier
    from geoscope.heads.crossview.verifier import Verifier

    out, geo, _ = trained
    loaded = Geolocator.from_pretrained(out, encoder=ThumbEncoder())
    head = loaded.head
    n = len(head.gallery_latlon)
    torch.manual_seed(0)
    v = Verifier(dim=8, hidden=16, query_km=400.0, window_km=800.0, km_per_px=40.0, rotations=4, top_k=6)
    # aligned pairs: the two sources of one synthetic place, pixel for pixel
    q_tiles = np.stack([np.asarray(place_image(1000 + i, size=40, source="b")) for i in range(n)])
    r_tiles = np.stack([np.asarray(place_image(1000 + i, size=40, source="a")) for i in range(n)])
    fit = fit_verifier(v, q_tiles, r_tiles, steps=30, batch=16, pixels=8, progress=False)
    assert fit["loss_end"] < fit["loss_start"]
    windows = np.full((n, v.window_fine_px, v.window_fine_px, 3), 128, np.uint8)
    # each place in the middle of its window, at the window's fine resolution (2 px per 40 km map pixel)
    windows[:, 10:30, 10:30] = np.stack([np.asarray(place_image(1000 + i, size=20, source="a")) for i in range(n)])
    v.set_windows(windows)
    with pytest.raises(InputError, match="reference windows"):
        head.attach_verifier(Verifier(dim=8, hidden=16, query_km=400.0, window_km=800.0, km_per_px=40.0))
    head.attach_verifier(v)
    imgs = [place_image(1000 + i, size=40, source="b") for i in range(4)]
    preds = loaded.locate(imgs, top_k=3)
    assert all(p.error is None and len(p.candidates) == 3 for p in preds)
    gal = head.gallery_latlon.double().numpy()
    for p in preds:
        entries = p.extra["gallery_index"]
        assert "peak" in p.extra and len(entries) == 3
        # each candidate lies within the reach of its window: (800 - 400) / 2 km on each axis from the entry
        for c, e in zip(p.candidates, entries):
            d = float(haversine_km(c.lat, c.lon, gal[e, 0], gal[e, 1]))
            assert d <= 200.0 * np.sqrt(2) + 1.0
    # without pixels (embeddings only) the global ranking is used
    emb = CrossViewModel(loaded).query_features(imgs)
    glob = loaded.locate_embeddings(emb, top_k=3)
    assert "peak" not in glob[0].extra
    loaded.save_pretrained(tmp_path / "verified")
    again = Geolocator.from_pretrained(tmp_path / "verified", encoder=ThumbEncoder())
    assert again.head.verifier is not None and again.head.verifier.config() == v.config()
    preds2 = again.locate(imgs, top_k=3)
    via_model = CrossViewModel(again).locate(imgs, top_k=3)
    for a, b, c in zip(preds, preds2, via_model):
        assert [x.lat for x in a.candidates] == pytest.approx([x.lat for x in b.candidates])
        assert [x.lat for x in c.candidates] == pytest.approx([x.lat for x in b.candidates])
