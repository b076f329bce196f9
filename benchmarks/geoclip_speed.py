"""GeoCLIP per-image latency: geoscope's ``geoclip`` against the ``geoclip`` package's ``predict()``.

Both run in this process on the same images and the same backbone directory. With the real
``openai/clip-vit-large-patch14`` weights absent (no hub here), the backbone is the FULL ViT-L/14
architecture with random weights (written once by ``pretrained.save_random_clip``): the computation,
and so the time, is the same. geoscope is timed end to end as ``geoscope locate`` runs it
(``Geolocator.locate``: image decoding, EXIF, preprocessing, backbone, head, place names), after
loading; the reference as ``GeoCLIP.predict(path, top_k=5)``. Drift of bf16 / int8 against fp32 is
measured on the same images (top-1 agreement, km between top-1s, top-1 probability difference); with
random backbone weights the drift is indicative only.

    python3 benchmarks/geoclip_speed.py [--images 8] [--ref-calls 2] [--weights DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def _images(folder: Path, n: int) -> list[str]:
    """Kauai.png (the geoclip package's example) and n-1 synthetic photos of assorted sizes."""
    from PIL import Image, ImageDraw

    from geoscope.heads.location_encoder import geoclip_file

    paths = [str(geoclip_file("../images/Kauai.png"))]
    rng = np.random.default_rng(0)
    for i in range(n - 1):
        w, h = int(rng.integers(480, 1600)), int(rng.integers(360, 1200))
        im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(40):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            draw.rectangle([x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))],
                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        p = folder / f"synthetic_{i}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
    return paths


def _backbone(weights: str | None) -> tuple[str, str]:
    """(directory, description) of the backbone to time: real weights when given, else random ViT-L/14."""
    if weights:
        return weights, "real weights"
    from geoscope.encoders.hub import find_local

    real = find_local("openai/clip-vit-large-patch14")
    if real is not None:
        return str(real), "real weights (Hugging Face cache)"
    from geoscope.pretrained import cache_dir

    folder = cache_dir() / "bench" / "random-clip-vit-l14"
    if not (folder / "model.safetensors").is_file():
        print(f"writing a random ViT-L/14 CLIP to {folder} (once) ...", file=sys.stderr)
        save_random_vit_l14(folder)
    return str(folder), "random weights, full ViT-L/14 architecture"


