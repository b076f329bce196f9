"""Honest probabilities: the model's distribution over the Earth, its calibration, and how it is measured.

A head describes its belief about where an image was taken as a **mixture**: components at ``support``
points (cell centroids, refined points, gallery entries, towns) with weights ``support_probs``. Taken
literally those are point masses, so "the probability within 25 km of the best guess" is the summed
weight of the support points inside 25 km: for a geocell model that is the whole mass of the best
cell, however large the cell. That is not a probability of anything the user can check.

:class:`Calibration` turns the head's output into a distribution that means what it says, with four
numbers fitted on held-out data when the model is trained (:func:`fit_calibration`):

- ``temperature`` T: component weights become ``p ** (1 / T)``, renormalised (temperature scaling of the
  logits);
- a **kernel** around each component: an isotropic Gaussian on the tangent plane whose standard
  deviation (per axis, km) is ``sqrt(point_sigma_km ** 2 + (cell_sigma_scale * spread) ** 2)``, where
  ``spread`` is the per-axis spread of the component's training points around a cell centroid
  (``cell_spread_km``; 0 for a point that was refined from the image, a gallery entry or a town),
  times ``exp(-weight_sharpening * w)`` for a component of calibrated weight w: the more of its mass
  the model puts on a component, the closer to it the truth tends to lie.

All four are fitted together by the log loss of the events "the truth lies within R of the best
guess" at the reliability radii (a proper scoring rule for exactly what the model states), from a few
starting points (the temperature that fits the true component best, or 1; several kernel widths), the
best kept. Then, per reliability radius R, a **map** of the mass m within R (:class:`RadiusMap`,
:func:`fit_radius_models`): a logistic model of "the truth lies within R" whose features are ``ln m``
and ``-ln(1 - m)`` (beta calibration), optionally ramps of logit m between knots (a monotone spline, for
reliability curves beta cannot follow), and optionally the logits of the masses within the other fitted
radii (**context**: measured on the demo, sea tiles come true far less often than land tiles that state
the same mass within 25 or 200 km; they spread their mass wider, which the masses within 750 and 2,500 km
show). The kind is chosen per radius by repeated 5-fold cross-validation on the
held-out split (the lowest out-of-fold log loss among kinds whose out-of-fold ECE is no worse than the
kernel's own). The kernel's shape cannot be right at every radius at once, and the maps fix what the
split can show; a radius between fitted ones blends the two maps' logits in log R, and the masses stay
non-decreasing in R (:meth:`Calibration.recalibrate`). Calibrations saved before keep their beta maps
(``radius_maps``: ``logit q = c + a ln m - b ln(1 - m)`` per radius, interpolated in log R, kept where
cross-validation lowered the log loss, :func:`fit_radius_maps`) and apply them as before. The mass
within R of a point is a sum over components of ``disc_mass`` (the Rice distribution's cdf, read from a table). ``Calibration()``
(T = 1, no kernel, no maps) reproduces the point masses of models trained before calibration existed.

Measured with :func:`reliability`: stated probabilities are binned (10 equal bins) and compared with
the observed share of hits; the expected calibration error (ECE) is the hit-weighted gap
``sum_b n_b / N * |mean stated_b - observed_b|``. :func:`reliability_at_radii` does that for
"within R of the best guess" at several radii; :func:`plot_reliability` draws the diagrams. Note that
ECE is biased upwards on small samples: probabilities that are exactly right still show an ECE of a
few hundredths on 600 images (:func:`ece_noise_floor` estimates it).

**Localizability** is a per-image score in [0, 1] of how much location signal an image carries: a
logistic model, fitted on the same held-out data, of "the best guess lies within
``LOCALIZABILITY_RADIUS_KM``" on two features of the calibrated distribution (the logit of its mass
within that radius of the best guess, and ``1 - H(p) / log(M)``, its concentration). It is therefore
itself the probability that the image is placed within 750 km (:meth:`Calibration.localizability`).

Which held-out data: the validation split by default; ``geoscope train --calibration-store`` takes a
store drawn like the images the model will meet, when the validation split cannot stand for them.

This module is plain numpy / scipy (it sits beside ``prediction.py``): heads describe mixtures,
the ``Geolocator`` applies a ``Calibration``, training fits one, evaluation measures one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np

from geoscope.errors import InputError
from geoscope.geo.sphere import haversine_km, pairwise_km

#: radii (km) at which reliability is measured and the kernel is fitted
RELIABILITY_RADII_KM = (25, 200, 750, 2500)
#: equal-width bins of stated probability for the reliability table and the ECE
N_BINS = 10
#: localizability is fitted to "the best guess lies within this many km"
LOCALIZABILITY_RADIUS_KM = 750
#: a single point estimate (a regressor) shows the mass within this many km of itself as its probability
CANDIDATE_DISC_KM = 200
CALIBRATION_FORMAT = "geoscope-calibration"
CALIBRATION_VERSION = 1

# ----------------------------------------------------------------------------------------------
# the kernel: probability that a 2-D Gaussian lands inside a disc


_TABLE: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
#: table axes: w = a / (a + _W_SCALE) in [0, 1] (a = centre offset / sigma), u = rho - a in [-_U_MAX, _U_MAX]
_W_SCALE = 4.0
_U_MAX = 8.0
_NW, _NU = 241, 321


def _disc_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(|X| <= rho) for X ~ N((a, 0), I_2) on a grid of (w, u); built once (a few ms).

    The density of |X| is the Rice density r exp(-(r - a)^2 / 2) I0e(a r); its running integral along
    r = a + u (trapezoid rule, an eighth of the table's step) gives each row of the table.
    """
    global _TABLE
    if _TABLE is None:
        from scipy.special import i0e, ndtr

        w = np.linspace(0.0, 1.0, _NW)
        u = np.linspace(-_U_MAX, _U_MAX, _NU)
        a = (_W_SCALE * w[:-1] / (1.0 - w[:-1]))[:, None]
        step = (u[1] - u[0]) / 8  # the table's u values fall on the integration grid
        fine = (-_U_MAX - 1.0 + step * np.arange(int(round((2 * _U_MAX + 1.0) / step)) + 1))[None, :]
        r = np.maximum(a + fine, 0.0)
        dens = r * np.exp(-0.5 * (r - a) ** 2) * i0e(a * r)
        cum = np.concatenate([np.zeros((len(a), 1)), np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * np.diff(r, axis=1),
                                                               axis=1)], axis=1)
        idx = np.rint((u + _U_MAX + 1.0) / step).astype(np.int64)
        tab = cum[:, idx]
        # a -> infinity: the disc's edge is a straight line through the kernel, so the mass is Phi(u)
        tab = np.vstack([tab, ndtr(u)[None, :]])
        _TABLE = (w, u, np.clip(tab, 0.0, 1.0))
    return _TABLE


