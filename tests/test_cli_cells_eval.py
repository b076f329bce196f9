"""The ``geoscope cells`` and ``geoscope eval`` commands, run as a user would."""

import json

import numpy as np
import pandas as pd
import pytest

from geoscope.cli import main
from geoscope.geo.cells import load_cells


@pytest.fixture
def points_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({"id": [f"img{i}" for i in range(n)],
                       "lat": np.clip(rng.normal(62, 2.5, n), -90, 90), "lon": rng.normal(25, 3, n)})
    path = tmp_path / "points.csv"
    df.to_csv(path, index=False)
    return path, df


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cells_grid_writes_file_and_info(tmp_path, points_csv, capsys):
    path, df = points_csv
    out = tmp_path / "cells.json"
    rc, text, _ = _run(["cells", "grid", "--bbox", "59,19,70,32", "--rows", "40", "--cols", "30",
                        "--points", path, "-o", out], capsys)
    assert rc == 0 and "1200" in text
    cells = load_cells(out).finest
    assert len(cells) == 1200
    inside = (df.lat.between(59, 70) & df.lon.between(19, 32)).sum()
    assert cells.counts.sum() == inside
    rc, text, _ = _run(["cells", "info", out, "--json"], capsys)
    info = json.loads(text)
    assert info["levels"][0]["cells"] == 1200 and info["levels"][0]["training_points"] == inside
    assert 0 < info["levels"][0]["coverage_of_earth"] < 0.01


def test_cells_adaptive_hierarchy(tmp_path, points_csv, capsys):
    path, df = points_csv
    out = tmp_path / "cells.json"
    rc, text, _ = _run(["cells", "adaptive", "--points", path, "--min", "10", "--max", "500,200,100",
                        "-o", out, "--json"], capsys)
    assert rc == 0
    levels = json.loads(text)["levels"]
    assert [lv["max_points"] for lv in levels] == [500, 200, 100]
    h = load_cells(out)
    assert len(h.levels) == 3
    for lv in h.levels:
        ids = lv.assign(df.lat.to_numpy(), df.lon.to_numpy())
        assert (ids >= 0).all()
        c = np.bincount(ids)
        assert c.min() >= 10 and c.max() <= lv.params["max_points"]


