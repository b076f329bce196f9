"""Named pretrained planet-scale geolocators: ``Geolocator.from_pretrained(name)`` lands here.

- ``geoclip``: OpenAI CLIP ViT-L/14 (image tower) + GeoCLIP's published heads (image MLP, location
  encoder, logit scale, 100K GPS gallery; MIT, shipped in the ``geoclip`` pip package). Same answers as
  ``GeoCLIP.predict()``; gallery embeddings are computed once and cached on disk.
- ``streetclip``, ``clip-zeroshot``, ``zeroshot:ENCODER``: zero-shot hierarchical prompts (country ->
  region -> town, StreetCLIP style) with any CLIP that has a text tower; prompt embeddings cached on disk.

The backbone is found, in order, at ``weights=DIR`` (``--weights``), the model's environment variable
(``GEOSCOPE_CLIP_L14``, ``GEOSCOPE_STREETCLIP``), then wherever ``encoders.create_encoder`` looks
(``$GEOSCOPE_WEIGHTS``, the Hugging Face cache). Missing weights raise ``WeightsUnavailableError`` at
once with one sentence saying how to provide them; nothing is downloaded unless the encoder layer is
allowed to (``GEOSCOPE_DOWNLOAD=1``).

Precision (``precision=``): ``fp32`` (reference answers), ``bf16`` (backbone in bfloat16: ~3x faster
on CPUs with AVX512-BF16 / AMX), ``int8`` (dynamic int8 quantisation of the backbone's linear
layers), ``auto`` (bf16 where the CPU has native bfloat16, else fp32). Drift against fp32 is measured
by ``benchmarks/geoclip_speed.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geoscope.errors import InputError, WeightsUnavailableError

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def cache_dir() -> Path:
    """Where computed artefacts (gallery and prompt embeddings) are cached: ``$GEOSCOPE_CACHE`` or ``~/.cache/geoscope``."""
    return Path(os.environ.get("GEOSCOPE_CACHE") or Path.home() / ".cache" / "geoscope").expanduser()


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # "geoclip" | "zeroshot"
    backbone: str  # encoder registry name
    repo: str  # hub id of the backbone
    env: str  # environment variable naming a local backbone directory
    source: str
    size: str
    licence: str
    description: str


_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in (
        _Spec(
            "geoclip", "geoclip", "clip-vit-l14", "openai/clip-vit-large-patch14", "GEOSCOPE_CLIP_L14",
            "Hugging Face openai/clip-vit-large-patch14 + PyPI geoclip 1.3.0 (heads, 100K gallery)",
            "1.7 GB backbone + 42 MB heads", "MIT",
            "GeoCLIP (NeurIPS 2023): image-to-GPS retrieval; Im2GPS3k 14.1/34.5/50.7/69.7/83.8 % at 1/25/200/750/2500 km",
        ),
        _Spec(
            "streetclip", "zeroshot", "streetclip", "geolocal/StreetCLIP", "GEOSCOPE_STREETCLIP",
            "Hugging Face geolocal/StreetCLIP", "1.7 GB", "CC-BY-NC-4.0",
            "StreetCLIP zero-shot: country -> region -> town prompts",
        ),
        _Spec(
            "clip-zeroshot", "zeroshot", "clip-vit-l14", "openai/clip-vit-large-patch14", "GEOSCOPE_CLIP_L14",
            "Hugging Face openai/clip-vit-large-patch14", "1.7 GB", "MIT",
            "OpenAI CLIP ViT-L/14 zero-shot: country -> region -> town prompts",
        ),
    )
}


@dataclass(frozen=True)
class PretrainedInfo:
    """One named pretrained model: where it comes from and whether it works on this machine now."""

    name: str
    kind: str
    backbone: str
    source: str
    size: str
    licence: str
    available: bool
    description: str
    missing: str | None = None  # why it is not available, and how to provide it

    def to_dict(self) -> dict:
        return asdict(self)


def _backbone_dir(spec: _Spec, weights: str | os.PathLike | None) -> str | None:
    """A local directory for the backbone, from ``weights`` or the model's environment variable."""
    for origin, value in (("--weights", weights), (spec.env, os.environ.get(spec.env) if spec.env else None)):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise WeightsUnavailableError(
                    f"{origin} points to {path}, which is not a directory: give a folder holding a "
                    f"save_pretrained copy of {spec.repo} (config.json, model.safetensors, preprocessor_config.json)"
                )
            return str(path)
    return None


def _missing_sentence(spec: _Spec) -> str:
    return (
        f"the {spec.name!r} model needs the {spec.repo} backbone, which is not on this machine: put a "
        f"save_pretrained copy in a folder and pass --weights DIR (or weights=DIR) or set {spec.env}=DIR, "
        f"or fill the Hugging Face cache (`hf download {spec.repo}`); models that work offline are those "
        f"trained with `geoscope train` (pass their directory as --model)"
    )


def _backbone_available(spec: _Spec) -> tuple[bool, str | None]:
    try:
        if _backbone_dir(spec, None):
            return True, None
    except WeightsUnavailableError as exc:
        return False, str(exc)
    from geoscope.encoders.hub import find_local

    if find_local(spec.repo) is not None:
        return True, None
    return False, _missing_sentence(spec)


def _heads_available(spec: _Spec) -> tuple[bool, str | None]:
    if spec.kind != "geoclip":
        return True, None
    from geoscope.heads.location_encoder import geoclip_file

    try:
        geoclip_file("weights/location_encoder_weights.pth")
    except WeightsUnavailableError as exc:
        return False, str(exc)
    return True, None


