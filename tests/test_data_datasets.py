"""data/datasets: folders, manifests (with benchmark presets), WebDataset shards, validation, splits."""

from __future__ import annotations

import json
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from _imagefixtures import (
    huge_png,
    jpeg_bytes,
    make_geotagged_folder,
    make_webdataset_shard,
    random_points,
    synthetic_image,
    truncated_jpeg,
)
from geoscope.cli import main
from geoscope.data.datasets import (
    PRESETS,
    Dataset,
    GeoSample,
    load_sample_image,
    open_dataset,
    read_sample_bytes,
    spatial_groups,
    split_dataset,
    validate_dataset,
)
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km


@pytest.fixture()
def messy_folder(tmp_path):
    """12 good geotagged JPEGs plus every kind of bad file."""
    root = tmp_path / "photos"
    good = make_geotagged_folder(root, 12, seed=3, subdirs=True)
    (root / "notes.txt").write_text("not a photo")
    (root / "data.json").write_text("{}")
    (root / "zero.jpg").write_bytes(b"")
    truncated_jpeg(root / "cut.jpg")
    huge_png(root / "bomb.png")
    (root / "fake.png").write_bytes(b"GIF89a but not really")
    shutil.copy(good[0][0], root / "copy_of_first.jpg")
    synthetic_image(1, 2).save(root / "no_gps.jpg")
    return root, good


def test_folder_reads_exif_gps_and_reports_non_images(messy_folder):
    root, good = messy_folder
    ds = open_dataset(root, progress=False)
    by_id = {s.id: s for s in ds}
    assert len(ds) == 12 + 6  # the 12, zero, cut, bomb, fake, copy, no_gps
    for path, lat, lon in good:
        s = by_id[path.relative_to(root).as_posix()]
        assert s.source == str(path)
        assert (s.lat, s.lon) == (pytest.approx(lat, abs=1e-6), pytest.approx(lon, abs=1e-6))
    assert by_id["no_gps.jpg"].lat is None and not by_id["no_gps.jpg"].has_coords
    skipped = {i.source.split("/")[-1]: i for i in ds.issues}
    assert set(skipped) == {"notes.txt", "data.json"}
    assert all(i.kind == "not_image" and "not an image" in i.reason for i in skipped.values())


def test_validation_reports_every_bad_file_with_its_reason_and_keeps_the_rest(messy_folder):
    root, good = messy_folder
    report = validate_dataset(open_dataset(root, progress=False), progress=False)
    kinds = {p.source.split("/")[-1]: p for p in report.problems}
    assert kinds["zero.jpg"].kind == "unreadable" and "empty" in kinds["zero.jpg"].reason
    assert kinds["cut.jpg"].kind == "unreadable" and "truncated" in kinds["cut.jpg"].reason
    assert kinds["bomb.png"].kind == "unreadable" and "900,000,000 pixels" in kinds["bomb.png"].reason
    assert kinds["fake.png"].kind == "unreadable" and "not a recognised image" in kinds["fake.png"].reason
    assert kinds["no_gps.jpg"].kind == "no_coordinates"
    assert kinds["notes.txt"].kind == "not_image"
    # the copy and the original have identical bytes: one group, the later one flagged
    first = good[0][0].relative_to(root).as_posix()
    assert report.duplicates == [["copy_of_first.jpg", first]] or report.duplicates == [[first, "copy_of_first.jpg"]]
    dup = [p for p in report.problems if p.kind == "duplicate_image"]
    assert len(dup) == 1
    assert len(report.ok_ids) == 12 and not report.ok
    assert report.counts["unreadable"] == 4
    d = report.to_dict()
    assert json.loads(json.dumps(d))["n_ok"] == 12
    assert "cut.jpg" in report.format()


def test_validation_with_worker_processes_matches(messy_folder):
    root, _ = messy_folder
    ds = open_dataset(root, progress=False)
    a = validate_dataset(ds, progress=False)
    b = validate_dataset(ds, progress=False, workers=2)
    assert a.to_dict() == b.to_dict()


