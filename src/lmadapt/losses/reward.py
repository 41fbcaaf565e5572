"""Reward-model loss on preference pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). Scores: [B]; returns [B]."""
    return -F.logsigmoid(chosen_scores - rejected_scores)
