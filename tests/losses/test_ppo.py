from __future__ import annotations

import math
import statistics

import pytest
import torch

from lmadapt.losses.grpo import clipped_surrogate
from lmadapt.losses.ppo import (
    clipped_value_loss,
    explained_variance,
    gae,
    kl_k1,
    kl_penalised_rewards,
    masked_mean,
    masked_var,
    ppo_targets,
    scores_with_eos_penalty,
    whiten,
)

F64 = torch.float64


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def test_gae_matches_a_hand_computed_case():
    # gamma 0.9, lambda 0.8 (gamma * lambda = 0.72).
    # Row 0, three tokens, r = (0.1, -0.2, 1.0), V = (0.5, 0.4, 0.3):
    #   delta_2 = 1.0 - 0.3 = 0.7                         A_2 = 0.7
    #   delta_1 = -0.2 + 0.9 * 0.3 - 0.4 = -0.33          A_1 = -0.33 + 0.72 * 0.7 = 0.174
    #   delta_0 = 0.1 + 0.9 * 0.4 - 0.5 = -0.04           A_0 = -0.04 + 0.72 * 0.174 = 0.08528
    #   returns = A + V = (0.58528, 0.574, 1.0)
    # Row 1, two tokens then padding (whose reward 5 and value 9 must be ignored), r = (0, 2), V = (1, 0.5):
    #   delta_1 = 2 - 0.5 = 1.5                           A_1 = 1.5
    #   delta_0 = 0 + 0.9 * 0.5 - 1 = -0.55               A_0 = -0.55 + 0.72 * 1.5 = 0.53
    #   returns = (1.53, 2.0, 0)
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 5.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 9.0]], dtype=F64)
    advantages, returns = gae(rewards, values, _mask([3, 2], 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, torch.tensor([[0.08528, 0.174, 0.7], [0.53, 1.5, 0.0]], dtype=F64))
    torch.testing.assert_close(returns, torch.tensor([[0.58528, 0.574, 1.0], [1.53, 2.0, 0.0]], dtype=F64))


def test_gae_with_lambda_one_and_gamma_one_is_reward_to_go_minus_value():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=gen, dtype=F64), torch.randn(4, 6, generator=gen, dtype=F64)
    mask = _mask([6, 1, 4, 3], 6)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = (rewards * mask).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(returns, to_go * mask)
    torch.testing.assert_close(advantages, (to_go - values) * mask)


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    gen = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(2, 5, generator=gen, dtype=F64), torch.randn(2, 5, generator=gen, dtype=F64)
    mask = _mask([5, 3], 5)
    advantages, _ = gae(rewards, values, mask, gamma=0.95, lam=0.0)
    for b, length in enumerate([5, 3]):
        for t in range(length):
            next_value = values[b, t + 1].item() if t + 1 < length else 0.0
            expected = rewards[b, t].item() + 0.95 * next_value - values[b, t].item()
            assert advantages[b, t].item() == pytest.approx(expected, rel=1e-12)


def test_whiten_matches_the_formula_over_masked_values():
    gen = torch.Generator().manual_seed(2)
    values = 3 + 2 * torch.randn(3, 5, generator=gen, dtype=F64)
    mask = _mask([5, 2, 4], 5)
    kept = [values[b, t].item() for b in range(3) for t in range(5) if mask[b, t]]
    mean, var = statistics.fmean(kept), statistics.variance(kept)  # sample (n - 1) variance
    assert masked_mean(values, mask).item() == pytest.approx(mean, rel=1e-12)
    assert masked_var(values, mask).item() == pytest.approx(var, rel=1e-12)
    out, scaled = whiten(values, mask), whiten(values, mask, shift_mean=False)
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                assert out[b, t].item() == pytest.approx((values[b, t].item() - mean) / math.sqrt(var + 1e-8))
                expected = (values[b, t].item() - mean) / math.sqrt(var + 1e-8) + mean
                assert scaled[b, t].item() == pytest.approx(expected, rel=1e-12)
            else:
                assert out[b, t].item() == 0.0 and scaled[b, t].item() == 0.0
    assert masked_mean(out, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(out, mask).item() == pytest.approx(1.0, rel=1e-6)


def test_masked_var_refuses_a_single_value():
    with pytest.raises(ValueError, match="at least two"):
        masked_var(torch.ones(2, 3), _mask([1, 0], 3))


def test_kl_penalised_rewards_put_the_score_on_the_last_token():
    # kl_coef 0.5; row 0 three tokens with kl (0.2, -0.4, 1.0) and score 3 -> (-0.1, 0.2, -0.5 + 3);
    # row 1 one token, kl 0.6 (padding kl 7 ignored), score -1 -> (-0.3 - 1, 0, 0).
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.4, -1.0, -1.0]], dtype=F64)
    ref = torch.tensor([[-1.2, -1.6, -1.5], [-1.0, -8.0, -8.0]], dtype=F64)
    kl = kl_k1(logps, ref)
    rewards = kl_penalised_rewards(torch.tensor([3.0, -1.0], dtype=F64), kl, _mask([3, 1], 3), kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, 0.2, 2.5], [-1.3, 0.0, 0.0]], dtype=F64))


