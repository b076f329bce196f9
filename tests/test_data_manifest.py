"""data/sources/manifest: CSV / Parquet manifests, column guessing, benchmark presets."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from _imagefixtures import jpeg_bytes, random_points
from geoscope.data.dataset import open_dataset
from geoscope.data.sources.manifest import PRESETS
from geoscope.data.validate import validate_dataset
from geoscope.errors import InputError


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
