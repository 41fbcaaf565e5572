from __future__ import annotations

import math

import pytest
import torch

from lmadapt.losses.dpo import dpo, dpo_norm, ipo, sequence_log_probs, simpo


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-30 * torch.rand(6, generator=gen, dtype=torch.float64) for _ in range(4))
    lc = torch.randint(1, 20, (6,), generator=gen)
    lr = torch.randint(1, 20, (6,), generator=gen)
    return pc, pr, rc, rr, lc, lr


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_matches_the_formula_elementwise(smoothing):
    pc, pr, rc, rr, _, _ = _inputs()
    beta = 0.3
    out = dpo(pc, pr, rc, rr, beta, smoothing)
    for i in range(6):
        h = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])).item()
        expected = -(1 - smoothing) * _logsig(h) - smoothing * _logsig(-h)
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-12)
        assert out.chosen_rewards[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item(), rel=1e-12)
        assert out.rejected_rewards[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item(), rel=1e-12)


def test_dpo_gradient_is_beta_sigmoid_of_negative_margin():
    pc, pr, rc, rr, _, _ = _inputs(1)
    pc.requires_grad_(True)
    beta = 0.1
    dpo(pc, pr, rc, rr, beta).losses.sum().backward()
    h = beta * ((pc - rc) - (pr - rr)).detach()
    torch.testing.assert_close(pc.grad, -beta * torch.sigmoid(-h))


def test_dpo_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -10.0])
    out = dpo(logps, logps + 1, logps, logps + 1, beta=0.1)
    torch.testing.assert_close(out.losses, torch.full((2,), math.log(2)))


def test_dpo_norm_divides_every_logp_by_its_length():
    pc, pr, rc, rr, lc, lr = _inputs(2)
    beta = 0.5
    out = dpo_norm(pc, pr, rc, rr, lc, lr, beta, 0.1)
    for i in range(6):
        h = beta * ((pc[i] - rc[i]) / lc[i] - (pr[i] - rr[i]) / lr[i]).item()
        assert out.losses[i].item() == pytest.approx(-0.9 * _logsig(h) - 0.1 * _logsig(-h), rel=1e-12)
    assert out.chosen_rewards[0].item() == pytest.approx(beta * (pc[0] - rc[0]).item() / lc[0].item())


def test_ipo_is_squared_distance_of_averaged_log_ratio_difference_to_half_inverse_beta():
    pc, pr, rc, rr, lc, lr = _inputs(3)
    beta = 0.25
    out = ipo(pc, pr, rc, rr, lc, lr, beta)
    for i in range(6):
        h = ((pc[i] - rc[i]) / lc[i] - (pr[i] - rr[i]) / lr[i]).item()
        assert out.losses[i].item() == pytest.approx((h - 1 / (2 * beta)) ** 2, rel=1e-12)


def test_simpo_is_reference_free_with_target_margin():
    pc, pr, _, _, lc, lr = _inputs(4)
    beta, gamma = 2.0, 0.7
    out = simpo(pc, pr, lc, lr, beta, gamma)
    for i in range(6):
        margin = beta * (pc[i] / lc[i] - pr[i] / lr[i]).item() - gamma
        assert out.losses[i].item() == pytest.approx(-_logsig(margin), rel=1e-12)
        assert out.chosen_rewards[i].item() == pytest.approx(beta * pc[i].item() / lc[i].item(), rel=1e-12)


def test_sequence_log_probs_match_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[:, :3] = -100
    labels[1, 5:] = -100  # padding after a shorter reply
    logps, lengths = sequence_log_probs(logits, labels)
    log_softmax = logits.log_softmax(-1)
    for row in range(3):
        expected = sum(
            log_softmax[row, t - 1, labels[row, t]].item() for t in range(1, 7) if labels[row, t] != -100
        )
        assert logps[row].item() == pytest.approx(expected, abs=1e-5)
    assert lengths.tolist() == [4, 2, 4]
