"""Zero-shot hierarchical CLIP geolocation: the probability chain, and loading through the same code
as real weights (a tiny random CLIP in Hugging Face layout; its text tower embeds the prompts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_geoclip_backbone import save_tiny_geoclip_backbone

from geoscope.errors import InputError
from geoscope.heads import create_head, list_heads
from geoscope.heads.zeroshot import ZeroShotHead, build_hierarchy, group_softmax
from geoscope.pretrained import load_parts

TOWNS = [
    dict(name="Lyon", lat=45.76, lon=4.84, country_code="FR", region_code="FR-ARA"),
    dict(name="Grenoble", lat=45.19, lon=5.72, country_code="FR", region_code="FR-ARA"),
    dict(name="Lille", lat=50.63, lon=3.06, country_code="FR", region_code="FR-HDF"),
    dict(name="Oulu", lat=65.01, lon=25.47, country_code="FI", region_code=""),
]
NAMES = ({"FR": "France", "FI": "Finland"}, {"FR-ARA": "Auvergne-Rhone-Alpes", "FR-HDF": "Hauts-de-France"})


def test_hierarchy_and_prompts():
    h = build_hierarchy(TOWNS, *NAMES)
    assert [c[0] for c in h["countries"]] == ["FR", "FI"]
    assert [(r[0], r[2]) for r in h["regions"]] == [("FR-ARA", 0), ("FR-HDF", 0), ("", 1)]
    assert [t[3] for t in h["towns"]] == [0, 0, 1, 2]
    p = ZeroShotHead(4, h).prompts()
    assert p["country"] == ["A Street View photo in France.", "A Street View photo in Finland."]
    assert p["region"][0] == "A Street View photo in Auvergne-Rhone-Alpes, France."
    assert p["region"][2] == "A Street View photo in Finland."  # no region known: the country
    assert p["town"][3] == "A Street View photo from Oulu, Finland."
    with pytest.raises(InputError, match="row 1"):
        build_hierarchy([TOWNS[0], {"name": "x"}], *NAMES)
    with pytest.raises(InputError, match="at least one town"):
        build_hierarchy([], *NAMES)


def test_group_softmax_matches_per_group_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 7) * 4
    group = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    got = group_softmax(logits, group, 3)
    for g in range(3):
        cols = (group == g).nonzero().ravel()
        torch.testing.assert_close(got[:, cols], logits[:, cols].softmax(1))


def test_probabilities_chain_down_the_hierarchy():
    h = build_hierarchy(TOWNS, *NAMES)
    rng = np.random.default_rng(0)
    head = ZeroShotHead(16, h, logit_scale=10.0)
    head.set_text_embeddings(rng.normal(size=(2, 16)), rng.normal(size=(3, 16)), rng.normal(size=(4, 16)))
    emb = rng.normal(size=(2, 16)).astype(np.float32)
    probs = head.level_probs(emb)
    for level in ("country", "region", "town"):
        torch.testing.assert_close(probs[level].sum(1), torch.ones(2))
    # brute force for Grenoble (town 1, region 0 = FR-ARA, country 0 = France)
    x = torch.nn.functional.normalize(torch.tensor(emb), dim=1)
    sc = 10 * x @ head.country_emb.T
    sr = 10 * x @ head.region_emb.T
    st = 10 * x @ head.town_emb.T
    want = sc.softmax(1)[:, 0] * sr[:, :2].softmax(1)[:, 0] * st[:, :2].softmax(1)[:, 1]
    torch.testing.assert_close(probs["town"][:, 1], want)
    out = head.predict(emb, top_k=4)
    assert out.coords.shape == (2, 4, 2)
    assert (np.diff(out.scores, axis=1) <= 0).all()
    np.testing.assert_allclose(out.support_probs.sum(1), 1.0, rtol=1e-6)
    # an image that is exactly Oulu's (and Finland's) prompt direction lands in Oulu
    sharp = ZeroShotHead(16, h, logit_scale=100.0)
    basis = np.eye(16)
    sharp.set_text_embeddings(basis[[0, 1]], basis[[2, 3, 1]], basis[[4, 5, 6, 1]])
    res = sharp.predict(basis[[1]].astype(np.float32), top_k=1)
    np.testing.assert_allclose(res.coords[0, 0], [65.01, 25.47])
    assert res.extra["towns"][0][0] == "Oulu" and res.extra["top_countries"][0][0]["code"] == "FI"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_geoclip_backbone(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=1)


def test_loads_through_the_real_loading_code_and_caches_prompts(clip_dir, tmp_path, monkeypatch):
    kw = dict(weights=clip_dir, precision="fp32", cache=tmp_path, progress=False, towns_min_population=3_000_000)
    encoder, head, meta = load_parts("clip-zeroshot", **kw)
    assert meta["kind"] == "zeroshot" and isinstance(head, ZeroShotHead)
    prompts = head.prompts()
    assert len(prompts["town"]) == len(head.town_coords) > 20
    # the head's prompt embeddings are the text tower's, normalised
    want = torch.nn.functional.normalize(torch.tensor(encoder.encode_text(prompts["country"][:5])), dim=1)
    torch.testing.assert_close(head.country_emb[:5], want, atol=1e-5, rtol=1e-4)
    assert head.logit_scale.item() == pytest.approx(float(encoder.model.logit_scale.detach().exp()))
    files = list((tmp_path / "zeroshot").glob("*.npz"))
    assert len(files) == 1
    # a second load reads the cache: the text tower is not called
    from geoscope.encoders.clip import CLIPEncoder

    def refuse(*a, **k):
        raise AssertionError("prompts were re-embedded although cached")

    monkeypatch.setattr(CLIPEncoder, "encode_text", refuse)
    _, again, _ = load_parts("clip-zeroshot", **kw)
    torch.testing.assert_close(again.town_emb, head.town_emb)
    monkeypatch.undo()
    # other templates are other prompts: a new cache entry
    load_parts("zeroshot:" + str(clip_dir), templates={"country": "A photo taken in {country}."},
               **{k: v for k, v in kw.items() if k != "weights"})
    assert len(list((tmp_path / "zeroshot").glob("*.npz"))) == 2
    # a real image goes through preprocessing, the image tower and the hierarchy
    from PIL import Image

    img = Image.fromarray((np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8))
    out = head.predict(encoder.encode_images([img]), top_k=3)
    assert out.coords.shape == (1, 3, 2) and 0 < out.scores[0, 0] <= 1


def test_zero_shot_geolocator_saves_and_reloads(tmp_path):
    from geoscope.geolocator import Geolocator

    h = build_hierarchy(TOWNS, *NAMES)
    rng = np.random.default_rng(5)
    head = ZeroShotHead(16, h, logit_scale=30.0)
    head.set_text_embeddings(rng.normal(size=(2, 16)), rng.normal(size=(3, 16)), rng.normal(size=(4, 16)))
    geo = Geolocator("clip-vit-l14", head, None, name="zs", places=False)  # encoder made on first use only
    emb = rng.normal(size=(3, 16)).astype(np.float32)
    before = geo.locate_embeddings(emb, top_k=2)
    geo.save_pretrained(tmp_path / "model")
    again = Geolocator.from_pretrained(tmp_path / "model", places=False)
    after = again.locate_embeddings(emb, top_k=2)
    for a, b in zip(before, after):
        assert [(c.lat, c.lon) for c in a.candidates] == [(c.lat, c.lon) for c in b.candidates]
        np.testing.assert_allclose([c.probability for c in a.candidates], [c.probability for c in b.candidates])
    assert "zeroshot" in list_heads() and "zeroshot" not in list_heads(trainable=True)
    with pytest.raises(InputError, match="cannot train a 'zeroshot' head"):
        create_head("zeroshot", 16)
