"""data/sources/folder: a folder of photos, coordinates from EXIF GPS or a sidecar CSV."""

from __future__ import annotations

import pytest

from _datasetfixtures import make_messy_folder
from _imagefixtures import make_geotagged_folder, random_points
from geoscope.data.dataset import open_dataset
from geoscope.errors import InputError


@pytest.fixture()
def messy_folder(tmp_path):
    return make_messy_folder(tmp_path / "photos")


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


def test_folder_coords_option_is_checked(tmp_path):
    root = tmp_path / "f"
    make_geotagged_folder(root, 2, seed=1)
    with pytest.raises(InputError, match="coords must be 'auto', 'exif', 'sidecar' or 'none', got 'gps'"):
        open_dataset(root, coords="gps", progress=False)
    with pytest.raises(InputError, match="coords='sidecar' needs a sidecar CSV"):
        open_dataset(root, coords="sidecar", progress=False)
    assert all(not s.has_coords for s in open_dataset(root, coords="none", progress=False))
