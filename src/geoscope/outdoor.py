"""Indoor / outdoor filter for photo collections (cross-view matching only works on outdoor photos).

Where-in-the-World dropped indoor photos (about half of its downloads) before pairing photos with
satellite tiles. Two ways to score a photo's outdoor-ness, in [0, 1]:

* ``clip``: zero-shot CLIP: the photo's embedding against averaged text embeddings of indoor and
  outdoor prompts, softmax at CLIP's own logit scale. Used when CLIP weights are on this machine
  (a model named with ``clip=``, else the first registered CLIP encoder whose weights are local).
* ``imagenet``: offline, from the ImageNet classifier head that ships with EfficientNet-Lite0: the
  probability mass on ImageNet classes that are outdoor scenes, buildings and vehicles against the
  mass on indoor rooms, furniture, appliances and tableware (classes saying neither, such as
  animals, do not vote; a photo with no evidence scores 0.5).

A photo is kept when its score is at least ``threshold`` (0.5). :func:`filter_outdoor` writes the kept
photos as a manifest (id, path, lat, lon and the manifest's other columns, plus ``outdoor_score``),
``dropped.csv`` beside it with the scores, and says which method ran.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscope.errors import InputError, WeightsUnavailableError

log = logging.getLogger(__name__)

METHODS = ("auto", "clip", "imagenet")

OUTDOOR_PROMPTS = (
    "a photo taken outdoors", "an outdoor scene", "a photo of a street", "a photo of a landscape",
    "a photo of buildings seen from outside", "a photo of nature", "a photo of a city square",
    "a photo under the open sky",
)
INDOOR_PROMPTS = (
    "a photo taken indoors", "an indoor scene", "a photo of a room", "a photo of the inside of a building",
    "a photo of a kitchen", "a photo of an office", "a photo of a restaurant interior", "a close-up photo of food",
)

# ImageNet-1k class indices (the standard ordering used by every ImageNet classifier head).
IMAGENET_OUTDOOR: dict[int, str] = {
    # landscapes
    970: "alp", 972: "cliff", 973: "coral reef", 974: "geyser", 975: "lakeside", 976: "promontory",
    977: "sandbar", 978: "seashore", 979: "valley", 980: "volcano",
    # structures seen from outside, street furniture
    410: "apiary", 425: "barn", 437: "beacon", 442: "bell cote", 448: "birdhouse", 449: "boathouse",
    460: "breakwater", 483: "castle", 489: "chainlink fence", 497: "church", 500: "cliff dwelling", 525: "dam",
    536: "dock", 538: "dome", 540: "drilling platform", 557: "flagpole", 562: "fountain", 580: "greenhouse",
    634: "lumbermill", 637: "mailbox", 645: "maypole", 646: "maze", 649: "megalith", 660: "mobile home",
    663: "monastery", 668: "mosque", 672: "mountain tent", 682: "obelisk", 698: "palace", 703: "park bench",
    704: "parking meter", 706: "patio", 716: "picket fence", 718: "pier", 727: "planetarium", 733: "pole",
    743: "prison", 755: "radio telescope", 756: "rain barrel", 807: "solar dish", 821: "steel arch bridge",
    825: "stone wall", 832: "stupa", 835: "sundial", 839: "suspension bridge", 853: "thatch", 858: "tile roof",
    863: "totem pole", 873: "triumphal arch", 888: "viaduct", 900: "water tower", 912: "worm fence",
    915: "yurt", 919: "street sign", 920: "traffic light",
    # vehicles, vessels, aircraft
    403: "aircraft carrier", 404: "airliner", 405: "airship", 407: "ambulance", 408: "amphibian",
    417: "balloon", 436: "beach wagon", 444: "tandem bicycle", 466: "bullet train", 468: "cab", 472: "canoe",
    484: "catamaran", 510: "container ship", 511: "convertible", 517: "crane", 537: "dogsled",
    547: "electric locomotive", 554: "fireboat", 555: "fire engine", 565: "freight car", 569: "garbage truck",
    573: "go-kart", 575: "golfcart", 576: "gondola", 586: "half track", 595: "harvester", 603: "horse cart",
    609: "jeep", 612: "jinrikisha", 621: "lawn mower", 625: "lifeboat", 627: "limousine", 628: "liner",
    654: "minibus", 656: "minivan", 661: "Model T", 665: "moped", 670: "motor scooter", 671: "mountain bike",
    675: "moving van", 690: "oxcart", 694: "paddlewheel", 701: "parachute", 705: "passenger car",
    717: "pickup", 724: "pirate ship", 730: "plow", 734: "police van", 751: "racer",
    757: "recreational vehicle", 779: "school bus", 780: "schooner", 802: "snowmobile", 803: "snowplow",
    812: "space shuttle", 814: "speedboat", 817: "sports car", 820: "steam locomotive", 829: "streetcar",
    833: "submarine", 847: "tank", 856: "thresher", 864: "tow truck", 866: "tractor", 867: "trailer truck",
    870: "tricycle", 871: "trimaran", 874: "trolleybus", 880: "unicycle", 895: "warplane", 908: "wing",
    913: "wreck", 914: "yawl",
}
IMAGENET_INDOOR: dict[int, str] = {
    # rooms and shops seen from inside
    406: "altar", 415: "bakery", 424: "barbershop", 454: "bookshop", 467: "butcher shop", 498: "cinema",
    509: "confectionery", 582: "grocery store", 598: "home theater", 624: "library", 762: "restaurant",
    788: "shoe shop", 819: "stage", 854: "theater curtain", 860: "tobacco shop", 865: "toyshop",
    # furniture and furnishings
    423: "barber chair", 431: "bassinet", 453: "bookcase", 492: "chest", 493: "chiffonier", 495: "china cabinet",
    516: "cradle", 520: "crib", 526: "desk", 532: "dining table", 539: "doormat", 548: "entertainment center",
    553: "file cabinet", 559: "folding chair", 564: "four-poster", 721: "pillow", 736: "pool table",
    741: "prayer rug", 750: "quilt", 765: "rocking chair", 831: "studio couch", 857: "throne", 894: "wardrobe",
    # kitchen and bathroom
    434: "bath towel", 435: "bathtub", 505: "coffeepot", 521: "Crock Pot", 534: "dishwasher", 544: "Dutch oven",
    550: "espresso maker", 567: "frying pan", 618: "ladle", 648: "medicine chest", 651: "microwave",
    659: "mixing bowl", 700: "paper towel", 729: "plate rack", 731: "plunger", 760: "refrigerator",
    766: "rotisserie", 794: "shower curtain", 804: "soap dispenser", 813: "spatula", 827: "stove", 840: "swab",
    849: "teapot", 859: "toaster", 861: "toilet seat", 876: "tub", 882: "vacuum", 891: "waffle iron",
    896: "washbasin", 897: "washer", 909: "wok",
    # electronics, office, household
    482: "cassette player", 485: "CD player", 508: "computer keyboard", 527: "desktop computer",
    528: "dial telephone", 530: "digital clock", 545: "electric fan", 556: "fire screen", 579: "grand piano",
    590: "hand-held computer", 619: "lampshade", 620: "laptop", 632: "loudspeaker", 662: "modem", 664: "monitor",
    669: "mosquito net", 673: "mouse", 681: "notebook", 687: "organ", 713: "photocopier", 742: "printer",
    745: "projector", 753: "radiator", 754: "radio", 782: "screen", 786: "sewing machine", 789: "shoji",
    799: "sliding door", 810: "space bar", 811: "space heater", 846: "table lamp", 848: "tape player",
    851: "television", 878: "typewriter keyboard", 881: "upright piano", 892: "wall clock", 904: "window screen",
    905: "window shade",
    # tableware and dishes
    441: "beer glass", 504: "coffee mug", 572: "goblet", 809: "soup bowl", 922: "menu", 923: "plate",
    924: "guacamole", 925: "consomme", 926: "hot pot", 927: "trifle", 933: "cheeseburger", 934: "hotdog",
    935: "mashed potato", 959: "carbonara", 962: "meat loaf", 963: "pizza", 964: "potpie", 965: "burrito",
    967: "espresso", 968: "cup", 969: "eggnog",
}


def _available_clip() -> str | None:
    """The first registered CLIP encoder whose weights are on this machine, or None."""
    from geoscope.encoders import list_encoders

    for info in list_encoders():
        if info.family == "clip" and info.offline:
            return info.name
    return None


class OutdoorClassifier:
    """Scores images in [0, 1]: how likely each is an outdoor photo (``method`` says how)."""

    def __init__(self, method: str = "auto", clip: str | None = None, batch_size: int = 16, dtype: str | None = None):
        if method not in METHODS:
            raise InputError(f"the outdoor method must be one of {', '.join(METHODS)}, got {method!r}")
        self.batch_size = int(batch_size)
        # a CLIP encoder (encode_text, encode_pixels) or the ImageNet classifier (classify); set below
        self.encoder: Any = None
        if method in ("auto", "clip"):
            name = clip or _available_clip()
            if name is None and method == "clip":
                raise WeightsUnavailableError(
                    "no CLIP weights on this machine for the zero-shot outdoor filter: name a CLIP model "
                    "(a local directory or a registered name whose weights are cached), or use the imagenet method"
                )
            if name is not None:
                from geoscope.encoders import create_encoder

                self.encoder = create_encoder(name, **({"dtype": dtype} if dtype else {}))
                if not getattr(self.encoder, "has_text", False):
                    raise InputError(f"encoder {name!r} has no text tower, so it cannot score text prompts")
                self.method = "clip"
                self.model_name = self.encoder.name
                self._text = self._prompt_embeddings()
                return
        from geoscope.encoders import create_encoder

        self.encoder = create_encoder("efficientnet-lite0", **({"dtype": dtype} if dtype else {}))
        self.method = "imagenet"
        self.model_name = self.encoder.name
        self._outdoor = np.array(sorted(IMAGENET_OUTDOOR))
        self._indoor = np.array(sorted(IMAGENET_INDOOR))

    def describe(self) -> str:
        if self.method == "clip":
            return f"zero-shot CLIP ({self.model_name}): indoor vs outdoor prompts"
        return f"ImageNet classifier of {self.model_name}: outdoor vs indoor classes"

    def _prompt_embeddings(self) -> np.ndarray:
        emb = []
        for prompts in (INDOOR_PROMPTS, OUTDOOR_PROMPTS):
            t = self.encoder.encode_text(list(prompts))
            t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
            m = t.mean(axis=0)
            emb.append(m / (np.linalg.norm(m) + 1e-12))
        return np.stack(emb)  # (2, dim): indoor, outdoor

    def score(self, images: Sequence) -> np.ndarray:
        """Outdoor score in [0, 1] for each PIL image."""
        import torch

        out = np.zeros(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            with torch.inference_mode():
                pixels = self.encoder.preprocess(batch)
                if self.method == "clip":
                    img = self.encoder.encode_pixels(pixels).astype(np.float64)
                    img /= np.linalg.norm(img, axis=1, keepdims=True) + 1e-12
                    scale = float(self.encoder.model.logit_scale.exp()) if hasattr(self.encoder.model, "logit_scale") else 100.0
                    logits = scale * img @ self._text.T.astype(np.float64)
                    logits -= logits.max(axis=1, keepdims=True)
                    p = np.exp(logits)
                    out[start:start + len(batch)] = p[:, 1] / p.sum(axis=1)
                else:
                    logits = self.encoder.classify(pixels).float()
                    probs = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
                    p_out = probs[:, self._outdoor].sum(axis=1)
                    p_in = probs[:, self._indoor].sum(axis=1)
                    out[start:start + len(batch)] = (p_out + 1e-4) / (p_out + p_in + 2e-4)
        return out


@dataclass
class FilterResult:
    method: str
    description: str
    kept: int
    dropped: int
    unreadable: int
    output: Path
    dropped_csv: Path
    dropped_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "description": self.description, "kept": self.kept, "dropped": self.dropped,
                "unreadable": self.unreadable, "output": str(self.output), "dropped_csv": str(self.dropped_csv),
                "dropped_ids": self.dropped_ids}


def filter_outdoor(photos, output: str | os.PathLike, method: str = "auto", clip: str | None = None,
                   threshold: float = 0.5, batch_size: int = 16, progress: bool = True,
                   classifier: OutdoorClassifier | None = None, dtype: str | None = None) -> FilterResult:
    """Keep the outdoor photos of ``photos`` (a manifest, a folder, or a ``Dataset``).

    Writes ``output`` (a CSV manifest of the kept photos with an ``outdoor_score`` column, readable by
    ``open_dataset``) and ``dropped.csv`` beside it (id, path, outdoor_score, reason): indoor photos and
    photos that cannot be read.
    """
    import pandas as pd
    from tqdm import tqdm

    from geoscope.atomic import atomic_path
    from geoscope.data.datasets import Dataset, load_sample_image, open_dataset
    from geoscope.data.images import ImageError

    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"the outdoor threshold must be between 0 and 1, got {threshold}")
    output = Path(output)
    if output.suffix.lower() not in (".csv", ""):
        raise InputError(f"{output}: the kept photos are written as a CSV manifest (name it .csv)")
    ds = photos if isinstance(photos, Dataset) else open_dataset(photos, coords="auto", progress=progress)
    if len(ds) == 0:
        raise InputError(f"{photos}: no photos found")
    clf = classifier or OutdoorClassifier(method, clip, batch_size, dtype)
    samples = list(ds)
    scores = np.full(len(samples), np.nan)
    reasons: dict[int, str] = {}
    bar = tqdm(total=len(samples), desc=f"outdoor filter ({clf.method})", unit="img", disable=not progress)
    for start in range(0, len(samples), clf.batch_size):
        chunk = list(range(start, min(start + clf.batch_size, len(samples))))
        images, where = [], []
        for i in chunk:
            try:
                images.append(load_sample_image(samples[i]))
                where.append(i)
            except ImageError as exc:
                reasons[i] = f"unreadable: {exc}"
        if images:
            scores[where] = clf.score(images)
        bar.update(len(chunk))
    bar.close()
    keep = np.isfinite(scores) & (scores >= threshold)
    table = ds.table.copy()
    table["outdoor_score"] = np.round(scores, 4)
    kept = table[keep].rename(columns={"source": "path"})
    kept = kept.drop(columns=[c for c in ("offset", "size") if c in kept and kept[c].isna().all()])  # shard members keep theirs
    with atomic_path(output) as tmp:
        kept.to_csv(tmp, index=False)
    drop_rows = []
    for i in map(int, np.flatnonzero(~keep)):
        reason = reasons.get(i, f"indoor: outdoor score {scores[i]:.2f} < {threshold:.2f}")
        drop_rows.append({"id": samples[i].id, "path": samples[i].source,
                          "outdoor_score": "" if not np.isfinite(scores[i]) else round(float(scores[i]), 4),
                          "reason": reason})
    dropped_csv = output.with_name("dropped.csv")
    with atomic_path(dropped_csv) as tmp:
        pd.DataFrame(drop_rows, columns=["id", "path", "outdoor_score", "reason"]).to_csv(tmp, index=False)
    log.info("outdoor filter (%s): kept %d, dropped %d", clf.method, int(keep.sum()), int((~keep).sum()))
    return FilterResult(clf.method, clf.describe(), int(keep.sum()), int((~keep).sum()), len(reasons), output,
                        dropped_csv, [samples[i].id for i in np.flatnonzero(~keep)])
