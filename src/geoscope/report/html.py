"""A self-contained HTML report of one Prediction: opens offline, images embedded as base64.

``render_report(pred, images=..., verification=..., attribution=...)`` returns the page as a string;
``write_report(path, ...)`` writes it atomically. The page shows the best guess and the candidate
table (place names, coordinates, probabilities), the confidence at each radius, the map, the
attribution overlay with how to read it, what the metadata claims and the verification verdict
with the thresholds used, and links to the sibling exports (JSON, GeoJSON, KML). No scripts, no
external style sheets, fonts or tiles.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from geoscope.atomic import write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}
header{background:#17324d;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{max-width:1120px;margin:0 auto;padding:18px 28px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:0 0 16px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e8ee} th{background:#f0f3f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.best{font-size:20px;font-weight:600} .muted{color:#5b6b7b;font-size:13px}
.bar{display:inline-block;height:10px;background:#d7301f;border-radius:2px;vertical-align:middle}
img{max-width:100%;border:1px solid #dde3ea;border-radius:4px}
.verdict{display:inline-block;padding:4px 12px;border-radius:14px;font-weight:700;color:#fff}
.consistent{background:#2e7d32} .inconsistent{background:#c62828} .inconclusive{background:#8a6d00}
.error{background:#fdecea;color:#8b1a1a;padding:10px;border-radius:6px}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _img_tag(src: str | Path | bytes, alt: str) -> str:
    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _candidates(pred: Any) -> str:
    top = max((c.probability for c in pred.candidates), default=1.0) or 1.0
    rows = []
    for rank, c in enumerate(pred.candidates, start=1):
        place = c.place.label() if c.place is not None else ""
        code = (c.place.country_code or "") if c.place is not None else ""
        width = int(round(120 * c.probability / top))
        rows.append(f"<tr><td>{rank}</td><td>{_e(place)}</td><td>{_e(code)}</td>"
                    f"<td class=num>{c.lat:.5f}</td><td class=num>{c.lon:.5f}</td>"
                    f"<td class=num>{100 * c.probability:.2f}%</td>"
                    f'<td><span class=bar style="width:{width}px"></span></td></tr>')
    return ("<table><tr><th>#</th><th>place</th><th>country</th><th>lat</th><th>lon</th><th>probability</th>"
            "<th></th></tr>" + "".join(rows) + "</table>")


def _confidence(pred: Any) -> str:
    if not pred.confidence:
        return ""
    cells = "".join(f"<tr><td>within {int(r)} km of the best candidate</td><td class=num>{100 * v:.1f}%</td></tr>"
                    for r, v in sorted(pred.confidence.items()))
    return f"<h2 style='margin-top:14px'>Confidence</h2><table>{cells}</table>"


def _metadata(pred: Any, verification: Any) -> str:
    exif = pred.exif
    parts = ["<section><h2>Metadata against pixels</h2>"]
    if exif is None or not any(v is not None for v in exif.to_dict().values()):
        parts.append("<p>The file carries no EXIF metadata (it may have been stripped).</p>")
    else:
        rows = [("GPS position", None if not exif.has_gps else f"{exif.lat:.5f}, {exif.lon:.5f}"),
                ("altitude", None if exif.altitude_m is None else f"{exif.altitude_m:.0f} m"),
                ("time", exif.time), ("camera", " ".join(x for x in (exif.make, exif.model) if x) or None),
                ("distance to best candidate",
                 None if pred.exif_distance_km is None else f"{pred.exif_distance_km:.0f} km")]
        parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v if v is not None else '-')}</td></tr>"
                                         for k, v in rows) + "</table>")
    if verification is not None:
        v = verification if isinstance(verification, Mapping) else verification.to_dict()
        verdict = v.get("verdict", "inconclusive")
        parts.append(f'<p style="margin-top:12px">Verdict: <span class="verdict {_e(verdict)}">{_e(verdict)}</span></p>'
                     f"<p>{_e(v.get('reason'))}</p>")
    parts.append("</section>")
    return "".join(parts)


def render_report(
    pred: Any,
    *,
    images: Mapping[str, str | Path | bytes] | None = None,
    verification: Any = None,
    attribution: Any = None,
    downloads: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """The report page as one HTML string.

    ``images``: PNGs (paths or bytes) by role: ``"map"``, ``"attribution"``, ``"image"`` (the photo).
    ``verification``: a ``verify.Verification`` (or its dict). ``attribution``: an ``explain.Attribution``
    (for its numbers). ``downloads``: link text -> relative file name (the sibling exports).
    """
    images = dict(images or {})
    name = Path(str(pred.source)).name
    out = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title or f'geoscope: {name}')}</title><style>{_CSS}</style></head><body>",
           f"<header><h1>{_e(title or f'Where was {name} taken?')}</h1>"
           f"<p>source: {_e(pred.source)} &middot; model: {_e(pred.model or 'unknown')}</p></header><main>"]
    if pred.error:
        out.append(f'<section><div class=error>This image could not be located: {_e(pred.error)}</div></section>')
    best = pred.best
    summary = ["<section><h2>Best guess</h2>"]
    if best is not None:
        label = best.place.label() if best.place is not None else f"{best.lat:.5f}, {best.lon:.5f}"
        summary.append(f'<p class=best>{_e(label)} &mdash; {100 * best.probability:.1f}%</p>'
                       f"<p class=muted>{best.lat:.5f}, {best.lon:.5f}</p>")
    if "image" in images:
        summary.append(f'<div style="max-width:420px">{_img_tag(images["image"], "the photo")}</div>')
    summary.append("<h2 style='margin-top:14px'>Candidates</h2>" + _candidates(pred) + _confidence(pred))
    summary.append("</section>")
    out.append("".join(summary))
    if "map" in images:
        out.append("<section><h2>Probability map</h2><p class=muted>Each geocell is shaded by the probability "
                   "the model gives it; numbered dots are the candidates; a black dot is the true location and a "
                   "cyan diamond the location the metadata claims, when known.</p>"
                   f"{_img_tag(images['map'], 'probability map')}</section>")
    out.append(_metadata(pred, verification))
    if "attribution" in images:
        note = ""
        if attribution is not None:
            note = (f"<p class=muted>Method {_e(attribution.method)}, target {_e(attribution.target)}: score "
                    f"{attribution.full_score:.4g} with the whole image, {attribution.base_score:.4g} with every "
                    f"region hidden (blurred); {attribution.n_evals} model evaluations.</p>")
        out.append("<section><h2>Why there? Image attributions</h2><p class=muted>Red regions pushed the "
                   "prediction towards the target place, blue regions pushed it away; white ones did not matter."
                   f"</p>{note}{_img_tag(images['attribution'], 'attribution overlay')}</section>")
    if downloads:
        links = " &middot; ".join(f'<a href="{_e(href)}">{_e(text)}</a>' for text, href in downloads.items())
        out.append(f"<section><h2>Files</h2><p>{links}</p></section>")
    out.append("<p class=muted>Made by geoscope. Pixels can mislead as metadata can: treat this as evidence to "
               "weigh, not proof.</p></main></body></html>")
    return "\n".join(out)


def write_report(path: str | Path, pred: Any, **kw: Any) -> Path:
    """Write ``render_report(pred, **kw)`` to ``path`` atomically."""
    write_text(path, render_report(pred, **kw))
    return Path(path)