class _Kernel:
    """The part of ``disc_mass`` that does not depend on the radius, for distances ``d`` and widths ``sigma``
    (broadcast together), so several radii cost one table reading each."""

    def __init__(self, d, sigma):
        d, sigma = np.broadcast_arrays(np.asarray(d, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
        self.d = d
        self.point = sigma <= 1e-9
        self.any_point = bool(self.point.any())
        self.inv = 1.0 / np.where(self.point, 1.0, sigma)
        self.a = d * self.inv
        fi = self.a / (self.a + _W_SCALE) * (_NW - 1)
        i0 = np.minimum(fi.astype(np.int64), _NW - 2)
        self.ti = fi - i0
        self.base = i0 * _NU
        self.tab = _disc_table()[2].ravel()

    def mass(self, radius: float | np.ndarray) -> np.ndarray:
        fj = (radius * self.inv - self.a + _U_MAX) * ((_NU - 1) / (2 * _U_MAX))
        fj = np.clip(fj, 0.0, _NU - 1 - 1e-9)  # beyond the table the mass is 0 or 1: its edge columns
        j0 = fj.astype(np.int64)
        tj = fj - j0
        idx = self.base + j0
        t = self.tab
        lo = t[idx] + tj * (t[idx + 1] - t[idx])
        hi = t[idx + _NU] + tj * (t[idx + _NU + 1] - t[idx + _NU])
        val = lo + self.ti * (hi - lo)
        if self.any_point:
            val = np.where(self.point, self.d <= radius, val)
        return val


def disc_mass(dist_km, radius_km, sigma_km) -> np.ndarray:
    """Probability that a point drawn from an isotropic Gaussian (per-axis std ``sigma_km``) centred
    ``dist_km`` from a point lies within ``radius_km`` of it (tangent-plane approximation; arrays
    broadcast). ``sigma_km`` 0 is a point mass: 1 where ``dist_km <= radius_km``, else 0. Accurate to
    about 0.001 (bilinear reading of a table of the Rice distribution's cdf)."""
    d, r, s = np.broadcast_arrays(np.asarray(dist_km, dtype=np.float64), np.asarray(radius_km, dtype=np.float64),
                                  np.asarray(sigma_km, dtype=np.float64))
    return np.asarray(_Kernel(d, s).mass(r), dtype=np.float64)


def weighted_disc_mass(dist_km, sigma_km, weights, radii_km) -> np.ndarray:
    """``sum_m weights[..., m] * disc_mass(dist_km[..., m], R, sigma_km[..., m])`` for each radius R:
    (..., len(radii)). ``sigma_km`` None means point masses."""
    d = np.asarray(dist_km, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if sigma_km is None:
        return np.stack([(w * (d <= r)).sum(-1) for r in radii_km], axis=-1)
    k = _Kernel(d, sigma_km)
    return np.stack([(w * k.mass(float(r))).sum(-1) for r in radii_km], axis=-1)


def mixture_mass(center, support, probs, sigma_km=None, radii_km: Sequence[float] = RELIABILITY_RADII_KM,
                 chunk: int = 2_000_000) -> np.ndarray:
    """Mass of a mixture within each radius of a point, per image: (B, len(radii)).

    ``center`` (B, 2) lat/lon; ``support`` (M, 2) or (B, M, 2); ``probs`` (B, M) weights; ``sigma_km``
    None (point masses), a scalar, (M,) or (B, M) per-axis kernel widths.
    """
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    support = np.asarray(support, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    B, M = probs.shape
    radii = [float(r) for r in radii_km]
    out = np.zeros((B, len(radii)))
    if B == 0 or M == 0:
        return out
    sigma = None if sigma_km is None else np.asarray(sigma_km, dtype=np.float64)
    rows = max(1, chunk // max(M, 1))
    for s in range(0, B, rows):
        e = min(B, s + rows)
        if support.ndim == 3:
            d = haversine_km(center[s:e, 0, None], center[s:e, 1, None], support[s:e, :, 0], support[s:e, :, 1])
        else:
            d = pairwise_km(center[s:e, 0], center[s:e, 1], support[:, 0], support[:, 1])
        sg = sigma if sigma is None or sigma.ndim < 2 else sigma[s:e]
        out[s:e] = weighted_disc_mass(d, sg, probs[s:e], radii)
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# measuring


def reliability(stated, hit, n_bins: int = N_BINS) -> dict:
    """Reliability of probabilities ``stated`` (N,) for events ``hit`` (N,) bool.

    Returns ``{"n", "mean_stated", "observed", "ece", "bins": [{"lo", "hi", "n", "stated", "observed"}]}``:
    equal-width bins over [0, 1] (the last one closed), the mean stated probability and observed share
    of hits in each non-empty bin, and ECE = sum over bins of n_b / N * |stated_b - observed_b|.
    """
    p = np.asarray(stated, dtype=np.float64).ravel()
    y = np.asarray(hit, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise InputError(f"reliability: {len(p)} stated probabilities but {len(y)} outcomes")
    if n_bins < 1:
        raise InputError(f"reliability needs at least one bin, got {n_bins}")
    n = len(p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        nb = int(m.sum())
        row: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": nb,
                               "stated": None, "observed": None}
        if nb:
            row["stated"], row["observed"] = float(p[m].mean()), float(y[m].mean())
            ece += nb / n * abs(row["stated"] - row["observed"])
        bins.append(row)
    return {"n": n, "mean_stated": float(p.mean()) if n else float("nan"),
            "observed": float(y.mean()) if n else float("nan"), "ece": float(ece) if n else float("nan"),
            "bins": bins}


def reliability_at_radii(stated, errors_km, radii_km: Sequence[float] = RELIABILITY_RADII_KM,
                         n_bins: int = N_BINS) -> dict[str, dict]:
    """``reliability`` of "the truth lies within R of the best guess" for each radius R.

    ``stated`` (N, len(radii)): the probability the model gave to each radius; ``errors_km`` (N,): the
    distance from the best guess to the truth. Keys are the radii as strings ("25", "200", ...).
    """
    stated = np.asarray(stated, dtype=np.float64).reshape(len(np.ravel(errors_km)), -1)
    err = np.asarray(errors_km, dtype=np.float64).ravel()
    radii = list(radii_km)
    if stated.shape[1] != len(radii):
        raise InputError(f"reliability_at_radii: {stated.shape[1]} columns of stated probability for {len(radii)} radii")
    return {_radius_key(r): reliability(stated[:, k], err <= r, n_bins) for k, r in enumerate(radii)}


def ece_noise_floor(stated, n_bins: int = N_BINS, draws: int = 200, seed: int = 0) -> dict:
    """The ECE that perfectly calibrated probabilities ``stated`` (N,) would still show on N images:
    outcomes are drawn as Bernoulli(stated) ``draws`` times; returns {"mean", "p90"}."""
    p = np.clip(np.asarray(stated, dtype=np.float64).ravel(), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    e = [reliability(p, rng.random(len(p)) < p, n_bins)["ece"] for _ in range(draws)]
    return {"mean": float(np.mean(e)), "p90": float(np.quantile(e, 0.9))}


def auroc(score, label) -> float:
    """Area under the ROC curve of ``score`` for binary ``label`` (ties count half); NaN without both classes."""
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1, dtype=np.float64)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    for f, c in zip(first[counts > 1], counts[counts > 1]):  # ties share their average rank
        ranks[order[f : f + c]] = f + (c + 1) / 2
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _radius_key(r) -> str:
    return f"{float(r):g}"


def summarize(table: dict[str, dict]) -> dict[str, dict]:
    """``reliability_at_radii`` without the bins: {radius: {mean_stated, observed, ece, n}}."""
    return {k: {x: v[x] for x in ("n", "mean_stated", "observed", "ece")} for k, v in table.items()}


def format_reliability(tables: dict[str, dict[str, dict]]) -> str:
    """A text table: one row per (name, radius) with mean stated probability, observed share and ECE."""
    lines = [f"{'':<28} {'radius':>8} {'stated':>8} {'observed':>9} {'ECE':>7}"]
    for name, table in tables.items():
        for r, v in table.items():
            lines.append(f"{name[:28]:<28} {r + ' km':>8} {v['mean_stated']:>8.3f} {v['observed']:>9.3f} {v['ece']:>7.3f}")
    return "\n".join(lines)


def plot_reliability(tables: dict[str, dict[str, dict]], path, title: str | None = None):
    """Reliability diagrams (PNG, written atomically): one panel per radius, one line per name.

    ``tables``: {name: reliability_at_radii(...)} (with bins). Each panel plots the observed share of
    hits against the mean stated probability per bin (marker area ~ images in the bin), the diagonal
    being perfect calibration, with each line's ECE in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoscope.atomic import write_figure

    radii = list(dict.fromkeys(r for t in tables.values() for r in t))
    if not radii:
        raise InputError("plot_reliability: nothing to plot")
    fig, axes = plt.subplots(1, len(radii), figsize=(3.2 * len(radii), 3.5), squeeze=False)
    for ax, r in zip(axes[0], radii):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for name, table in tables.items():
            t = table.get(r)
            if t is None:
                continue
            rows = [b for b in t["bins"] if b["n"]]
            xs = [b["stated"] for b in rows]
            ys = [b["observed"] for b in rows]
            size = [12 + 200 * b["n"] / max(t["n"], 1) for b in rows]
            line, = ax.plot(xs, ys, marker="", lw=1.2, label=f"{name} (ECE {t['ece']:.3f})")
            ax.scatter(xs, ys, s=size, color=line.get_color(), alpha=0.7, zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"within {r} km")
        ax.set_xlabel("stated probability")
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("observed share")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# the calibration itself


def cell_spread_km(centroids, lat, lon, cell_ids, min_points: int = 3) -> np.ndarray:
    """Per-axis spread (km) of each cell's training points around its centroid: RMS distance / sqrt(2).

    Cells with fewer than ``min_points`` points get the median spread of the others (0 when none has).
    """
    centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    ids = np.asarray(cell_ids, dtype=np.int64).ravel()
    lat, lon = np.asarray(lat, dtype=np.float64).ravel(), np.asarray(lon, dtype=np.float64).ravel()
    n = len(centroids)
    ok = (ids >= 0) & (ids < n)
    d = haversine_km(lat[ok], lon[ok], centroids[ids[ok], 0], centroids[ids[ok], 1])
    counts = np.bincount(ids[ok], minlength=n)
    sq = np.bincount(ids[ok], weights=d**2, minlength=n)
    spread = np.sqrt(sq / np.maximum(counts, 1) / 2.0)
    enough = counts >= min_points
    fill = float(np.median(spread[enough])) if enough.any() else 0.0
    return np.where(enough, spread, fill)


def entropy_score(probs) -> np.ndarray:
    """``1 - H(p) / log(M)`` per row of (B, M) probabilities: 1 for one certain component, 0 for uniform."""
    p = np.asarray(probs, dtype=np.float64)
    M = p.shape[1]
    if M < 2:
        return np.ones(len(p))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.clip(1.0 - h / math.log(M), 0.0, 1.0)


def entropy_score_top(weights, n_components) -> np.ndarray:
    """:func:`entropy_score` from the heaviest components' weights (B, L) of distributions with
    ``n_components`` (B,) in all, the remaining mass taken as spread evenly over the rest."""
    w = np.asarray(weights, dtype=np.float64)
    n = np.asarray(n_components, dtype=np.float64).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(w > 0, w * np.log(w), 0.0).sum(axis=1)
        rest = np.clip(1.0 - w.sum(axis=1), 0.0, 1.0)
        n_rest = np.maximum(n - w.shape[1], 1.0)
        h += np.where(rest > 0, -rest * np.log(rest / n_rest), 0.0)
        score = 1.0 - h / np.log(np.maximum(n, 2.0))
    return np.where(n < 2, 1.0, np.clip(score, 0.0, 1.0))


def _sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def localizability_features(weights, mass_within, n_components) -> np.ndarray:
    """(B, 2): the logit of the calibrated mass within ``LOCALIZABILITY_RADIUS_KM`` of the best guess, and
    the entropy score of the calibrated weights (``weights`` may be the heaviest components only, with
    ``n_components`` in all)."""
    return np.column_stack([_logit(mass_within), entropy_score_top(weights, n_components)])


def _tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    with np.errstate(divide="ignore"):
        logp = np.log(np.clip(probs, 0.0, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(axis=1, keepdims=True)


#: the kinds of per-radius map :func:`fit_radius_models` chooses from (see :class:`RadiusMap`)
MAP_KINDS = ("identity", "beta", "spline", "beta+context", "spline+context")


@dataclass
class RadiusMap:
    """The map of one fitted radius R: ``logit q = coef[0] + coef[1:] . features``, where the features are

    - ``ln m`` and ``-ln(1 - m)`` of the mass m within R (beta calibration; "identity" is coef (0, 1, 1));
    - for the "spline" kinds, ramps ``clip(logit m - k_i, 0, k_{i+1} - k_i)`` between consecutive
      ``knots`` (a piecewise-linear function of logit m: a monotone spline that can bend where beta cannot);
    - for the "context" kinds, the logits of the masses within the other fitted radii ``context_radii``
      (two images with the same mass within 25 km but different masses within 750 km are different
      images: a sea tile spreads its mass more widely than a land tile).

    The coefficients of the first two groups are non-negative, so q never falls as m grows.
    """

    radius_km: float
    kind: str = "identity"
    coef: tuple[float, ...] = (0.0, 1.0, 1.0)
    knots: tuple[float, ...] = ()
    context_radii: tuple[float, ...] = ()

    def features(self, m, context=None, fit_radii: Sequence[float] = ()) -> np.ndarray:
        """(B, F) features of masses ``m`` (B,) within this map's radius (or one it is blended at), with
        ``context`` (B, len(fit_radii)) the masses within the fitted radii."""
        own = _map_own_features(m, self.knots)
        if not self.context_radii:
            return own
        if context is None:
            raise InputError(f"the map at {self.radius_km:g} km reads the masses within "
                             f"{', '.join(f'{r:g}' for r in self.context_radii)} km; none were given")
        radii = [float(r) for r in fit_radii]
        ctx = np.asarray(context, dtype=np.float64)
        return np.column_stack([own] + [_logit(ctx[:, radii.index(float(r))]) for r in self.context_radii])

    def logit(self, m, context=None, fit_radii: Sequence[float] = ()) -> np.ndarray:
        c = np.asarray(self.coef, dtype=np.float64)
        return c[0] + self.features(m, context, fit_radii) @ c[1:]

    def to_dict(self) -> dict:
        return {"radius_km": float(self.radius_km), "kind": self.kind, "coef": [float(v) for v in self.coef],
                "knots": [float(v) for v in self.knots], "context_radii": [float(v) for v in self.context_radii]}

    @classmethod
    def from_dict(cls, d: dict) -> "RadiusMap":
        rm = cls(radius_km=float(d["radius_km"]), kind=str(d.get("kind", "beta")),
                 coef=tuple(float(v) for v in d["coef"]), knots=tuple(float(v) for v in d.get("knots") or ()),
                 context_radii=tuple(float(v) for v in d.get("context_radii") or ()))
        n_features = 2 + max(len(rm.knots) - 1, 0) + len(rm.context_radii)
        if len(rm.coef) != n_features + 1:
            raise ValueError(f"the map at {rm.radius_km:g} km has {len(rm.coef)} coefficients for {n_features} features")
        return rm


def _map_own_features(m, knots: Sequence[float] = ()) -> np.ndarray:
    """``ln m``, ``-ln(1 - m)`` and the ramps of logit m between consecutive ``knots``: (B, 2 + ramps)."""
    beta = _beta_features(np.asarray(m, dtype=np.float64).ravel())
    if len(knots) < 2:
        return beta
    x = beta[:, 0] + beta[:, 1]  # logit m
    return np.column_stack([beta] + [np.clip(x - lo, 0.0, hi - lo) for lo, hi in zip(knots[:-1], knots[1:])])


@dataclass
class Calibration:
    """What turns a head's mixture into a calibrated distribution (see the module docstring).

    ``Calibration()`` changes nothing (T = 1, point masses): the behaviour of uncalibrated models.
    ``report`` keeps what the fit measured on the held-out split (reliability before and after).
    """

    temperature: float = 1.0
    point_sigma_km: float = 0.0
    cell_sigma_scale: float = 0.0
    #: kernels narrow as their component's weight w grows: width x exp(-weight_sharpening * w) (the truth
    #: lies closer to a point the model is sure of)
    weight_sharpening: float = 0.0
    #: per finest cell, the per-axis spread of its training points around its centroid (km)
    cell_spread_km: list[float] | None = None
    #: logistic model of P(best guess within LOCALIZABILITY_RADIUS_KM) on ``localizability_features``:
    #: (intercept, logit of the mass within the radius, entropy score)
    localizability_coef: tuple[float, ...] | None = None
    fitted: bool = False
    report: dict = field(default_factory=dict)
    #: per-radius recalibration of the mass within R of the best guess: rows (R km, c, a, b) sorted by R,
    #: the map ``logit q = c + a ln m - b ln(1 - m)`` (identity: 0, 1, 1); parameters are interpolated
    #: linearly in log R between rows and held beyond them (:meth:`recalibrate`); None: no maps
    radius_maps: list[tuple[float, float, float, float]] | None = None
    #: per-radius recalibration as fitted now (:class:`RadiusMap`, one per fitted radius, sorted by R):
    #: each a logistic map of the mass within R (monotone in it) that may also read the masses within the
    #: other fitted radii (:meth:`recalibrate`); takes precedence over ``radius_maps``; None: none
    radius_models: list["RadiusMap"] | None = None

    # --- applying ----------------------------------------------------------------------------------

    def weights(self, probs) -> np.ndarray:
        """Component weights after temperature scaling, (B, M), rows summing to 1."""
        p = np.asarray(probs, dtype=np.float64)
        p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-300, None)
        return _tempered(p, float(self.temperature))

    def sigmas(self, n_support: int, refined=None, cells: bool = False, weights=None) -> np.ndarray | None:
        """Kernel widths (km): (M,), or (B, M) with ``refined`` (B, M) bool or calibrated ``weights``
        (B, M) (each width shrinks by ``exp(-weight_sharpening * weight)``); None for point masses.

        ``cells``: the support points are the finest cells in order (so ``cell_spread_km`` applies to
        those not ``refined``).
        """
        spread = None
        if cells and self.cell_spread_km is not None and len(self.cell_spread_km) == n_support:
            spread = np.asarray(self.cell_spread_km, dtype=np.float64)
        if self.point_sigma_km <= 0 and (spread is None or self.cell_sigma_scale <= 0):
            return None
        point = float(self.point_sigma_km)
        if spread is None:
            sig = np.full(n_support, point)
        else:
            cell = np.sqrt(point**2 + (float(self.cell_sigma_scale) * spread) ** 2)
            sig = cell if refined is None else np.where(np.asarray(refined, dtype=bool), point, cell[None, :])
        if self.weight_sharpening and weights is not None:
            sig = sig * np.exp(-float(self.weight_sharpening) * np.asarray(weights, dtype=np.float64))
        return sig

    def needed_radii(self, radii_km: Sequence[float]) -> list[float]:
        """The radii at which :meth:`recalibrate` needs the masses to calibrate those at ``radii_km``: the
        requested ones first, then each radius the maps were fitted at that is not among them (the maps
        read the masses within every fitted radius)."""
        radii = [float(r) for r in radii_km]
        if not self.radius_models:
            return radii
        return radii + [m.radius_km for m in self.radius_models if m.radius_km not in radii]

    def recalibrate(self, masses, radii_km: Sequence[float]) -> np.ndarray:
        """The mass within each radius of the best guess (B, len(radii)), through the fitted per-radius
        maps, kept non-decreasing in the radius; unchanged without maps.

        With ``radius_models`` the columns must include every fitted radius (:meth:`needed_radii`); a
        radius between two fitted ones blends their maps' logits linearly in log R, beyond the ends the
        end map holds. With the older ``radius_maps`` (beta maps) the parameters are interpolated in log R.
        """
        m = np.asarray(masses, dtype=np.float64)
        if m.size == 0 or not (self.radius_models or self.radius_maps):
            return m
        radii = [float(r) for r in radii_km]
        if m.ndim != 2 or m.shape[1] != len(radii):
            raise InputError(f"recalibrate: {m.shape[-1] if m.ndim else 0} columns of masses for {len(radii)} radii")
        out = np.empty_like(m)
        if self.radius_models:
            maps = sorted(self.radius_models, key=lambda rm: rm.radius_km)
            missing = [rm.radius_km for rm in maps if rm.radius_km not in radii]
            if missing:
                raise InputError(f"recalibrate needs the masses within {', '.join(f'{r:g}' for r in missing)} km too "
                                 "(ask Calibration.needed_radii which radii to compute)")
            context = np.column_stack([m[:, radii.index(rm.radius_km)] for rm in maps])
            fit_radii = [rm.radius_km for rm in maps]
            log_fit = np.log(np.maximum(fit_radii, 1e-9))
            for j, r in enumerate(radii):
                x = math.log(max(r, 1e-9))
                hi = int(np.searchsorted(log_fit, x))
                if hi == 0 or hi == len(maps) or log_fit[hi] == x:
                    k = min(hi, len(maps) - 1)
                    out[:, j] = _sigmoid(maps[k].logit(m[:, j], context, fit_radii))
                    continue
                t = (x - log_fit[hi - 1]) / (log_fit[hi] - log_fit[hi - 1])
                out[:, j] = _sigmoid((1 - t) * maps[hi - 1].logit(m[:, j], context, fit_radii)
                                     + t * maps[hi].logit(m[:, j], context, fit_radii))
        else:
            table = np.asarray(self.radius_maps, dtype=np.float64).reshape(-1, 4)
            log_r = np.log(np.maximum(table[:, 0], 1e-9))
            for j, r in enumerate(radii):
                x = math.log(max(r, 1e-9))
                params = [float(np.interp(x, log_r, table[:, i])) for i in (1, 2, 3)]
                out[:, j] = _apply_beta_map(params, m[:, j])
        order = np.argsort(np.asarray(radii, dtype=np.float64), kind="stable")
        out[:, order] = np.maximum.accumulate(out[:, order], axis=1)
        return out

    def localizability(self, weights, mass_within) -> np.ndarray:
        """Localizability in [0, 1] from calibrated weights (B, M) and the calibrated mass within
        ``LOCALIZABILITY_RADIUS_KM`` of the best guess (B,): the fitted logistic model of "the best guess
        is within that radius" (so it is that probability); without a fit, the mass itself."""
        w = np.asarray(weights, dtype=np.float64)
        return self._localizability_from_features(localizability_features(w, mass_within, np.full(len(w), w.shape[1])))

    def _localizability_from_features(self, features: np.ndarray) -> np.ndarray:
        if self.localizability_coef is None or len(self.localizability_coef) != features.shape[1] + 1:
            return np.clip(_sigmoid(features[:, 0]), 0.0, 1.0)
        coef = np.asarray(self.localizability_coef, dtype=np.float64)
        return _sigmoid(coef[0] + features @ coef[1:])

    # --- saving ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION,
            "temperature": float(self.temperature), "point_sigma_km": float(self.point_sigma_km),
            "cell_sigma_scale": float(self.cell_sigma_scale),
            "weight_sharpening": float(self.weight_sharpening),
            "cell_spread_km": None if self.cell_spread_km is None else [float(v) for v in self.cell_spread_km],
            "localizability_coef": None if self.localizability_coef is None else [float(v) for v in self.localizability_coef],
            "localizability_radius_km": LOCALIZABILITY_RADIUS_KM,
            "radius_maps": None if not self.radius_maps else [[float(v) for v in row] for row in self.radius_maps],
            "radius_models": None if not self.radius_models else [rm.to_dict() for rm in self.radius_models],
            "fitted": bool(self.fitted), "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "the calibration") -> "Calibration":
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            raise InputError(f"{where} is not a geoscope calibration (format {CALIBRATION_FORMAT!r} expected)")
        try:
            coef = d.get("localizability_coef")
            maps = d.get("radius_maps")
            if maps is not None and any(len(row) != 4 for row in maps):
                raise ValueError("each radius map is [radius_km, c, a, b]")
            return cls(
                temperature=float(d.get("temperature", 1.0)), point_sigma_km=float(d.get("point_sigma_km", 0.0)),
                cell_sigma_scale=float(d.get("cell_sigma_scale", 0.0)),
                weight_sharpening=float(d.get("weight_sharpening", 0.0)),
                cell_spread_km=None if d.get("cell_spread_km") is None else [float(v) for v in d["cell_spread_km"]],
                localizability_coef=None if coef is None else tuple(float(v) for v in coef),
                fitted=bool(d.get("fitted", False)), report=dict(d.get("report") or {}),
                radius_maps=None if not maps else [(float(r), float(c), float(a), float(b)) for r, c, a, b in maps],
                radius_models=_radius_models_from_list(d.get("radius_models")),
            )
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise InputError(f"{where} has a malformed entry: {exc}") from None


def _radius_models_from_list(rows) -> list[RadiusMap] | None:
    if not rows:
        return None
    maps = [RadiusMap.from_dict(v) for v in rows]
    fitted = {rm.radius_km for rm in maps}
    for rm in maps:
        if not set(rm.context_radii) <= fitted:
            raise ValueError(f"the map at {rm.radius_km:g} km reads radii that have no map")
    return maps


# ----------------------------------------------------------------------------------------------
# fitting


@dataclass
class MixtureBatch:
    """Heads' mixtures for N held-out images with the truth: what :func:`fit_calibration` needs.

    Each image keeps its ``L`` heaviest components: raw weights ``probs`` (N, L) (normalised over all
    M components), locations ``latlon`` (N, L, 2), ``refined`` (N, L) bool, ``cell`` (N, L) the finest
    cell a component stands for (-1: a point). The lighter components are summarised by a histogram
    of their log weights (``tail_logp`` bin centres and ``tail_count``, (N, H)), enough for the
    temperature's normaliser. ``true_logp`` (N,): the raw log weight of the component holding the truth.
    ``best`` (N, 2): the best guess; ``true_lat`` / ``true_lon`` (N,).
    """

    probs: np.ndarray
    latlon: np.ndarray
    refined: np.ndarray
    cell: np.ndarray
    tail_logp: np.ndarray
    tail_count: np.ndarray
    true_logp: np.ndarray
    best: np.ndarray
    true_lat: np.ndarray
    true_lon: np.ndarray

    def __len__(self) -> int:
        return len(self.best)

    @property
    def errors_km(self) -> np.ndarray:
        return haversine_km(self.best[:, 0], self.best[:, 1], self.true_lat, self.true_lon)

    @classmethod
    def concat(cls, parts: Sequence["MixtureBatch"]) -> "MixtureBatch":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise InputError("no held-out images to calibrate on")
        width = max(p.probs.shape[1] for p in parts)

        def pad(a, fill):
            if a.shape[1] == width:
                return a
            shape = (a.shape[0], width - a.shape[1]) + a.shape[2:]
            return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)], axis=1)

        return cls(*(np.concatenate([pad(getattr(p, f), fill) if f in _PADDED else getattr(p, f) for p in parts])
                     for f, fill in _FIELDS))


_FIELDS = [("probs", 0.0), ("latlon", 0.0), ("refined", False), ("cell", -1), ("tail_logp", 0.0),
           ("tail_count", 0.0), ("true_logp", 0.0), ("best", 0.0), ("true_lat", 0.0), ("true_lon", 0.0)]
_PADDED = {"probs", "latlon", "refined", "cell"}


def collect_mixtures(out, best, true_lat, true_lon, true_cell=None, max_components: int = 1024,
                     tail_bins: int = 32) -> MixtureBatch:
    """A :class:`MixtureBatch` from a head's output (``heads.base.HeadOutput``) for B images.

    ``best`` (B, 2): the best guess shown; ``true_cell`` (B,): the finest cell holding each truth, used
    as the true component when the support points are the cells; otherwise the support point nearest
    to the truth is.
    """
    if out.support is None or out.support_probs is None:
        raise InputError("this head gives a single point without a distribution; nothing to calibrate")
    probs = np.asarray(out.support_probs, dtype=np.float64)
    probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-300, None)
    B, M = probs.shape
    support = np.asarray(out.support, dtype=np.float64)
    true_lat = np.asarray(true_lat, dtype=np.float64).ravel()
    true_lon = np.asarray(true_lon, dtype=np.float64).ravel()
    cells = bool(getattr(out, "support_cells", False))
    if cells and true_cell is not None:
        true_comp = np.asarray(true_cell, dtype=np.int64).ravel()
    else:
        true_comp = np.empty(B, dtype=np.int64)
        step = max(1, 2_000_000 // max(M, 1))
        for s in range(0, B, step):
            e = min(B, s + step)
            sup = support[s:e] if support.ndim == 3 else support[None]
            d = haversine_km(true_lat[s:e, None], true_lon[s:e, None], sup[..., 0], sup[..., 1])
            true_comp[s:e] = np.argmin(d, axis=1)
    L = min(M, int(max_components))
    order = np.argsort(-probs, axis=1, kind="stable")
    top, rest = order[:, :L], order[:, L:]
    p_top = np.take_along_axis(probs, top, axis=1)
    latlon = support[top] if support.ndim == 2 else np.take_along_axis(support, top[..., None], axis=1)
    refined_src = getattr(out, "support_refined", None)
    refined = (np.zeros((B, L), dtype=bool) if refined_src is None
               else np.take_along_axis(np.asarray(refined_src, dtype=bool), top, axis=1))
    cell = top.copy() if cells else np.full((B, L), -1, dtype=np.int64)
    tail_logp = np.zeros((B, tail_bins))
    tail_count = np.zeros((B, tail_bins))
    if rest.shape[1]:
        with np.errstate(divide="ignore"):
            lr = np.log(np.take_along_axis(probs, rest, axis=1))
        for b in range(B):
            v = lr[b][np.isfinite(lr[b])]
            if len(v):
                counts, edges = np.histogram(v, bins=tail_bins)
                tail_logp[b] = 0.5 * (edges[1:] + edges[:-1])
                tail_count[b] = counts
    with np.errstate(divide="ignore"):
        true_logp = np.log(np.clip(probs[np.arange(B), true_comp], 1e-300, None))
    return MixtureBatch(p_top, latlon, refined, cell, tail_logp, tail_count, true_logp,
                        np.asarray(best, dtype=np.float64).reshape(B, 2), true_lat, true_lon)


def _tempered_top(batch: MixtureBatch, temperature: float) -> np.ndarray:
    """The heavy components' weights after temperature scaling, normalised over all components."""
    with np.errstate(divide="ignore"):
        z = np.log(np.clip(batch.probs, 0.0, None)) / temperature
    zt = np.where(batch.tail_count > 0, np.log(np.clip(batch.tail_count, 1e-300, None)) + batch.tail_logp / temperature,
                  -np.inf)
    both = np.concatenate([z, zt], axis=1)
    zmax = both.max(axis=1, keepdims=True)
    lse = zmax + np.log(np.exp(both - zmax).sum(axis=1, keepdims=True))
    return np.exp(z - lse)


def _fit_temperature(batch: MixtureBatch) -> float:
    """T minimising the mean negative log weight of the true component (bounded to [0.05, 50])."""
    from scipy.optimize import minimize_scalar

    with np.errstate(divide="ignore"):
        logp = np.log(np.clip(batch.probs, 0.0, None))
    has_tail = batch.tail_count > 0
    log_count = np.log(np.clip(batch.tail_count, 1e-300, None))

    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        both = np.concatenate([logp / t, np.where(has_tail, log_count + batch.tail_logp / t, -np.inf)], axis=1)
        zmax = both.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(both - zmax).sum(axis=1))
        return float((lse - batch.true_logp / t).mean())

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(50.0)), method="bounded", options={"xatol": 1e-3})
    return float(math.exp(res.x))


