"""Our PIL + numpy preprocessing against the Hugging Face CLIP image processor (what geoclip uses)."""

import numpy as np
import pytest
from PIL import Image

from geoscope.encoders.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform, clip_transform


def _hf_processor(**kw):
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(**kw)


def _image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return im.convert(mode)


@pytest.mark.parametrize("h,w", [(300, 400), (400, 300), (224, 224), (100, 57), (225, 1000), (61, 61)])
def test_clip_transform_matches_hf_clip_image_processor(h, w):
    im = _image(h, w, seed=h * w)
    ours = clip_transform(224)(im)
    ref = _hf_processor()(images=im, return_tensors="np")["pixel_values"]
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_transform_from_hf_config_honours_size_crop_mean_std():
    cfg = {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32},
           "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 2}
    t = ImageTransform.from_hf_config(cfg, default_size=224)
    assert (t.resize, t.crop, t.resample) == (40, (32, 32), "bilinear")
    im = _image(50, 90, mode="L")  # greyscale input is converted to RGB
    ref = _hf_processor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                        image_mean=[0.5] * 3, image_std=[0.25] * 3, resample=2)(images=im.convert("RGB"), return_tensors="np")
    np.testing.assert_allclose(t(im), ref["pixel_values"], atol=2e-6)


def test_batch_normalize_is_per_image_and_channel_first():
    t = ImageTransform(resize=8, crop=(8, 8), mean=CLIP_MEAN, std=CLIP_STD)
    a, b = _image(8, 8, 1), _image(16, 8, 2)
    both = t([a, b])
    assert both.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(both[0], t(a)[0])
    x = np.asarray(a, dtype=np.float32)[..., 0] / 255
    np.testing.assert_allclose(both[0, 0], (x - CLIP_MEAN[0]) / CLIP_STD[0], rtol=1e-5)


def test_transform_rejects_crop_larger_than_resize():
    with pytest.raises(ValueError, match="crop"):
        ImageTransform(resize=100, crop=(224, 224), mean=CLIP_MEAN, std=CLIP_STD)
