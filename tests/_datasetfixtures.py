"""Collections the data tests share: a messy folder of photos and two WebDataset shards.

Plain builders (each test file wraps them in its own pytest fixture), built on ``_imagefixtures``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _imagefixtures import (
    huge_png,
    jpeg_bytes,
    make_geotagged_folder,
    make_webdataset_shard,
    random_points,
    synthetic_image,
    truncated_jpeg,
)


def make_messy_folder(root: Path):
    """12 good geotagged JPEGs plus every kind of bad file; returns (root, [(path, lat, lon)] of the good ones)."""
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


def make_shards(folder: Path):
    """Two shards in ``folder``: five clean samples, then one of each problem; returns (folder, paths, points)."""
    pts = random_points(10, seed=5)
    a = make_webdataset_shard(folder / "shard-000.tar", [
        (f"s{i:03d}", jpeg_bytes(*pts[i]), {"lat": pts[i][0], "lon": pts[i][1], "country": "XX"}) for i in range(5)
    ])
    b = make_webdataset_shard(folder / "shard-001.tar", [
        ("s005", jpeg_bytes(*pts[5]), {"latitude": pts[5][0], "longitude": pts[5][1]}),
        ("s006", None, {"lat": 1, "lon": 2}),  # no image
        ("s007", jpeg_bytes(*pts[7]), b"{not json"),  # broken JSON: kept, without coordinates
        ("s008", jpeg_bytes(*pts[8]), {"lat": -100, "lon": 2}),  # bad coordinates
        ("s009", b"\xff\xd8\xff\xe0 garbage", {"lat": 1, "lon": 2}),  # undecodable image
    ])
    return folder, [a, b], pts