def _kernel_widths(batch: MixtureBatch, cols: slice, point: float, scale: float, spread: np.ndarray | None,
                   sharpening: float = 0.0, weights: np.ndarray | None = None) -> np.ndarray:
    cell = batch.cell[:, cols]
    if spread is None or scale <= 0:
        sig = np.full(cell.shape, point)
    else:
        cell_sig = np.sqrt(point**2 + (scale * spread[np.clip(cell, 0, None)]) ** 2)
        sig = np.where((cell >= 0) & ~batch.refined[:, cols], cell_sig, point)
    if sharpening and weights is not None:
        sig = sig * np.exp(-sharpening * weights)
    return sig


#: while fitting the kernel, each image's heaviest components get the kernel and the rest count as
#: point masses (their sum is fixed once the temperature is), which keeps the fit fast for any head
FIT_COMPONENTS = 48
#: at most this many held-out images inform the kernel fit (a seeded sample)
FIT_IMAGES = 3000
#: the kernel fit starts from these (point kernel width as a share of the median error, temperature: None
#: for the one fitted on the true component) and keeps the best: the log loss of disc events is flat in a
#: width much smaller than the distances that matter, where one start can stall (a retrieval head's
#: fit stopped at a 1 m kernel, stating 0.62 within 25 km where 0.34 came true)
FIT_STARTS: tuple[tuple[float, float | None], ...] = ((0.3, None), (0.05, None), (1.5, None), (0.3, 1.0))


