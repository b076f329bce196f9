"""geoscope crossview train / locate through the CLI on two small synthetic rasters, and the bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from rasterio.transform import from_bounds

import _crossviewfixtures  # noqa: F401  (registers the test-thumbs encoders)
from _geotiffs import write_tif
from geoscope.cli import main

BOUNDS = (0.0, 0.0, 20.0, 10.0)  # west, south, east, north


def _field(h: int, w: int, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(np.random.default_rng(seed).normal(size=(h, w)), 4)
    return (f - f.min()) / (f.max() - f.min())


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    d = tmp_path_factory.mktemp("xv-rasters")
    f = _field(200, 400)
    a = np.stack([f, 0.5 * f + 0.2, 1 - f]) * 255  # "satellite" colours
    b = np.stack([0.3 + 0.6 * f] * 3) * 255  # the same ground, grey relief
    write_tif(d / "ref.tif", a.astype(np.uint8), from_bounds(*BOUNDS, 400, 200))
    write_tif(d / "query.tif", b.astype(np.uint8), from_bounds(*BOUNDS, 400, 200))
    rng = np.random.default_rng(1)
    pts = d / "points.csv"
    lat, lon = rng.uniform(2, 8, 40), rng.uniform(2, 18, 40)
    pts.write_text("id,lat,lon\n" + "".join(f"q{i},{la:.5f},{lo:.5f}\n" for i, (la, lo) in enumerate(zip(lat, lon))))
    # a plain image (not 2:1, so not taken as a global plate carree): no georeferencing at all
    Image.fromarray((np.stack([f[:, :300]] * 3, -1) * 255).astype(np.uint8)).save(d / "plain.png")
    return d


def _train_args(d, out, *extra):
    return ["crossview", "train", "--query-raster", str(d / "query.tif"), "--reference-raster", str(d / "ref.tif"),
            "--positions", str(d / "points.csv"), "--size-km", "300", "--px", "32", "-e", "test-thumbs",
            "--epochs", "3", "--batch-size", "16", "--views", "1", "-o", str(out), "--no-progress", *extra]


def test_train_then_locate(rasters, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(_train_args(rasters, out, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs_used"] == 40 and report["gallery_size"] == 40
    assert (out / "config.json").is_file() and (out / "metrics.jsonl").read_text().count("\n") == 3
    # a second run finds everything done: it resumes from the finished checkpoint
    assert main(_train_args(rasters, out)) == 0
    assert "model:" in capsys.readouterr().out
    from geoscope.data.overhead import cut_tile, open_raster

    tile = cut_tile(open_raster(str(rasters / "query.tif")), 5.0, 10.0, 300, 32)
    tile.save(tmp_path / "q.png")
    assert main(["locate", str(tmp_path / "q.png"), "-m", str(out), "--json", "-k", "3", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pred = doc[0] if isinstance(doc, list) else doc["predictions"][0]
    assert len(pred["candidates"]) == 3
    assert all(0 <= c["lat"] <= 10 and 0 <= c["lon"] <= 20 for c in pred["candidates"])


def test_bad_inputs_are_one_sentence(rasters, tmp_path, capsys):
    # a reference "raster" without georeferencing
    args = _train_args(rasters, tmp_path / "m1")
    args[args.index("--reference-raster") + 1] = str(rasters / "plain.png")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("geoscope: error:") and "plain.png" in err and len(err.splitlines()) == 1
    # a position outside the rasters
    bad = tmp_path / "outside.csv"
    bad.write_text("lat,lon\n5,5\n6,6\n7,7\n45,100\n")
    args = _train_args(rasters, tmp_path / "m2")
    args[args.index("--positions") + 1] = str(bad)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "position 3 (45.0000, 100.0000) lies outside the query raster" in err and len(err.strip().splitlines()) == 1
    # neither pairs nor rasters
    assert main(["crossview", "train", "-o", str(tmp_path / "m3"), "--no-progress"]) == 1
    assert "needs --pairs DIR" in capsys.readouterr().err
    # a pairs folder that is not one
    assert main(["crossview", "train", "--pairs", str(tmp_path), "-o", str(tmp_path / "m4"), "--no-progress"]) == 1
    assert "no pairs manifest here" in capsys.readouterr().err


def test_cached_reference_views_refused_for_another_encoder(rasters, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(_train_args(rasters, out)) == 0
    capsys.readouterr()
    args = _train_args(rasters, out)
    args[args.index("-e") + 1] = "test-thumbs-b"
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "was embedded with encoder 'test-thumbs' but the model uses 'test-thumbs-b'" in err


def test_area_search_takes_a_trained_crossview_model(rasters, tmp_path, capsys):
    """The protocol area search codes against (CrossViewModel: embed_queries / embed_references / dim)."""
    out = tmp_path / "model"
    assert main(_train_args(rasters, out)) == 0
    from geoscope.data.overhead import cut_tile, open_raster

    cut_tile(open_raster(str(rasters / "query.tif")), 5.0, 10.0, 300, 32).save(tmp_path / "q.png")
    capsys.readouterr()
    assert main(["crossview", "search", str(tmp_path / "q.png"), "--area", str(rasters / "ref.tif"), "-m", str(out),
                 "--bbox", "3,6,7,14", "--size-m", "300000", "--stride-m", "100000", "--px", "32", "--heading-steps", "2",
                 "--cache", str(tmp_path / "cache"), "--truth", "5,10", "-o", str(tmp_path / "search"), "--json",
                 "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (tmp_path / "search" / "heatmap.tif").is_file()
    assert doc["best"]["heading_deg"] in (0.0, 180.0) and len(doc["candidates"]) >= 1
    # the search ran on the model's embeddings: its reference cache is keyed by the model folder
    assert "crossview:model" in json.dumps(json.loads((tmp_path / "search" / "prediction.json").read_text()))