def list_models() -> list[PretrainedInfo]:
    """Every named pretrained model, with whether its weights are on this machine now (no network)."""
    out = []
    for spec in _SPECS.values():
        ok_h, why_h = _heads_available(spec)
        ok_b, why_b = _backbone_available(spec)
        out.append(
            PretrainedInfo(
                spec.name, spec.kind, spec.backbone, spec.source, spec.size, spec.licence,
                ok_h and ok_b, spec.description, why_h or why_b,
            )
        )
    return out


def model_names() -> list[str]:
    return list(_SPECS)


def _resolve(name: str) -> tuple[_Spec, str | None]:
    """The spec for ``name``; ``zeroshot:ENCODER`` gives an ad-hoc zero-shot spec over any CLIP encoder."""
    if name in _SPECS:
        return _SPECS[name], None
    if name.startswith("zeroshot:") and len(name) > len("zeroshot:"):
        encoder = name.split(":", 1)[1]
        spec = _Spec(name, "zeroshot", encoder, encoder, "", encoder, "?", "?", f"zero-shot prompts over {encoder}")
        return spec, encoder
    raise InputError(
        f"unknown pretrained model {name!r}: choose one of {', '.join(_SPECS)}, zeroshot:ENCODER "
        "(any CLIP with a text tower), or a model directory saved by geoscope"
    )


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _create_backbone(spec: _Spec, source: str | None, precision: str):
    from geoscope.encoders import create_encoder

    dtype = "bfloat16" if precision == "bf16" else "float32"
    try:
        encoder = create_encoder(source or spec.backbone, dtype=dtype)
    except WeightsUnavailableError:
        if spec.name not in _SPECS or (source is not None and Path(source).is_dir()):
            raise  # the encoder layer's own sentence names the directory or hub id
        raise WeightsUnavailableError(_missing_sentence(spec)) from None
    if precision == "int8":
        quantize_int8(encoder)
    return encoder.eval()


def quantize_int8(encoder) -> None:
    """Dynamic int8 quantisation of every ``nn.Linear`` in the encoder (weights int8, activations
    quantised per batch): about 2x faster than fp32 on x86 CPUs, small drift."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        from torch.ao.quantization import quantize_dynamic

        for name, child in list(encoder.named_children()):
            setattr(encoder, name, quantize_dynamic(child, {torch.nn.Linear}, dtype=torch.qint8))


def load_pretrained(name: str, **kwargs: Any):
    """A ready :class:`~geoscope.geolocator.Geolocator` for a named pretrained model.

    Options as :func:`load_parts`.
    """
    encoder, head, meta = load_parts(name, **kwargs)
    from geoscope.geolocator import Geolocator

    return Geolocator(encoder, head, None, name=meta["name"], meta=meta)


def load_parts(
    name: str,
    weights: str | os.PathLike | None = None,
    precision: str = "auto",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    gallery=None,
    towns_min_population: int = 100_000,
    templates: dict | None = None,
) -> tuple[Any, Any, dict]:
    """(encoder, head, meta) of a named pretrained model.

    ``weights``: a local directory with the backbone (else ``$GEOSCOPE_CLIP_L14`` etc., then the
    encoder registry's search). ``precision``: ``auto`` | ``fp32`` | ``bf16`` | ``int8``. ``cache``:
    where computed embeddings are kept (default :func:`cache_dir`). ``geoclip`` takes ``gallery``, an
    (N, 2) lat/lon array searched instead of the published 100K points (e.g. to restrict answers to a
    region). Zero-shot models take ``towns_min_population`` (towns offered as candidates) and
    ``templates`` (prompt templates, see ``heads.zeroshot.DEFAULT_TEMPLATES``).
    """
    spec, source = _resolve(str(name))
    precision = resolve_precision(precision)
    ok, why = _heads_available(spec)
    if not ok:
        raise WeightsUnavailableError(why)
    source = _backbone_dir(spec, weights) or source
    if source is None:  # fail fast, before building anything
        ok, why = _backbone_available(spec)
        if not ok:
            raise WeightsUnavailableError(why)
    cache = Path(cache) if cache is not None else cache_dir()
    encoder = _create_backbone(spec, source, precision)
    if spec.kind == "geoclip":
        from geoscope.heads.geoclip import load_geoclip_head

        if encoder.dim != 768:
            raise InputError(
                f"GeoCLIP's image MLP expects 768-d CLIP ViT-L/14 embeddings, but {source or spec.backbone} gives {encoder.dim}-d"
            )
        head = load_geoclip_head(cache, progress=progress, gallery=gallery)
    else:
        if gallery is not None:
            raise InputError(f"gallery= applies to the geoclip model, not to {spec.name!r}")
        head = _zeroshot_head(encoder, cache, progress, towns_min_population, templates)
    meta = {"name": spec.name, "kind": spec.kind, "precision": precision, "backbone": source or spec.repo,
            "licence": spec.licence}
    return encoder, head, meta


# --- zero-shot ---------------------------------------------------------------------------------------


def _text_tower_key(encoder) -> str:
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


def _zeroshot_head(encoder, cache: Path, progress: bool, min_population: int, templates: dict | None):
    import numpy as np

    from geoscope.atomic import atomic_path
    from geoscope.geo.places import list_countries, list_regions, list_towns
    from geoscope.heads.zeroshot import ZeroShotHead, build_hierarchy

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
    key = hashlib.sha256(_text_tower_key(encoder).encode())
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
        emb = {k: _encode_prompts(encoder, v, progress, k) for k, v in prompts.items()}
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


def _encode_prompts(encoder, texts: list[str], progress: bool, level: str):
    import numpy as np

    chunk = 256
    starts = range(0, len(texts), chunk)
    if progress and len(texts) > chunk:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"embedding {level} prompts", unit="batch", leave=False)
    parts = [encoder.encode_text(texts[i : i + chunk]) for i in starts]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)