def test_headers_only_validation_misses_truncation_but_catches_bombs(messy_folder):
    root, _ = messy_folder
    report = validate_dataset(open_dataset(root, progress=False), decode=False, progress=False)
    bad = {p.source.split("/")[-1] for p in report.problems if p.kind == "unreadable"}
    assert {"bomb.png", "zero.jpg", "fake.png"} <= bad and "cut.jpg" not in bad


def test_folder_with_sidecar_csv(tmp_path):
    root = tmp_path / "f"
    pts = random_points(5, seed=9)
    files = make_geotagged_folder(root, pts, gps_in_exif=False)
    lines = ["file,latitude,longitude"]
    lines += [f"{p.name},{lat},{lon}" for p, lat, lon in files[:4]]
    lines += ["img_0004.jpg,91.5,10", "gone.jpg,1,2"]  # bad latitude; a file that is not there
    (tmp_path / "coords.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(root, sidecar=tmp_path / "coords.csv", progress=False)
    got = {s.id: (s.lat, s.lon) for s in ds}
    for p, lat, lon in files[:4]:
        assert got[p.name] == (lat, lon)
    assert got["img_0004.jpg"] == (None, None)
    assert [i.kind for i in ds.issues] == ["bad_coordinates", "missing"]
    assert "line 6" in ds.issues[0].reason and "91.5" in ds.issues[0].reason
    assert "'gone.jpg', which is not an image in" in ds.issues[1].reason
    assert len(open_dataset(root, coords="exif", progress=False).issues) == 0
    assert all(s.lat is None for s in open_dataset(root, coords="exif", progress=False))


# --- manifests ----------------------------------------------------------------------------------

def _write_images(folder, names, pts):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (lat, lon) in zip(names, pts):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg_bytes(lat, lon))


def test_im2gps3k_preset(tmp_path):
    pts = random_points(4, seed=1)
    names = [f"{1000 + i}_abc_{i}@N00.jpg" for i in range(4)]
    _write_images(tmp_path / "im2gps3ktest", names, pts)
    rows = ["IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"]
    rows += [f"{n},someone,{lat},{lon},1,2,3,0.1,0.2,0.7" for n, (lat, lon) in zip(names, pts)]
    rows += ["9999_missing.jpg,someone,10.0,20.0,1,2,3,0.1,0.2,0.7", "bad.jpg,someone,123.0,20.0,1,2,3,0,0,0"]
    (tmp_path / "im2gps3k_places365.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(tmp_path / "im2gps3k_places365.csv", preset="im2gps3k", images=tmp_path / "im2gps3ktest",
                      progress=False)
    assert len(ds) == 5
    s = ds[0]
    assert s.id == names[0] and s.source == str(tmp_path / "im2gps3ktest" / names[0])
    assert (s.lat, s.lon) == pts[0]
    assert s.extra["AUTHOR"] == "someone" and s.extra["S365_Label"] == "3"
    assert [i.kind for i in ds.issues] == ["bad_coordinates"] and "line 7" in ds.issues[0].reason
    report = validate_dataset(ds, progress=False)
    missing = [p for p in report.problems if p.kind == "missing"]
    assert len(missing) == 1 and "9999_missing.jpg" in missing[0].reason and "not found" in missing[0].reason
    assert len(report.ok_ids) == 4 and "hint" not in report.format()
    wrong_root = open_dataset(tmp_path / "im2gps3k_places365.csv", preset="im2gps3k", images=tmp_path / "elsewhere",
                              progress=False)
    assert "hint: no image was found" in validate_dataset(wrong_root, progress=False).format()


def test_osv5m_preset_flat_and_nested_layouts(tmp_path):
    pts = random_points(3, seed=2)
    ids = ["3859149887465501", "120000000000000", "5"]
    header = "id,latitude,longitude,thumb_original_url,country,sequence,captured_at,region,city"
    rows = [header] + [f"{i},{lat},{lon},,FR,seq,2020,R,C" for i, (lat, lon) in zip(ids, pts)]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    _write_images(tmp_path / "images" / "test", [f"{i}.jpg" for i in ids], pts)
    ds = open_dataset(tmp_path / "test.csv", preset="osv5m", progress=False)
    assert [s.id for s in ds] == ids  # long numeric ids stay exact strings
    assert ds[0].source == str(tmp_path / "images" / "test" / f"{ids[0]}.jpg")
    assert ds[0].extra["country"] == "FR"
    assert validate_dataset(ds, progress=False).ok
    # zips unpacked into sub-folders: found by name
    nested = tmp_path / "n"
    nested.mkdir()
    shutil.copy(tmp_path / "test.csv", nested / "test.csv")
    _write_images(nested / "images" / "test" / "00", [f"{i}.jpg" for i in ids], pts)
    ds = open_dataset(nested / "test.csv", preset="osv5m", progress=False)
    assert ds[1].source == str(nested / "images" / "test" / "00" / f"{ids[1]}.jpg")
    assert validate_dataset(ds, progress=False).ok


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_names_its_columns(preset):
    layout = PRESETS[preset]
    assert layout.id_col and layout.lat_col and layout.lon_col


