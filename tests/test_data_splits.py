"""data/splits: deterministic random splits, and spatial splits that keep cells whole behind a buffer."""

from __future__ import annotations

import numpy as np
import pytest

from _imagefixtures import random_points
from geoscope.data.dataset import Dataset
from geoscope.data.samples import GeoSample
from geoscope.data.splits import spatial_groups, split_dataset
from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km


def _located_dataset(n=600, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    # clusters of photos around 30 towns, a few km apart inside each
    centres = random_points(120, seed=seed + 1, bbox=(-50, -170, 65, 170))
    samples = []
    for i in range(n):
        c = centres[i % 120]
        samples.append(GeoSample(f"p{i:05d}", f"/nowhere/p{i}.jpg", c[0] + rng.normal(0, 0.05),
                                 c[1] + rng.normal(0, 0.05)))
    return Dataset.from_samples(samples)


def test_random_split_is_deterministic_exact_and_order_free():
    ds = _located_dataset()
    a = split_dataset(ds, (0.8, 0.1, 0.1), seed=7)
    assert {k: len(v) for k, v in a.items()} == {"train": 480, "val": 60, "test": 60}
    ids = [set(v.ids) for v in a.values()]
    assert set().union(*ids) == set(ds.ids) and sum(len(x) for x in ids) == len(ds)
    shuffled = ds.subset(np.random.default_rng(1).permutation(len(ds)))
    b = split_dataset(shuffled, (0.8, 0.1, 0.1), seed=7)
    assert all(set(a[k].ids) == set(b[k].ids) for k in a)
    c = split_dataset(ds, (0.8, 0.1, 0.1), seed=8)
    assert set(c["test"].ids) != set(a["test"].ids)
    assert set(split_dataset(ds, {"fit": 1, "check": 1})) == {"fit", "check"}


def test_spatial_split_keeps_cells_whole_and_respects_the_buffer():
    ds = _located_dataset()
    sp = split_dataset(ds, (0.7, 0.15, 0.15), method="spatial", cell_km=50, buffer_km=100, seed=3)
    cells = {name: set(spatial_groups(part.lat, part.lon, 50)) for name, part in sp.items()}
    assert not cells["train"] & cells["test"] and not cells["train"] & cells["val"]
    held = np.concatenate([sp["val"].lat, sp["test"].lat]), np.concatenate([sp["val"].lon, sp["test"].lon])
    d = haversine_km(sp["train"].lat[:, None], sp["train"].lon[:, None], held[0][None], held[1][None])
    assert d.min() >= 100 and sp.min_distance_km == pytest.approx(d.min(), rel=1e-6)
    total = sum(len(v) for v in sp.values()) + len(sp.dropped)
    assert total == len(ds)
    assert 0.5 < len(sp["train"]) / len(ds) < 0.85 and len(sp["test"]) > 0
    # same answer twice; and a random split of the same clustered data is NOT separated
    again = split_dataset(ds, (0.7, 0.15, 0.15), method="spatial", cell_km=50, buffer_km=100, seed=3)
    assert set(again["test"].ids) == set(sp["test"].ids)
    rnd = split_dataset(ds, (0.7, 0.15, 0.15), seed=3)
    d = haversine_km(rnd["train"].lat[:, None], rnd["train"].lon[:, None], rnd["test"].lat[None], rnd["test"].lon[None])
    assert d.min() < 20


def test_spatial_split_sets_unlocated_samples_aside_and_checks_arguments():
    ds = Dataset.from_samples([GeoSample("a", "a.jpg", 1.0, 2.0), GeoSample("b", "b.jpg"),
                               GeoSample("c", "c.jpg", 50.0, 8.0)])
    sp = split_dataset(ds, (0.5, 0.5), method="spatial", cell_km=10)
    assert sp.unlocated.ids == ["b"] and sum(len(v) for v in sp.values()) == 2
    with pytest.raises(InputError, match="split method"):
        split_dataset(ds, method="kmeans")
    with pytest.raises(InputError, match="fractions"):
        split_dataset(ds, (0.5, -1))
    with pytest.raises(InputError, match="cell_km"):
        split_dataset(ds, method="spatial", cell_km=0)


def test_spatial_groups_are_about_the_requested_size():
    lat = np.array([0.0, 0.0, 0.0, 60.0, 60.0])
    lon = np.array([0.01, 0.05, 0.5, 0.01, 0.9])  # 0.05 deg ~ 5.6 km; 0.5 deg ~ 56 km (28 km at 60N)
    g = spatial_groups(lat, lon, 20.0)
    assert g[0] == g[1] and g[0] != g[2] and g[3] != g[4]
    assert len(set(spatial_groups(np.array([89.9, 89.9]), np.array([-170.0, 170.0]), 50.0))) == 1
