"""Data layer speed: image decoding, EXIF reading, validation, WebDataset reads, splits.

python3 benchmarks/bench_data.py [--n 200] [--size 1024x768]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from geoscope.data.datasets import (  # noqa: E402
    Dataset,
    GeoSample,
    load_sample_image,
    open_dataset,
    split_dataset,
    validate_dataset,
)
from geoscope.data.exif import read_exif  # noqa: E402
from geoscope.data.images import load_image  # noqa: E402


def _photo(rng, w, h, lat, lon) -> bytes:
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    im = Image.fromarray(base, "RGB").resize((w, h), Image.BILINEAR)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Bench"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[1], gps[3] = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    gps[2] = (IFDRational(int(abs(lat) * 1e6), 1_000_000), IFDRational(0), IFDRational(0))
    gps[4] = (IFDRational(int(abs(lon) * 1e6), 1_000_000), IFDRational(0), IFDRational(0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def _rate(n, seconds) -> str:
    return f"{n / seconds:,.0f}/s ({1000 * seconds / n:.1f} ms each)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="1024x768")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        pts = [(float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180))) for _ in range(args.n)]
        for i, (lat, lon) in enumerate(pts):
            (root / f"{i:05d}.jpg").write_bytes(_photo(rng, w, h, lat, lon))
        files = sorted(root.iterdir())

        t = time.perf_counter()
        for f in files:
            load_image(f)
        rows.append([f"load_image, {w}x{h} JPEG", _rate(len(files), time.perf_counter() - t)])

        t = time.perf_counter()
        for f in files:
            im = Image.open(f)
            im.load()
            im.convert("RGB")
        rows.append(["plain Pillow open+load+convert (reference)", _rate(len(files), time.perf_counter() - t)])

        t = time.perf_counter()
        found = [read_exif(f) for f in files]
        rows.append(["read_exif (GPS, time, camera)", _rate(len(files), time.perf_counter() - t)])
        assert all(x.has_gps for x in found)

        t = time.perf_counter()
        ds = open_dataset(root, progress=False)
        rows.append(["open_dataset(folder), EXIF GPS", _rate(len(ds), time.perf_counter() - t)])

        for workers, decode in ((0, True), (2, True), (0, False)):
            t = time.perf_counter()
            report = validate_dataset(ds, decode=decode, workers=workers, progress=False)
            assert len(report.ok_ids) == len(ds)
            what = "full decode" if decode else "headers only"
            rows.append([f"validate_dataset, {what}, workers={workers}", _rate(len(ds), time.perf_counter() - t)])

        import tarfile

        shard = Path(tmp) / "shard-000.tar"
        with tarfile.open(shard, "w") as tar:
            for i, f in enumerate(files):
                tar.add(f, arcname=f"{i:05d}.jpg")
        sds = open_dataset(shard, progress=False)
        samples = list(sds)
        t = time.perf_counter()
        for s in samples:
            load_sample_image(s)
        rows.append(["load_sample_image from a tar shard (offset read)", _rate(len(samples), time.perf_counter() - t)])

    n = 1_000_000
    lat = rng.uniform(-60, 70, n)
    lon = rng.uniform(-180, 180, n)
    big = Dataset.from_samples(GeoSample(f"p{i}", "", float(a), float(o))
                               for i, (a, o) in enumerate(zip(lat[:200_000], lon[:200_000])))
    t = time.perf_counter()
    split_dataset(big, method="random")
    rows.append(["split_dataset random, 200k samples", f"{time.perf_counter() - t:.2f} s"])
    t = time.perf_counter()
    sp = split_dataset(big, method="spatial", cell_km=25, buffer_km=10)
    rows.append(["split_dataset spatial 25 km cells, 10 km buffer, 200k samples",
                 f"{time.perf_counter() - t:.2f} s (dropped {len(sp.dropped):,})"])

    write_result("data", "Data layer: decoding, EXIF, validation, shards, splits", ["operation", "speed"], rows,
                 notes=f"{args.n} synthetic {w}x{h} JPEGs with EXIF GPS, written to a temporary folder. Timings are wall clock; "
                       "on a machine shared with other jobs the worker-process rows show contention, not scaling.")


if __name__ == "__main__":
    main()
