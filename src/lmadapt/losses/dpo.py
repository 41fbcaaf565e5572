"""Preference losses of the DPO family, as pure functions of per-sequence log-probabilities.

Every function takes B preference pairs and returns per-pair losses and implicit rewards, each of
shape [B]; summing or averaging is the caller's job. Log-probabilities are those of the reply
tokens only, summed over each reply ("logps"); the length-normalised variants also take the number
of reply tokens of each sequence ("lengths", [B], float or int).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lmadapt.losses.lm import IGNORE_INDEX


class PreferenceLoss(NamedTuple):
    losses: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B], detached
    rejected_rewards: torch.Tensor  # [B], detached


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's labelled tokens under a causal LM, and their count.

    logits: [N, T, V] (position t predicts token t+1); labels: [N, T], IGNORE_INDEX where untrained.
    Returns (logps [N] float32, lengths [N] int64).
    """
    logits, labels = logits[:, :-1], labels[:, 1:].to(logits.device)
    trained = labels != IGNORE_INDEX
    # Only trained positions go through the (float32) log-softmax: prompt and padding rows would
    # cost a [V]-wide softmax each and keep it alive until backward.
    token_logps = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
    token_logps[trained] = -F.cross_entropy(logits[trained].float(), labels[trained], reduction="none")
    return token_logps.sum(dim=1), trained.sum(dim=1)


def _sigmoid_loss(margin: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-log sigmoid(margin), or with label smoothing eps the conservative-DPO mixture that also
    counts the pair as flipped with probability eps."""
    if label_smoothing == 0.0:
        return -F.logsigmoid(margin)
    return -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)


def dpo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), all inputs summed logps [B].

    label_smoothing > 0 gives conservative DPO. Rewards are beta * (policy - reference) logps.
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = _sigmoid_loss(beta * (chosen_ratio - rejected_ratio), label_smoothing)
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def dpo_norm(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """DPO on length-averaged logps: every logp [B] is divided by its reply's token count [B]."""
    chosen_n, rejected_n = chosen_lengths.clamp(min=1), rejected_lengths.clamp(min=1)
    return dpo(
        policy_chosen / chosen_n,
        policy_rejected / rejected_n,
        ref_chosen / chosen_n,
        ref_rejected / rejected_n,
        beta,
        label_smoothing,
    )


def ipo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
) -> PreferenceLoss:
    """IPO: (h - 1/(2 beta))^2 with h the log-ratio difference of length-averaged logps [B].

    Averaging keeps the regression target 1/(2 beta) independent of reply length (as TRL does,
    following the IPO authors); beta is the paper's tau.
    """
    chosen_n, rejected_n = chosen_lengths.clamp(min=1), rejected_lengths.clamp(min=1)
    chosen_ratio = (policy_chosen - ref_chosen) / chosen_n
    rejected_ratio = (policy_rejected - ref_rejected) / rejected_n
    losses = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * beta)) ** 2
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def simpo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """SimPO (reference-free): -log sigmoid(beta * avg_c - beta * avg_r - gamma), avg = logps / length.

    gamma is the target reward margin; rewards are beta * length-averaged logps.
    """
    chosen_reward = beta * policy_chosen / chosen_lengths.clamp(min=1)
    rejected_reward = beta * policy_rejected / rejected_lengths.clamp(min=1)
    losses = _sigmoid_loss(chosen_reward - rejected_reward - gamma, label_smoothing)
    return PreferenceLoss(losses, chosen_reward.detach(), rejected_reward.detach())
