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
