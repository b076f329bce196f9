"""GeoCLIP-style retrieval: image embeddings and GPS embeddings in one space, searched over a gallery.

    image embedding --Standardize--> MLP (in_dim -> hidden_dims... -> out_dim, ReLU) --> normalise
    (lat, lon)      --LocationEncoder (Equal Earth, random Fourier features at several scales)--> normalise
    logits = exp(logit_scale) * image @ location.T

Training is contrastive (image i should match its own location against the other locations of the
batch and a queue of earlier batches' GPS positions, the negatives), as in GeoCLIP. At inference the
head scores every entry of a **GPS gallery** and returns the best ones with their softmax
probabilities. The gallery is data, not weights: GeoCLIP's 100K coordinates
(:func:`geoclip_gallery`), the training coordinates, or a grid over a region (:func:`grid_gallery`);
``set_gallery`` / ``add_to_gallery`` change it without retraining. Gallery embeddings are computed
once and cached; a search is one matrix product, or, for galleries above ``heads.ann.ann_threshold()``
entries, an HNSW index built once (``heads.gallery_search``, whose numpy code every retrieval
prediction runs; ``served()`` gives the whole head as numpy arrays).

The published GeoCLIP head is an instance of this class (:meth:`RetrievalHead.from_geoclip`):
``in_dim=768, hidden_dims=(768,), out_dim=512``, the GeoCLIP location encoder, its logit scale and
its 100K gallery. It expects OpenAI CLIP ViT-L/14 image embeddings (the projected 768-d output).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from geoscope import settings
from geoscope.errors import InputError
from geoscope.geo.sphere import validate_latlon
from geoscope.heads.ann import ann_threshold, index_file_name
from geoscope.heads.base import Head, HeadOutput, Standardize, Targets, as_float_tensor, check_dim, eval_mode
from geoscope.heads.gallery_search import GallerySearch, ServedRetrievalHead
from geoscope.heads.location_encoder import LocationEncoder, geoclip_file
from geoscope.heads.registry import register_head

#: A location encoder small enough to train on a CPU in seconds (GeoCLIP's is 512 freqs x 1024 x 3).
SMALL_LOCATION_ENCODER = {"sigmas": [1.0, 16.0, 256.0], "n_freq": 64, "hidden": 256, "depth": 2, "out_dim": 256}


def as_gallery(coords, what: str = "gallery") -> torch.Tensor:
    """Validate (N, 2) lat/lon coordinates and return them as a float32 tensor."""
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{what} must be an (N, 2) array of lat, lon; got shape {arr.shape}")
    lat, lon = validate_latlon(arr[:, 0], arr[:, 1], what)
    return torch.from_numpy(np.stack([lat, lon], 1)).float()


def geoclip_gallery() -> np.ndarray:
    """GeoCLIP's 100K-coordinate GPS gallery (N, 2) from the installed ``geoclip`` package."""
    df = pd.read_csv(geoclip_file("gps_gallery/coordinates_100K.csv"))
    cols = {c.upper(): c for c in df.columns}
    return df[[cols.get("LAT", df.columns[0]), cols.get("LON", df.columns[1])]].to_numpy(np.float64)


def grid_gallery(bbox=(-90.0, -180.0, 90.0, 180.0), step_deg: float = 1.0) -> np.ndarray:
    """Cell centres of a regular lat/lon grid over ``bbox`` = (min_lat, min_lon, max_lat, max_lon)."""
    min_lat, min_lon, max_lat, max_lon = (float(v) for v in bbox)
    if not (min_lat < max_lat and min_lon < max_lon) or step_deg <= 0:
        raise InputError(f"grid gallery: bad bbox {bbox} or step {step_deg}")
    lats = np.arange(min_lat + step_deg / 2, max_lat, step_deg)
    lons = np.arange(min_lon + step_deg / 2, max_lon, step_deg)
    la, lo = np.meshgrid(lats, lons, indexing="ij")
    return np.stack([la.ravel(), lo.ravel()], 1)


