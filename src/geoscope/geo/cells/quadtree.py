"""The equal-area quadtree under adaptive and admin cells: Morton keys, node bounds, splitting.

The tree lives in the cylindrical equal-area plane ``u = (lon + 180) / 360``, ``v = (sin(lat) + 1) / 2``:
the four children of a node cover equal areas on the sphere. A point's key is its Morton (Z-order)
code at :data:`MAX_LEVEL`; a node at level ``L`` with prefix ``p`` holds exactly the keys in
``[p << (2 * (MAX_LEVEL - L)), (p + 1) << (2 * (MAX_LEVEL - L)))``, so a sorted key array and
``np.searchsorted`` answer "which points are in this node" and "which leaf holds this point" for
millions of points per second. Bits above the key (``region << KEY_BITS``) select one of several
trees (admin cells: one tree per region).
"""

from __future__ import annotations

import math

import numpy as np

from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit

#: Deepest quadtree level: a level-24 cell is about 2.4 m wide at the equator.
MAX_LEVEL = 24
#: Bits of a point's key; higher bits number the tree (region) it belongs to.
KEY_BITS = 2 * MAX_LEVEL
EARTH_AREA_KM2 = 4.0 * math.pi * EARTH_RADIUS_KM**2


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Insert a zero bit between each of the low 32 bits of ``x`` (uint64)."""
    x = x & np.uint64(0x00000000FFFFFFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = (x | (x << np.uint64(2))) & np.uint64(0x3333333333333333)
    x = (x | (x << np.uint64(1))) & np.uint64(0x5555555555555555)
    return x


def _compact_bits(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_spread_bits`: gather the even bits of ``x``."""
    x = x & np.uint64(0x5555555555555555)
    x = (x | (x >> np.uint64(1))) & np.uint64(0x3333333333333333)
    x = (x | (x >> np.uint64(2))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = (x | (x >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)
    return x


def quadtree_keys(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Morton keys (int64) of points at :data:`MAX_LEVEL` in the equal-area (u, v) plane.

    ``lat``/``lon`` must already be valid (``validate_latlon``); longitudes in [-180, 180).
    """
    side = 1 << MAX_LEVEL
    u = (np.asarray(lon, dtype=np.float64) + 180.0) * (side / 360.0)
    v = (np.sin(np.radians(np.asarray(lat, dtype=np.float64))) + 1.0) * (side / 2.0)
    ix = np.clip(u, 0, side - 1).astype(np.uint64)
    iy = np.clip(v, 0, side - 1).astype(np.uint64)
    return (_spread_bits(ix) | (_spread_bits(iy) << np.uint64(1))).astype(np.int64)


def node_ranges(level: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The key range ``[start, end)`` of each node (region bits included)."""
    level = np.asarray(level, dtype=np.int64)
    prefix = np.asarray(prefix, dtype=np.int64)
    shift = KEY_BITS - 2 * level
    return prefix << shift, (prefix + 1) << shift


def node_bounds(level: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, ...]:
    """(min_lat, min_lon, max_lat, max_lon) of quadtree nodes (region bits ignored)."""
    level = np.asarray(level, dtype=np.int64)
    local = np.asarray(prefix, dtype=np.int64) & ((np.int64(1) << (2 * level)) - 1)
    local = local.astype(np.uint64)
    ix = _compact_bits(local).astype(np.float64)
    iy = _compact_bits(local >> np.uint64(1)).astype(np.float64)
    side = np.ldexp(1.0, level)
    lon0 = ix / side * 360.0 - 180.0
    lon1 = (ix + 1) / side * 360.0 - 180.0
    lat0 = np.degrees(np.arcsin(np.clip(iy / side * 2.0 - 1.0, -1, 1)))
    lat1 = np.degrees(np.arcsin(np.clip((iy + 1) / side * 2.0 - 1.0, -1, 1)))
    return lat0, lon0, lat1, lon1


def node_region(level: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """The tree (region) number of each node: the bits above its own level's ``2 * level`` bits."""
    return np.asarray(prefix, dtype=np.int64) >> (2 * np.asarray(level, dtype=np.int64))


def split_leaves(keys: np.ndarray, roots: np.ndarray, max_points: int) -> tuple[np.ndarray, ...]:
    """Split nodes holding more than ``max_points`` of the sorted ``keys`` into quadrants.

    ``roots`` are level-0 prefixes (region numbers; 0 for a global tree). Returns the non-empty leaves
    as (level, prefix, lo, hi) arrays sorted by ``lo``, where ``keys[lo:hi]`` are the leaf's points. A
    node whose points all share one key at the deepest level cannot be split and stays a leaf above
    ``max_points``.
    """
    out: list[tuple[np.ndarray, ...]] = []
    level = 0
    prefix = np.asarray(roots, dtype=np.int64)
    while prefix.size:
        shift = np.int64(KEY_BITS - 2 * level)
        lo = np.searchsorted(keys, prefix << shift, side="left")
        hi = np.searchsorted(keys, (prefix + 1) << shift, side="left")
        n = hi - lo
        splits = (n > max_points) & (level < MAX_LEVEL)
        leaf = (n > 0) & ~splits
        out.append((np.full(int(leaf.sum()), level, dtype=np.int64), prefix[leaf], lo[leaf], hi[leaf]))
        prefix = (prefix[splits][:, None] * 4 + np.arange(4, dtype=np.int64)[None, :]).ravel()
        level += 1
    level_a, prefix_a, lo_a, hi_a = (np.concatenate(parts) for parts in zip(*out))
    order = np.argsort(lo_a, kind="stable")
    return level_a[order], prefix_a[order], lo_a[order], hi_a[order]


def sort_points(keys: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys sorted, and the running sum of the points' unit vectors in that order (n + 1, 3), so the
    sum over any key range is one subtraction."""
    order = np.argsort(keys, kind="stable")
    csum = np.zeros((len(keys) + 1, 3))
    np.cumsum(to_unit(lat[order], lon[order]), axis=0, out=csum[1:])
    return keys[order], csum


def lookup_leaves(keys: np.ndarray, start: np.ndarray, end: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``value`` of the range ``[start, end)`` holding each key (ranges sorted by start, disjoint);
    -1 for keys in no range and for negative keys."""
    i = np.searchsorted(start, keys, side="right") - 1
    ok = (i >= 0) & (keys >= 0)
    i = np.clip(i, 0, None)
    ok &= keys < end[i]
    return np.where(ok, value[i], -1)
