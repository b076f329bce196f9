"""data/sources/webdataset: tar shards by folder, glob, brace pattern or list; damaged shards."""

from __future__ import annotations

import pytest

from _datasetfixtures import make_shards
from geoscope.data.dataset import open_dataset
from geoscope.data.sources.webdataset import expand_braces
from geoscope.data.validate import validate_dataset


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "shards")


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


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("shard-{008..011}.tar") == ["shard-008.tar", "shard-009.tar", "shard-010.tar",
                                                    "shard-011.tar"]
    assert expand_braces("{a,b}/x-{0..1}.tar") == ["a/x-0.tar", "a/x-1.tar", "b/x-0.tar", "b/x-1.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


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
