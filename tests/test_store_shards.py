"""The sharded store: many writers, one manifest, each sample once; old stores open; locks and encoders."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _imagefixtures import synthetic_image
from geoscope.errors import InputError
from geoscope.store import EmbeddingStore, ShardedArray, StoreLock, embed_dataset
from geoscope.store.layout import manifest, shard_dir
from geoscope.store.shard import ShardWriter, finish_store, sample_record

DATA = Path(__file__).parent / "data"
F16 = dict(rtol=2e-3, atol=2e-3)
DIM = 6


def _rec(pos):
    return sample_record(pos, f"id{pos}", pos / 2, -pos / 3, f"/img/{pos}.jpg", {"scene": "urban" if pos % 2 else "natural"})


def _vec(pos):
    """A known embedding for sample ``pos`` (exact in float16)."""
    return np.arange(DIM, dtype=np.float32) / 8 + pos


def _write(out, name, positions, failed=(), batch=2, close=True):
    """One writer's shard holding ``positions`` (embedded) and ``failed`` (unreadable), in batches."""
    w = ShardWriter(out, name, "enc", DIM)
    todo = sorted(list(positions) + list(failed))
    for s in range(0, len(todo), batch):
        chunk = todo[s: s + batch]
        reasons = ["broken" if p in failed else None for p in chunk]
        ok = [p for p in chunk if p not in failed]
        w.commit([_rec(p) for p in chunk], reasons, np.stack([_vec(p) for p in ok]) if ok else None)
    if close:
        w.close()
    return w


def _start(out):
    from geoscope.atomic import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "store.json", manifest("enc", DIM, complete=False))


def test_store_written_before_shards_still_opens(tiny_clip):
    """tests/data/store_v1 was written by the single-file store code (format version 1)."""
    state = json.loads((DATA / "store_v1" / "store.json").read_text())
    assert state["version"] == 1 and "shards" not in state
    store = EmbeddingStore.open(DATA / "store_v1")
    assert (store.encoder, store.dim, len(store), len(store.shards)) == ("tiny-clip", 16, 4, 1)
    assert list(store.ids) == ["old0", "old1", "old2", "old3"]
    pts = [(10.5, 20.25), (-33.9, 151.2), (48.85, 2.35), (0.0, -75.0)]
    np.testing.assert_allclose(store.coords, pts)
    assert list(store.errors["id"]) == ["broken"] and "not a recognised image" in store.errors["reason"][0]
    images = [synthetic_image(a, o, size=(40 + 4 * i, 32)) for i, (a, o) in enumerate(pts)]
    np.testing.assert_allclose(store.embeddings.astype(np.float32), tiny_clip.encode_images(images), **F16)
    batches = list(store.iter_batches(3))
    assert [len(b) for b in batches] == [3, 1] and batches[0].embeddings.dtype == np.float32


def test_old_store_returned_unchanged_by_embed(tiny_clip, tmp_path, monkeypatch):
    shutil.copytree(DATA / "store_v1", tmp_path / "old")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    monkeypatch.setattr(tiny_clip, "name", "tiny-clip")
    store = embed_dataset([], tiny_clip, tmp_path / "old", progress=False)
    assert len(store) == 4
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before


