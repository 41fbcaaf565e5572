"""PPO with a reward model (Tulu 2.5 / InstructGPT style), as pure functions of per-token tensors.

Every per-token tensor is aligned with the completion tokens of a rollout batch: [B, T], where row b
holds completion b's tokens in positions 0..length_b - 1 and padding after them; `mask` [B, T] (bool or
0/1) is true on those tokens. Position t's log-prob is that of completion token t given everything
before it; position t's value estimates the return from token t onwards.

The reward of a completion is per token: -kl_coef * KL_t on every token, plus the reward model's score
on the last token. The KL estimator is k1 = log pi(y_t) - log pi_ref(y_t), as in InstructGPT, TRL's PPO
and Tulu 2.5: summed over a completion it is an unbiased estimate of the sequence KL(pi || pi_ref), and
maximising score - kl_coef * sum_t k1 is exactly the KL-regularised objective whose optimum is
pi_ref * exp(score / kl_coef). Per token it can be negative; only its sum over a completion is a KL.

The policy loss is losses/grpo.py's `clipped_surrogate` given these per-token advantages.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the true positions of `mask` (same shape); a 0-dim tensor."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum()


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (n - 1) variance of `values` over the true positions of `mask`; a 0-dim tensor."""
    n = mask.sum()
    if n < 2:
        raise ValueError(f"the variance needs at least two masked values, got {int(n)}")
    centred = values - masked_mean(values, mask)
    return masked_mean(centred**2, mask) * n / (n - 1)


def whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) over the masked positions, zero elsewhere. [B, T] -> [B, T].

    shift_mean=False keeps the mean (values are only rescaled around it): for rewards, whose sign
    carries meaning, as TRL's `whiten_rewards` does.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k1 KL estimate log pi - log pi_ref. Both [B, T] -> [B, T]."""
    return logps - ref_logps


def scores_with_eos_penalty(scores: torch.Tensor, ended: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Reward-model scores [B], with the fixed score `penalty` for completions that did not end with EOS.

    ended: [B] bool. The penalty replaces the score (Tulu 2.5 / open-instruct's penalty_reward_value),
    so a truncated completion never earns more than `penalty`, however the reward model rates its
    prefix. (TRL's `missing_eos_penalty` subtracts instead.) penalty=None leaves the scores as they are.
    """
    if penalty is None:
        return scores
    return torch.where(ended, scores, torch.full_like(scores, penalty))


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last completion token. mask: [B, T] right-padded, every row non-empty -> [B]."""
    lengths = mask.long().sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("every completion needs at least one token")
    return lengths - 1


def kl_penalised_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * kl on every completion token, plus the score on the last one.

    scores: [B]; kl, mask: [B, T]. Returns [B, T], zero on padding.
    """
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each completion's tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A zero
    after a completion's last token (the episode ends there, EOS or not). rewards, values, mask: [B, T].
    Returns (advantages [B, T], returns = advantages + values [B, T]), both zero on padding.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss per token: 0.5 * max((V - R)^2, (clip(V, V_old +- clip) - R)^2).

    values (with grad), old_values (the rollout's), returns: [B, T]. Returns (losses [B, T], clipped
    [B, T] bool: where the clipped term is the larger). Masking and averaging are the caller's.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped_loss, clipped_loss), clipped_loss > unclipped_loss


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns) over the masked tokens ([B, T] each); 0-dim.

    1 is a perfect value function, 0 no better than a constant, below 0 worse than one.
    """
    return 1.0 - masked_var(returns - values, mask) / masked_var(returns, mask)


class PPOTargets(NamedTuple):
    """What one rollout batch trains towards; every field [B, T], zero on padding."""

    rewards: torch.Tensor  # per-token rewards (KL penalty + score), whitened when asked
    kl: torch.Tensor  # per-token k1 estimate
    advantages: torch.Tensor  # GAE, whitened when asked
    returns: torch.Tensor  # GAE advantages (before whitening) + values: the value model's target


def ppo_targets(
    scores: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    gamma: float,
    lam: float,
    whiten_rewards: bool = False,
    whiten_advantages: bool = True,
) -> PPOTargets:
    """Rewards, advantages and returns of a rollout batch, from its scores [B] and the rollout policy's,
    reference's and value model's per-token outputs [B, T] (no gradient needed).

    whiten_rewards rescales the per-token rewards to unit variance over the batch (keeping their mean)
    before GAE; whiten_advantages normalises the advantages to zero mean, unit variance after it.
    """
    kl = kl_k1(logps, ref_logps) * mask.to(logps.dtype)
    rewards = kl_penalised_rewards(scores, kl, mask, kl_coef)
    if whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten_advantages:
        advantages = whiten(advantages, mask)
    return PPOTargets(rewards, kl, advantages, returns)
