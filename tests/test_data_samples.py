"""data/samples: a GeoSample is a small picklable reference that worker processes read by itself."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from _datasetfixtures import make_shards
from _imagefixtures import jpeg_bytes
from geoscope.data.dataset import open_dataset
from geoscope.data.images import ImageError
from geoscope.data.samples import GeoSample, load_sample_image, read_sample_bytes, split_source


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "shards")


def test_shard_samples_read_by_offset_in_other_processes(shards):
    _, paths, pts = shards
    ds = open_dataset(paths[0], progress=False)
    samples = list(ds)
    blob = pickle.dumps(samples[0])
    assert len(blob) < 600  # a reference, not the bytes
    assert read_sample_bytes(samples[2]) == jpeg_bytes(*pts[2])
    with ProcessPoolExecutor(2) as pool:
        images = list(pool.map(load_sample_image, samples))
    assert [im.size for im in images] == [(64, 48)] * 5
    # without an offset, the member is found by name
    by_name = GeoSample(samples[3].id, samples[3].source)
    assert read_sample_bytes(by_name) == read_sample_bytes(samples[3])
    assert ds.load_image(samples[1]).mode == "RGB"


def test_spawned_workers_unpickle_samples_and_call_the_loaders(shards):
    """A spawned worker starts from a fresh interpreter: it must find GeoSample and the loader by import."""
    _, paths, pts = shards
    samples = list(open_dataset(paths[0], progress=False))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        images = list(pool.map(load_sample_image, samples[:2]))
        data = list(pool.map(read_sample_bytes, samples[2:4]))
    assert [im.size for im in images] == [(64, 48)] * 2 and all(im.mode == "RGB" for im in images)
    assert data == [jpeg_bytes(*pts[2]), jpeg_bytes(*pts[3])]


def test_split_source_and_missing_members(shards, tmp_path):
    _, paths, _ = shards
    assert split_source(f"{paths[0]}::s000.jpg") == (str(paths[0]), "s000.jpg")
    assert split_source("photo::1.jpg") == ("photo::1.jpg", None)  # not a shard: a plain (odd) file name
    with pytest.raises(ImageError, match="no member 'nope.jpg' in the shard"):
        read_sample_bytes(GeoSample("x", f"{paths[0]}::nope.jpg"))
    with pytest.raises(ImageError, match="shard .*gone.tar not found"):
        read_sample_bytes(GeoSample("x", f"{tmp_path / 'gone.tar'}::a.jpg"))
    with pytest.raises(ImageError, match="file not found"):
        load_sample_image(GeoSample("x", str(tmp_path / "gone.jpg")))
