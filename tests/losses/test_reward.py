from __future__ import annotations

import math

import pytest
import torch

from lmadapt.losses.reward import bradley_terry


def test_bradley_terry_matches_the_formula():
    chosen = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    rejected = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    losses = bradley_terry(chosen, rejected)
    for c, r, loss in zip(chosen.tolist(), rejected.tolist(), losses.tolist(), strict=True):
        assert loss == pytest.approx(math.log1p(math.exp(-(c - r))), rel=1e-12)
    assert losses[2].item() == pytest.approx(math.log(2))


def test_bradley_terry_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([0.3], requires_grad=True)
    rejected = torch.tensor([0.1], requires_grad=True)
    bradley_terry(chosen, rejected).sum().backward()
    expected = -torch.sigmoid(torch.tensor([-0.2]))
    torch.testing.assert_close(chosen.grad, expected)
    torch.testing.assert_close(rejected.grad, -expected)
