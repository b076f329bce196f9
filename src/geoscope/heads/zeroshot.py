"""Zero-shot geolocation with a CLIP text tower, hierarchically, in the manner of StreetCLIP.

Every place gets a text prompt ("A Street View photo in {country}.", "... in {region}, {country}.",
"... from {town}, {country}."), embedded once by the CLIP text tower. An image embedding is compared
with all prompts; probabilities chain down the hierarchy:

    P(town) = P(country) * P(region | country) * P(town | region)

where each conditional is a softmax over the siblings only. Candidates are the most probable towns at
their coordinates. The hierarchy is built from the towns themselves (every country and region has at
least one town), so a candidate always has a real location.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoscope.errors import InputError
from geoscope.heads.base import Head, HeadOutput, as_float_tensor, check_dim
from geoscope.heads.registry import register_head

#: Prompt templates per level; fields: {country}, {region}, {town}.
DEFAULT_TEMPLATES = {
    "country": "A Street View photo in {country}.",
    "region": "A Street View photo in {region}, {country}.",
    "town": "A Street View photo from {town}, {country}.",
}


def group_softmax(logits: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of (B, M) ``logits`` within each group of columns (``group`` (M,) in [0, n_groups))."""
    b = logits.shape[0]
    index = group.unsqueeze(0).expand(b, -1)
    peak = torch.full((b, n_groups), -torch.inf, dtype=logits.dtype).scatter_reduce(
        1, index, logits, reduce="amax", include_self=True
    )
    e = (logits - peak.gather(1, index)).exp()
    total = torch.zeros(b, n_groups, dtype=logits.dtype).index_add_(1, group, e)
    return e / total.gather(1, index)