def test_parquet_manifest_with_custom_columns_and_path_column(tmp_path):
    pts = random_points(3, seed=4)
    _write_images(tmp_path / "imgs", ["a/1.jpg", "b/2.jpg", "c/3.jpg"], pts)
    df = pd.DataFrame({"key": ["x", "y", "z"], "where": ["a/1.jpg", "b/2.jpg", "c/3.jpg"],
                       "Y": [p[0] for p in pts], "X": [p[1] for p in pts], "label": [1, 2, 3]})
    df.to_parquet(tmp_path / "m.parquet")
    ds = open_dataset(tmp_path / "m.parquet", id_col="key", lat_col="Y", lon_col="X", path_col="where",
                      images=tmp_path / "imgs", progress=False)
    assert [s.id for s in ds] == ["x", "y", "z"] and ds[2].extra == {"label": 3}
    assert ds[1].source == str(tmp_path / "imgs" / "b" / "2.jpg")
    assert validate_dataset(ds, progress=False).ok
    with pytest.raises(InputError, match="no lat column 'nope'"):
        open_dataset(tmp_path / "m.parquet", lat_col="nope", progress=False)
    with pytest.raises(InputError, match="cannot tell which column holds the lat"):
        open_dataset(tmp_path / "m.parquet", id_col="key", progress=False)


def test_manifest_duplicate_and_empty_ids_are_reported(tmp_path):
    (tmp_path / "m.csv").write_text("id,lat,lon\na,1,2\na,3,4\n,5,6\nb,,\n")
    ds = open_dataset(tmp_path / "m.csv", progress=False)
    assert [s.id for s in ds] == ["a", "b"]
    assert ds[1].lat is None  # no coordinates is allowed (images to locate)
    assert sorted(i.kind for i in ds.issues) == ["bad_metadata", "duplicate_id"]


def test_open_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="not a folder, a CSV"):
        open_dataset(tmp_path / "x.txt")
    with pytest.raises(InputError, match="unknown dataset preset"):
        open_dataset(tmp_path, preset="imagenet")
    with pytest.raises(InputError, match="no files match"):
        open_dataset(str(tmp_path / "shard-*.tar"))


# --- WebDataset shards --------------------------------------------------------------------------

@pytest.fixture()
def shards(tmp_path):
    pts = random_points(10, seed=5)
    a = make_webdataset_shard(tmp_path / "shards" / "shard-000.tar", [
        (f"s{i:03d}", jpeg_bytes(*pts[i]), {"lat": pts[i][0], "lon": pts[i][1], "country": "XX"}) for i in range(5)
    ])
    b = make_webdataset_shard(tmp_path / "shards" / "shard-001.tar", [
        ("s005", jpeg_bytes(*pts[5]), {"latitude": pts[5][0], "longitude": pts[5][1]}),
        ("s006", None, {"lat": 1, "lon": 2}),  # no image
        ("s007", jpeg_bytes(*pts[7]), b"{not json"),  # broken JSON: kept, without coordinates
        ("s008", jpeg_bytes(*pts[8]), {"lat": -100, "lon": 2}),  # bad coordinates
        ("s009", b"\xff\xd8\xff\xe0 garbage", {"lat": 1, "lon": 2}),  # undecodable image
    ])
    return tmp_path / "shards", [a, b], pts