def _fit_starts(t0: float) -> list[tuple[float, float]]:
    return [(frac, t0 if t is None else t) for frac, t in FIT_STARTS]


def fit_calibration(batch: MixtureBatch, cell_spread=None, radii_km: Sequence[float] = RELIABILITY_RADII_KM,
                    seed: int = 0) -> Calibration:
    """Fit a :class:`Calibration` on held-out data (see the module docstring for what is fitted).

    1. ``temperature``, ``point_sigma_km``, ``cell_sigma_scale`` and ``weight_sharpening`` together: the
       summed log loss over
       ``radii_km`` of the events "the truth lies within R of the best guess" (Nelder-Mead on logs from
       each of ``FIT_STARTS``, the best kept; while fitting,
       the ``FIT_COMPONENTS`` heaviest components of each image carry the kernel, the others count as
       point masses);
    2. per radius, a map of the mass within it (:func:`fit_radius_models`: identity, beta, monotone
       spline, either with the masses within the other radii as context), chosen by cross-validation on
       this split;
    3. localizability: a logistic regression of "within LOCALIZABILITY_RADIUS_KM" on
       ``localizability_features`` of the calibrated distribution (the kernel's masses, before the maps).

    ``cell_spread``: per finest cell, the spread of its training points (:func:`cell_spread_km`), for
    heads whose components are cells. ``report`` holds the reliability at ``radii_km`` on this split
    before (the raw point masses), after the kernel (``after_kernel``) and after the maps (``after``): the
    fit's own numbers, optimistic by construction; ``after_cross_validated``: the maps' out-of-fold
    predictions (each image's maps fitted without it; the kernel still in-sample);
    ``radius_models``: what was decided at each radius (every kind's cross-validated ECE and log loss).
    """
    from scipy.optimize import minimize

    n = len(batch)
    if n < 10:
        raise InputError(f"fitting a calibration needs at least 10 held-out images, got {n}")
    radii = [float(r) for r in radii_km]
    err = batch.errors_km
    hits = np.stack([err <= r for r in radii], axis=1).astype(np.float64)
    spread = None if cell_spread is None else np.asarray(cell_spread, dtype=np.float64)
    uses_cells = spread is not None and bool((batch.cell >= 0).any()) and int(batch.cell.max()) < len(spread)
    if not uses_cells:
        spread = None
    n_components = batch.probs.shape[1] + batch.tail_count.sum(axis=1)
    dist = haversine_km(batch.best[:, 0, None], batch.best[:, 1, None], batch.latlon[..., 0], batch.latlon[..., 1])
    before = weighted_disc_mass(dist, None, batch.probs, radii)

    t0 = _fit_temperature(batch) if n_components.max() > 1 else 1.0
    pick = np.arange(n) if n <= FIT_IMAGES else np.sort(np.random.default_rng(seed).choice(n, FIT_IMAGES, replace=False))
    sub = MixtureBatch(*(getattr(batch, f)[pick] for f, _ in _FIELDS))
    top = slice(0, min(FIT_COMPONENTS, batch.probs.shape[1]))
    rest = slice(top.stop, batch.probs.shape[1])
    d_top = dist[pick, top]
    inside_rest = [dist[pick, rest] <= r for r in radii]  # the lighter components count as point masses
    y = hits[pick]
    tempered = n_components.max() > 1

    def unpack(x):  # clamped to ranges that keep every width and weight finite (Nelder-Mead may stray far)
        point = math.exp(float(np.clip(x[0], math.log(1e-3), math.log(1e5))))
        scale = math.exp(float(np.clip(x[1], -12.0, 8.0))) if uses_cells else 0.0
        sharpening = float(np.clip(x[2 if uses_cells else 1], -30.0, 30.0)) if tempered else 0.0
        temperature = math.exp(float(np.clip(x[-1], math.log(0.02), math.log(100.0)))) if tempered else 1.0
        return point, scale, sharpening, temperature

    def loss(x) -> float:
        point, scale, sharpening, temperature = unpack(x)
        w = _tempered_top(sub, temperature)
        sig = _kernel_widths(sub, top, point, scale, spread, sharpening, w[:, top])
        m = weighted_disc_mass(d_top, sig, w[:, top], radii)
        if rest.stop > rest.start:
            w_rest = w[:, rest]
            m = m + np.stack([(w_rest * inside).sum(1) for inside in inside_rest], axis=1)
        m = np.clip(m, 1e-6, 1 - 1e-6)
        return float(-(y * np.log(m) + (1 - y) * np.log1p(-m)).mean(axis=0).sum())

    med = float(np.median(err))
    scale_km = med if np.isfinite(med) and med > 0 else 100.0
    steps = [1.5] + ([1.0] if uses_cells else []) + ([0.5, 0.4] if tempered else [])
    res = None
    for frac, t_start in _fit_starts(t0 if tempered else 1.0):
        x0 = np.array([math.log(max(frac * scale_km, 1.0))] + ([0.0] if uses_cells else [])
                      + ([0.0, math.log(t_start)] if tempered else []))
        simplex = np.vstack([x0] + [x0 + np.eye(len(x0))[i] * steps[i] for i in range(len(x0))])
        r = minimize(loss, x0, method="Nelder-Mead",
                     options={"initial_simplex": simplex, "xatol": 1e-2, "fatol": 1e-5, "maxiter": 100 * len(x0)})
        if res is None or r.fun < res.fun - 1e-9:
            res = r
    assert res is not None
    point, scale, sharpening, temperature = unpack(res.x)
    cal = Calibration(temperature=temperature, point_sigma_km=point, cell_sigma_scale=scale,
                      weight_sharpening=sharpening, cell_spread_km=None if spread is None else spread.tolist())
    weights = _tempered_top(batch, temperature)
    all_cols = slice(0, weights.shape[1])
    after = weighted_disc_mass(dist, _kernel_widths(batch, all_cols, point, scale, spread, sharpening, weights), weights,
                               radii + [float(LOCALIZABILITY_RADIUS_KM)])
    after, m_loc = after[:, :-1], after[:, -1]
    kernel_only = after
    maps, map_notes, cv_after = fit_radius_models(after, hits, radii, seed)
    if any(rm.kind != "identity" for rm in maps):
        cal.radius_models = maps
        after = cal.recalibrate(after, radii)
    placed = err <= LOCALIZABILITY_RADIUS_KM
    features = localizability_features(weights, m_loc, n_components)
    cal.localizability_coef = _fit_logistic(features, placed)
    loc = cal._localizability_from_features(features)
    cal.fitted = True
    cal.report = {
        "n": int(n),
        "temperature": cal.temperature,
        "temperature_by_true_component": t0,
        "point_sigma_km": cal.point_sigma_km,
        "cell_sigma_scale": cal.cell_sigma_scale,
        "weight_sharpening": cal.weight_sharpening,
        "mass_beyond_kept_components": float(1.0 - weights.sum(axis=1).mean()),
        "before": summarize(reliability_at_radii(before, err, radii)),
        "after_kernel": summarize(reliability_at_radii(kernel_only, err, radii)),
        "radius_models": map_notes,
        "after": summarize(reliability_at_radii(after, err, radii)),
        "after_cross_validated": summarize(reliability_at_radii(cv_after, err, radii)),
        "localizability_auroc": finite_or_none(auroc(loc, placed)),
    }
    return cal


