"""Gallery search: exact top-k, the HNSW index (recall, files, rebuild), and retrieval heads switching to it
above the size threshold; the retrieval head served as numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscope.heads.ann import AnnIndex, cached_index, exact_search
from geoscope.heads.gallery_search import ANN_SUPPORT, GallerySearch, ServedRetrievalHead
from geoscope.heads.retrieval import RetrievalHead

pytest.importorskip("faiss")


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _places(n, seed=0, dim=32):
    """Unit vectors with neighbourhoods, like a GPS gallery's embeddings: random places on the sphere
    through random Fourier features."""
    rng = np.random.default_rng(seed)
    p = _unit(rng.standard_normal((n, 3)))
    w = np.random.default_rng(99).standard_normal((3, dim)).astype(np.float32) * 3
    return _unit(np.cos(p @ w + 0.5))


def test_exact_search_is_the_brute_force_top_k():
    rng = np.random.default_rng(0)
    g, q = _unit(rng.standard_normal((1000, 16))), _unit(rng.standard_normal((7, 16)))
    scores, idx = exact_search(g, q, 10, chunk=128)  # several chunks
    want = np.argsort(-(q @ g.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ g.T, want, 1), rtol=1e-6)


def test_hnsw_finds_the_exact_neighbours_and_is_kept_in_a_file(tmp_path):
    g, q = _places(20_000), _places(50, seed=1)
    path = tmp_path / "index" / "g.faiss"
    index = cached_index(g, path)
    assert path.is_file() and (index.n, index.dim) == (20_000, 32)
    _, truth = exact_search(g, q, 10)
    _, found = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())])
    assert recall >= 0.99
    again = AnnIndex.load(path, n=len(g), dim=32)
    np.testing.assert_array_equal(again.search(q, 10)[1], found)
    assert AnnIndex.load(path, n=len(g) + 1) is None  # another gallery: not this file
    path.write_bytes(b"damaged")
    assert AnnIndex.load(path) is None
    rebuilt = cached_index(g, path)  # rebuilt, not trusted
    assert rebuilt.n == len(g) and AnnIndex.load(path) is not None


def test_gallery_search_exact_and_ann_agree_on_the_candidates(tmp_path):
    g = _places(3000)
    coords = np.stack([np.linspace(-60, 60, 3000), np.linspace(-170, 170, 3000)], 1)
    q = _places(5, seed=3)
    exact = GallerySearch(coords, g, 50.0, search="exact").predict_features(q, 5)
    ann = GallerySearch(coords, g, 50.0, tmp_path / "i.faiss", search="ann").predict_features(q, 5)
    np.testing.assert_array_equal(ann.extra["gallery_index"], exact.extra["gallery_index"])
    assert exact.support_probs.shape == (5, 3000) and np.allclose(exact.support_probs.sum(1), 1)
    # the ANN softmax runs over the ANN_SUPPORT nearest entries: the same order, a bit more mass each
    assert ann.support_probs.shape == (5, ANN_SUPPORT) and ann.support.shape == (5, ANN_SUPPORT, 2)
    assert np.all(ann.scores >= exact.scores * (1 - 1e-5)) and np.allclose(ann.scores, exact.scores, rtol=0.05)
    np.testing.assert_allclose(ann.coords, exact.coords)


def _head(n_gallery=600, seed=0):
    torch.manual_seed(seed)
    head = RetrievalHead(12, hidden_dims=(16,), location_encoder={"sigmas": [1.0, 8.0], "n_freq": 8, "hidden": 16,
                                                                    "depth": 1, "out_dim": 16})
    rng = np.random.default_rng(seed)
    head.set_gallery(np.stack([rng.uniform(-80, 80, n_gallery), rng.uniform(-180, 180, n_gallery)], 1))
    with torch.no_grad():
        head.norm.mean.normal_()
    return head.eval()


def test_retrieval_head_uses_the_index_above_the_threshold(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path))
    head = _head()
    emb = np.random.default_rng(1).standard_normal((4, 12)).astype(np.float32)
    exact = head.predict(emb, top_k=5)
    assert exact.support_probs.shape == (4, 600)  # below the threshold: the full softmax
    monkeypatch.setenv("GEOSCOPE_ANN_THRESHOLD", "500")
    head._drop_cache()
    ann = head.predict(emb, top_k=5)
    assert ann.support_probs.shape == (4, min(ANN_SUPPORT, 600))
    assert list((tmp_path / "gallery-index").glob("*.faiss"))  # built once, kept in the cache
    np.testing.assert_array_equal(ann.extra["gallery_index"][:, 0], exact.extra["gallery_index"][:, 0])
    head.search = "exact"  # the full softmax whatever the size
    assert head.predict(emb, top_k=5).support_probs.shape == (4, 600)


def test_served_head_predicts_what_the_torch_head_does(tmp_path):
    head = _head()
    emb = np.random.default_rng(2).standard_normal((3, 12)).astype(np.float32)
    want = head.predict(emb, top_k=4)
    served = head.served()
    got = served.predict(emb, top_k=4)
    np.testing.assert_array_equal(got.extra["gallery_index"], want.extra["gallery_index"])
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4)
    path = served.save(tmp_path / "served.safetensors")
    back = ServedRetrievalHead.load(path)
    np.testing.assert_allclose(back.predict(emb, top_k=4).scores, got.scores, rtol=1e-6)
    assert ServedRetrievalHead.load(tmp_path / "missing.safetensors") is None
    with pytest.raises(Exception, match="expects 12-dimensional embeddings"):
        served.predict(np.zeros((1, 5), np.float32))


def test_repair_links_an_entry_the_graph_cannot_reach(tmp_path, monkeypatch):
    import faiss

    from geoscope.heads.ann import REPAIRED, _level0, index_file_name, repair

    g = _places(3000, seed=3)
    index = faiss.IndexHNSWFlat(g.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.add(g)
    assert repair(index, g) == (0, 0)  # a healthy graph is left as it is
    levels = faiss.vector_to_array(index.hnsw.levels)
    m = int(np.flatnonzero(levels == 1)[0])  # an entry on the bottom level only
    table, first, width = _level0(index)
    rows = first[:, None] + np.arange(width)[None, :]
    links = table[rows]
    links[links == m] = -1  # nothing links to m any more: no search can reach it
    links = np.sort(links, axis=1)[:, ::-1]  # free slots (-1) last, as faiss keeps them
    table[rows] = links
    faiss.copy_array_to_vector(table, index.hnsw.neighbors)
    params = faiss.SearchParametersHNSW()
    params.efSearch = 256
    assert index.search(g[m : m + 1], 1, params=params)[1][0, 0] != m
    unreachable, added = repair(index, g)
    assert unreachable >= 1 and added >= 1
    assert index.search(g[m : m + 1], 1, params=params)[1][0, 0] == m
    # an index file from before repairs is read, repaired and kept under the new name, not rebuilt
    new = tmp_path / index_file_name("gallery")
    old = new.with_name(new.name.replace(f"-{REPAIRED}", ""))
    faiss.write_index(index, str(old))

    def no_build(*a, **k):
        raise AssertionError("rebuilt instead of repaired")

    monkeypatch.setattr(AnnIndex, "build", no_build)
    assert cached_index(g, new).n == len(g) and new.is_file()


def test_served_arrays_are_mapped_from_the_file_and_a_damaged_file_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    from geoscope.heads.gallery_search import map_safetensors

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1.5], np.float64),
              "c": np.zeros((0, 2), np.float32), "d": np.array([7, -8], np.int64)}
    path = tmp_path / "t.safetensors"
    save_file(arrays, str(path), metadata={"format": "x"})
    mapped, read = map_safetensors(path), load_file(str(path))
    assert sorted(mapped) == sorted(read) == sorted(arrays)
    for k in arrays:
        assert mapped[k].dtype == read[k].dtype and mapped[k].shape == read[k].shape
        np.testing.assert_array_equal(mapped[k], read[k])
    assert not mapped["a"].flags.writeable  # mapped read-only, never written back
    path.write_bytes(path.read_bytes()[:-8])  # cut short: the last tensor no longer fits
    with pytest.raises(ValueError, match="does not fit"):
        map_safetensors(path)
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a safetensors file"):
        map_safetensors(path)
    assert ServedRetrievalHead.load(path) is None