def test_webdataset_shards_by_folder_pattern_and_list(shards):
    folder, paths, pts = shards
    for spec in (folder, str(folder / "shard-{000..001}.tar"), str(folder / "shard-*.tar"), [str(p) for p in paths]):
        ds = open_dataset(spec, progress=False)
        assert ds.kind == "webdataset"
        assert [s.id for s in ds] == ["s000", "s001", "s002", "s003", "s004", "s005", "s007", "s009"]
    s = ds[0]
    assert (s.lat, s.lon) == pts[0] and s.extra == {"country": "XX"}
    assert s.source == f"{paths[0]}::s000.jpg" and s.offset is not None and s.size > 0
    assert ds[5].lat == pts[5][0]  # latitude / longitude keys
    assert ds[6].lat is None
    kinds = sorted(i.kind for i in ds.issues)
    assert kinds == ["bad_coordinates", "bad_metadata", "missing"]


def test_shard_samples_read_by_offset_in_other_processes(shards):
    _, paths, pts = shards
    ds = open_dataset(paths[0], progress=False)
    samples = list(ds)
    blob = pickle.dumps(samples[0])
    assert len(blob) < 600  # a reference, not the bytes
    assert read_sample_bytes(samples[2]) == jpeg_bytes(*pts[2])
    with ProcessPoolExecutor(2) as pool:
        images = list(pool.map(load_sample_image, samples))
    assert [im.size for im in images] == [(64, 48)] * 5
    # without an offset, the member is found by name
    by_name = GeoSample(samples[3].id, samples[3].source)
    assert read_sample_bytes(by_name) == read_sample_bytes(samples[3])
    assert ds.load_image(samples[1]).mode == "RGB"


def test_shard_validation_and_truncated_shard(shards, tmp_path):
    folder, paths, _ = shards
    report = validate_dataset(open_dataset(folder, progress=False), progress=False)
    assert {p.id: p.kind for p in report.problems if p.kind in ("unreadable", "no_coordinates")} == {
        "s009": "unreadable", "s007": "no_coordinates"}
    data = paths[0].read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    ds = open_dataset(cut, progress=False)
    assert 0 < len(ds) < 5
    assert any(i.kind == "unreadable" and "cut.tar" in i.reason and "truncated" in i.reason for i in ds.issues)


# --- manifests written back, splits -------------------------------------------------------------

def test_to_manifest_round_trip_including_shard_members(shards, tmp_path):
    folder, _, _ = shards
    ds = open_dataset(folder, progress=False)
    for name in ("m.csv", "m.parquet"):
        back = open_dataset(ds.to_manifest(tmp_path / name), progress=False)
        assert [s.id for s in back] == [s.id for s in ds]
        assert [read_sample_bytes(s) for s in back] == [read_sample_bytes(s) for s in ds]
        assert back[0].lat == ds[0].lat and back[0].extra.get("country") == "XX"


