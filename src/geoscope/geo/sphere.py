"""Great-circle math on a spherical Earth.

Public functions take and return ``(lat, lon)`` in degrees and distances in kilometres; radians and
unit vectors stay inside. Everything is vectorised over numpy arrays and broadcasts like numpy.
"""

from __future__ import annotations

import numpy as np

from geoscope.errors import InputError

#: Mean Earth radius (IUGG), kilometres.
EARTH_RADIUS_KM = 6371.0088


def wrap_lon(lon):
    """Wrap longitudes into [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


def validate_latlon(lat, lon, what: str = "coordinates") -> tuple[np.ndarray, np.ndarray]:
    """Check coordinates and return them as float64 arrays, longitudes wrapped to [-180, 180).

    Latitude outside [-90, 90], NaN or infinite values are errors that name the first bad row
    (0-based) and how many rows are bad.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    try:
        lat, lon = np.broadcast_arrays(lat, lon)
    except ValueError as exc:
        raise InputError(f"{what}: latitude and longitude have different shapes {lat.shape} and {lon.shape}") from exc
    bad_lat = ~np.isfinite(lat) | (lat < -90.0) | (lat > 90.0)
    bad_lon = ~np.isfinite(lon)
    bad = bad_lat | bad_lon
    if bad.any():
        flat = np.flatnonzero(bad.ravel())
        i = int(flat[0])
        la, lo = lat.ravel()[i], lon.ravel()[i]
        why = "latitude outside [-90, 90] or not a number" if bad_lat.ravel()[i] else "longitude not a finite number"
        more = f" ({len(flat)} bad rows in all)" if len(flat) > 1 else ""
        raise InputError(f"{what}: row {i} has lat={la}, lon={lo}: {why}{more}")
    return lat.copy(), wrap_lon(lon)


def to_unit(lat, lon) -> np.ndarray:
    """Unit vectors (..., 3) for latitudes and longitudes in degrees."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    cphi = np.cos(phi)
    return np.stack([cphi * np.cos(lam), cphi * np.sin(lam), np.sin(phi)], axis=-1)


def from_unit(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes in degrees for vectors (..., 3); vectors need not be normalised."""
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, wrap_lon(lon)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km.

    Uses the atan2 (Vincenty, sphere) form, which is accurate both for centimetre distances and for
    antipodal points, where the plain haversine and arccos forms lose precision.
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    sp1, cp1, sp2, cp2 = np.sin(p1), np.cos(p1), np.sin(p2), np.cos(p2)
    sdl, cdl = np.sin(dl), np.cos(dl)
    num = np.hypot(cp2 * sdl, cp1 * sp2 - sp1 * cp2 * cdl)
    den = sp1 * sp2 + cp1 * cp2 * cdl
    return EARTH_RADIUS_KM * np.arctan2(num, den)


great_circle_km = haversine_km


def pairwise_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Distance matrix (n, m) between two sets of points."""
    lat1 = np.asarray(lat1, dtype=np.float64)[:, None]
    lon1 = np.asarray(lon1, dtype=np.float64)[:, None]
    lat2 = np.asarray(lat2, dtype=np.float64)[None, :]
    lon2 = np.asarray(lon2, dtype=np.float64)[None, :]
    return haversine_km(lat1, lon1, lat2, lon2)


def spherical_mean(lat, lon, weights=None) -> tuple[float, float]:
    """The normalised mean of unit vectors: the centre of a cloud of points on the sphere.

    Raises InputError when the points have no defined mean (empty, or they cancel out, such as two
    antipodal points).
    """
    lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "spherical_mean")
    if lat.size == 0:
        raise InputError("spherical_mean: no points given")
    v = to_unit(lat, lon)
    w = np.ones(len(v)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (len(v),):
        raise InputError(f"spherical_mean: {len(w)} weights for {len(v)} points")
    s = (v * w[:, None]).sum(axis=0)
    norm = np.linalg.norm(s)
    if not np.isfinite(norm) or norm < 1e-12 * max(float(np.abs(w).sum()), 1e-300):
        raise InputError("spherical_mean: the points cancel out, so their mean direction is undefined")
    la, lo = from_unit(s / norm)
    return float(la), float(lo)


def destination(lat, lon, bearing_deg, distance_km) -> tuple[np.ndarray, np.ndarray]:
    """The point reached from (lat, lon) going ``distance_km`` along initial ``bearing_deg``."""
    p1 = np.radians(np.asarray(lat, dtype=np.float64))
    l1 = np.radians(np.asarray(lon, dtype=np.float64))
    th = np.radians(np.asarray(bearing_deg, dtype=np.float64))
    d = np.asarray(distance_km, dtype=np.float64) / EARTH_RADIUS_KM
    sp2 = np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(th)
    p2 = np.arcsin(np.clip(sp2, -1.0, 1.0))
    l2 = l1 + np.arctan2(np.sin(th) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * sp2)
    return np.degrees(p2), wrap_lon(np.degrees(l2))


def initial_bearing(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(y, x)) % 360.0