def test_shards_union_in_stable_order_and_duplicates_kept_once(tmp_path):
    out = tmp_path / "s"
    _start(out)
    _write(out, ".", [0, 1, 2, 3])
    a, b = "shards/a", "shards/b"
    _write(out, a, [4, 5, 6, 7, 8], failed=[9])
    # a retried batch: 7 and 8 were committed by shard a's writer before it died, and again here
    _write(out, b, [7, 8, 10, 11], failed=[12])
    # an error in one shard for a sample another shard embedded counts as embedded
    _write(out, "shards/c", [], failed=[3])
    finish_store(out, "enc", DIM)
    store = EmbeddingStore.open(out)
    assert [s.name for s in store.shards] == [".", a, b]  # the shard with nothing kept is gone
    assert not (out / "shards" / "c").exists()
    ids = list(store.ids)
    assert ids == [f"id{p}" for p in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11)]
    assert list(store.meta["pos"]) == [int(i[2:]) for i in ids]
    assert list(store.errors["id"]) == ["id9", "id12"]
    emb = store.embeddings
    assert isinstance(emb, ShardedArray) and emb.shape == (11, DIM) and emb.dtype == np.float16
    expected = np.stack([_vec(int(i[2:])) for i in ids])
    np.testing.assert_array_equal(np.asarray(emb, dtype=np.float32), expected)
    # numpy-style indexing across shard boundaries
    np.testing.assert_array_equal(emb[3:9], expected[3:9].astype(np.float16))
    np.testing.assert_array_equal(emb[[10, 0, 4, 4]], expected[[10, 0, 4, 4]].astype(np.float16))
    np.testing.assert_array_equal(emb[-1], expected[-1].astype(np.float16))
    mask = np.arange(11) % 3 == 0
    np.testing.assert_array_equal(emb[mask, 2], expected[mask, 2].astype(np.float16))
    assert list(store.meta["scene"]) == ["urban" if int(i[2:]) % 2 else "natural" for i in ids]
    state = json.loads((out / "store.json").read_text())
    assert state["complete"] and (state["n_ok"], state["n_error"]) == (11, 2)
    assert [s["name"] for s in state["shards"]] == [".", a, b]
    assert not list(out.rglob("progress.jsonl"))
    # the shard holding the duplicates was compacted: its file has exactly its kept rows
    assert np.load(out / b / "embeddings.npy").shape == (2, DIM)
    # opened again: the same order
    assert list(EmbeddingStore.open(out).ids) == ids


def test_iter_batches_streams_rows_with_coordinates(tmp_path):
    out = tmp_path / "s"
    _start(out)
    _write(out, "shards/a", range(0, 7))
    _write(out, "shards/b", range(7, 20))
    finish_store(out, "enc", DIM)
    store = EmbeddingStore.open(out)
    full = np.asarray(store.embeddings, dtype=np.float32)
    seen = []
    for batch in store.iter_batches(6, shuffle_seed=3):
        assert batch.embeddings.dtype == np.float32 and batch.embeddings.shape[1] == DIM and len(batch) <= 6
        np.testing.assert_array_equal(batch.embeddings, full[batch.rows])
        np.testing.assert_array_equal(batch.lat, store.lat[batch.rows])
        np.testing.assert_array_equal(batch.lon, store.lon[batch.rows])
        seen.extend(batch.rows.tolist())
    assert sorted(seen) == list(range(20)) and seen != list(range(20))
    again = [r for b in store.iter_batches(6, shuffle_seed=3) for r in b.rows.tolist()]
    assert again == seen  # the same seed, the same order
    assert [r for b in store.iter_batches(6, shuffle_seed=4) for r in b.rows.tolist()] != seen
    subset = np.array([15, 2, 9, 11, 0])
    got = list(store.iter_batches(2, rows=subset, drop_last=True))
    assert [b.rows.tolist() for b in got] == [[15, 2], [9, 11]]
    np.testing.assert_array_equal(got[0].embeddings, full[[15, 2]])
    with pytest.raises(InputError, match="rows must be"):
        list(store.iter_batches(2, rows=[20]))


def test_unfinished_shards_are_resumed_by_a_single_process(tiny_clip, tmp_path):
    """Shards a killed Ray job left behind count as done; embed_dataset embeds the rest and finishes."""
    items = [(f"m{i}", synthetic_image(i * 7.0, -i * 11.0, size=(32, 32)), i * 7.0, -i * 11.0) for i in range(9)]
    direct = tiny_clip.encode_images([i[1] for i in items])
    out = tmp_path / "s"
    out.mkdir()
    from geoscope.atomic import write_json

    write_json(out / "store.json", manifest(tiny_clip.name, tiny_clip.dim, complete=False))
    for name, positions in (("shards/x", [1, 4]), ("shards/y", [6, 7, 8])):
        w = ShardWriter(out, name, tiny_clip.name, tiny_clip.dim)
        w.commit([sample_record(p, items[p][0], items[p][2], items[p][3], "<memory>") for p in positions],
                 [None] * len(positions), direct[positions])
        w.close()
    journal = out / "shards" / "y" / "progress.jsonl"
    journal.write_bytes(journal.read_bytes()[:-15])  # the writer was killed mid-line: 8 is not committed
    store = embed_dataset(items, tiny_clip, out, batch_size=2, workers=0, progress=False)
    assert sorted(store.ids) == sorted(i[0] for i in items) and len(store) == 9
    assert [s.name for s in store.shards] == [".", "shards/x", "shards/y"]
    order = [int(i[1:]) for i in store.ids]
    np.testing.assert_allclose(np.asarray(store.embeddings, dtype=np.float32), direct[order], **F16)


