"""The same-place classifier's calibration (Platt scaling) holds on hard cases: separable pairs, huge logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoscope.heads.crossview.same_place import SamePlaceClassifier, expected_calibration_error, fit_platt


def _loss(z, y, a, b):
    u = a * z + b
    return float(np.mean(np.logaddexp(0, u) - y * u))


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_platt_fit_lowers_the_loss_and_stays_finite(scale):
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(2, 1, 400), rng.normal(-2, 1, 400)]) * scale
    y = np.r_[np.ones(400), np.zeros(400)]
    a, b = fit_platt(z, y)
    assert np.isfinite([a, b]).all() and a > 0
    assert _loss(z, y, a, b) <= _loss(z, y, 1.0, 0.0) + 1e-9
    # well-separated classes: the calibrated probabilities are confident and right
    p = 1 / (1 + np.exp(-np.clip(a * z + b, -50, 50)))
    assert ((p > 0.5) == (y > 0.5)).mean() > 0.95 and expected_calibration_error(p, y) < 0.05


def test_platt_on_perfectly_separated_pairs_is_finite():
    z = np.r_[np.linspace(5, 9, 20), np.linspace(-9, -5, 20)]
    y = np.r_[np.ones(20), np.zeros(20)]
    a, b = fit_platt(z, y)
    p = 1 / (1 + np.exp(-(a * z + b)))
    assert np.isfinite([a, b]).all()
    # smoothed targets (21 / 22 and 1 / 22): confident, never 0 or 1
    assert 0.85 < p[:20].min() and p[:20].max() < 1.0 and 0.0 < p[20:].min() and p[20:].max() < 0.15


def test_uninformative_logits_give_probabilities_near_the_base_rate():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 1000)
    y = (rng.random(1000) < 0.5).astype(float)
    a, b = fit_platt(z, y)
    p = 1 / (1 + np.exp(-(a * z + b)))
    assert abs(p.mean() - y.mean()) < 0.05 and p.std() < 0.1


def test_classifier_calibrate_and_prior():
    torch.manual_seed(0)
    clf = SamePlaceClassifier(8)
    q = torch.nn.functional.normalize(torch.randn(200, 8), dim=1)
    r_true = torch.nn.functional.normalize(q + 0.3 * torch.randn(200, 8), dim=1)
    r_other = torch.nn.functional.normalize(torch.randn(200, 8), dim=1)
    rep = clf.calibrate(torch.cat([q, q]), torch.cat([r_true, r_other]), torch.cat([torch.ones(200), torch.zeros(200)]))
    # (fitted to smoothed targets, so on hard labels it may lose a little where the raw logits were already good)
    assert rep["log_loss_after"] < rep["log_loss_before"] + 0.01 and rep["accuracy"] > 0.9 and rep["ece_after"] < 0.1
    p_even = clf.probability(q, r_true)
    p_rare = clf.probability(q, r_true, prior=0.01)  # one true pair in a hundred asked about
    assert bool(clf.fitted) and (p_rare < p_even).all()
