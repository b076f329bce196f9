"""Geolocator: predictions, confidence, EXIF, per-image errors, save / load, named models."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from _imagefixtures import make_geotagged_jpeg, synthetic_image
from geoscope.calibration import disc_mass
from geoscope.errors import GeoscopeError, InputError
from geoscope.geo.cells import CellHierarchy, Geocells
from geoscope.geo.sphere import haversine_km
from geoscope.geolocator import Geolocator
from geoscope.heads import create_head
from geoscope.heads.classifier import ClassifierHead
from geoscope.prediction import Prediction
from geoscope.store import EmbeddingStore
from geoscope.train import TrainConfig, train_from_store


class MeanColour:
    """A stand-in encoder: the colours of a 3x3 thumbnail (27-d); refuses 7-pixel-wide images."""

    name = "mean-colour-test"
    dim = 27

    def encode_images(self, images, batch_size=32):
        if any(im.width == 7 for im in images):
            raise ValueError("cannot encode a 7-pixel-wide image")
        return np.stack([np.asarray(im.resize((3, 3)), dtype=np.float32).ravel() / 255 for im in images])

    def eval(self):
        return self


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo")
    rng = np.random.default_rng(2)
    lat, lon = rng.uniform(-50, 60, 500), rng.uniform(-170, 170, 500)
    enc = MeanColour()
    emb = enc.encode_images([synthetic_image(a, o, size=(24, 24)) for a, o in zip(lat, lon)])
    store = EmbeddingStore.from_arrays(root / "store", range(500), emb, lat, lon, encoder=enc.name)
    cells = CellHierarchy.adaptive(lat, lon, 5, [60, 20])
    geo, _ = train_from_store(store, "classifier", root / "model", cells=cells,
                              config=TrainConfig(epochs=6, batch_size=64), progress=False)
    geo._encoder = enc
    return geo, root / "model", enc, emb


def test_saved_and_loaded_models_predict_identically(trained):
    geo, path, enc, emb = trained
    loaded = Geolocator.from_pretrained(path, encoder=enc)
    assert loaded.encoder_name == "mean-colour-test" and loaded.name == "model"
    a, b = geo.locate_embeddings(emb[:20], top_k=4), loaded.locate_embeddings(emb[:20], top_k=4)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    np.testing.assert_array_equal(a[0].cell_probs, b[0].cell_probs)
    assert loaded.meta["training"]["validation"]["n"] == 50


def test_confidence_is_probability_mass_near_the_best_candidate(trained):
    geo, _, _, emb = trained
    assert geo.calibration is not None and geo.calibration.fitted  # training fitted one
    raw = Geolocator(geo.encoder_name, geo.head, geo.cells)  # without it: the head's point masses
    cent = geo.finest_cells.centroids
    for p, q in zip(geo.locate_embeddings(emb[:10], top_k=3), raw.locate_embeddings(emb[:10], top_k=3)):
        for pred in (p, q):
            c = pred.confidence
            assert 0 <= c[25] <= c[200] <= c[750] <= 1 + 1e-9
            assert sum(x["probability"] for x in pred.top_cells(len(cent))) == pytest.approx(1.0)
            assert pred.best.probability == pytest.approx(pred.cell_probs[pred.best.cell])  # its cell's mass
            assert pred.best.place is not None and pred.best.cell is not None
        d = haversine_km(cent[:, 0], cent[:, 1], q.best.lat, q.best.lon)
        assert q.confidence[750] == pytest.approx(q.cell_probs[d <= 750].sum())
        assert q.confidence[25] >= q.best.probability - 1e-9  # the best cell's own centroid is within 25 km
        assert not q.calibrated and p.calibrated
        # calibrated: the temperature-scaled cell masses, each spread around its centroid by the kernel
        w = geo.calibration.weights(q.cell_probs[None])[0]
        np.testing.assert_allclose(p.cell_probs, w, rtol=1e-9)
        sig = geo.calibration.sigmas(len(cent), cells=True, weights=w[None])[0]
        d = haversine_km(cent[:, 0], cent[:, 1], p.best.lat, p.best.lon)
        assert p.confidence[200] == pytest.approx(float((w * disc_mass(d, 200.0, sig)).sum()), abs=1e-9)
        assert p.localizability is not None and 0 <= p.localizability <= 1
        assert p.neighbourhood == {"kind": "cell"} and p.to_dict()["neighbourhood"] == {"kind": "cell"}


def test_locate_mixes_paths_pil_and_bytes_and_isolates_bad_images(trained, tmp_path):
    geo, _, _, _ = trained
    good = make_geotagged_jpeg(tmp_path / "paris.jpg", 48.85, 2.35, size=(24, 24))
    no_gps = tmp_path / "plain.png"
    synthetic_image(10, 10, size=(24, 24)).save(no_gps)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"GIF89a but not really")
    narrow = Image.new("RGB", (7, 20), (100, 120, 140))  # the encoder refuses it
    inputs = [str(good), garbage, synthetic_image(0, 0, size=(24, 24)), narrow, io.BytesIO(good.read_bytes()),
              str(tmp_path / "missing.jpg"), no_gps]
    preds = geo.locate(inputs, top_k=2, batch_size=4)
    assert len(preds) == len(inputs)
    ok = [p.ok for p in preds]
    assert ok == [True, False, True, False, True, False, True]
    assert "garbage.jpg" in preds[1].error and "7-pixel-wide" in preds[3].error and "not found" in preds[5].error
    assert preds[0].exif.has_gps and preds[0].exif_distance_km == pytest.approx(
        float(haversine_km(preds[0].best.lat, preds[0].best.lon, 48.85, 2.35)), rel=1e-6)
    assert preds[4].exif.has_gps  # bytes keep their EXIF too
    assert preds[6].exif is not None and not preds[6].exif.has_gps and preds[6].exif_distance_km is None
    assert preds[0].to_dict()["candidates"][0]["lat"] == preds[4].to_dict()["candidates"][0]["lat"]
    assert all(isinstance(p, Prediction) and p.model == "model" for p in preds)


def test_cells_must_match_the_head():
    head = ClassifierHead(4, [np.zeros((6, 2))])
    with pytest.raises(InputError, match="5 finest cells but the classifier head predicts over 6"):
        Geolocator("x", head, Geocells.grid((0, 0, 10, 10), 1, 5))
    with pytest.raises(InputError, match="no cells were given"):
        Geolocator("x", head, None)


def test_heads_without_cells_and_embeddings_only_models():
    torch.manual_seed(0)
    head = create_head("regressor", 6, d_model=16, n_heads=2)
    geo = Geolocator(None, head)
    p = geo.locate_embeddings(np.zeros(6, np.float32), top_k=3)[0]
    assert len(p.candidates) == 1 and p.cell_probs is None and p.confidence == {}
    with pytest.raises(InputError, match="no image encoder"):
        geo.locate([synthetic_image(0, 0)])


def test_names_that_are_not_directories_go_to_the_pretrained_registry(tmp_path):
    with pytest.raises(GeoscopeError, match="no-such-model"):
        Geolocator.from_pretrained("no-such-model")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not a model directory"):
        Geolocator.from_pretrained(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        Geolocator.from_pretrained(tmp_path / "empty")


def test_edited_config_hash_or_head_is_caught(trained, tmp_path):
    geo, _, enc, _ = trained
    out = geo.save_pretrained(tmp_path / "m")
    cfg = (out / "config.json").read_text()
    (out / "config.json").write_text(cfg.replace('"hidden": 256', '"hidden": 128'))
    with pytest.raises(InputError, match="does not fit the head"):
        Geolocator.from_pretrained(out, encoder=enc)
    (out / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        Geolocator.from_pretrained(out)


def test_hybrid_confidence_counts_the_refined_best_cell(tmp_path):
    rng = np.random.default_rng(4)
    lat, lon = rng.uniform(-50, 60, 400), rng.uniform(-170, 170, 400)
    enc = MeanColour()
    emb = enc.encode_images([synthetic_image(a, o, size=(24, 24)) for a, o in zip(lat, lon)])
    store = EmbeddingStore.from_arrays(tmp_path / "s", range(400), emb, lat, lon, encoder=enc.name)
    cells = CellHierarchy.adaptive(lat, lon, 3, [40])  # big cells: centroids far from refined points
    geo, _ = train_from_store(store, "hybrid", tmp_path / "m", cells=cells,
                              config=TrainConfig(epochs=4, batch_size=64), progress=False)
    raw = Geolocator(None, geo.head, geo.cells)  # uncalibrated: point masses at the refined points
    for p in raw.locate_embeddings(emb[:10], top_k=3):
        assert p.confidence[25] >= p.best.probability - 1e-9
        assert geo.finest_cells.assign([p.best.lat], [p.best.lon])[0] == p.best.cell
    for p in geo.locate_embeddings(emb[:10], top_k=3):
        assert geo.finest_cells.assign([p.best.lat], [p.best.lon])[0] == p.best.cell
        assert p.calibrated and p.best.probability == pytest.approx(p.cell_probs[p.best.cell])



def test_evaluate_model_over_a_store_and_encoder_mismatch(trained, tmp_path):
    from geoscope.evaluate import evaluate_model
    from geoscope.geo.metrics import evaluate

    geo, path, _, emb = trained
    lat = np.linspace(-40, 40, 30)
    lon = np.linspace(-100, 100, 30)
    store = EmbeddingStore.from_arrays(tmp_path / "s", range(30), emb[:30], lat, lon, encoder="mean-colour-test")
    result = evaluate_model(str(path), str(store.path), thresholds=(100, 1000))
    best = np.array([[p.best.lat, p.best.lon] for p in geo.locate_embeddings(emb[:30].astype(np.float16), top_k=1)])
    want = evaluate(best[:, 0], best[:, 1], lat, lon, thresholds=(100, 1000))
    assert result["n"] == 30 and result["median_km"] == pytest.approx(want["median_km"], rel=1e-6)
    assert result["acc_100km"] == want["acc_100km"] and result["n_skipped"] == 0
    other = EmbeddingStore.from_arrays(tmp_path / "o", range(30), emb[:30], lat, lon, encoder="efficientnet-lite0")
    with pytest.raises(InputError, match="embedded with 'efficientnet-lite0' but the model uses 'mean-colour-test'"):
        evaluate_model(geo, str(other.path))


def test_calibration_is_saved_verified_and_optional(trained, tmp_path):
    import json
    import shutil

    geo, path, enc, emb = trained
    assert (path / "calibration.json").is_file()
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["calibration"] == "calibration.json" and "calibration.json" in cfg["files"]
    report = json.loads((path / "report.json").read_text())["calibration"]
    assert report["status"] == "fitted on the validation split" and report["n"] == 50
    assert set(report["after"]) == {"25", "200", "750", "2500"} and "localizability_auroc" in report
    assert "calibration (fitted on the validation split" in (path / "report.txt").read_text()
    # a model saved before calibration existed: no file, no config entry; it loads, uncalibrated
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / "calibration.json").unlink()
    del cfg["calibration"], cfg["files"]["calibration.json"]
    (old / "config.json").write_text(json.dumps(cfg))
    loaded = Geolocator.from_pretrained(old, encoder=enc)
    assert loaded.calibration is None
    p = loaded.locate_embeddings(emb[:2], top_k=3)[0]
    assert not p.calibrated and p.confidence and p.best.probability == pytest.approx(p.cell_probs[p.best.cell])
    # an altered calibration is caught like any other file of the model
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    doc = json.loads((bad / "calibration.json").read_text())
    doc["temperature"] = 0.01
    (bad / "calibration.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="calibration.json does not match the SHA-256"):
        Geolocator.from_pretrained(bad, encoder=enc)