def save_random_vit_l14(folder: Path, seed: int = 0) -> None:
    """openai/clip-vit-large-patch14's architecture and preprocessing with random weights (1.7 GB)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from geoscope.encoders.testing import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer()  # the text tower is not timed; any working tokenizer will do
    config = CLIPConfig(
        projection_dim=768,
        text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14, image_size=224),
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images to time geoscope on (default 8)")
    ap.add_argument("--ref-calls", type=int, default=2, help="reference predict() calls (each ~20 s+)")
    ap.add_argument("--weights", help="a real openai/clip-vit-large-patch14 directory, if you have one")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds over the images (default 3)")
    args = ap.parse_args()

    import torch

    from geoscope.data.images import load_image
    from geoscope.geo.sphere import haversine_km
    from geoscope.geolocator import Geolocator
    from geoscope.testing.geoclip import reference_geoclip_class

    clip_dir, backbone_kind = _backbone(args.weights)
    tmp = Path(tempfile.mkdtemp(prefix="geoclip-bench-"))
    paths = _images(tmp, args.images)
    pics = [load_image(p) for p in paths]

    # All precisions stay loaded and are timed interleaved (round by round, image by image), so load
    # from other jobs on a shared machine falls on all of them alike.
    models, results = {}, {}
    loads = [os.getloadavg()[0]]
    for precision in args.precisions.split(","):
        t0 = time.perf_counter()
        models[precision] = Geolocator.from_pretrained("geoclip", weights=clip_dir, precision=precision)
        load_s = time.perf_counter() - t0
        models[precision].locate(paths[:1], top_k=5)  # warm-up (first call allocates, packs weights, ...)
        results[precision] = {"load_s": load_s, "locate": [], "backbone": [], "batched": []}
    GeoCLIP = reference_geoclip_class()
    t0 = time.perf_counter()
    ref = GeoCLIP(from_pretrained=True, clip_path=clip_dir).eval()
    ref_load = time.perf_counter() - t0
    ref_times, ref_top = [], []
    batch = min(8, len(paths))
    for rnd in range(max(args.rounds, args.ref_calls)):
        if rnd < args.ref_calls:  # the reference's calls are interleaved with geoscope's rounds
            p = paths[rnd % len(paths)]
            t = time.perf_counter()
            gps, prob = ref.predict(p, top_k=5)
            ref_times.append(time.perf_counter() - t)
            ref_top.append((p, gps[0].tolist(), float(prob[0])))
        if rnd >= args.rounds:
            continue
        for path, pic in zip(paths, pics):
            for precision, geo in models.items():
                r = results[precision]
                r["locate"] += _time(lambda geo=geo, path=path: geo.locate([path], top_k=5), 1)
                r["backbone"] += _time(lambda geo=geo, pic=pic: geo.encoder.encode_images([pic], batch_size=1), 1)
        for precision, geo in models.items():
            results[precision]["batched"].append(
                _time(lambda geo=geo: geo.locate(paths[:batch], top_k=5, batch_size=batch), 1)[0] / batch)
    for precision, geo in models.items():
        r = results[precision]
        preds = geo.locate(paths, top_k=5)
        r["top1"] = np.array([[p.best.lat, p.best.lon] for p in preds])
        r["p1"] = np.array([p.best.probability for p in preds])
        r["latency"], r["latency_min"] = statistics.median(r["locate"]), min(r["locate"])
        r["backbone_med"], r["batched_med"] = statistics.median(r["backbone"]), statistics.median(r["batched"])
        print(f"{precision}: {r['latency']:.3f} s/image (min {r['latency_min']:.3f}; backbone {r['backbone_med']:.3f} s), "
              f"batch {batch}: {r['batched_med']:.3f} s/image, load {r['load_s']:.1f} s", file=sys.stderr)
    loads.append(os.getloadavg()[0])
    del models, geo, ref
    gc.collect()

    ref_latency = statistics.median(ref_times)
    print(f"reference predict(): {', '.join(f'{t:.1f}' for t in ref_times)} s", file=sys.stderr)

    fp32 = results.get("fp32")
    same_as_ref = None
    if fp32 is not None:
        same_as_ref = all(
            np.allclose(fp32["top1"][paths.index(p)], gps, atol=1e-4)
            and abs(fp32["p1"][paths.index(p)] - prob) < 1e-3 * prob + 1e-7
            for p, gps, prob in ref_top
        )

    headers = ["method", "precision", "s / image (batch 1, median)", "min", "speed-up (median / median)",
               "speed-up (min / min)", "backbone share",
               f"s / image (batch {batch})", "top-1 = fp32", "km between top-1s (max)", "|Δp top-1| (max)"]
    rows = [["geoclip package predict()", "fp32", ref_latency, min(ref_times), 1.0, 1.0, "", "", "", "", ""]]
    for precision, r in results.items():
        if fp32 is not None and precision != "fp32":
            km = haversine_km(r["top1"][:, 0], r["top1"][:, 1], fp32["top1"][:, 0], fp32["top1"][:, 1])
            agree = f"{int((km < 1e-6).sum())}/{len(km)}"
            km_max, dp = float(np.max(km)), float(np.max(np.abs(r["p1"] - fp32["p1"])))
        else:
            agree, km_max, dp = "(reference)" if precision == "fp32" else "", "", ""
        rows.append(["geoscope locate --model geoclip", precision, r["latency"], r["latency_min"],
                     ref_latency / r["latency"], min(ref_times) / r["latency_min"],
                     f"{min(1.0, r['backbone_med'] / r['latency']):.0%}",
                     r["batched_med"], agree, km_max, dp])
    notes = (
        f"Backbone: {backbone_kind} ({clip_dir}). {len(paths)} images (Kauai.png from the geoclip package + "
        f"synthetic photos of 480-1600 px); geoscope: medians over {args.rounds} rounds over them, precisions interleaved, "
        f"after one warm-up call, end to end as "
        f"`geoscope locate` runs them (decode, EXIF, preprocessing, backbone, head, place names), model loaded once; "
        f"reference: {len(ref_times)} `GeoCLIP.predict(path, 5)` calls (it re-embeds its 100K GPS gallery "
        f"on every call), interleaved with geoscope's rounds. geoscope fp32 top-1 coordinates and probabilities equal the "
        f"reference's on the reference's "
        f"images: {same_as_ref}. Load times: reference {ref_load:.1f} s; geoscope "
        + ", ".join(f"{k} {v['load_s']:.1f} s" for k, v in results.items())
        + " (the first load ever embeds the gallery once and caches it on disk). "
        f"torch threads: {torch.get_num_threads()}. Drift with random backbone weights is indicative only: random "
        f"ViT embeddings of different images are much alike, so agreement is easier than with real weights. "
        f"The machine is shared with other jobs (1-min load average {loads[0]:.1f} at the start, {loads[1]:.1f} at "
        f"the end, on {os.cpu_count()} cores), so medians carry "
        f"their noise; the minimum is the least disturbed call of each."
    )
    write_result("geoclip_speed", "GeoCLIP: geoscope vs the geoclip package, per-image latency on CPU", headers, rows, notes)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