def test_kl_penalised_rewards_refuse_an_empty_completion():
    with pytest.raises(ValueError, match="at least one token"):
        kl_penalised_rewards(torch.zeros(2), torch.zeros(2, 3), _mask([2, 0], 3), 0.1)


def test_missing_eos_penalty_replaces_the_score():
    scores = torch.tensor([4.0, 4.0, -20.0])
    ended = torch.tensor([True, False, False])
    torch.testing.assert_close(
        scores_with_eos_penalty(scores, ended, -10.0), torch.tensor([4.0, -10.0, -10.0])
    )
    assert scores_with_eos_penalty(scores, ended, None) is scores


def _policy_loss_loop(logps, old, adv, clip):
    """Token by token, straight from the PPO paper's L^CLIP (negated for minimisation)."""
    losses = torch.zeros_like(logps)
    for b in range(logps.size(0)):
        for t in range(logps.size(1)):
            ratio = torch.exp(logps[b, t] - old[b, t])
            bounded = min(max(ratio.item(), 1 - clip), 1 + clip)
            if ratio * adv[b, t] <= bounded * adv[b, t]:
                losses[b, t] = -ratio * adv[b, t]
            else:
                losses[b, t] = -bounded * adv[b, t] + 0 * ratio  # constant in logps
    return losses


def test_clipped_surrogate_with_per_token_advantages_and_its_gradient_match_a_per_token_loop():
    gen = torch.Generator().manual_seed(3)
    old = -3 * torch.rand(4, 6, generator=gen, dtype=F64)
    logps = old + 0.4 * torch.randn(4, 6, generator=gen, dtype=F64)  # ratios on both sides of the range
    adv = torch.randn(4, 6, generator=gen, dtype=F64)
    mask = _mask([6, 2, 5, 1], 6)
    ours_in, loop_in = logps.clone().requires_grad_(True), logps.clone().requires_grad_(True)
    losses, _, clipped = clipped_surrogate(ours_in, old, adv, 0.2, 0.2)
    expected = _policy_loss_loop(loop_in, old, adv, clip=0.2)
    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-6)
    assert 0 < int(clipped.sum()) < clipped.numel()  # the case exercises both branches
    masked_mean(losses, mask).backward()
    masked_mean(expected, mask).backward()
    torch.testing.assert_close(ours_in.grad, loop_in.grad, rtol=0, atol=1e-6)
    # Clipped tokens and padding get no gradient; the rest get -A * ratio / n_tokens.
    n = mask.sum()
    ratio = torch.exp(logps - old)
    analytic = torch.where(clipped | ~mask, torch.zeros_like(adv), -adv * ratio / n)
    torch.testing.assert_close(ours_in.grad, analytic, rtol=0, atol=1e-12)


