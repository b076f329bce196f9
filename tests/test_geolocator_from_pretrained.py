"""``Geolocator.from_pretrained``: the same keywords for a folder, a hub repository and a named model; a
keyword it cannot honour is refused in one sentence; the Hugging Face hub round trip, offline."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from _imagefixtures import synthetic_image
from _tiny_geoclip_backbone import save_tiny_geoclip_backbone

from geoscope.encoders import create_encoder
from geoscope.encoders.testing import save_tiny_clip
from geoscope.errors import GeoscopeError, InputError, WeightsUnavailableError
from geoscope.geo.cells import CellHierarchy
from geoscope.geolocator import Geolocator
from geoscope.store import EmbeddingStore
from geoscope.train import TrainConfig, train_from_store


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network, an empty Hugging Face cache, no configured weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for var in ("GEOSCOPE_WEIGHTS", "GEOSCOPE_DOWNLOAD", "GEOSCOPE_CLIP_L14", "GEOSCOPE_STREETCLIP", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two models over a tiny CLIP folder (the recorded encoder): a regressor and a retrieval head."""
    root = tmp_path_factory.mktemp("fp")
    clip = save_tiny_clip(root / "clip", projection_dim=16, seed=0)
    encoder = create_encoder(str(clip))
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-50, 60, 150), rng.uniform(-170, 170, 150)
    images = [synthetic_image(a, o, size=(32, 32)) for a, o in zip(lat, lon)]
    emb = encoder.encode_images(images, batch_size=100)
    store = EmbeddingStore.from_arrays(root / "store", range(150), emb, lat, lon, encoder=str(clip))
    cfg = TrainConfig(epochs=1, batch_size=100)
    train_from_store(store, "regressor", root / "regressor", config=cfg, progress=False,
                     head_options={"d_model": 16, "n_heads": 2})
    cells = CellHierarchy.adaptive(lat, lon, 5, [40])
    train_from_store(store, "classifier", root / "classifier", cells=cells, config=cfg, progress=False,
                     head_options={"hidden": 16})
    train_from_store(store, "retrieval", root / "retrieval", config=cfg, progress=False,
                     head_options={"hidden_dims": [16], "queue_size": 64,
                                   "location_encoder": {"sigmas": [1.0], "n_freq": 8, "hidden": 16, "depth": 1,
                                                        "out_dim": 16}})
    return {"root": root, "clip": clip, "encoder": encoder, "images": images[:3], "emb": emb}


def test_a_folder_takes_precision_and_weights_like_a_named_model(world, tmp_path):
    model = world["root"] / "regressor"
    ref = Geolocator.from_pretrained(model, places=False)
    assert ref.encoder.dtype == torch.float32 and ref.encoder.name == str(world["clip"])
    bf = Geolocator.from_pretrained(model, precision="bf16", places=False)
    assert bf.encoder.dtype == torch.bfloat16 and bf.encoder.name == str(world["clip"])
    a, b = ref.locate(world["images"]), bf.locate(world["images"])
    assert all(p.ok for p in b) and max(abs(x.best.lat - y.best.lat) for x, y in zip(a, b)) < 30
    q = Geolocator.from_pretrained(model, precision="int8", places=False)
    assert (q.encoder.runtime, q.encoder.precision) == ("onnx", "int8")  # a CLIP's int8: ONNX Runtime first (encoders.runtimes)
    # weights=DIR: the recorded encoder read from another folder; the recorded name is kept
    copy = shutil.copytree(world["clip"], tmp_path / "backbone-copy")
    w = Geolocator.from_pretrained(model, weights=copy, places=False)
    assert w.encoder.path == copy and w.encoder_name == str(world["clip"])
    assert [p.to_dict() for p in w.locate(world["images"])] == [p.to_dict() for p in a]
    # a backbone that does not fit the head says so
    other = save_tiny_clip(tmp_path / "wide", projection_dim=24)
    with pytest.raises(InputError, match="gives 24-d embeddings but the regressor head .* takes 16-d"):
        _ = Geolocator.from_pretrained(model, weights=other, places=False).encoder


def test_keywords_a_folder_cannot_honour_are_refused_in_one_sentence(world):
    model = world["root"] / "regressor"
    cases = [
        ({"precision": "bf16", "encoder": world["encoder"]}, "apply when geoscope builds the encoder"),
        ({"weights": world["clip"], "encoder": "x"}, "either encoder= or weights="),
        ({"towns_min_population": 10}, "towns_min_population= applies to named pretrained models"),
        ({"gallery": [[0.0, 0.0]]}, "gallery= applies to heads that search a GPS gallery"),
        ({"precision": "float32"}, "precision must be one of auto, fp32, bf16, int8"),
        ({"weights": world["root"] / "nowhere"}, "not a folder"),
        ({"dtype": "bfloat16"}, "takes no keyword 'dtype'"),
    ]
    for kw, message in cases:
        with pytest.raises(InputError, match=message) as err:
            Geolocator.from_pretrained(model, **kw)
        assert "\n" not in str(err.value)


