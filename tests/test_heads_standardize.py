"""heads.base.Standardize: statistics from the training embeddings, and dimensions that were constant
there (dead features of a CNN) kept from blowing up on new pictures."""

import torch

from geoscope.heads.base import Standardize


def test_live_dimensions_are_standardised_and_constant_ones_get_weight_zero():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 6, generator=g) * torch.tensor([1.0, 5.0, 0.01, 1.0, 1.0, 1.0]) + 3.0
    train[:, 3] = 0.0  # dead in training (ReLU output that never fired)
    train[:, 4] = 2.0 + 1e-9 * torch.randn(200, generator=g)  # constant up to float noise
    norm = Standardize(6)
    norm.fit(train)
    z = norm(train)
    live = [0, 1, 2, 5]
    torch.testing.assert_close(z[:, live].mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[:, live].std(0), torch.ones(4), atol=1e-4, rtol=0)  # small spread too
    assert norm.inv_std[3] == 0 and norm.inv_std[4] == 0
    new = train[:5].clone()
    new[:, 3] = 0.05  # the dead feature fires on a new picture
    new[:, 4] = 2.5
    out = norm(new)
    torch.testing.assert_close(out, z[:5])  # it changes nothing, instead of z ~ 10^7
