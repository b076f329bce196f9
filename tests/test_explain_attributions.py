"""Attributions concentrate on the image region the score depends on, with the right sign."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geoscope.errors import InputError
from geoscope.explain import (
    Attribution,
    explain_image,
    grid_segments,
    occlusion,
    save_overlay,
    shap_attribution,
)

H = W = 64
REGION = (slice(8, 24), slice(40, 56))  # aligned to an 8x8 grid of 8-pixel blocks
OTHER = (slice(40, 56), slice(8, 24))


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (H, W, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    board = (((yy // 2) + (xx // 2)) % 2 * 255).astype(np.uint8)
    for sl in (REGION, OTHER):
        img[sl] = board[sl][..., None]
    return img


def _contrast(images: np.ndarray, sl) -> np.ndarray:
    patch = images[:, sl[0], sl[1], :].astype(np.float64)
    return patch.std(axis=(1, 2, 3)) / 128.0


def region_only(images: np.ndarray) -> np.ndarray:
    """Depends on the pixels of REGION only: the detail (contrast) there."""
    return _contrast(images, REGION)


def towards_and_away(images: np.ndarray) -> np.ndarray:
    """Up with the detail in REGION, down with the detail in OTHER."""
    return _contrast(images, REGION) - 0.5 * _contrast(images, OTHER)


def _mask(sl) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[sl] = True
    return m


@pytest.mark.parametrize("method", ["occlusion", "partition", "permutation"])
def test_attributions_concentrate_on_the_region_the_score_depends_on(method):
    img = _image()
    attr = explain_image(region_only, img, method=method, max_evals=1000, grid=8, progress=False)
    assert isinstance(attr, Attribution)
    assert attr.values.shape == (H, W)
    inside = _mask(REGION)
    total = np.abs(attr.values).sum()
    assert total > 0
    assert np.abs(attr.values[inside]).sum() / total > 0.95
    assert attr.values[inside].sum() > 0
    assert attr.full_score == pytest.approx(region_only(img[None])[0])
    assert attr.full_score > attr.base_score
    assert 0 < attr.n_evals <= 1000 + 4


@pytest.mark.parametrize("method", ["occlusion", "partition", "permutation"])
def test_positive_and_negative_contributions_are_told_apart(method):
    img = _image()
    attr = explain_image(towards_and_away, img, method=method, max_evals=1000, grid=8, progress=False)
    assert attr.values[_mask(REGION)].sum() > 0
    assert attr.values[_mask(OTHER)].sum() < 0
    rest = ~(_mask(REGION) | _mask(OTHER))
    # region methods are exact on grid-aligned regions; partition's rectangles leak a little at this budget
    limit = 0.10 if method == "partition" else 1e-9
    assert np.abs(attr.values[rest]).sum() <= limit * np.abs(attr.values).sum()


def test_permutation_shapley_values_add_up_to_the_score_change():
    img = _image()
    attr = shap_attribution(towards_and_away, img, method="permutation", grid=4, max_evals=200, progress=False)
    assert attr.region_values is not None and len(attr.region_values) == 16
    assert attr.values.sum() == pytest.approx(attr.full_score - attr.base_score, abs=1e-6)


def test_occlusion_uses_one_evaluation_per_region_and_respects_custom_segments():
    img = _image()
    seg = np.zeros((H, W), dtype=np.int64)
    seg[_mask(REGION)] = 7  # two regions, ids need not be contiguous
    attr = occlusion(region_only, img, segments=seg, progress=False)
    assert attr.n_evals == 2 + 2
    assert attr.region_values.shape == (2,)
    assert attr.values[~_mask(REGION)].max() == pytest.approx(0.0)


def test_bad_inputs_are_named():
    img = _image()
    with pytest.raises(InputError, match="shape"):
        occlusion(region_only, img[..., 0], progress=False)
    with pytest.raises(InputError, match="method"):
        explain_image(region_only, img, method="lime")
    with pytest.raises(InputError, match="returned 1 values for a batch of 2"):
        occlusion(lambda ims: np.zeros(1), img, grid=2, progress=False)
    with pytest.raises(InputError, match="grid 100x100"):
        grid_segments(H, W, 100, 100)


def test_overlay_png_shows_positive_red_and_negative_blue(tmp_path):
    img = _image()
    attr = occlusion(towards_and_away, img, grid=8, progress=False)
    path = save_overlay(Image.fromarray(img), attr, tmp_path / "overlay.png")
    out = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert out.shape[0] > 100 and out.shape[1] > 200
    red = (out[..., 0] > 150) & (out[..., 2] < 100)
    blue = (out[..., 2] > 150) & (out[..., 0] < 100)
    assert red.sum() > 50 and blue.sum() > 50
