"""The zero-shot head of a named model: every country, region and town as a text prompt, embedded by the
backbone's CLIP text tower (StreetCLIP style; ``heads.zeroshot.ZeroShotHead``). Prompt embeddings are
cached on disk, keyed by a hash of the text tower's weights and the prompts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from geoscope.atomic import atomic_path
from geoscope.errors import InputError
from geoscope.geo.places import list_countries, list_regions, list_towns


def text_tower_key(encoder) -> str:
    """A hash of the text tower's output layers and config: changes whenever the weights do."""
    import torch

    model = getattr(encoder, "model", None)
    h = hashlib.sha256(b"geoscope-zeroshot-v1")
    if model is None:
        h.update(str(encoder.name).encode())
        return h.hexdigest()
    h.update(model.config.to_json_string().encode())
    for part in (model.text_projection, model.text_model.final_layer_norm, model.text_model.embeddings.token_embedding):
        for key, t in sorted(part.state_dict().items()):
            h.update(key.encode())
            h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def zeroshot_head(encoder, cache: Path, progress: bool, min_population: int, templates: dict | None):
    from geoscope.heads.zeroshot import ZeroShotHead, build_hierarchy  # heads import torch

    if not hasattr(encoder, "encode_text") or not getattr(encoder, "has_text", True):
        raise InputError(f"encoder {encoder.name!r} has no text tower: zero-shot geolocation needs a CLIP with one")
    countries = dict(list_countries())
    towns = list_towns(min_population=int(min_population))
    regions: dict[str, str] = {}
    for cc in sorted({t["country_code"] for t in towns}):
        regions.update(dict(list_regions(cc)))
    hierarchy = build_hierarchy(towns, countries, regions)
    head = ZeroShotHead(encoder.dim, hierarchy, templates)
    prompts = head.prompts()
    key = hashlib.sha256(text_tower_key(encoder).encode())
    for level in ("country", "region", "town"):
        key.update("\n".join(prompts[level]).encode() + b"\0")
    path = cache / "zeroshot" / f"{key.hexdigest()[:24]}.npz"
    emb = None
    if path.is_file():
        try:
            with np.load(path) as z:
                emb = {k: z[k] for k in ("country", "region", "town")}
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            emb = None
    if emb is None or any(len(emb[k]) != len(prompts[k]) for k in prompts):
        emb = {k: encode_prompts(encoder, v, progress, k) for k, v in prompts.items()}
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **emb)
        except OSError:
            pass
    scale = getattr(getattr(encoder, "model", None), "logit_scale", None)
    head.set_text_embeddings(emb["country"], emb["region"], emb["town"],
                             logit_scale=float(scale.detach().exp()) if scale is not None else None)
    return head.eval()


def encode_prompts(encoder, texts: list[str], progress: bool, level: str):
    chunk = 256
    starts = range(0, len(texts), chunk)
    if progress and len(texts) > chunk:
        starts = tqdm(starts, desc=f"embedding {level} prompts", unit="batch", leave=False)
    parts = [encoder.encode_text(texts[i : i + chunk]) for i in starts]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)
