"""read_points: CSV and Parquet tables of points, with errors naming the file, line and column."""

import pandas as pd
import pytest

from geoscope.errors import InputError
from geoscope.geo.table import read_points


def test_csv_and_parquet_give_the_same_frame(tmp_path):
    df = pd.DataFrame({"name": ["a", "b"], "y": [60.1, -10.0], "x": [200.0, 24.9], "note": ["k", "m"]})
    csv, pq = tmp_path / "p.csv", tmp_path / "p.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(pq)
    for path in (csv, pq):
        out = read_points(path, id_col="name", lat_col="y", lon_col="x")
        assert list(out.columns) == ["id", "lat", "lon", "note"]
        assert out["id"].tolist() == ["a", "b"]
        assert out["lon"].tolist() == pytest.approx([-160.0, 24.9])  # wrapped
    no_ids = read_points(csv, id_col=None, lat_col="y", lon_col="x")
    assert no_ids["id"].tolist() == ["0", "1"]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("id,lat,lon\n", "no rows"),
    ("id,lat\na,1\n", r"missing column\(s\) lon"),
    ("id,lat,lon\na,1,2\nb,-91,2\n", "line 3, column lat: latitude -91.0"),
    ("id,lat,lon\na,1,\n", "line 2, column lon"),
    ("id,lat,lon\na,1,2,3\n", "more fields"),
    ("id,lat,lon\n,1,2\n", "line 2, column id: the id is empty"),
    ("id,lat,lon\na,1,2\na,1,2\n", "appears more than once"),
    ("id,lat,lon\na,nan,2\n", "not a number"),
])
def test_bad_csv(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        read_points(path)
    assert str(path) in str(exc.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_points(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="folder"):
        read_points(tmp_path)
    bad = tmp_path / "b.csv"
    bad.write_bytes(b"id,lat,lon\n\xff\xfe,1,2\n")
    with pytest.raises(InputError, match="UTF-8"):
        read_points(bad)
