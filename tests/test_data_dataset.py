"""data/dataset: open_dataset picks the source; a Dataset writes itself back as a manifest."""

from __future__ import annotations

import pytest

from _datasetfixtures import make_shards
from geoscope.data.dataset import open_dataset
from geoscope.data.samples import read_sample_bytes
from geoscope.errors import InputError


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "shards")


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


def test_to_manifest_round_trip_including_shard_members(shards, tmp_path):
    folder, _, _ = shards
    ds = open_dataset(folder, progress=False)
    for name in ("m.csv", "m.parquet"):
        back = open_dataset(ds.to_manifest(tmp_path / name), progress=False)
        assert [s.id for s in back] == [s.id for s in ds]
        assert [read_sample_bytes(s) for s in back] == [read_sample_bytes(s) for s in ds]
        assert back[0].lat == ds[0].lat and back[0].extra.get("country") == "XX"