def test_a_gallery_given_to_a_folder_is_searched(world):
    gallery = np.array([[10.0, 20.0], [-30.0, 140.0]])
    geo = Geolocator.from_pretrained(world["root"] / "retrieval", gallery=gallery, places=False)
    coords = {(c.lat, c.lon) for p in geo.locate_embeddings(world["emb"][:5], top_k=2) for c in p.candidates}
    assert coords <= {(10.0, 20.0), (-30.0, 140.0)}


def test_a_named_model_takes_encoder_and_refuses_what_it_cannot_use(tmp_path):
    clip = save_tiny_geoclip_backbone(tmp_path / "clip", seed=2)
    encoder = create_encoder(str(clip))
    geo = Geolocator.from_pretrained("clip-zeroshot", encoder=encoder, towns_min_population=3_000_000,
                                     progress=False, places=False)
    assert geo.encoder is encoder and geo.meta["precision"] == "as given"  # used, not ignored
    p = geo.locate([synthetic_image(10, 10, size=(40, 40))], top_k=2)[0]
    assert p.ok and len(p.candidates) == 2
    by_name = Geolocator.from_pretrained("clip-zeroshot", encoder=str(clip), precision="bf16",
                                         towns_min_population=3_000_000, progress=False, places=False)
    assert by_name.encoder.dtype == torch.bfloat16 and by_name.meta["backbone"] == str(clip)
    for kw, message in [
        ({"encoder": encoder, "precision": "fp32"}, "precision= applies when geoscope builds the backbone"),
        ({"encoder": str(clip), "weights": clip}, "either encoder= or weights="),
        ({"encoder": encoder, "gallery": [[0.0, 0.0]]}, "gallery= applies to the geoclip model"),
        ({"encoder": encoder, "templates": {}, "cache": tmp_path}, None),
    ]:
        if message is None:  # templates and cache are named-model options: accepted
            assert Geolocator.from_pretrained("clip-zeroshot", towns_min_population=3_000_000, progress=False,
                                              places=False, **kw).encoder is encoder
            continue
        with pytest.raises(InputError, match=message):
            Geolocator.from_pretrained("clip-zeroshot", towns_min_population=3_000_000, **kw)
    with pytest.raises(InputError, match="templates= and towns_min_population= apply to zero-shot models"):
        Geolocator.from_pretrained("geoclip", encoder=encoder, templates={})


def test_hub_round_trip_through_a_local_copy_and_the_alias(world, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(world["root"] / "classifier", weights / "someone" / "geo-model")
    monkeypatch.setenv("GEOSCOPE_WEIGHTS", str(weights))
    direct = Geolocator.from_pretrained(world["root"] / "classifier", places=False)
    want = [p.to_dict() for p in direct.locate_embeddings(world["emb"][:4], top_k=3)]
    for name in ("hf-hub:someone/geo-model", "hf:someone/geo-model"):
        geo = Geolocator.from_pretrained(name, places=False)
        assert [p.to_dict() for p in geo.locate_embeddings(world["emb"][:4], top_k=3)] == want
    with pytest.raises(InputError, match="towns_min_population= applies to named pretrained models, not to the hub "
                                         "model someone/geo-model"):
        Geolocator.from_pretrained("hf-hub:someone/geo-model", towns_min_population=5)
    with pytest.raises(InputError, match="written hf-hub:ORG/NAME"):
        Geolocator.from_pretrained("hf-hub:just-a-name")


@pytest.mark.parametrize("allow_download", [None, True])
def test_a_hub_id_without_network_fails_fast_in_one_sentence(allow_download):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        Geolocator.from_pretrained("hf-hub:someone/not-here", allow_download=allow_download)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "someone/not-here" in msg and "not on this machine" in msg and "\n" not in msg


def test_push_to_hub_without_network_is_one_sentence(world):
    geo = Geolocator.from_pretrained(world["root"] / "regressor", places=False)
    start = time.monotonic()
    with pytest.raises(GeoscopeError, match="could not push .* to the Hugging Face hub repository someone/geo") as err:
        geo.push_to_hub("someone/geo")
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)


def test_push_uploads_the_model_folder_without_training_state(world, tmp_path, monkeypatch):
    """What is sent: huggingface_hub's client replaced by a recorder (the upload itself needs a network)."""
    import huggingface_hub

    calls = []

    class Recorder:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns):
            from pathlib import Path

            files = sorted(p.name for p in Path(folder_path).iterdir())
            kept = [f for f in files if not any(Path(f).match(pat) for pat in ignore_patterns)]
            calls.append(("upload", repo_id, kept, commit_message))

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    geo = Geolocator.from_pretrained(world["root"] / "classifier", places=False)
    out = tmp_path / "geo-model"
    geo.save_pretrained(out)
    (out / "checkpoint.pt").write_bytes(b"training state of an older version")
    geo.save_pretrained(out, push_to_hub=True, repo_id="someone/geo-model", private=True, token="t0k")
    assert calls[:2] == [("token", "t0k"), ("create", "someone/geo-model", True, True)]
    assert calls[2] == ("upload", "someone/geo-model", ["calibration.json", "cells.json", "config.json",
                                                        "model.safetensors"],
                        "Upload geoscope model")
    calls.clear()
    assert geo.push_to_hub("someone/other") == "https://huggingface.co/someone/other"
    assert calls[2][2] == ["calibration.json", "cells.json", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg["files"]) == {"model.safetensors", "cells.json", "calibration.json"}
