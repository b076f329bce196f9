"""The CLI imports nothing heavy until a command needs it (a cold `geoscope locate` pays only for what it uses)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "scipy", "pandas", "pyarrow", "shapely", "onnxruntime", "openvino", "faiss",
         "matplotlib", "geoscope.geo.places")


def test_building_the_cli_imports_nothing_heavy():
    code = ("import sys; from geoscope.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_the_geolocator_module_imports_no_torch():
    code = ("import sys, geoscope.geolocator, geoscope.pretrained; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_opening_a_jpeg_or_png_does_not_import_the_heif_plugin(tmp_path):
    """pillow_heif (8-55 ms to import) only for an image Pillow's core plugins do not read."""
    from PIL import Image

    for suffix in ("jpg", "png"):
        Image.new("RGB", (8, 6), (10, 200, 30)).save(tmp_path / f"a.{suffix}")
    code = ("import sys; from geoscope.data.images import load_image; "
            f"[load_image(p) for p in {[str(tmp_path / 'a.jpg'), str(tmp_path / 'a.png')]!r}]; "
            "print('pillow_heif' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