#: the per-radius maps (:meth:`Calibration.recalibrate`): beta calibration of the mass within R, fitted
#: by log loss with a light pull towards the identity, slopes at least ``RECAL_MIN_SLOPE`` (so the map
#: keeps the order of the masses); a radius keeps its map only when ``RECAL_FOLDS``-fold cross-validation
#: on the held-out split says it lowers the log loss, and has ``RECAL_MIN_EVENTS`` hits and misses
RECAL_FOLDS = 5
RECAL_MIN_EVENTS = 10
RECAL_L2 = 1e-3
RECAL_MIN_SLOPE = 0.05
_IDENTITY_MAP = (0.0, 1.0, 1.0)


def _beta_features(m) -> np.ndarray:
    m = np.clip(np.asarray(m, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.column_stack([np.log(m), -np.log1p(-m)])


def _apply_beta_map(params, m) -> np.ndarray:
    c, a, b = params
    x = _beta_features(m)
    return _sigmoid(c + a * x[:, 0] + b * x[:, 1])


def _log_loss(q, y) -> float:
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _fit_beta_map(m, y) -> tuple[float, float, float]:
    """(c, a, b) of the beta calibration map of masses ``m`` to outcomes ``y`` (log loss, pulled lightly
    towards the identity)."""
    ident = np.asarray(_IDENTITY_MAP)
    t = _fit_log_loss(np.column_stack([np.ones(len(np.ravel(m))), _beta_features(m)]), y, ident, RECAL_L2,
                      prior=ident, penalise_intercept=True,
                      bounds=[(None, None), (RECAL_MIN_SLOPE, None), (RECAL_MIN_SLOPE, None)])
    return float(t[0]), float(t[1]), float(t[2])


def fit_radius_maps(masses, hits, radii_km: Sequence[float], seed: int = 0) -> tuple[list, list[dict]]:
    """Per-radius maps for :attr:`Calibration.radius_maps` from calibrated masses (N, R) and outcomes (N, R)
    on held-out data, and what was decided at each radius (parameters, cross-validated gain in log loss,
    kept or not). A radius whose map is not kept gets the identity."""
    m = np.asarray(masses, dtype=np.float64)
    y = np.asarray(hits, dtype=np.float64)
    n = len(m)
    folds = np.arange(n) % RECAL_FOLDS
    np.random.default_rng(seed).shuffle(folds)
    maps, notes = [], []
    for k, r in enumerate(radii_km):
        yk, mk = y[:, k], m[:, k]
        n_hit = int(yk.sum())
        note: dict[str, Any] = {"radius_km": float(r), "kept": False}
        params = _IDENTITY_MAP
        if min(n_hit, n - n_hit) >= RECAL_MIN_EVENTS:
            gains = []
            for f in range(RECAL_FOLDS):
                tr, te = folds != f, folds == f
                p = _fit_beta_map(mk[tr], yk[tr])
                gains.append(_log_loss(mk[te], yk[te]) - _log_loss(_apply_beta_map(p, mk[te]), yk[te]))
            fitted = _fit_beta_map(mk, yk)
            gain = float(np.mean(gains))
            note.update(map=list(fitted), cv_gain=gain, kept=gain > 0)
            if gain > 0:
                params = fitted
        else:
            note["reason"] = f"{min(n_hit, n - n_hit)} hits or misses, fewer than {RECAL_MIN_EVENTS}"
        maps.append((float(r),) + tuple(params))
        notes.append(note)
    return maps, notes


#: per-radius map selection (:func:`fit_radius_models`): each kind of :data:`MAP_KINDS` is scored by
#: ``RECAL_REPEATS`` differently shuffled ``RECAL_FOLDS``-fold cross-validations on the held-out split:
#: the kind with the lowest out-of-fold log loss (a proper score: it sees images that share a bin of
#: stated probability but not a hit rate, such as land and sea tiles, which the binned ECE averages
#: away) among those whose out-of-fold ECE is no worse than the identity's; the spline's knots sit at
#: these quantiles of logit m in the data it is fitted on
RECAL_REPEATS = 3
SPLINE_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _spline_knots(m) -> tuple[float, ...]:
    x = _logit(m)
    return tuple(float(v) for v in np.unique(np.round(np.quantile(x, SPLINE_QUANTILES), 9)))


def _fit_radius_map(kind: str, radius: float, m, context, fit_radii: Sequence[float], y) -> RadiusMap:
    """One :class:`RadiusMap` of ``kind`` fitted by log loss on masses ``m`` (N,) within ``radius``, the masses
    ``context`` (N, len(fit_radii)) within every fitted radius and outcomes ``y`` (N,). The features are
    standardised for the fit (an L2 pull of ``RECAL_L2`` on the standardised coefficients); the map keeps
    the coefficients on the raw features."""
    if kind == "identity":
        return RadiusMap(float(radius))
    knots = _spline_knots(m) if kind.startswith("spline") else ()
    ctx = tuple(float(r) for r in fit_radii if float(r) != float(radius)) if kind.endswith("context") else ()
    rm = RadiusMap(float(radius), kind, (0.0,) * (3 + max(len(knots) - 1, 0) + len(ctx)), knots, ctx)
    X = rm.features(m, context, fit_radii)
    n_mono = X.shape[1] - len(ctx)
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])
    t0 = np.zeros(Z.shape[1])
    t0[1 : 1 + n_mono] = 0.1
    bounds = [(None, None)] + [(0.0, None)] * n_mono + [(None, None)] * len(ctx)
    t = _fit_log_loss(Z, y, t0, RECAL_L2, bounds=bounds)
    raw = t[1:] / sd
    rm.coef = (float(t[0] - raw @ mu),) + tuple(float(v) for v in raw)
    return rm


