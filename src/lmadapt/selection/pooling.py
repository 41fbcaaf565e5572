"""Pooling token states into one vector per sequence, and cosine-ready normalisation (pure functions)."""

from __future__ import annotations

import torch


def position_weighted_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RDS+/SGPT pooling: the mean of a causal model's token states weighted by position.

    hidden [B, T, H], mask [B, T] (1 = real token) -> [B, H]. The t-th real token (1-based) weighs
    t / sum(1..n): later tokens have read more of the sequence, so they carry more of it. Counting real
    tokens only makes left and right padding give the same result.
    """
    mask = mask.to(hidden.dtype)
    positions = mask.cumsum(dim=1) * mask
    weights = positions / positions.sum(dim=1, keepdim=True)
    return (hidden * weights.unsqueeze(-1)).sum(dim=1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The plain mean of the real tokens' states (sentence-transformers' mean pooling).

    hidden [B, T, H], mask [B, T] -> [B, H].
    """
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, so inner products are cosines. [N, H] -> [N, H]."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)
