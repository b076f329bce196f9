"""``list_models()``: every named pretrained model and whether it works on this machine now."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from geoscope.pretrained.specs import MODELS
from geoscope.pretrained.weights import backbone_available, heads_available


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


def list_models() -> list[PretrainedInfo]:
    """Every named pretrained model, with whether its weights are on this machine now (no network)."""
    out = []
    for spec in MODELS.values():
        ok_h, why_h = heads_available(spec)
        ok_b, why_b = backbone_available(spec)
        out.append(PretrainedInfo(spec.name, spec.kind, spec.backbone, spec.source, spec.size, spec.licence,
                                  ok_h and ok_b, spec.description, why_h or why_b))
    return out
