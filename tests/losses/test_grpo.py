from __future__ import annotations

import math
import statistics

import pytest
import torch

from lmadapt.losses import grpo


def _fixed_batch(seed: int = 0):
    """4 sequences (2 groups of 2) of up to 5 completion tokens with ragged masks."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float32
    )
    old = -torch.rand(4, 5, generator=gen) * 3
    logps = (old + 0.3 * torch.randn(4, 5, generator=gen)).requires_grad_(True)
    ref = old + 0.2 * torch.randn(4, 5, generator=gen)
    advantages = torch.tensor([1.5, -0.5, -1.0, 0.7])
    return logps, old, ref, advantages, mask


def _reference_loss(logps, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, max_len):
    """The GRPO loss written out token by token, as the papers state it."""
    per_seq, tokens_total = [], 0.0
    total = 0.0
    for i in range(logps.size(0)):
        seq = 0.0
        n = 0
        for t in range(logps.size(1)):
            if mask[i, t] == 0:
                continue
            ratio = torch.exp(logps[i, t] - old[i, t])
            clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
            loss = -torch.minimum(ratio * adv[i], clipped * adv[i])
            d = ref[i, t] - logps[i, t]
            loss = loss + beta * (torch.exp(d) - d - 1)
            seq = seq + loss
            n += 1
        per_seq.append(seq / n)
        total = total + seq
        tokens_total += n
    if loss_type == "grpo":
        return sum(per_seq) / len(per_seq)
    if loss_type == "dapo":
        return total / tokens_total
    return total / (logps.size(0) * max_len)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_loss_and_gradient_equal_a_token_by_token_implementation(loss_type, beta):
    logps, old, ref, adv, mask = _fixed_batch()
    eps_low, eps_high, max_len = 0.1, 0.28, 7
    surrogate = grpo.clipped_surrogate(logps, old, adv, eps_low, eps_high)
    per_token = surrogate.per_token_loss + beta * grpo.k3_kl(logps, ref)
    loss = grpo.aggregate_loss_sum(per_token, mask, loss_type, max_len) / grpo.loss_units(mask, loss_type)
    (ours,) = torch.autograd.grad(loss, logps)
    expected = _reference_loss(logps, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, max_len)
    (theirs,) = torch.autograd.grad(expected, logps)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert surrogate.clipped.any() and not surrogate.clipped.all()  # both branches are exercised
    assert theirs[mask == 0].abs().max() == 0


def test_clip_marks_exactly_the_tokens_whose_gradient_the_clip_removes():
    logps, old, _, adv, _ = _fixed_batch(1)
    surrogate = grpo.clipped_surrogate(logps, old, adv, 0.2, 0.2)
    (grad,) = torch.autograd.grad(surrogate.per_token_loss.sum(), logps)
    assert torch.equal(surrogate.clipped, grad == 0)


def test_separate_low_and_high_clip():
    logps = torch.log(torch.tensor([[0.5, 1.5, 1.25]]))
    advantages_up, advantages_down = torch.tensor([1.0]), torch.tensor([-1.0])
    old = torch.zeros(1, 3)
    up = grpo.clipped_surrogate(logps, old, advantages_up, epsilon_low=0.2, epsilon_high=0.28)
    down = grpo.clipped_surrogate(logps, old, advantages_down, epsilon_low=0.2, epsilon_high=0.28)
    # A > 0: the ratio is capped at 1.28 above, never below; A < 0: floored at 0.8 below.
    torch.testing.assert_close(up.per_token_loss, -torch.tensor([[0.5, 1.28, 1.25]]))
    torch.testing.assert_close(down.per_token_loss, torch.tensor([[0.8, 1.5, 1.25]]))


def test_k3_kl_is_its_formula_and_an_unbiased_estimate_of_kl():
    logps, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -2.0, -0.1])
    expected = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logps.tolist(), ref.tolist(), strict=True)]
    torch.testing.assert_close(grpo.k3_kl(logps, ref), torch.tensor(expected))
    assert grpo.k3_kl(logps, ref)[1] == 0
    # E_{x ~ pi}[k3(x)] = KL(pi || ref): checked exactly by weighting each outcome with its probability.
    pi, ref_p = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    kl = (pi * (pi / ref_p).log()).sum()
    torch.testing.assert_close((pi * grpo.k3_kl(pi.log(), ref_p.log())).sum(), kl)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages(scale):
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 0.0, 1.0])
    result = grpo.group_advantages(rewards, 4, scale)
    values = rewards.tolist()
    expected = []
    for g in range(3):
        group = values[4 * g : 4 * g + 4]
        mean = statistics.mean(group)
        std = statistics.stdev(group) if scale == "group" else statistics.stdev(values)
        expected += [(r - mean) / (std + 1e-4) if scale != "none" else r - mean for r in group]
    torch.testing.assert_close(result.advantages, torch.tensor(expected))
    assert result.zero_std_groups == 1


def test_loss_units():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert grpo.loss_units(mask, "dapo") == 3
    assert grpo.loss_units(mask, "grpo") == grpo.loss_units(mask, "dr_grpo") == 2
