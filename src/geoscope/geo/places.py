"""Offline reverse geocoding: country, first-level region, nearest populated place, or at sea.

Everything is vectorised: ``reverse_geocode(lat, lon)`` takes arrays. Countries and regions come from
Natural Earth polygons (:mod:`geoscope.geo.borders`), so a point near a border gets the country it is
in, not the one whose capital is nearer. Towns are GeoNames populated places (cities1000: more than
1000 people or an administrative seat), found with a k-d tree over unit vectors (for a handful of
points, one matrix product over all towns instead: no tree to build, and no scipy to import).
:func:`preload` reads everything in a background thread, for a caller with other work to do meanwhile.
The data is derived once by ``python -m geoscope.geo.data_setup``; nothing here needs a network.

Contains data from GeoNames (https://www.geonames.org), CC-BY 4.0. Borders: Natural Earth (public domain).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass

import numpy as np

from geoscope.errors import InputError
from geoscope.geo import borders
from geoscope.geo.data_files import TextColumn, data_file, read_table
from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit, validate_latlon

#: Default population floor of :func:`list_towns`.
MIN_TOWN_POPULATION = 1000
#: ``Place.label()`` names the nearest town on land only when it is at most this far (km).
LABEL_TOWN_MAX_KM = 50.0
#: Up to this many points, the nearest town is found by one matrix product instead of the k-d tree.
BRUTE_FORCE_POINTS = 64


@dataclass(frozen=True)
class Place:
    """What is at a point. Fields are None where unknown; ``at_sea`` where no country contains it."""

    country_code: str | None = None  # ISO 3166-1 alpha-2
    country: str | None = None
    region: str | None = None  # first-level administrative region
    region_code: str | None = None  # ISO 3166-2 where known
    town: str | None = None  # nearest populated place (GeoNames, >= 1000 people)
    town_km: float | None = None  # distance to that place
    at_sea: bool = False

    def label(self) -> str:
        """A short human-readable name, e.g. 'near Tampere, Pirkanmaa, Finland' or 'at sea'."""
        parts = []
        km = self.town_km or 0.0
        if self.town and km <= LABEL_TOWN_MAX_KM:  # a town hundreds of km away names nothing useful
            parts.append(f"near {self.town}" if km > 5 else self.town)
        if self.region and self.region != self.country:  # not "Gibraltar, Gibraltar"
            parts.append(self.region)
        if self.country:
            parts.append(self.country)
        if self.at_sea and not self.country:
            return "at sea" + (f" (nearest place {self.town}, {self.town_km:.0f} km)" if self.town else "")
        return ", ".join(parts) if parts else "unknown"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Place | None":
        return None if d is None else cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ----------------------------------------------------------------------------------------------
# Towns


class _Towns:
    """The GeoNames table as columns, with a k-d tree over unit vectors built on first use."""

    def __init__(self, path: str):
        t = read_table(path, ["name", "lat", "lon", "population", "country_code", "region_code"])
        # names stay encoded until read (a TextColumn from the cached copy): a lookup decodes only its own
        self.name = t["name"] if isinstance(t["name"], TextColumn) else np.asarray(t["name"], dtype=object)
        self.lat = np.asarray(t["lat"], dtype=np.float64)
        self.lon = np.asarray(t["lon"], dtype=np.float64)
        self.population = np.asarray(t["population"], dtype=np.int64)
        self._codes = {"country_code": t["country_code"], "region_code": t["region_code"]}
        self._tree = None
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.name)

    @functools.cached_property
    def country_code(self) -> np.ndarray:
        """Every town's country code (decoded on first use: only the listing of towns compares them)."""
        return np.asarray(list(self._codes["country_code"]), dtype=object)

    @functools.cached_property
    def region_code(self) -> np.ndarray:
        return np.asarray(list(self._codes["region_code"]), dtype=object)

    @property
    def unit(self) -> np.ndarray:
        if self._unit is None:
            self._unit = to_unit(self.lat, self.lon)
        return self._unit

    @property
    def tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree  # ~0.3 s to import: only for many points

            self._tree = cKDTree(self.unit, leafsize=16, balanced_tree=True)
        return self._tree

    def nearest(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index of the nearest town, its distance in km) for each point."""
        if lat.size <= BRUTE_FORCE_POINTS and self._tree is None:
            return self.nearest_by_product(lat, lon)
        return self.nearest_by_tree(lat, lon)

    def nearest_by_product(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = to_unit(lat, lon)
        idx = np.argmax(q @ self.unit.T, axis=1).astype(np.int64)  # the largest cosine is the nearest
        chord = np.linalg.norm(q - self.unit[idx], axis=1)
        return idx, 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))

    def nearest_by_tree(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = None
        if lat.size > 10_000:  # neighbouring queries one after another walk the same tree nodes: faster
            cell = np.floor(lat + 90.0).astype(np.int64) * 360 + np.floor(lon + 180.0).astype(np.int64)
            order = np.argsort(cell, kind="stable")
            lat, lon = lat[order], lon[order]
        chord, idx = self.tree.query(to_unit(lat, lon), k=1, workers=-1)
        km = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0))
        idx = np.asarray(idx, dtype=np.int64)
        if order is not None:
            idx[order], km[order] = idx.copy(), km.copy()
        return idx, km


_LOADING = threading.Lock()  # one thread reads the tables; another that asks meanwhile waits for it


@functools.lru_cache(maxsize=2)
def _towns_at(path: str) -> _Towns:
    return _Towns(path)


def _towns() -> _Towns:
    with _LOADING:
        return _towns_at(str(data_file("towns.parquet")))


def _borders():
    """Countries and regions with their lookup grids read (under the lock: a preload in progress is
    waited for, not repeated)."""
    with _LOADING:
        cs, rs = borders.countries(), borders.admin1()
        cs.grid, rs.grid  # noqa: B018 - read the lookup grids now, not at the first point
        return cs, rs


def _load_all() -> None:
    _borders()
    _towns().unit  # noqa: B018


def preload() -> threading.Thread:
    """Read the borders, their lookup grids and the towns in a background thread (returned, started):
    the first reverse geocoding then finds them in memory, or waits for the thread to finish them.
    Errors are left for that first call to raise."""
    def work():
        try:
            _load_all()
        except Exception:  # noqa: BLE001 - the first real lookup raises it with its message
            pass

    thread = threading.Thread(target=work, name="geoscope-places-preload", daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------------------------
# Vectorised lookups


def _latlon(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = validate_latlon(lat, lon, "reverse geocoding")
    return lat.ravel(), lon.ravel()


def _country_index(lat, lon) -> np.ndarray:
    return borders.countries().locate(lat, lon)


def _region_index(lat, lon, country_idx: np.ndarray) -> np.ndarray:
    """Admin-1 polygon of each point, always one of the country found (-1 at sea or where none)."""
    codes = np.asarray(borders.countries().codes + [""], dtype=object)[country_idx]
    return borders.admin1().locate_within(lat, lon, codes)


def country_codes(lat, lon) -> np.ndarray:
    """ISO 3166-1 alpha-2 code of the country containing each point, "" at sea (shaped like the input)."""
    lat, lon = validate_latlon(lat, lon, "reverse geocoding")
    return np.asarray(borders.countries().codes + [""])[_country_index(lat, lon)]


def region_codes(lat, lon) -> np.ndarray:
    """First-level region of each point: its ISO 3166-2 code ("FI-11"), or Natural Earth's own
    adm1_code where the region has no ISO code; "" at sea or where the country has no regions."""
    lat, lon = validate_latlon(lat, lon, "reverse geocoding")
    idx = _region_index(lat, lon, _country_index(lat, lon))
    return np.asarray(borders.admin1().codes + [""])[idx]


def nearest_towns(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Name of the nearest GeoNames populated place to each point and its distance in km."""
    lat, lon = _latlon(lat, lon)
    towns = _towns()
    idx, km = towns.nearest(lat, lon)
    return towns.name[idx], km