def fit_radius_models(masses, hits, radii_km: Sequence[float], seed: int = 0,
                      kinds: Sequence[str] = MAP_KINDS) -> tuple[list[RadiusMap], list[dict], np.ndarray]:
    """Per-radius maps for :attr:`Calibration.radius_models` from calibrated masses (N, R) within ``radii_km``
    and outcomes (N, R) on held-out data: at each radius, the kind of map (``kinds``) with the lowest
    cross-validated log loss among those whose cross-validated ECE is no worse than the identity's
    (:data:`RECAL_REPEATS`), fitted on all the data; a radius with fewer than ``RECAL_MIN_EVENTS`` hits or
    misses keeps the identity.

    Returns the maps, what was decided at each radius (every kind's cross-validated ECE and log loss, the
    kind chosen) and the out-of-fold predictions of the chosen maps (N, R) of the first repeat, kept
    non-decreasing in the radius as :meth:`Calibration.recalibrate` keeps them: an honest estimate of
    the calibration on images the maps were not fitted on.
    """
    m = np.asarray(masses, dtype=np.float64)
    y = np.asarray(hits, dtype=np.float64)
    n = len(m)
    radii = [float(r) for r in radii_km]
    fold_sets = []
    for rep in range(RECAL_REPEATS):
        folds = np.arange(n) % RECAL_FOLDS
        np.random.default_rng([seed, rep]).shuffle(folds)
        fold_sets.append(folds)
    maps, notes = [], []
    oof_chosen = m.copy()
    for k, r in enumerate(radii):
        yk, mk = y[:, k], m[:, k]
        n_hit = int(yk.sum())
        note: dict[str, Any] = {"radius_km": r, "kind": "identity"}
        if min(n_hit, n - n_hit) < RECAL_MIN_EVENTS or n < 2 * RECAL_FOLDS:
            note["reason"] = f"{min(n_hit, n - n_hit)} hits or misses, fewer than {RECAL_MIN_EVENTS}"
            maps.append(RadiusMap(r))
            notes.append(note)
            continue
        scores, first_oof = {}, {}
        for kind in kinds:
            eces, losses = [], []
            for rep, folds in enumerate(fold_sets):
                oof = mk.copy()
                if kind != "identity":
                    for f in range(RECAL_FOLDS):
                        tr, te = folds != f, folds == f
                        rm = _fit_radius_map(kind, r, mk[tr], m[tr], radii, yk[tr])
                        oof[te] = _sigmoid(rm.logit(mk[te], m[te], radii))
                eces.append(reliability(oof, yk)["ece"])
                losses.append(_log_loss(oof, yk))
                if rep == 0:
                    first_oof[kind] = oof
            scores[kind] = {"cv_ece": float(np.mean(eces)), "cv_log_loss": float(np.mean(losses))}
        # the proper score decides; a map whose out-of-fold ECE is worse than the identity's is not eligible
        ceiling = scores["identity"]["cv_ece"] if "identity" in scores else math.inf
        eligible = [kd for kd in kinds if kd == "identity" or scores[kd]["cv_ece"] <= ceiling] or list(kinds)
        best = min(eligible, key=lambda kd: scores[kd]["cv_log_loss"])
        maps.append(_fit_radius_map(best, r, mk, m, radii, yk))
        oof_chosen[:, k] = first_oof[best]
        note.update(kind=best, cv=scores, coef=list(maps[-1].coef))
        notes.append(note)
    order = np.argsort(radii, kind="stable")
    oof_chosen[:, order] = np.maximum.accumulate(oof_chosen[:, order], axis=1)
    return maps, notes, oof_chosen


