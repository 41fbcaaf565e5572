"""GRPO's loss as pure functions: group-relative advantages, the clipped ratio surrogate, the k3 KL
estimator and the three ways of aggregating per-token losses.

Shapes: N sequences = P prompts x G completions, prompt-major (a group's G rows are adjacent); C the
completion width; masks are 1 on completion tokens (through EOS) and 0 on padding.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

Scale = Literal["group", "batch", "none"]
LossType = Literal["grpo", "dapo", "dr_grpo"]
# Added to the standard deviation before dividing (TRL's value), so a near-constant group stays finite.
STD_EPS = 1e-4


class Advantages(NamedTuple):
    advantages: torch.Tensor  # [N] float32
    zero_std_groups: int  # groups whose G rewards are all equal: no learning signal


def group_advantages(rewards: torch.Tensor, group_size: int, scale: Scale) -> Advantages:
    """rewards [N] -> each reward minus its group's mean, divided by (std + 1e-4) of its group ("group"),
    of the whole batch ("batch"), or not divided ("none"). Standard deviations are unbiased (n - 1)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    group_std = grouped.std(dim=1) if group_size > 1 else torch.zeros(grouped.size(0))
    zero_std = int(torch.isclose(group_std, torch.zeros_like(group_std)).sum())
    if scale == "group":
        centred = centred / (group_std.repeat_interleave(group_size) + STD_EPS)
    elif scale == "batch":
        batch_std = rewards.float().std() if rewards.numel() > 1 else torch.tensor(0.0)
        centred = centred / (batch_std + STD_EPS)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}")
    return Advantages(centred, zero_std)


class Surrogate(NamedTuple):
    per_token_loss: torch.Tensor  # [B, C]
    ratio: torch.Tensor  # [B, C] pi / pi_old, detached
    clipped: torch.Tensor  # [B, C] bool: the clipped branch was taken (its gradient is zero)


def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> Surrogate:
    """PPO's clipped objective per token, negated into a loss:
    -min(r A, clip(r, 1 - epsilon_low, 1 + epsilon_high) A) with r = exp(logps - old_logps).

    logps, old_logps: [B, C]; advantages: [B] (one per sequence) or [B, C].
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages
    is_clipped = (ratio < 1 - epsilon_low) & (advantages < 0) | (ratio > 1 + epsilon_high) & (advantages > 0)
    return Surrogate(-torch.min(unclipped, clipped), ratio.detach(), is_clipped)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: exp(d) - d - 1 with d = ref_logps - logps;
    unbiased, never negative. [B, C] -> [B, C]."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def aggregate_loss_sum(
    per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: LossType, max_completion_length: int
) -> torch.Tensor:
    """The micro-batch's loss summed over its units (`loss_units`); the caller divides by the units of
    the whole mini-batch, which makes accumulation exact.

    grpo: each sequence's mean over its tokens (unit: sequence). dapo: every token alike (unit: token).
    dr_grpo: each sequence's token sum over the constant max_completion_length (unit: sequence).
    per_token_loss, mask: [B, C].
    """
    masked = per_token_loss * mask
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()
    if loss_type == "dapo":
        return masked.sum()
    if loss_type == "dr_grpo":
        return masked.sum() / max_completion_length
    raise ValueError(f"unknown GRPO loss type {loss_type!r}")


def loss_units(mask: torch.Tensor, loss_type: LossType) -> int:
    """What `aggregate_loss_sum` sums over: completion tokens (dapo) or sequences (grpo, dr_grpo)."""
    return int(mask.sum()) if loss_type == "dapo" else mask.size(0)
