"""Geocells: partitions of the Earth into classes for classification heads.

Callers hold a :class:`CellHierarchy` (``hierarchy.py``): partitions from coarse to fine with each
cell's parent, which answers for its finest level what one partition answers (``len``, ``assign``,
``centroids``, ``polygon``, ...). A single partition is a hierarchy of one level. The builders:

* ``CellHierarchy.grid(bbox, rows, cols)`` -- ``rows x cols`` equal steps of latitude and longitude
  over a bounding box (``grid.py``, :class:`GridCells`).
* ``CellHierarchy.adaptive(lat, lon, min_points, max_points)`` -- an equal-area quadtree split until no
  cell holds more than ``max_points`` training points, then small cells merged; one level per value
  when ``max_points`` is a list (``adaptive.py``, :class:`AdaptiveCells`; the tree is ``quadtree.py``,
  the merge ``merge.py``).
* ``CellHierarchy.admin(lat, lon, min_points, max_points)`` -- first-level administrative regions,
  small ones merged within their country, big ones split with the quadtree (``admin.py``,
  :class:`AdminCells`), as in PIGEON's semantic geocells.

Each level is a :class:`Partition` (``base.py``: what every layout shares). ``load_cells`` /
``save_cells`` read and write the JSON file (``io.py`` has the format). ``Geocells`` is the older name
of :class:`CellHierarchy` (``Geocells.grid(...)`` etc. still build one).
"""

from geoscope.geo.cells.adaptive import AdaptiveCells, QuadtreeCells
from geoscope.geo.cells.admin import AdminCells
from geoscope.geo.cells.base import Partition
from geoscope.geo.cells.grid import GridCells
from geoscope.geo.cells.hierarchy import CellHierarchy, CellsLike, as_hierarchy, load_cells, save_cells
from geoscope.geo.cells.io import FORMAT, FORMAT_VERSION
from geoscope.geo.cells.quadtree import EARTH_AREA_KM2, MAX_LEVEL, quadtree_keys

#: The older name of :class:`CellHierarchy`, kept so ``Geocells.grid(...)`` and friends keep working.
Geocells = CellHierarchy

__all__ = [
    "CellHierarchy", "Geocells", "CellsLike", "as_hierarchy", "load_cells", "save_cells",
    "Partition", "GridCells", "AdaptiveCells", "AdminCells", "QuadtreeCells",
    "FORMAT", "FORMAT_VERSION", "EARTH_AREA_KM2", "MAX_LEVEL", "quadtree_keys",
]