def finite_or_none(v: float) -> float | None:
    """``v`` as a float, or None where it is NaN or infinite (JSON has no NaN)."""
    return float(v) if np.isfinite(v) else None


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, ...] | None:
    """Coefficients (intercept first) of a logistic regression of ``y`` on the columns of ``x`` (N, F),
    lightly regularised; None without both classes."""
    y = np.asarray(y, dtype=np.float64)
    if y.min() == y.max():
        return None
    X = np.column_stack([np.ones(len(y)), np.asarray(x, dtype=np.float64).reshape(len(y), -1)])
    return tuple(float(v) for v in _fit_log_loss(X, y, np.zeros(X.shape[1]), 1e-4, method="BFGS"))


def _fit_log_loss(X: np.ndarray, y, t0: np.ndarray, l2: float, prior: np.ndarray | None = None,
                  penalise_intercept: bool = False, bounds=None, method: str = "L-BFGS-B") -> np.ndarray:
    """Coefficients ``t`` of the logistic model ``sigmoid(X @ t)`` (``X``'s first column the intercept's
    ones) minimising the mean log loss of outcomes ``y`` plus ``l2 * |t - prior|^2`` (the intercept left
    out unless ``penalise_intercept``; ``prior`` 0 when None), from ``t0``; ``bounds`` for L-BFGS-B."""
    from scipy.optimize import minimize

    y = np.asarray(y, dtype=np.float64)
    prior = np.zeros(X.shape[1]) if prior is None else np.asarray(prior, dtype=np.float64)
    weight = np.ones(X.shape[1])
    if not penalise_intercept:
        weight[0] = 0.0

    def loss(t):
        z = X @ t
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + l2 * np.sum(weight * (t - prior) ** 2))

    def grad(t):
        return X.T @ (_sigmoid(X @ t) - y) / len(y) + 2 * l2 * weight * (t - prior)

    return minimize(loss, t0, jac=grad, method=method, bounds=bounds).x
