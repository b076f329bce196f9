"""Write cells files with the pre-split geo/cells.py (commit 542649b) plus what that code answered.

Run at that commit: ``PYTHONPATH=src python3 tests/data/cells_v1/make_fixtures_542649b.py tests/data/cells_v1``.
It does not run against later versions (``Geocells.grid`` there returns a hierarchy)."""
import json
import sys
from pathlib import Path

import numpy as np
from shapely.geometry import box, shape

import geoscope.geo.borders as borders_mod
from geoscope.geo.borders import BorderSet
from geoscope.geo.cells import CellHierarchy, Geocells, save_cells

out = Path(sys.argv[1])
MAP = [("A-1", "A", box(0, 0, 10, 10)), ("A-2", "A", box(10, 0, 20, 10)), ("A-3", "A", box(0, 10, 20, 20)),
       ("B-1", "B", box(20, 0, 30, 20)), ("B-2", "B", box(40, 0, 42, 2)), ("C-1", "C", box(-30, 0, -20, 10))]
codes, parents, geoms = zip(*MAP)
bs = BorderSet("admin1", codes, codes, parents, geoms, grid_res=1.0)
borders_mod.admin1 = lambda: bs
rng = np.random.default_rng(42)
# training points: two clusters and a spread, plus points on the synthetic map
lat = np.concatenate([rng.normal(60.2, 0.3, 150), rng.normal(-33.9, 0.3, 80), rng.uniform(-50, 70, 70)])
lon = np.concatenate([rng.normal(24.9, 0.5, 150), rng.normal(151.2, 0.5, 80), rng.uniform(-180, 180, 70)])
alat = np.concatenate([rng.uniform(0, 10, 400), rng.uniform(10, 20, 60), rng.uniform(0, 20, 10), rng.uniform(0, 2, 5)])
alon = np.concatenate([rng.uniform(0, 10, 400), rng.uniform(0, 20, 60), rng.uniform(20, 30, 10), rng.uniform(40, 42, 5)])

grid = Geocells.grid((59.0, 19.0, 70.0, 32.0), 4, 3).fit_centroids(lat, lon)
hier = CellHierarchy.adaptive(lat, lon, 5, [100, 30])
admin = Geocells.admin(alat, alon, 20, 150)
save_cells(grid, out / "grid.json")
save_cells(hier, out / "adaptive.json")
save_cells(admin, out / "admin.json")
# an old single-partition file (no "levels" key): what Geocells.to_dict wrote on its own
(out / "grid_partition.json").write_text(json.dumps(Geocells.grid((0, 0, 10, 20), 2, 4).to_dict()))

plat = np.concatenate([rng.uniform(-90, 90, 150), rng.uniform(58, 71, 50), rng.uniform(-2, 22, 50)])
plon = np.concatenate([rng.uniform(-180, 180, 150), rng.uniform(18, 33, 50), rng.uniform(-32, 44, 50)])

def answers(c):
    return {"assign": c.assign(plat, plon).tolist(), "assign_nearest": c.assign(plat, plon, nearest=True).tolist(),
            "areas_km2": c.areas_km2().tolist(),
            "polygon_area": [shape(c.polygon(i)).area for i in range(len(c))],
            "polygon_bounds": [list(shape(c.polygon(i)).bounds) for i in range(len(c))]}

expected = {"probe_lat": plat.tolist(), "probe_lon": plon.tolist(),
            "grid": answers(grid), "admin": answers(admin),
            "adaptive": [answers(lv) for lv in hier.levels],
            "grid_partition": answers(Geocells.grid((0, 0, 10, 20), 2, 4))}
(out / "expected.json").write_text(json.dumps(expected))
print(len(grid), [len(lv) for lv in hier.levels], len(admin))
