"""geoscope's ``geoclip`` gives the same answers as the ``geoclip`` package's ``GeoCLIP.predict()``.

Both sides load the same backbone directory (a tiny random CLIP in Hugging Face layout whose
projection is 768-d, ``_tiny_geoclip_backbone``: real ViT-L/14 weights are not
available offline, and the computation downstream is identical) and the same published heads from
the installed ``geoclip`` package. The reference re-embeds its GPS gallery on every call, so both
are given the same 1,000-point subset of the published 100K gallery to keep the test fast.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from geoscope.data.images import load_image
from geoscope.errors import WeightsUnavailableError
from geoscope.heads.gallery_search import ServedRetrievalHead
from geoscope.heads.geoclip import gallery_cache_path, load_geoclip_head
from geoscope.testing.geoclip import reference_geoclip_class
from geoscope.heads.location_encoder import geoclip_file
from geoscope.heads.retrieval import geoclip_gallery
from geoscope.pretrained import load_parts
from geoscope.pretrained.served import served_path

from _tiny_geoclip_backbone import save_tiny_geoclip_backbone

KAUAI = geoclip_file("../images/Kauai.png")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_geoclip_backbone(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=0)


@pytest.fixture(scope="module")
def gallery():
    return geoclip_gallery()[::100][:1000]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Kauai.png (the package's example) and a wide synthetic photo (tests the resize / crop)."""
    rng = np.random.default_rng(3)
    wide = tmp_path_factory.mktemp("img") / "wide.jpg"
    arr = (rng.random((180, 420, 3)) * 255).astype(np.uint8)
    arr[:, :140] = [30, 120, 40]  # some structure, so crops differ from resizes
    Image.fromarray(arr).save(wide, quality=95)
    return [str(KAUAI), str(wide)]


@pytest.fixture(scope="module")
def reference(clip_dir, gallery):
    GeoCLIP = reference_geoclip_class()
    model = GeoCLIP(from_pretrained=True, clip_path=str(clip_dir)).eval()
    model.gps_gallery = torch.tensor(gallery, dtype=torch.float32)
    return model


def _ours(clip_dir, gallery, tmp_path, precision="fp32", runtime="torch"):
    return load_parts("geoclip", weights=clip_dir, precision=precision, cache=tmp_path, gallery=gallery,
                      progress=False, runtime=runtime)


def test_same_topk_as_reference(clip_dir, gallery, images, reference, tmp_path):
    encoder, head, meta = _ours(clip_dir, gallery, tmp_path)
    assert meta["precision"] == "fp32" and meta["name"] == "geoclip"
    emb = encoder.encode_images([load_image(p) for p in images])
    out = head.predict(emb, top_k=5)
    for i, path in enumerate(images):
        want_gps, want_prob = reference.predict(path, top_k=5)
        np.testing.assert_allclose(out.coords[i], want_gps.double().numpy(), atol=1e-5)
        np.testing.assert_allclose(out.scores[i], want_prob.double().numpy(), rtol=2e-3, atol=1e-6)
    # the two images give different answers (the check above is not comparing constants)
    assert not np.allclose(out.coords[0], out.coords[1])


