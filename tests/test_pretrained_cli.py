"""``geoscope models`` and the offline behaviour of ``geoscope locate`` with a named pretrained model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoscope.cli import main
from geoscope.heads.location_encoder import geoclip_file
from geoscope.heads.retrieval import geoclip_gallery
from geoscope.pretrained import list_models

from _tiny_geoclip_backbone import save_tiny_geoclip_backbone


@pytest.fixture
def no_backbones(tmp_path, monkeypatch):
    """A machine with an empty Hugging Face cache and no backbone directories configured."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for var in ("GEOSCOPE_CLIP_L14", "GEOSCOPE_STREETCLIP", "GEOSCOPE_WEIGHTS", "GEOSCOPE_DOWNLOAD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))


def test_models_json_says_what_works_here(no_backbones, tmp_path, monkeypatch, capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"geoclip", "streetclip", "clip-zeroshot"} <= set(rows)
    assert rows["geoclip"]["licence"] == "MIT" and rows["streetclip"]["licence"] == "CC-BY-NC-4.0"
    assert rows["geoclip"]["available"] is False and "GEOSCOPE_CLIP_L14" in rows["geoclip"]["missing"]
    # pointing the environment variable at a backbone directory makes geoclip (and clip-zeroshot) available
    clip = save_tiny_geoclip_backbone(tmp_path / "clip")
    monkeypatch.setenv("GEOSCOPE_CLIP_L14", str(clip))
    avail = {m.name: m.available for m in list_models()}
    assert avail["geoclip"] and avail["clip-zeroshot"] and not avail["streetclip"]
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "geoclip" in table and "streetclip" in table and "GEOSCOPE_STREETCLIP" in table


def test_locate_without_backbone_is_one_sentence_and_exit_1(no_backbones, capsys):
    rc = main(["locate", str(geoclip_file("../images/Kauai.png")), "--model", "geoclip"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("geoscope: error: ") and "\n" not in err and "Traceback" not in err
    assert "--weights DIR" in err and "GEOSCOPE_CLIP_L14" in err and "geoscope train" in err


def test_locate_weights_dir_that_is_not_a_folder(no_backbones, tmp_path, capsys):
    rc = main(["locate", str(geoclip_file("../images/Kauai.png")), "--weights", str(tmp_path / "missing")])
    assert rc == 1
    assert "--weights points to" in capsys.readouterr().err


def test_from_pretrained_geoclip_locates_with_places(no_backbones, tmp_path):
    from geoscope.geolocator import Geolocator

    clip = save_tiny_geoclip_backbone(tmp_path / "clip")
    gallery = geoclip_gallery()[::200]
    geo = Geolocator.from_pretrained("geoclip", weights=clip, precision="fp32", gallery=gallery, progress=False)
    preds = geo.locate([str(geoclip_file("../images/Kauai.png")), str(tmp_path / "nope.jpg")], top_k=3)
    assert preds[0].ok and preds[0].model == "geoclip" and len(preds[0].candidates) == 3
    best = preds[0].best
    assert any(np.allclose([best.lat, best.lon], g, atol=1e-4) for g in gallery)
    assert preds[1].error and "nope.jpg" in preds[1].error


def test_unknown_names_and_ad_hoc_zero_shot(no_backbones):
    from geoscope.errors import InputError, WeightsUnavailableError
    from geoscope.pretrained import load_parts

    with pytest.raises(InputError, match="unknown pretrained model 'nonsense'.*geoclip"):
        load_parts("nonsense")
    with pytest.raises(WeightsUnavailableError, match="foo/bar"):
        load_parts("zeroshot:hf:foo/bar")
    with pytest.raises(InputError, match="precision must be one of"):
        load_parts("geoclip", precision="fp8")
