"""``load_parts(name, ...)``: the encoder, head and facts of a named pretrained model.

``Geolocator.from_pretrained(name)`` builds a Geolocator from them (this package never imports the
Geolocator: it sits below it).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from geoscope import settings
from geoscope.encoders.precision import resolve_precision
from geoscope.errors import GeoscopeError, InputError, WeightsUnavailableError
from geoscope.pretrained.specs import MODELS, resolve_model
from geoscope.pretrained.weights import backbone_available, backbone_dir, create_backbone, heads_available


def cache_dir() -> Path:
    """Where computed artefacts (exported encoders, gallery and prompt embeddings) are cached:
    ``$GEOSCOPE_CACHE`` or ``~/.cache/geoscope``."""
    return settings.cache_dir()


#: backbones built ahead of ``load_parts`` by :func:`prepare_backbone`, by what they were built from
_PREPARED: dict[tuple, Any] = {}
_PREPARED_LOCK = threading.Lock()


def _backbone_key(name: str, source: str | None, precision: str, runtime: str | None,
                  allow_download: bool | None) -> tuple:
    return (name, source, precision, runtime, allow_download)


def prepare_backbone(name: str, weights: str | os.PathLike | None = None, precision: str | None = None,
                     runtime: str | None = None, warm: int | None = None) -> bool:
    """Build the backbone of the named model ``name`` now and let it start compiling for batches of
    ``warm`` (OpenVINO compiles in the background), so that the caller's next imports (the Geolocator,
    the head) overlap the compile; ``load_parts`` with the same name, weights, precision and runtime
    then takes this backbone instead of building another. Only for models whose backbone does not run
    on torch (a torch backbone compiles nothing, and building it here would only move the torch import
    earlier). Returns whether a backbone is waiting; anything that goes wrong is left for ``load_parts``
    to raise with its own sentence."""
    spec = MODELS.get(str(name))
    if spec is None or (runtime or spec.runtime) == "torch" or heads_available(spec)[0] is False:
        return False
    try:
        concrete = resolve_precision(precision or "auto")
        source = backbone_dir(spec, weights)
        if source is None:
            return False  # found by the encoder registry's search: load_parts does it, with its checks
        key = _backbone_key(spec.name, source, concrete, runtime or spec.runtime, None)
        with _PREPARED_LOCK:
            if key in _PREPARED:
                return True
        encoder = create_backbone(spec, source, concrete, runtime=runtime or spec.runtime)
    except GeoscopeError:
        return False
    if warm is not None and hasattr(encoder, "warm"):
        encoder.warm(int(warm))
    with _PREPARED_LOCK:
        _PREPARED[key] = encoder
    return True


def load_parts(
    name: str,
    weights: str | os.PathLike | None = None,
    precision: str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    gallery=None,
    towns_min_population: int | None = None,
    templates: dict | None = None,
    encoder=None,
    allow_download: bool | None = None,
    runtime: str | None = None,
    warm: int | None = None,
) -> tuple[Any, Any, dict]:
    """(encoder, head, meta) of a named pretrained model.

    ``weights``: a local directory with the backbone (else ``$GEOSCOPE_CLIP_L14`` etc., then the
    encoder registry's search). ``encoder``: an ``Encoder`` (used as it is) or an encoder name to use
    as the backbone instead (not together with ``weights``). ``precision``: ``auto`` (the default) |
    ``fp32`` | ``bf16`` | ``int8``. ``allow_download``: let the encoder layer fetch hub weights.
    ``runtime``: how geoscope runs the backbone it builds (``encoders.runtimes``; default: the model's,
    ``auto`` for geoclip, which then loads without importing torch or transformers once its export and
    served head are cached; ``torch`` for zero-shot models, which need the text tower).
    ``cache``: where computed embeddings are kept (default :func:`cache_dir`). ``geoclip`` takes
    ``gallery``, an (N, 2) lat/lon array searched instead of the published 100K points (e.g. to
    restrict answers to a region). Zero-shot models take ``towns_min_population`` (towns offered as
    candidates, default 100,000) and ``templates`` (prompt templates, see ``heads.zeroshot.DEFAULT_TEMPLATES``).
    ``warm``: a batch size the caller will encode first; a backbone that compiles (OpenVINO) starts
    compiling for it in the background as soon as it is built, while the head loads.
    """
    spec, source = resolve_model(str(name))
    given = encoder is not None and not isinstance(encoder, (str, os.PathLike))
    if encoder is not None and weights is not None:
        raise InputError("give a named model either encoder= or weights=, not both: each says where its backbone is")
    if given and precision is not None:
        raise InputError("precision= applies when geoscope builds the backbone; "
                         "build your encoder at that precision instead")
    if given and allow_download is not None:
        raise InputError("allow_download= applies when geoscope builds the backbone, not to an encoder you pass")
    if given and runtime is not None:
        raise InputError("runtime= applies when geoscope builds the backbone, not to an encoder you pass")
    precision = resolve_precision(precision or "auto") if not given else "as given"
    if spec.kind != "geoclip" and gallery is not None:
        raise InputError(f"gallery= applies to the geoclip model, not to {spec.name!r}")
    if spec.kind != "zeroshot" and (templates is not None or towns_min_population is not None):
        raise InputError(f"templates= and towns_min_population= apply to zero-shot models, not to {spec.name!r}")
    ok, why = heads_available(spec)
    if not ok:
        raise WeightsUnavailableError(why)
    if isinstance(encoder, (str, os.PathLike)):
        source = str(encoder)
    source = backbone_dir(spec, weights) or source
    if source is None and not given:  # fail fast, before building anything
        ok, why = backbone_available(spec)
        if not ok:
            raise WeightsUnavailableError(why)
    cache = Path(cache) if cache is not None else cache_dir()
    if not given:
        extra = {} if allow_download is None else {"allow_download": allow_download}
        with _PREPARED_LOCK:  # built ahead by prepare_backbone
            encoder = _PREPARED.pop(_backbone_key(spec.name, source, precision, runtime or spec.runtime,
                                                  allow_download), None)
        if encoder is None:
            encoder = create_backbone(spec, source, precision, runtime=runtime or spec.runtime, **extra)
        if warm is not None and hasattr(encoder, "warm"):
            encoder.warm(int(warm))
    if spec.kind == "geoclip":
        from geoscope.pretrained.served import served_geoclip_head

        if encoder.dim != 768:
            raise InputError(
                f"GeoCLIP's image MLP expects 768-d CLIP ViT-L/14 embeddings, but {source or spec.backbone} "
                f"gives {encoder.dim}-d"
            )
        head = served_geoclip_head(cache, progress=progress, gallery=gallery)
    else:
        from geoscope.pretrained.zeroshot import zeroshot_head  # place names and prompts: only for zero-shot

        head = zeroshot_head(encoder, cache, progress, towns_min_population or 100_000, templates)
    backbone = source or (getattr(encoder, "name", None) if given else spec.repo)
    meta = {"name": spec.name, "kind": spec.kind, "precision": precision, "backbone": backbone,
            "licence": spec.licence, "runtime": getattr(encoder, "runtime", "torch")}
    return encoder, head, meta