@register_head("retrieval")
class RetrievalHead(Head):
    """Contrastive image-to-GPS retrieval over a gallery.

    Args:
        in_dim: image embedding dimension.
        hidden_dims: widths of the image MLP's hidden layers (ReLU after each); () for a linear map.
        out_dim: shared embedding dimension (must equal the location encoder's ``out_dim``).
        location_encoder: a ``LocationEncoder``, its ``config()`` dict, None for
            ``SMALL_LOCATION_ENCODER``, or "geoclip" to start from GeoCLIP's published weights
            (``LocationEncoder.from_geoclip()``; out_dim 512), e.g. ``geoscope train --option location_encoder=geoclip``.
        logit_scale: initial log of the logit scale (GeoCLIP: log(1/0.07)); trained.
        queue_size: GPS negatives kept from earlier batches during training.
        gps_noise_km: Gaussian jitter (km) added to training GPS targets, as GeoCLIP does (0: none).
        gallery: (N, 2) lat/lon searched at inference (can be set later).
    """

    uses_gallery = True
    streaming = True  # on_train_start streams the standardisation statistics; fit_data reads coordinates only
    # buffers, declared so that they are typed as tensors
    gps_queue: torch.Tensor  # (Q, 2) lat/lon of earlier batches, the extra negatives during training
    gallery: torch.Tensor  # (N, 2) lat/lon searched at inference

    def __init__(
        self,
        in_dim: int,
        hidden_dims=(512,),
        out_dim: int | None = None,
        location_encoder: LocationEncoder | dict | None = None,
        logit_scale: float = math.log(1 / 0.07),
        queue_size: int = 4096,
        gps_noise_km: float = 0.0,
        gallery=None,
    ):
        super().__init__()
        if location_encoder is None:
            location_encoder = dict(SMALL_LOCATION_ENCODER)
        if location_encoder == "geoclip":  # start from GeoCLIP's published weights (then fine-tune)
            location_encoder = LocationEncoder.from_geoclip().train()
        if isinstance(location_encoder, str):
            raise InputError(f"location_encoder must be a config dict, a LocationEncoder or 'geoclip', got {location_encoder!r}")
        if isinstance(location_encoder, dict):
            location_encoder = LocationEncoder.from_config(location_encoder)
        self.location_encoder = location_encoder
        out_dim = int(out_dim or location_encoder.out_dim)
        if out_dim != location_encoder.out_dim:
            raise InputError(f"retrieval head: out_dim {out_dim} differs from the location encoder's {location_encoder.out_dim}")
        self.in_dim, self.hidden_dims, self.out_dim = int(in_dim), [int(h) for h in hidden_dims], out_dim
        self.queue_size, self.gps_noise_km = int(queue_size), float(gps_noise_km)
        self.norm = Standardize(self.in_dim)
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in self.hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.register_buffer("gps_queue", torch.zeros(0, 2))
        self.register_buffer("gallery", torch.zeros(0, 2))
        self._gallery_emb: torch.Tensor | None = None
        self._searcher: GallerySearch | None = None
        self._searcher_of: torch.Tensor | None = None  # the gallery embeddings it was made from
        #: "auto" (exact up to heads.ann.ann_threshold() entries, HNSW above), "exact" or "ann"
        self.search = "auto"
        self.register_load_state_dict_post_hook(lambda module, keys: module._drop_cache())
        if gallery is not None:
            self.set_gallery(gallery)

    # --- construction ------------------------------------------------------------------------------

    def config(self) -> dict:
        return {
            "kind": self.kind, "in_dim": self.in_dim, "hidden_dims": self.hidden_dims, "out_dim": self.out_dim,
            "location_encoder": self.location_encoder.config(), "queue_size": self.queue_size,
            "gps_noise_km": self.gps_noise_km,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> "RetrievalHead":
        return cls(**{k: v for k, v in cfg.items() if k != "kind"})

    @classmethod
    def from_geoclip(cls, gallery=None) -> "RetrievalHead":
        """GeoCLIP's published head (image MLP, location encoder, logit scale; 100K gallery by default)."""
        head = cls(768, hidden_dims=(768,), out_dim=512, location_encoder=LocationEncoder.from_geoclip())
        mlp = torch.load(geoclip_file("weights/image_encoder_mlp_weights.pth"), map_location="cpu", weights_only=True)
        head.mlp.load_state_dict(mlp)
        scale = torch.load(geoclip_file("weights/logit_scale_weights.pth"), map_location="cpu", weights_only=True)
        with torch.no_grad():
            head.logit_scale.copy_(torch.as_tensor(scale).reshape(()))
        head.set_gallery(geoclip_gallery() if gallery is None else gallery)
        return head.eval()

    # --- gallery -----------------------------------------------------------------------------------

    def _drop_cache(self) -> None:
        self._gallery_emb = None
        self._searcher = None

    def train(self, mode: bool = True):
        if mode:
            self._drop_cache()
        return super().train(mode)

    def set_gallery(self, coords) -> None:
        """Replace the gallery with (N, 2) lat/lon coordinates."""
        self.gallery = as_gallery(coords)
        self._drop_cache()

    def add_to_gallery(self, coords) -> None:
        """Append coordinates; only the new entries are embedded (no retraining)."""
        new = as_gallery(coords)
        if self._gallery_emb is not None and not self.training:
            self._gallery_emb = torch.cat([self._gallery_emb, self._encode_locations(new)])
        self.gallery = torch.cat([self.gallery, new])
        self._searcher = None

    @torch.no_grad()
    def _encode_locations(self, coords: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.location_encoder.encode(coords), dim=1)

    def gallery_embeddings(self) -> torch.Tensor:
        """(N, out_dim) normalised gallery embeddings, computed once and cached."""
        if len(self.gallery) == 0:
            raise InputError("the retrieval head has an empty GPS gallery; set one with set_gallery()")
        if self._gallery_emb is None or len(self._gallery_emb) != len(self.gallery):
            self._gallery_emb = self._encode_locations(self.gallery)
        return self._gallery_emb

    # --- training ----------------------------------------------------------------------------------

    def on_train_start(self, emb: torch.Tensor, targets: Targets) -> None:
        self.norm.fit(emb)
        self.fit_data(emb, targets)

    def fit_data(self, emb: torch.Tensor, targets: Targets) -> None:
        """Use the (distinct) training coordinates as the gallery when none has been set."""
        if len(self.gallery) == 0:
            coords = torch.stack([targets.lat, targets.lon], 1).double().numpy()
            self.set_gallery(np.unique(np.round(coords, 5), axis=0))

    def image_features(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.norm(emb)), dim=-1)

    def forward(self, emb: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Logits (B, M) of B image embeddings against M locations."""
        loc = F.normalize(self.location_encoder(latlon), dim=-1)
        return self.logit_scale.exp() * self.image_features(emb) @ loc.T

    def loss(self, emb: torch.Tensor, batch: Targets) -> torch.Tensor:
        gps = torch.stack([batch.lat, batch.lon], 1).float()
        if self.gps_noise_km > 0:
            jitter = torch.randn_like(gps) * (self.gps_noise_km / 111.2)
            jitter[:, 1] /= torch.cos(torch.deg2rad(gps[:, 0])).clamp_min(0.05)
            gps = gps + jitter
            gps[:, 0] = gps[:, 0].clamp(-90, 90)
        logits = self.forward(emb, torch.cat([gps, self.gps_queue]))
        loss = F.cross_entropy(logits, torch.arange(len(gps)))
        with torch.no_grad():
            self.gps_queue = torch.cat([gps.detach(), self.gps_queue])[: self.queue_size]
        return loss

    # --- inference ---------------------------------------------------------------------------------

    def gallery_key(self) -> str:
        """A hash of what the gallery embeddings depend on (location-encoder weights and gallery)."""
        h = hashlib.sha256(b"geoscope-retrieval-gallery-v1")
        for name, tensor in sorted(self.location_encoder.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().contiguous().numpy().tobytes())
        h.update(self.gallery.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def searcher(self) -> GallerySearch:
        """The numpy search over this gallery (``heads.gallery_search``); above ``heads.ann.ann_threshold()``
        entries it uses an HNSW index kept in ``<cache>/gallery-index/``."""
        gal = self.gallery_embeddings()
        n = len(gal)
        if self._searcher is None or self._searcher_of is not gal or self._searcher.search != self.search:
            path = None
            if self.search != "exact" and (self.search == "ann" or n >= ann_threshold()):
                path = settings.cache_dir() / "gallery-index" / index_file_name(self.gallery_key())
            self._searcher = GallerySearch(self.gallery.double().numpy(), gal.detach().float().numpy(),
                                           float(self.logit_scale.detach().exp()), path, self.search)
            self._searcher_of = gal
        return self._searcher

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        with eval_mode(self):
            emb = as_float_tensor(emb)
            check_dim(emb, self.in_dim, self.kind)
            feats = self.image_features(emb).numpy()
            return self.searcher().predict_features(feats, top_k)

    @torch.no_grad()
    def served(self) -> ServedRetrievalHead:
        """This head as numpy arrays (``heads.gallery_search.ServedRetrievalHead``): same ``predict``, no torch."""
        layers = [(m.weight.detach().float().numpy(), m.bias.detach().float().numpy())
                  for m in self.mlp if isinstance(m, nn.Linear)]
        mean, inv_std = self.norm.get_buffer("mean"), self.norm.get_buffer("inv_std")
        return ServedRetrievalHead(mean.float().numpy(), inv_std.float().numpy(), layers, self.searcher())