def test_clipped_value_loss_on_hand_cases():
    # clip 0.2, old values 0.5:
    #   V=1.0, R=2.0: clipped V = 0.7; (1-2)^2 = 1 < (0.7-2)^2 = 1.69 -> 0.5 * 1.69 = 0.845, clipped
    #   V=0.6, R=0.0: inside the range, both 0.36 -> 0.18, not clipped
    #   V=1.0, R=0.0: clipped V = 0.7; 1.0 > 0.49 -> 0.5, not clipped (unclipped is larger)
    #   V=0.1, R=0.5: clipped V = 0.3; (0.1-0.5)^2 = 0.16 > (0.3-0.5)^2 = 0.04 -> 0.08, not clipped
    values = torch.tensor([[1.0, 0.6, 1.0, 0.1]], dtype=F64, requires_grad=True)
    old = torch.full((1, 4), 0.5, dtype=F64)
    returns = torch.tensor([[2.0, 0.0, 0.0, 0.5]], dtype=F64)
    losses, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    torch.testing.assert_close(losses, torch.tensor([[0.845, 0.18, 0.5, 0.08]], dtype=F64))
    assert clipped.tolist() == [[True, False, False, False]]
    losses.sum().backward()
    # d/dV of 0.5 (V - R)^2 is V - R where the unclipped term is taken; 0 where the clipped one is.
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.6, 1.0, -0.4]], dtype=F64))


def test_explained_variance_matches_the_formula():
    gen = torch.Generator().manual_seed(4)
    returns = torch.randn(3, 4, generator=gen, dtype=F64)
    values = returns + 0.3 * torch.randn(3, 4, generator=gen, dtype=F64)
    mask = _mask([4, 3, 2], 4)
    pairs = [(values[b, t].item(), returns[b, t].item()) for b in range(3) for t in range(4) if mask[b, t]]
    residual = statistics.variance([r - v for v, r in pairs])
    expected = 1 - residual / statistics.variance([r for _, r in pairs])
    assert explained_variance(values, returns, mask).item() == pytest.approx(expected, rel=1e-12)
    assert explained_variance(returns, returns, mask).item() == 1.0


def _targets_by_lists(scores, logps, ref, values, lengths, kl_coef, gamma, lam, whiten_rewards):
    """ppo_targets written out on Python lists, one completion at a time (the InstructGPT / TRL recipe)."""
    rewards = []
    for b, n in enumerate(lengths):
        row = [-kl_coef * (logps[b][t] - ref[b][t]) for t in range(n)]
        row[-1] += scores[b]
        rewards.append(row)
    if whiten_rewards:
        flat = [r for row in rewards for r in row]
        mean, std = statistics.fmean(flat), math.sqrt(statistics.variance(flat) + 1e-8)
        rewards = [[(r - mean) / std + mean for r in row] for row in rewards]
    advantages, returns = [], []
    for b, n in enumerate(lengths):
        row, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_value = values[b][t + 1] if t + 1 < n else 0.0
            running = rewards[b][t] + gamma * next_value - values[b][t] + gamma * lam * running
            row[t] = running
        advantages.append(row)
        returns.append([a + v for a, v in zip(row, values[b], strict=False)])
    flat = [a for row in advantages for a in row]
    mean, std = statistics.fmean(flat), math.sqrt(statistics.variance(flat) + 1e-8)
    return rewards, [[(a - mean) / std for a in row] for row in advantages], returns


@pytest.mark.parametrize("whiten_rewards", [False, True])
def test_ppo_targets_match_a_list_implementation(whiten_rewards):
    gen = torch.Generator().manual_seed(5)
    lengths = [5, 2, 4, 1]
    scores = torch.randn(4, generator=gen, dtype=F64)
    logps = -2 * torch.rand(4, 5, generator=gen, dtype=F64)
    ref = -2 * torch.rand(4, 5, generator=gen, dtype=F64)
    values = torch.randn(4, 5, generator=gen, dtype=F64)
    out = ppo_targets(scores, logps, ref, values, _mask(lengths, 5), 0.05, 0.99, 0.95, whiten_rewards)
    rewards, advantages, returns = _targets_by_lists(
        scores.tolist(),
        logps.tolist(),
        ref.tolist(),
        values.tolist(),
        lengths,
        0.05,
        0.99,
        0.95,
        whiten_rewards,
    )
    for b, n in enumerate(lengths):
        torch.testing.assert_close(
            out.rewards[b, :n], torch.tensor(rewards[b], dtype=F64), rtol=0, atol=1e-12
        )
        torch.testing.assert_close(
            out.advantages[b, :n], torch.tensor(advantages[b], dtype=F64), rtol=0, atol=1e-10
        )
        torch.testing.assert_close(
            out.returns[b, :n], torch.tensor(returns[b], dtype=F64), rtol=0, atol=1e-12
        )
        torch.testing.assert_close(out.kl[b, :n], logps[b, :n] - ref[b, :n])
        for field in out:
            assert (field[b, n:] == 0).all()
