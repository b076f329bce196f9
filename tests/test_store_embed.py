"""The embedding store: embed_dataset on folders, GeoSamples and in-memory images; reading it back."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from _imagefixtures import make_geotagged_folder, random_points, synthetic_image
from geoscope.cli import main
from geoscope.encoders import create_encoder
from geoscope.encoders.testing import save_tiny_clip
from geoscope.errors import InputError
from geoscope.store import EmbeddingStore, embed_dataset

F16_TOL = dict(rtol=2e-3, atol=2e-3)  # float16 storage


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return create_encoder(str(save_tiny_clip(tmp_path_factory.mktemp("clip"))))


def _memory_items(n, seed=0):
    return [(f"m{i}", synthetic_image(lat, lon, size=(40 + i, 30)), lat, lon)
            for i, (lat, lon) in enumerate(random_points(n, seed))]


def _scaled_close(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32) / scale, b / scale, **F16_TOL)


def test_in_memory_images_round_trip(tiny, tmp_path):
    items = _memory_items(7)
    store = embed_dataset(items, tiny, tmp_path / "s", batch_size=3, workers=0, progress=False)
    assert isinstance(store.embeddings, np.memmap) and store.embeddings.dtype == np.float16
    assert store.embeddings.shape == (7, tiny.dim) and len(store) == 7
    assert list(store.ids) == [i[0] for i in items]
    np.testing.assert_allclose(store.lat, [i[2] for i in items])
    np.testing.assert_allclose(store.coords[:, 1], [i[3] for i in items])
    _scaled_close(store.embeddings, tiny.encode_images([i[1] for i in items]))
    assert (store.encoder, store.dim) == (tiny.name, tiny.dim)
    assert set(store.meta.columns) >= {"id", "lat", "lon", "source", "status"}
    reopened = EmbeddingStore.open(tmp_path / "s")
    np.testing.assert_array_equal(reopened.embeddings, store.embeddings)
    assert not (tmp_path / "s" / "progress.jsonl").exists()


def test_workers_and_errors_with_geosamples(tiny, tmp_path):
    from geoscope.data.datasets import GeoSample

    pts = make_geotagged_folder(tmp_path / "img", 9, size=(64, 48))
    (tmp_path / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples = [GeoSample(id=f"s{i}", source=str(p), lat=lat, lon=lon) for i, (p, lat, lon) in enumerate(pts)]
    samples.insert(4, GeoSample(id="broken", source=str(tmp_path / "img" / "broken.jpg"), lat=1.0, lon=2.0))
    samples.append(GeoSample(id="missing", source=str(tmp_path / "img" / "nope.jpg"), lat=None, lon=None))
    store = embed_dataset(samples, tiny, tmp_path / "s", batch_size=4, workers=2, progress=False)
    assert list(store.ids) == [f"s{i}" for i in range(9)]
    assert list(store.errors["id"]) == ["broken", "missing"]
    assert all(store.errors["reason"].str.len() > 5)
    csv = pd.read_csv(tmp_path / "s" / "errors.csv")
    assert list(csv.columns) == ["id", "source", "reason"] and len(csv) == 2
    direct = tiny.encode_images([Image.open(p).convert("RGB") for p, _, _ in pts])
    _scaled_close(store.embeddings, direct)
    state = json.loads((tmp_path / "s" / "store.json").read_text())
    assert state["complete"] and (state["n_ok"], state["n_error"]) == (9, 2)


def test_cli_embed_folder_of_geotagged_jpegs_matches_direct_encoder(tmp_path, capsys):
    enc = create_encoder("efficientnet-lite0")
    pts = make_geotagged_folder(tmp_path / "photos", 5, size=(96, 64))
    rc = main(["embed", str(tmp_path / "photos"), "--encoder", "efficientnet-lite0", "-o", str(tmp_path / "st"),
               "--batch-size", "2", "--workers", "2", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_ok"], out["n_error"], out["dim"]) == (5, 0, 1280)
    store = EmbeddingStore.open(tmp_path / "st")
    by_source = {s: i for i, s in enumerate(store.meta["source"])}
    order = [by_source[str(p)] for p, _, _ in pts]
    np.testing.assert_allclose(store.lat[order], [a for _, a, _ in pts], atol=1e-5)  # from EXIF GPS
    np.testing.assert_allclose(store.lon[order], [o for _, _, o in pts], atol=1e-5)
    direct = enc.encode_images([Image.open(p).convert("RGB") for p, _, _ in pts])
    _scaled_close(store.embeddings[order], direct)
    # a second run on a complete store changes nothing
    assert main(["embed", str(tmp_path / "photos"), "-o", str(tmp_path / "st"), "--no-progress"]) == 0


def test_cli_embed_precision_and_local_weights(tmp_path, capsys):
    clip_dir = save_tiny_clip(tmp_path / "clip")
    pts = make_geotagged_folder(tmp_path / "photos", 4, size=(48, 40))
    images = [Image.open(p).convert("RGB") for p, _, _ in pts]
    # a registered CLIP encoder whose weights come from a local folder, run in bfloat16
    rc = main(["embed", str(tmp_path / "photos"), "-e", "clip-vit-b32", "--weights", str(clip_dir),
               "--precision", "bf16", "-o", str(tmp_path / "st"), "--json", "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["encoder"] == "clip-vit-b32"
    store = EmbeddingStore.open(tmp_path / "st")
    by_source = {s: i for i, s in enumerate(store.meta["source"])}
    got = np.asarray(store.embeddings[[by_source[str(p)] for p, _, _ in pts]], dtype=np.float32)
    bf16 = create_encoder(str(clip_dir), dtype="bfloat16").encode_images(images)
    fp32 = create_encoder(str(clip_dir)).encode_images(images)
    _scaled_close(got, bf16)
    assert np.abs(got - bf16).max() < np.abs(got - fp32).max()  # the precision was really applied
    capsys.readouterr()
    rc = main(["embed", str(tmp_path / "photos"), "--weights", str(clip_dir), "-o", str(tmp_path / "s2")])
    err = capsys.readouterr().err
    assert rc == 1 and "--weights applies to CLIP encoders" in err and err.count("\n") == 1


def test_from_arrays_and_open_errors(tmp_path):
    emb = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    store = EmbeddingStore.from_arrays(tmp_path / "a", [1, 2, 3, 4, 5], emb, lat=np.arange(5.0), lon=-np.arange(5.0), encoder="x")
    assert list(store.ids) == ["1", "2", "3", "4", "5"] and store.encoder == "x" and store.dim == 8
    np.testing.assert_allclose(store.embeddings, emb, rtol=1e-3, atol=1e-3)
    with pytest.raises(InputError, match="appears twice"):
        EmbeddingStore.from_arrays(tmp_path / "b", ["a", "a"], emb[:2])
    with pytest.raises(InputError, match="lat has 2 entries"):
        EmbeddingStore.from_arrays(tmp_path / "b", ["a", "b", "c"], emb[:3], lat=[1, 2])
    with pytest.raises(InputError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path / "nothing")


def test_bad_inputs_are_reported_clearly(tiny, tmp_path):
    items = _memory_items(3)
    with pytest.raises(InputError, match="appears twice"):
        embed_dataset(items + [items[0]], tiny, tmp_path / "d", workers=0, progress=False)
    with pytest.raises(InputError, match="input sample 1"):
        embed_dataset([items[0], ("x", 1)], tiny, tmp_path / "e", workers=0, progress=False)
    embed_dataset(items, tiny, tmp_path / "f", workers=0, progress=False)
    other = create_encoder("efficientnet-lite0")
    with pytest.raises(InputError, match="--overwrite"):
        embed_dataset(items, other, tmp_path / "f", workers=0, progress=False)


def test_incomplete_store_cannot_be_opened_and_different_data_is_refused(tiny, tmp_path):
    items = _memory_items(6)

    class Boom(Exception):
        pass

    def failing():
        yield from items[:4]
        raise Boom

    with pytest.raises(Boom):
        embed_dataset(failing(), tiny, tmp_path / "s", batch_size=2, workers=0, progress=False)
    with pytest.raises(InputError, match="incomplete"):
        EmbeddingStore.open(tmp_path / "s")
    renamed = [("z" + i[0],) + i[1:] for i in items]
    with pytest.raises(InputError, match="different data"):
        embed_dataset(renamed, tiny, tmp_path / "s", workers=0, progress=False)
    store = embed_dataset(items, tiny, tmp_path / "s", batch_size=2, workers=0, progress=False)
    assert list(store.ids) == [i[0] for i in items]
    _scaled_close(store.embeddings, tiny.encode_images([i[1] for i in items]))


def test_geosample_extra_fields_become_meta_columns(tiny, tmp_path):
    from geoscope.data.datasets import GeoSample

    pts = make_geotagged_folder(tmp_path / "img", 4, size=(32, 32))
    samples = [GeoSample(id=f"s{i}", source=str(p), lat=a, lon=o,
                         extra={"scene": ["urban", "natural"][i % 2], "split": "train", "tags": [1, 2]})
               for i, (p, a, o) in enumerate(pts)]
    store = embed_dataset(samples, tiny, tmp_path / "s", workers=0, progress=False)
    assert list(store.meta["scene"]) == ["urban", "natural", "urban", "natural"]
    assert "tags" not in store.meta.columns  # only scalar fields are kept
    arr = EmbeddingStore.from_arrays(tmp_path / "a", ["a", "b"], np.zeros((2, 3)), extra={"scene": ["x", "y"]})
    assert list(arr.meta["scene"]) == ["x", "y"]


def test_cli_embed_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("GEOSCOPE_WEIGHTS", raising=False)
    monkeypatch.delenv("GEOSCOPE_DOWNLOAD", raising=False)
    make_geotagged_folder(tmp_path / "photos", 2, size=(32, 32))
    rc = main(["embed", str(tmp_path / "photos"), "--encoder", "no-such-model", "-o", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert rc == 1 and "unknown encoder 'no-such-model'" in err and err.count("\n") == 1
    rc = main(["embed", str(tmp_path / "photos"), "--encoder", "clip-vit-l14", "-o", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert rc == 1 and "not on this machine" in err and err.count("\n") == 1


def test_in_process_decoding_uses_two_threads_while_the_model_waits(tiny, tmp_path):
    """Before the first batch nothing runs the model, so the consumer decodes beside the decoding thread:
    two images that can only load together (a barrier of two) both load."""
    import io
    import threading

    both = threading.Barrier(2, timeout=10.0)
    threads: set[str] = set()

    def payload(i):
        buf = io.BytesIO()
        synthetic_image(10.0 + i, 20.0, size=(48, 40)).save(buf, format="PNG")

        def load():
            threads.add(threading.current_thread().name)
            if i < 2:
                both.wait()  # raises BrokenBarrierError (an unreadable sample) if no second thread comes
            return buf.getvalue()
        return load

    items = [(f"t{i}", payload(i), 10.0 + i, 20.0) for i in range(4)]
    store = embed_dataset(items, tiny, tmp_path / "s", batch_size=4, workers=0, progress=False)
    assert list(store.ids) == [f"t{i}" for i in range(4)]  # none failed: the two loads met
    assert threads == {"geoscope-decode", threading.current_thread().name}


def test_in_process_decoding_runs_ahead_of_the_forward_pass(tiny, tmp_path):
    """With no worker processes, a background thread decodes the next batch while the model runs."""
    import io
    import threading

    decoded: list[tuple[int, str]] = []
    next_batch_decoded = threading.Event()

    def payload(i):
        buf = io.BytesIO()
        synthetic_image(10.0 + i, 20.0, size=(48, 40)).save(buf, format="PNG")

        def load():
            decoded.append((i, threading.current_thread().name))
            if i >= 3:
                next_batch_decoded.set()
            return buf.getvalue()
        return load

    items = [(f"t{i}", payload(i), 10.0 + i, 20.0) for i in range(9)]
    forward = tiny.encode_pixels
    overlapped: list[bool] = []

    def slow_forward(pixels):  # the model "runs" until the next batch is decoded (or 10 s pass)
        overlapped.append(next_batch_decoded.wait(10.0))
        return forward(pixels)

    tiny.encode_pixels = slow_forward
    try:
        store = embed_dataset(items, tiny, tmp_path / "s", batch_size=3, workers=0, progress=False)
    finally:
        del tiny.encode_pixels
    assert overlapped[0] is True  # images of batch 2 were decoded while batch 1 was in the model
    names = dict(decoded)
    assert names[3] == "geoscope-decode"  # the model was running: only the decoding thread decodes then
    assert set(names.values()) <= {"geoscope-decode", threading.current_thread().name}
    assert list(store.ids) == [f"t{i}" for i in range(9)]
    _scaled_close(store.embeddings, tiny.encode_images([Image.open(io.BytesIO(p())) for _, p, _, _ in items]))