@pytest.mark.parametrize("argv, msg", [
    (["cells", "grid", "--bbox", "70,19,59,32", "--rows", "4", "--cols", "3", "-o", "x.json"], "south 70 must be below north 59"),
    (["cells", "grid", "--bbox", "1,2,3", "--rows", "4", "--cols", "3", "-o", "x.json"], "--bbox"),
    (["cells", "grid", "--bbox", "50,170,60,-170", "--rows", "4", "--cols", "3", "-o", "x.json"], "antimeridian"),
    (["cells", "grid", "--bbox", "-95,2,3,4", "--rows", "4", "--cols", "3", "-o", "x.json"], "outside [-90, 90]"),
    (["cells", "grid", "--bbox", "1,2,3,4", "--rows", "0", "--cols", "3", "-o", "x.json"], "positive"),
    (["cells", "adaptive", "--points", "p.csv", "--min", "50", "--max", "10", "-o", "x.json"], "below --min"),
    (["cells", "admin", "--points", "p.csv", "--min", "5", "--max", "50,20", "-o", "x.json"], "one value"),
])
def test_cells_usage_errors_exit_2(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.csv").write_text("lat,lon\n1,2\n")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_cells_bad_points_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "p.csv"
    bad.write_text("lat,lon\n10,20\n91,20\n")
    out = tmp_path / "cells.json"
    rc, _, err = _run(["cells", "adaptive", "--points", bad, "--min", "1", "--max", "10", "-o", out], capsys)
    assert rc == 1 and "line 3" in err and "lat" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    rc, _, err = _run(["cells", "info", tmp_path / "nope.json"], capsys)
    assert rc == 1 and "not found" in err


@pytest.fixture
def pred_truth(tmp_path):
    truth = pd.DataFrame({"id": ["a", "b", "c", "d"], "lat": [60.17, 61.5, 40.71, 0.0], "lon": [24.94, 23.76, -74.0, 0.0]})
    pred = pd.DataFrame({"id": ["a", "b", "c", "x"], "lat": [60.17, 60.17, 51.51, 1.0], "lon": [24.94, 24.94, -0.13, 1.0]})
    tp, pp = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.to_csv(tp, index=False)
    pred.to_csv(pp, index=False)
    return pp, tp


def test_eval_tables_reports_unmatched_ids_and_plots(pred_truth, tmp_path, capsys):
    pp, tp = pred_truth
    plot = tmp_path / "cum.png"
    rc, text, err = _run(["eval", "--pred-file", pp, "--truth-file", tp, "--json", "--plot", plot], capsys)
    assert rc == 0
    r = json.loads(text)
    assert r["n"] == 3
    assert r["acc_1km"] == pytest.approx(1 / 3) and r["acc_200km"] == pytest.approx(2 / 3)
    assert r["unmatched"]["pred_only_ids"] == ["x"] and r["unmatched"]["truth_only_ids"] == ["d"]
    assert "x" in err and "d" in err  # reported on stderr too
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, text, _ = _run(["eval", "--pred-file", pp, "--truth-file", tp], capsys)
    assert rc == 0 and "GeoScore" in text and "unmatched" in text
    rc, _, err = _run(["eval", "--pred-file", pp, "--truth-file", tp, "--strict"], capsys)
    assert rc == 1 and "not in" in err


@pytest.mark.parametrize("argv, msg", [
    (["eval", "--pred-file", "p.csv", "--model", "m"], "not both"),
    (["eval", "--pred-file", "p.csv"], "give both"),
    (["eval", "--model", "m"], "give both"),
    (["eval"], "--pred-file and --truth-file"),
    (["eval", "--pred-file", "p.csv", "--truth-file", "t.csv", "--at-km", "0,5"], "positive"),
    (["eval", "--pred-file", "p.csv", "--truth-file", "t.csv", "--precision", "bf16"], "go with --model"),
])
def test_eval_usage_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and msg in capsys.readouterr().err


def test_eval_model_mode_wires_evaluate_model(monkeypatch, capsys):
    import geoscope.cli._models as models
    import geoscope.evaluate

    loaded, seen = {}, {}

    def load_geolocator(model, weights=None, precision=None, progress=True):
        loaded.update(model=model, weights=weights, precision=precision, progress=progress)
        return "the geolocator"

    def evaluate_model(model, dataset, thresholds=None, places=False, plot=None, limit=None, batch_size=None,
                       progress=True, reliability_plot=None):
        seen.update(model=model, dataset=dataset, thresholds=thresholds, limit=limit, batch_size=batch_size,
                    progress=progress, reliability_plot=reliability_plot)
        return {"n": 2, "acc_25km": 0.5, "median_km": 12.0, "mean_km": 20.0, "geoscore": 4900.0,
                "model": "geoclip", "n_failed": 1, "n_skipped": 0}

    monkeypatch.setattr(models, "load_geolocator", load_geolocator)
    monkeypatch.setattr(geoscope.evaluate, "evaluate_model", evaluate_model)
    rc, text, _ = _run(["eval", "-m", "geoclip", "--dataset", "imgs/", "--at-km", "25", "--limit", "2",
                        "--batch-size", "4", "--weights", "clipdir", "--precision", "int8", "--no-progress",
                        "--json"], capsys)
    assert rc == 0
    assert loaded == {"model": "geoclip", "weights": "clipdir", "precision": "int8", "progress": False}
    assert seen == {"model": "the geolocator", "dataset": "imgs/", "thresholds": [25.0], "limit": 2,
                    "batch_size": 4, "progress": False, "reliability_plot": None}
    assert json.loads(text)["median_km"] == 12.0
    rc, text, _ = _run(["eval", "--model", "geoclip", "--dataset", "imgs/"], capsys)
    assert rc == 0 and "geoclip" in text and "1 image(s) could not be located" in text
    assert loaded["precision"] is None and seen["thresholds"] is None and seen["progress"] is True


def test_eval_old_spellings_still_work_with_a_note(pred_truth, capsys):
    pp, tp = pred_truth
    rc, text, err = _run(["eval", "--pred", pp, "--truth", tp, "--thresholds", "1,200", "--json"], capsys)
    assert rc == 0
    r = json.loads(text)
    assert r["acc_1km"] == pytest.approx(1 / 3) and r["acc_200km"] == pytest.approx(2 / 3) and "acc_25km" not in r
    notes = [line for line in err.splitlines() if "deprecated" in line]
    assert len(notes) == 3 and "use --pred-file" in notes[0] and "use --at-km" in notes[2]


def test_eval_bad_tables(tmp_path, pred_truth, capsys):
    pp, tp = pred_truth
    bad = tmp_path / "bad.csv"
    bad.write_text("id,latitude,lon\na,1,2\n")
    rc, _, err = _run(["eval", "--pred-file", bad, "--truth-file", tp], capsys)
    assert rc == 1 and "missing column(s) lat" in err and str(bad) in err
    bad.write_text("id,lat,lon\na,1,2\na,3,4\n")
    rc, _, err = _run(["eval", "--pred-file", bad, "--truth-file", tp], capsys)
    assert rc == 1 and "line 3" in err and "more than once" in err
    bad.write_text("id,lat,lon\nq,1,2\n")
    rc, _, err = _run(["eval", "--pred-file", bad, "--truth-file", tp], capsys)
    assert rc == 1 and "no ids in common" in err


def test_cells_admin_command(tmp_path, capsys, monkeypatch):
    from shapely.geometry import box

    import geoscope.geo.borders as borders_mod
    from geoscope.geo.borders import BorderSet

    regions = BorderSet("admin1", ["FI-01", "FI-02", "EE-01"], ["a", "b", "c"], ["FI", "FI", "EE"],
                        [box(20, 60, 30, 65), box(20, 65, 30, 70), box(22, 57, 28, 59.5)], grid_res=1.0)
    monkeypatch.setattr(borders_mod, "admin1", lambda: regions)
    rng = np.random.default_rng(4)
    lat = np.concatenate([rng.uniform(60, 65, 300), rng.uniform(65, 70, 5), rng.uniform(57, 59.5, 50)])
    lon = rng.uniform(22, 28, len(lat))
    path = tmp_path / "p.csv"
    pd.DataFrame({"lat": lat, "lon": lon}).to_csv(path, index=False)
    out = tmp_path / "admin.json"
    rc, text, _ = _run(["cells", "admin", "--points", path, "--min", "20", "--max", "200", "-o", out, "--json"], capsys)
    assert rc == 0
    level = json.loads(text)["levels"][0]
    assert level["kind"] == "admin" and level["training_points"] == len(lat)
    cells = load_cells(out).finest
    assert ["FI-01", "FI-02"] in cells.params["regions"] and ["EE-01"] in cells.params["regions"]
    assert len(cells) >= 3  # FI-01 + FI-02 hold 305 points: split under max 200
    assert cells.counts.max() <= 200 and cells.counts.min() >= 20