def build_hierarchy(
    towns: Sequence[dict], country_names: dict[str, str], region_names: dict[str, str]
) -> dict:
    """Countries, regions and towns as parallel lists from ``towns`` (dicts with name, lat, lon,
    country_code, region_code: the rows of ``geo.places.list_towns``).

    Returns dict(countries=[(code, name)], regions=[(code, name, country_index)],
    towns=[(name, lat, lon, region_index)]).
    """
    if not towns:
        raise InputError("zero-shot geolocation needs at least one town to choose from")
    countries: dict[str, int] = {}
    regions: dict[tuple[str, str], int] = {}
    out_c: list[tuple[str, str]] = []
    out_r: list[tuple[str, str, int]] = []
    out_t: list[tuple[str, float, float, int]] = []
    for row, t in enumerate(towns):
        try:
            cc, rc = str(t["country_code"]), str(t.get("region_code") or "")
            name, lat, lon = str(t["name"]), float(t["lat"]), float(t["lon"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"town row {row} lacks a usable name / lat / lon / country_code ({exc})") from None
        if cc not in countries:
            countries[cc] = len(out_c)
            out_c.append((cc, country_names.get(cc, cc)))
        if (cc, rc) not in regions:
            regions[(cc, rc)] = len(out_r)
            # a town without a known region sits in a pseudo-region named after its country
            out_r.append((rc, region_names.get(rc, "") if rc else "", countries[cc]))
        out_t.append((name, lat, lon, regions[(cc, rc)]))
    return {"countries": out_c, "regions": out_r, "towns": out_t}


def hierarchy_prompts(hierarchy: dict, templates: dict | None = None) -> dict[str, list[str]]:
    """The text prompt of every country, region and town."""
    tpl = {**DEFAULT_TEMPLATES, **(templates or {})}
    cnames = [n for _, n in hierarchy["countries"]]
    country = [tpl["country"].format(country=n) for n in cnames]
    region = [
        tpl["region"].format(region=rn, country=cnames[ci]) if rn else tpl["country"].format(country=cnames[ci])
        for _, rn, ci in hierarchy["regions"]
    ]
    town = [
        tpl["town"].format(town=tn, country=cnames[hierarchy["regions"][ri][2]],
                           region=hierarchy["regions"][ri][1] or cnames[hierarchy["regions"][ri][2]])
        for tn, _, _, ri in hierarchy["towns"]
    ]
    return {"country": country, "region": region, "town": town}


@register_head("zeroshot")
class ZeroShotHead(Head):
    """Hierarchical zero-shot head over CLIP image embeddings; weights are prompt embeddings."""

    trainable = False  # its weights are prompt embeddings (pretrained.zeroshot builds it)

    # buffers registered in __init__ (declared so type checkers know they are tensors, not sub-modules)
    logit_scale: torch.Tensor
    country_emb: torch.Tensor
    region_emb: torch.Tensor
    town_emb: torch.Tensor
    region_parent: torch.Tensor
    town_parent: torch.Tensor
    town_coords: torch.Tensor

    def __init__(self, in_dim: int, hierarchy: dict, templates: dict | None = None, logit_scale: float = 100.0):
        super().__init__()
        self.in_dim = int(in_dim)
        self.hierarchy = {k: [tuple(r) for r in hierarchy[k]] for k in ("countries", "regions", "towns")}
        self.templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        n_c, n_r, n_t = (len(self.hierarchy[k]) for k in ("countries", "regions", "towns"))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.register_buffer("country_emb", torch.zeros(n_c, in_dim))
        self.register_buffer("region_emb", torch.zeros(n_r, in_dim))
        self.register_buffer("town_emb", torch.zeros(n_t, in_dim))
        self.register_buffer("region_parent", torch.tensor([r[2] for r in self.hierarchy["regions"]], dtype=torch.long))
        self.register_buffer("town_parent", torch.tensor([t[3] for t in self.hierarchy["towns"]], dtype=torch.long))
        self.register_buffer("town_coords", torch.tensor([[t[1], t[2]] for t in self.hierarchy["towns"]], dtype=torch.float64))

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "hierarchy": {k: [list(r) for r in v] for k, v in self.hierarchy.items()},
            "templates": dict(self.templates),
        }

    @classmethod
    def from_config(cls, config: dict) -> "ZeroShotHead":
        return cls(config["in_dim"], config["hierarchy"], config.get("templates"))

    def prompts(self) -> dict[str, list[str]]:
        return hierarchy_prompts(self.hierarchy, self.templates)

    def set_text_embeddings(self, country, region, town, logit_scale: float | None = None) -> None:
        """Set the prompt embeddings (arrays (n, in_dim), in :meth:`prompts` order); they are L2-normalised."""
        for name, value in (("country_emb", country), ("region_emb", region), ("town_emb", town)):
            t = torch.as_tensor(np.asarray(value), dtype=torch.float32)
            if t.shape != getattr(self, name).shape:
                raise InputError(f"{name}: expected shape {tuple(getattr(self, name).shape)}, got {tuple(t.shape)}")
            setattr(self, name, F.normalize(t, dim=1))
        if logit_scale is not None:
            self.logit_scale = torch.tensor(float(logit_scale))

    @classmethod
    def from_text_encoder(
        cls,
        encode_text: Callable[[list[str]], np.ndarray],
        in_dim: int,
        hierarchy: dict,
        templates: dict | None = None,
        logit_scale: float = 100.0,
    ) -> "ZeroShotHead":
        """Build and embed every prompt with ``encode_text`` (e.g. a CLIP encoder's ``encode_text``)."""
        head = cls(in_dim, hierarchy, templates, logit_scale)
        p = head.prompts()
        head.set_text_embeddings(encode_text(p["country"]), encode_text(p["region"]), encode_text(p["town"]))
        return head.eval()

    def level_probs(self, emb) -> dict[str, torch.Tensor]:
        """P(country) (B, C), P(region) (B, R) and P(town) (B, T), each summing to 1 over its level."""
        x = as_float_tensor(emb)
        check_dim(x, self.in_dim, self.kind)
        x = F.normalize(x, dim=1)
        s = self.logit_scale
        p_country = (s * x @ self.country_emb.T).softmax(dim=1)
        p_region = p_country[:, self.region_parent] * group_softmax(
            s * x @ self.region_emb.T, self.region_parent, len(self.country_emb)
        )
        p_town = p_region[:, self.town_parent] * group_softmax(
            s * x @ self.town_emb.T, self.town_parent, len(self.region_emb)
        )
        return {"country": p_country, "region": p_region, "town": p_town}

    @torch.inference_mode()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        probs = self.level_probs(emb)
        p_town = probs["town"].double()
        k = max(1, min(int(top_k), p_town.shape[1]))
        scores, idx = p_town.topk(k, dim=1)
        top_c = probs["country"].topk(min(3, probs["country"].shape[1]), dim=1)
        countries = [
            [{"code": self.hierarchy["countries"][j][0], "name": self.hierarchy["countries"][j][1], "probability": float(p)}
             for p, j in zip(ps.tolist(), js.tolist())]
            for ps, js in zip(top_c.values, top_c.indices)
        ]
        towns = [[self.hierarchy["towns"][j][0] for j in row] for row in idx.tolist()]
        return HeadOutput(
            cell_probs=None,
            coords=self.town_coords[idx].numpy(),
            scores=scores.numpy(),
            cells=None,
            extra={"top_countries": countries, "towns": towns},
            support=self.town_coords.numpy(),
            support_probs=p_town.numpy(),
            candidate_support=idx.numpy(),
            neighbourhood="town",
        )