def reverse_geocode(lat, lon) -> list[Place]:
    """What is at each point: country, region, nearest town with its distance, or at sea."""
    lat, lon = _latlon(lat, lon)
    (cs, rs), towns = _borders(), _towns()
    ci = _country_index(lat, lon)
    ri = _region_index(lat, lon, ci)
    ti, km = towns.nearest(lat, lon)
    out = []
    for c, r, t, d in zip(ci.tolist(), ri.tolist(), ti.tolist(), km.tolist()):
        out.append(Place(
            country_code=cs.codes[c] if c >= 0 else None,
            country=cs.names[c] if c >= 0 else None,
            region=rs.names[r] if r >= 0 else None,
            region_code=rs.codes[r] if r >= 0 else None,
            town=str(towns.name[t]),
            town_km=round(float(d), 3),
            at_sea=c < 0,
        ))
    return out


def place_at(lat: float, lon: float) -> Place:
    """:func:`reverse_geocode` for one point."""
    if np.ndim(lat) or np.ndim(lon):
        raise InputError("place_at takes one latitude and one longitude; use reverse_geocode for arrays")
    return reverse_geocode([lat], [lon])[0]


# ----------------------------------------------------------------------------------------------
# Name lists (zero-shot prompts, pickers)


def _country_code(code: str, what: str = "country_code") -> str:
    cc = str(code).strip().upper()
    known = set(borders.countries().codes) | set(borders.admin1().parent_codes) | set(_towns().country_code.tolist())
    if cc not in known:
        raise InputError(f"{what} {code!r} is not an ISO 3166-1 alpha-2 code of a known country")
    return cc


def list_countries() -> list[tuple[str, str]]:
    """(ISO alpha-2 code, name) of every country with borders, sorted by name."""
    cs = borders.countries()
    return sorted(zip(cs.codes, cs.names), key=lambda cn: cn[1])


def list_regions(country_code: str) -> list[tuple[str, str]]:
    """(region code, name) of the first-level regions of one country, sorted by name."""
    cc = _country_code(country_code)
    rs = borders.admin1()
    return sorted(((c, n) for c, n, p in zip(rs.codes, rs.names, rs.parent_codes) if p == cc), key=lambda cn: cn[1])


def list_towns(country_code: str | None = None, region_code: str | None = None,
               min_population: int = MIN_TOWN_POPULATION, limit: int | None = None) -> list[dict]:
    """Populated places, most populous first: dicts with name, lat, lon, population, country_code,
    region_code. Filter by country (ISO alpha-2), region (a code from :func:`list_regions`) and
    population; ``limit`` keeps the first so many."""
    towns = _towns()
    keep = towns.population >= int(min_population)
    if country_code is not None:
        keep &= towns.country_code == _country_code(country_code)
    if region_code is not None:
        rc = borders.admin1().codes[borders.admin1().index(region_code)]
        keep &= towns.region_code == rc
    if limit is not None and limit < 0:
        raise InputError(f"limit must be 0 or more, got {limit}")
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-towns.population[idx], kind="stable")][:limit]
    return [
        {"name": str(towns.name[i]), "lat": round(float(towns.lat[i]), 5), "lon": round(float(towns.lon[i]), 5),
         "population": int(towns.population[i]), "country_code": str(towns.country_code[i]),
         "region_code": str(towns.region_code[i])}
        for i in idx.tolist()
    ]
