"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from lmadapt.config import TrainConfig


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Linear warmup from 1/warmup to 1 over `warmup_steps`, then linear or cosine decay to
    `min_ratio` at `total_steps`, or constant.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, lr_of: Mapping[str, float] | None = None
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and norm weights get no weight decay. `lr_of` gives
    named parameters their own peak learning rate (one group each, no weight decay; the schedule scales
    every group alike)."""
    lr_of = lr_of or {}
    decay, no_decay, own = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in lr_of:
            own.append({"params": [p], "weight_decay": 0.0, "lr": lr_of[name]})
        else:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if missing := sorted(set(lr_of) - {name for name, p in model.named_parameters() if p.requires_grad}):
        raise ValueError(f"no trainable parameters named {missing}")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    groups += own
    # foreach=False keeps the update order fixed, so resumed runs match uninterrupted ones bit for bit.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, foreach=False)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = round(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)
    )