def _located_dataset(n=600, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    # clusters of photos around 30 towns, a few km apart inside each
    centres = random_points(120, seed=seed + 1, bbox=(-50, -170, 65, 170))
    samples = []
    for i in range(n):
        c = centres[i % 120]
        samples.append(GeoSample(f"p{i:05d}", f"/nowhere/p{i}.jpg", c[0] + rng.normal(0, 0.05),
                                 c[1] + rng.normal(0, 0.05)))
    return Dataset.from_samples(samples)


def test_random_split_is_deterministic_exact_and_order_free():
    ds = _located_dataset()
    a = split_dataset(ds, (0.8, 0.1, 0.1), seed=7)
    assert {k: len(v) for k, v in a.items()} == {"train": 480, "val": 60, "test": 60}
    ids = [set(v.ids) for v in a.values()]
    assert set().union(*ids) == set(ds.ids) and sum(len(x) for x in ids) == len(ds)
    shuffled = ds.subset(np.random.default_rng(1).permutation(len(ds)))
    b = split_dataset(shuffled, (0.8, 0.1, 0.1), seed=7)
    assert all(set(a[k].ids) == set(b[k].ids) for k in a)
    c = split_dataset(ds, (0.8, 0.1, 0.1), seed=8)
    assert set(c["test"].ids) != set(a["test"].ids)
    assert set(split_dataset(ds, {"fit": 1, "check": 1})) == {"fit", "check"}


def test_spatial_split_keeps_cells_whole_and_respects_the_buffer():
    ds = _located_dataset()
    sp = split_dataset(ds, (0.7, 0.15, 0.15), method="spatial", cell_km=50, buffer_km=100, seed=3)
    cells = {name: set(spatial_groups(part.lat, part.lon, 50)) for name, part in sp.items()}
    assert not cells["train"] & cells["test"] and not cells["train"] & cells["val"]
    held = np.concatenate([sp["val"].lat, sp["test"].lat]), np.concatenate([sp["val"].lon, sp["test"].lon])
    d = haversine_km(sp["train"].lat[:, None], sp["train"].lon[:, None], held[0][None], held[1][None])
    assert d.min() >= 100 and sp.min_distance_km == pytest.approx(d.min(), rel=1e-6)
    total = sum(len(v) for v in sp.values()) + len(sp.dropped)
    assert total == len(ds)
    assert 0.5 < len(sp["train"]) / len(ds) < 0.85 and len(sp["test"]) > 0
    # same answer twice; and a random split of the same clustered data is NOT separated
    again = split_dataset(ds, (0.7, 0.15, 0.15), method="spatial", cell_km=50, buffer_km=100, seed=3)
    assert set(again["test"].ids) == set(sp["test"].ids)
    rnd = split_dataset(ds, (0.7, 0.15, 0.15), seed=3)
    d = haversine_km(rnd["train"].lat[:, None], rnd["train"].lon[:, None], rnd["test"].lat[None], rnd["test"].lon[None])
    assert d.min() < 20


def test_spatial_split_sets_unlocated_samples_aside_and_checks_arguments():
    ds = Dataset.from_samples([GeoSample("a", "a.jpg", 1.0, 2.0), GeoSample("b", "b.jpg"),
                               GeoSample("c", "c.jpg", 50.0, 8.0)])
    sp = split_dataset(ds, (0.5, 0.5), method="spatial", cell_km=10)
    assert sp.unlocated.ids == ["b"] and sum(len(v) for v in sp.values()) == 2
    with pytest.raises(InputError, match="split method"):
        split_dataset(ds, method="kmeans")
    with pytest.raises(InputError, match="fractions"):
        split_dataset(ds, (0.5, -1))
    with pytest.raises(InputError, match="cell_km"):
        split_dataset(ds, method="spatial", cell_km=0)


def test_spatial_groups_are_about_the_requested_size():
    lat = np.array([0.0, 0.0, 0.0, 60.0, 60.0])
    lon = np.array([0.01, 0.05, 0.5, 0.01, 0.9])  # 0.05 deg ~ 5.6 km; 0.5 deg ~ 56 km (28 km at 60N)
    g = spatial_groups(lat, lon, 20.0)
    assert g[0] == g[1] and g[0] != g[2] and g[3] != g[4]
    assert len(set(spatial_groups(np.array([89.9, 89.9]), np.array([-170.0, 170.0]), 50.0))) == 1


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_validate_and_split(messy_folder, tmp_path, capsys):
    root, _ = messy_folder
    assert main(["dataset", "validate", str(root), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["n_ok"] == 12 and out["counts"]["unreadable"] == 4
    good = tmp_path / "good"
    make_geotagged_folder(good, 40, seed=11)
    assert main(["dataset", "validate", str(good)]) == 0
    assert "40 samples, 40 usable" in capsys.readouterr().out
    out_dir = tmp_path / "splits"
    rc = main(["dataset", "split", str(good), "-o", str(out_dir), "--method", "spatial", "--cell-km", "200",
               "--buffer-km", "50", "--fractions", "0.6,0.2,0.2", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["splits"].values()) + summary["dropped_by_buffer"] == 40
    parts = {n: open_dataset(out_dir / f"{n}.csv", progress=False) for n in ("train", "val", "test")}
    if summary["dropped_by_buffer"]:
        parts["dropped"] = open_dataset(out_dir / "dropped.csv", progress=False)
    written = sorted(i for p in parts.values() for i in p.ids)
    assert written == sorted(open_dataset(good, progress=False).ids)  # every photo in exactly one file
    assert all(validate_dataset(p, progress=False).ok for p in parts.values())
    assert json.loads((out_dir / "split.json").read_text())["splits"] == summary["splits"]
    assert main(["dataset", "validate", str(tmp_path / "absent")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
