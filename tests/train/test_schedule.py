from __future__ import annotations

import math

import pytest
import torch

from lmadapt.config import TrainConfig
from lmadapt.train.schedule import build_optimizer, build_scheduler, lr_factor


def test_linear_warmup_then_decay():
    # 10 steps, 2 warmup: 0.5, 1.0, then linear to 0 at step 10.
    got = [lr_factor(s, 10, 2, "linear") for s in range(10)]
    expected = [0.5, 1.0] + [1 - (s - 2) / 8 for s in range(2, 10)]
    assert got == pytest.approx(expected)


def test_cosine_and_constant():
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(9, 10, 0, "constant") == 1.0


def test_scheduler_drives_optimizer_lr_and_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    cfg = TrainConfig(lr=0.1, warmup_ratio=0.2, schedule="linear", weight_decay=0.01)
    opt = build_optimizer(model, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert len(opt.param_groups[0]["params"]) == 1  # only the 2-D weight decays
    sched = build_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.05, 0.1, 0.1, 0.1 * (1 - 1 / 8)])


def test_decay_ends_at_min_ratio():
    assert lr_factor(10, 10, 2, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(6, 10, 2, "linear", min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)


def test_named_parameters_get_their_own_learning_rate_under_the_same_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    cfg = TrainConfig(lr=0.1, warmup_ratio=0.2, schedule="linear", weight_decay=0.01)
    opt = build_optimizer(model, cfg, {"1.weight": 2.0})
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups] == [
        (0.1, 0.01, 1),
        (0.1, 0.0, 2),  # both biases
        (2.0, 0.0, 1),
    ]
    assert opt.param_groups[2]["params"][0] is model[1].weight
    sched = build_scheduler(opt, cfg, total_steps=10)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1, 2.0])  # warmup 0.5 -> 1.0
    with pytest.raises(ValueError, match="nowhere"):
        build_optimizer(model, cfg, {"nowhere": 1.0})
