"""CLIP through transformers, with tiny random checkpoints saved to disk and loaded like real ones."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from geoscope.encoders import create_encoder, list_encoders
from geoscope.encoders.testing import save_tiny_clip
from geoscope.errors import InputError, WeightsUnavailableError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return create_encoder(str(tiny_dir))


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no GEOSCOPE_WEIGHTS: hub names must fail at once."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("GEOSCOPE_WEIGHTS", raising=False)
    monkeypatch.delenv("GEOSCOPE_DOWNLOAD", raising=False)


def _images(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]


def test_forward_is_get_image_features(tiny, tiny_dir):
    ref = transformers.CLIPModel.from_pretrained(tiny_dir).eval()
    x = tiny.preprocess(_images())
    assert x.shape == (3, 3, 32, 32) and tiny.dim == 16 and tiny.input_size == 32
    with torch.inference_mode():
        ours = tiny(x)
        feats = ref.get_image_features(pixel_values=x)
        feats = getattr(feats, "pooler_output", feats)
        tokens = tiny.forward_tokens(x)
    torch.testing.assert_close(ours, feats)
    assert tokens.shape == (3, 1 + (32 // 8) ** 2, 32)
    np.testing.assert_allclose(tiny.encode_images(_images(), batch_size=2), feats.numpy(), atol=1e-5)


def test_preprocessing_matches_clip_processor(tiny):
    proc = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ref = proc(images=_images(), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(tiny.preprocess(_images()).numpy(), ref, atol=2e-6)


def test_encode_text_is_get_text_features(tiny, tiny_dir):
    ref = transformers.CLIPModel.from_pretrained(tiny_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    prompts = ["a photo in the city", "the sea", "x"]
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        feats = ref.get_text_features(**batch)
    feats = getattr(feats, "pooler_output", feats).numpy()
    ours = tiny.encode_text(prompts, batch_size=2)
    assert ours.shape == (3, 16) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, feats, atol=1e-5)
    assert not np.allclose(ours[0], ours[1], atol=1e-3)


def test_bfloat16_dtype(tiny_dir, tiny):
    bf = create_encoder(str(tiny_dir), dtype="bfloat16")
    assert bf.dtype == torch.bfloat16
    a, b = tiny.encode_images(_images()), bf.encode_images(_images())
    np.testing.assert_allclose(a, b, atol=0.1 * np.abs(a).max())


def test_precision_is_chosen_in_create_encoder(tiny_dir, tiny):
    a = tiny.encode_images(_images())
    bf = create_encoder(str(tiny_dir), precision="bf16")
    assert bf.dtype == torch.bfloat16
    np.testing.assert_allclose(bf.encode_images(_images()), a, atol=0.1 * np.abs(a).max())
    q = create_encoder(str(tiny_dir), precision="int8")
    assert (q.runtime, q.precision) == ("onnx", "int8")  # ONNX Runtime's dynamic int8 (encoders.runtimes)
    b = q.encode_images(_images())
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(b, a, atol=0.15 * np.abs(a).max())
    assert create_encoder(str(tiny_dir), precision="fp32").dtype == torch.float32
    with pytest.raises(InputError, match="either precision= or dtype="):
        create_encoder(str(tiny_dir), precision="bf16", dtype="bfloat16")


def test_registered_and_hf_names_load_from_geoscope_weights(tiny_dir, tmp_path, monkeypatch):
    root = tmp_path / "weights"
    save_tiny_clip(root / "openai" / "clip-vit-base-patch32", seed=3)
    save_tiny_clip(root / "someone--geo-clip", seed=4)
    monkeypatch.setenv("GEOSCOPE_WEIGHTS", str(root))
    assert {i.name: i.offline for i in list_encoders()}["clip-vit-b32"] is True
    enc = create_encoder("clip-vit-b32")
    assert enc.name == "clip-vit-b32" and enc.dim == 16
    other = create_encoder("hf-hub:someone/geo-clip")
    assert other.name == "hf-hub:someone/geo-clip"
    assert not np.allclose(enc.encode_images(_images(1)), other.encode_images(_images(1)))
    alias = create_encoder("hf:someone/geo-clip")  # the older prefix names the same model
    assert alias.name == "hf:someone/geo-clip" and alias.path == other.path
    np.testing.assert_array_equal(alias.encode_images(_images(1)), other.encode_images(_images(1)))


@pytest.mark.parametrize("name", ["clip-vit-l14", "streetclip", "hf-hub:openai/clip-vit-large-patch14",
                                  "hf:openai/clip-vit-large-patch14"])
def test_missing_hub_weights_fail_fast_with_one_sentence(name):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        create_encoder(name)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "not on this machine" in msg and "GEOSCOPE_WEIGHTS" in msg and "HF_HOME" in msg
    assert "\n" not in msg
    assert {i.name: i.offline for i in list_encoders()}["clip-vit-l14"] is False


def test_directory_without_weights_or_not_clip(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="holds no model"):
        create_encoder(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not a CLIP model"):
        create_encoder(str(tmp_path))


def test_preprocessor_config_is_used_and_missing_tokenizer_is_explained(tmp_path):
    d = save_tiny_clip(tmp_path / "m", tokenizer=False,
                       preprocessor={"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32},
                                     "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    enc = create_encoder(str(d))
    assert (enc.transform.resize, enc.transform.mean) == (40, (0.5, 0.5, 0.5))
    with pytest.raises(WeightsUnavailableError, match="tokenizer"):
        enc.encode_text(["a photo"])


def test_vision_only_checkpoint(tmp_path, tiny_dir):
    full = transformers.CLIPModel.from_pretrained(tiny_dir)
    cfg = full.config.vision_config
    cfg.projection_dim = full.config.projection_dim
    vision = transformers.CLIPVisionModelWithProjection(cfg)
    vision.vision_model.load_state_dict(full.vision_model.state_dict())
    vision.visual_projection.load_state_dict(full.visual_projection.state_dict())
    vision.save_pretrained(tmp_path / "v")
    enc = create_encoder(str(tmp_path / "v"))
    np.testing.assert_allclose(enc.encode_images(_images()), create_encoder(str(tiny_dir)).encode_images(_images()), atol=1e-5)
    with pytest.raises(InputError, match="image tower"):
        enc.encode_text(["a"])
