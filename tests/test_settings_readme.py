"""The README's table of environment variables is the one geoscope.settings reads, word for word."""

from __future__ import annotations

import re
from pathlib import Path

from geoscope import settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_every_environment_variable_with_the_settings_wording():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- environment:start -->")[1].split("<!-- environment:end -->")[0]
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| (.*) \|$", block, flags=re.M))
    assert rows == {k: v.replace("|", "/") for k, v in settings.ENVIRONMENT.items()}


def test_no_module_reads_the_environment_behind_settings_back():
    """os.environ / os.getenv reads of GEOSCOPE_* or HF_* names happen in settings.py only."""
    pattern = re.compile(r"os\.(?:environ|getenv)\b[^\n]*[\"'](?:GEOSCOPE_|HF_)")
    offenders = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
                 for p in (ROOT / "src" / "geoscope").rglob("*.py") if p.name != "settings.py"
                 for text in [p.read_text(encoding="utf-8")] for m in pattern.finditer(text)]
    assert not offenders, offenders