def test_preprocessing_matches_reference(clip_dir, gallery, images, reference, tmp_path):
    encoder, _, _ = _ours(clip_dir, gallery, tmp_path)
    for path in images:
        with Image.open(path) as im:
            want = reference.image_encoder.preprocess_image(im.convert("RGB"))
        got = encoder.preprocess([load_image(path)])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_served_by_the_fast_runtime_gives_the_reference_answers(clip_dir, gallery, images, reference, tmp_path,
                                                                  monkeypatch):
    """geoclip's default: the backbone on runtime auto (an exported image tower) and the head as numpy arrays."""
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    encoder, head, meta = load_parts("geoclip", weights=clip_dir, precision="fp32", cache=tmp_path,
                                     gallery=gallery, progress=False)
    assert (encoder.runtime, meta["runtime"], type(head).__name__) == ("openvino", "openvino", "ServedRetrievalHead")
    assert served_path(tmp_path, gallery).is_file()  # kept for the next start
    out = head.predict(encoder.encode_images([load_image(p) for p in images]), top_k=5)
    for i, path in enumerate(images):
        want_gps, want_prob = reference.predict(path, top_k=5)
        np.testing.assert_allclose(out.coords[i], want_gps.double().numpy(), atol=1e-5)
        np.testing.assert_allclose(out.scores[i], want_prob.double().numpy(), rtol=5e-3, atol=1e-6)
    again = ServedRetrievalHead.load(served_path(tmp_path, gallery))
    np.testing.assert_array_equal(again.search.embeddings, head.search.embeddings)
    # a later start answers without importing torch or transformers
    np.save(tmp_path / "gallery.npy", gallery)
    code = ("import sys, numpy as np; from geoscope.pretrained import load_parts; from PIL import Image; "
            f"enc, head, meta = load_parts('geoclip', weights={str(clip_dir)!r}, precision='fp32', "
            f"cache={str(tmp_path)!r}, gallery=np.load({str(tmp_path / 'gallery.npy')!r}), progress=False); "
            f"out = head.predict(enc.encode_images([Image.open({images[0]!r}).convert('RGB')]), top_k=1); "
            "print(int(out.extra['gallery_index'][0, 0]), 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "GEOSCOPE_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == [str(int(out.extra["gallery_index"][0, 0])), "False", "False"]


def test_gallery_embeddings_cached_on_disk(clip_dir, gallery, tmp_path):
    head = load_geoclip_head(tmp_path, progress=False, gallery=gallery)  # the torch head computes them
    path = gallery_cache_path(head, tmp_path)
    assert path.is_file()
    first = head.gallery_embeddings().clone()
    # a second load reads the file instead of recomputing: prove it by planting a marker in it
    from safetensors.torch import save_file

    marked = first.clone()
    marked[0] = -marked[0]
    save_file({"embeddings": marked}, str(path))
    again = load_geoclip_head(tmp_path, progress=False, gallery=gallery)
    torch.testing.assert_close(again.gallery_embeddings(), marked)
    # a damaged file is recomputed, not trusted
    path.write_bytes(b"not a safetensors file")
    third = load_geoclip_head(tmp_path, progress=False, gallery=gallery)
    torch.testing.assert_close(third.gallery_embeddings(), first)
    # another gallery has another key
    other = load_geoclip_head(tmp_path, progress=False, gallery=gallery[:10])
    assert gallery_cache_path(other, tmp_path) != path


def test_bf16_and_int8_stay_close(clip_dir, gallery, images, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    pics = [load_image(p) for p in images]
    enc32, head, _ = _ours(clip_dir, gallery, tmp_path, "fp32")
    emb32 = enc32.encode_images(pics)
    ref = head.predict(emb32, top_k=3)
    for precision, runtime, min_cos in (("bf16", "torch", 0.999), ("bf16", "openvino", 0.999), ("int8", "onnx", 0.995),
                                        ("int8", "openvino", 0.999)):
        enc, head_p, meta = _ours(clip_dir, gallery, tmp_path, precision, runtime=runtime)
        assert (meta["precision"], enc.runtime, enc.precision) == (precision, runtime, precision)
        if runtime == "torch":
            assert enc.dtype == torch.bfloat16
        emb = enc.encode_images(pics)
        cos = (emb * emb32).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(emb32, axis=1)
        assert cos.min() > min_cos, (precision, cos)
        out = head_p.predict(emb, top_k=3)
        np.testing.assert_array_equal(out.extra["gallery_index"][:, 0], ref.extra["gallery_index"][:, 0])
        np.testing.assert_allclose(out.scores[:, 0], ref.scores[:, 0], rtol=0.1)


def test_a_prepared_backbone_is_the_one_load_parts_takes(clip_dir, gallery, tmp_path, monkeypatch):
    """``geoscope locate`` builds the backbone (and starts its compile) before importing the rest."""
    from geoscope.pretrained import loading

    monkeypatch.setenv("GEOSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_PREPARED", {})
    assert loading.prepare_backbone("geoclip", weights=clip_dir, precision="fp32", warm=1)
    (prepared,) = loading._PREPARED.values()
    assert prepared.runtime == "openvino" and prepared._compiled[True].started and not prepared._compiled[False].started
    encoder, _, meta = load_parts("geoclip", weights=clip_dir, precision="fp32", cache=tmp_path, gallery=gallery,
                                  progress=False)
    assert encoder is prepared and meta["precision"] == "fp32" and not loading._PREPARED
    # another precision is another backbone: the prepared one is not taken for it
    assert loading.prepare_backbone("geoclip", weights=clip_dir, precision="fp32")
    other, _, _ = load_parts("geoclip", weights=clip_dir, precision="int8", cache=tmp_path, gallery=gallery,
                             progress=False)
    assert other.precision == "int8" and len(loading._PREPARED) == 1
    # nothing is prepared where nothing would compile, or where load_parts will say what is wrong
    monkeypatch.setattr(loading, "_PREPARED", {})
    assert not loading.prepare_backbone("geoclip", weights=clip_dir, runtime="torch")
    assert not loading.prepare_backbone("streetclip", weights=clip_dir)
    assert not loading.prepare_backbone("geoclip", weights=tmp_path / "missing")
    assert not loading.prepare_backbone("geoclip", weights=clip_dir, precision="float32")
    assert not loading._PREPARED


def test_missing_backbone_is_one_fast_sentence(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    monkeypatch.delenv("GEOSCOPE_CLIP_L14", raising=False)
    monkeypatch.delenv("GEOSCOPE_WEIGHTS", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        load_parts("geoclip", cache=tmp_path)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "openai/clip-vit-large-patch14" in msg and "--weights" in msg and "GEOSCOPE_CLIP_L14" in msg
    assert "geoscope train" in msg and "\n" not in msg
    # a wrong directory names itself
    monkeypatch.setenv("GEOSCOPE_CLIP_L14", str(tmp_path / "nowhere"))
    with pytest.raises(WeightsUnavailableError, match="GEOSCOPE_CLIP_L14 points to .*nowhere"):
        load_parts("geoclip", cache=tmp_path)
