"""data/validate: every bad file reported with its reason, the rest kept; workers give the same report."""

from __future__ import annotations

import json

import pytest

from _datasetfixtures import make_messy_folder
from geoscope.data.dataset import open_dataset
from geoscope.data.validate import validate_dataset


@pytest.fixture()
def messy_folder(tmp_path):
    return make_messy_folder(tmp_path / "photos")


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