def test_mixed_encoders_are_refused(tmp_path):
    out = tmp_path / "s"
    _start(out)
    _write(out, "shards/a", [0, 1])
    with pytest.raises(InputError, match="cannot mix encoders"):
        ShardWriter(out, "shards/a", "other-encoder", DIM)
    other = ShardWriter(out, "shards/b", "other-encoder", DIM)
    other.commit([_rec(2)], [None], _vec(2)[None])
    other.close()
    with pytest.raises(InputError, match="cannot mix encoders"):
        finish_store(out, "enc", DIM)
    shutil.rmtree(out / "shards" / "b")
    finish_store(out, "enc", DIM)
    assert len(EmbeddingStore.open(out)) == 2
    # a complete store whose shard was swapped for one of another encoder
    state = json.loads((out / "shards" / "a" / "shard.json").read_text())
    (out / "shards" / "a" / "shard.json").write_text(json.dumps({**state, "encoder": "clip-vit-l14"}))
    with pytest.raises(InputError, match="'clip-vit-l14'.*cannot mix encoders"):
        EmbeddingStore.open(out)


def test_a_store_is_written_by_one_job_at_a_time(tiny_clip, tmp_path):
    items = [(f"m{i}", synthetic_image(i, i, size=(32, 32)), float(i), float(i)) for i in range(3)]
    out = tmp_path / "s"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "store.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                    "started": "2026-01-01T00:00:00Z"}))
        with pytest.raises(InputError, match=rf"being written by another job \(pid {sleeper.pid} on host"):
            embed_dataset(items, tiny_clip, out, workers=0, progress=False)
        assert not (out / "store.json").exists()  # refused before touching anything
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same lock, its job gone: stale, taken over
    store = embed_dataset(items, tiny_clip, out, workers=0, progress=False)
    assert len(store) == 3 and not (out / "store.lock").exists()
    # a lock from another machine cannot be checked: refused, naming it
    (out / "store.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(InputError, match="pid 1 on host elsewhere"):
        embed_dataset(items, tiny_clip, out, overwrite=True, workers=0, progress=False)
    assert len(EmbeddingStore.open(out)) == 3  # --overwrite did not delete under the other job's feet
    # two holders in one process
    (out / "store.lock").unlink()
    with StoreLock(out):
        with pytest.raises(InputError, match="already being written by this process"):
            StoreLock(out).acquire()
    assert not (out / "store.lock").exists()


def test_a_finish_killed_after_its_commit_is_completed_on_the_next_open(tmp_path, monkeypatch):
    out = tmp_path / "s"
    _start(out)
    _write(out, "shards/a", [0, 1, 2])
    _write(out, "shards/b", [2, 3])
    # simulate: shard b's finish wrote its compacted file and committed, then the process died
    d = shard_dir(out, "shards/b")
    from geoscope.store.shard import _finish_shard, read_journal

    recs = read_journal(d / "progress.jsonl")
    state = json.loads((d / "shard.json").read_text())
    real_replace = os.replace
    calls = []

    def dying_replace(src, dst):
        if str(src).endswith("embeddings.npy.new"):
            calls.append(src)
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _finish_shard(out, "shards/b", state, recs, np.array([False, True]), "enc", DIM)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls and (d / "embeddings.npy.new").exists()
    finish_store(out, "enc", DIM)
    store = EmbeddingStore.open(out)
    assert list(store.ids) == ["id0", "id1", "id2", "id3"]
    np.testing.assert_array_equal(np.asarray(store.embeddings, np.float32), np.stack([_vec(p) for p in range(4)]))


def test_unfinished_store_of_the_old_layout_is_refused_clearly(tiny_clip, tmp_path, monkeypatch):
    shutil.copytree(DATA / "store_v1", tmp_path / "old")
    state = json.loads((tmp_path / "old" / "store.json").read_text())
    (tmp_path / "old" / "store.json").write_text(json.dumps({**state, "complete": False}))
    monkeypatch.setattr(tiny_clip, "name", "tiny-clip")
    with pytest.raises(InputError, match="older geoscope.*--overwrite"):
        embed_dataset([], tiny_clip, tmp_path / "old", progress=False)
