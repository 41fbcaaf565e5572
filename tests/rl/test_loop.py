from __future__ import annotations

import json

import pytest
import torch
from support import tiny_grpo_config

from lmadapt.config import UpdateConfig
from lmadapt.errors import ConfigError
from lmadapt.losses import grpo as grpo_losses
from lmadapt.recipes import grpo
from lmadapt.rl import loop
from lmadapt.rl.loop import update_rows


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_ratio_is_exactly_one_on_the_first_pass(
    tmp_path, tiny_llama_dir, write_prompts, graded_verifier, monkeypatch
):
    ratios: list[torch.Tensor] = []
    original = grpo_losses.clipped_surrogate

    def recording(logps, old_logps, *args):
        result = original(logps, old_logps, *args)
        ratios.append(result.ratio)
        return result

    monkeypatch.setattr(grpo_losses, "clipped_surrogate", recording)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    cfg = tiny_grpo_config(
        tmp_path,
        tiny_llama_dir,
        prompts,
        "train.max_steps=1",
        "train.batch_size=3",  # 8 sequences: mini-batches of 4 in micro-batches of 3 and 1
        "update.num_iterations=2",
        "update.mini_batches=2",
        f"reward.verifier={graded_verifier}",
        "reward.kind=verifier",
    )
    grpo.run(cfg)
    assert len(ratios) == 8  # 2 passes x 2 mini-batches x 2 micro-batches
    first_pass, second_pass = ratios[:4], ratios[4:]
    for ratio in first_pass[:2]:  # before any update: the policy is exactly the one that sampled
        assert (ratio == 1).all()
    assert any((ratio != 1).any() for ratio in second_pass)  # after updates it moved


@pytest.mark.parametrize(("loss_type", "beta"), [("grpo", 0.0), ("dapo", 0.1), ("dr_grpo", 0.0)])
def test_accumulation_invariance(
    tmp_path, tiny_llama_dir, write_prompts, graded_verifier, monkeypatch, loss_type, beta
):
    """One step over 8 sequences in one micro-batch or in micro-batches of 3, 3, 2: the same gradient.
    (Compared before AdamW, whose first step is lr * sign(g) and so amplifies rounding in tiny entries.)"""
    gradients: list[dict[str, torch.Tensor]] = []
    original = loop.optimizer_step

    def recording(model, *args):
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        return original(model, *args)

    monkeypatch.setattr(loop, "optimizer_step", recording)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    records = []
    for micro in (8, 3):
        cfg = tiny_grpo_config(
            tmp_path,
            tiny_llama_dir,
            prompts,
            "train.max_steps=1",
            f"train.batch_size={micro}",
            f"train.output_dir={tmp_path / f'run-{micro}'}",
            f"grpo.loss_type={loss_type}",
            f"grpo.beta={beta}",
            f"reward.verifier={graded_verifier}",
            "reward.kind=verifier",
        )
        records.append(_records(grpo.run(cfg).out_dir)[-1])
    first, second = records
    assert first["reward_std"] > 0 and first["loss"] != 0  # a real update
    assert second["loss"] == pytest.approx(first["loss"], abs=1e-6)
    one, many = gradients
    assert one.keys() == many.keys() and len(one) > 10
    for name, grad in one.items():
        torch.testing.assert_close(many[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_update_rows():
    assert (
        update_rows(10, UpdateConfig(num_iterations=2, mini_batches=3))
        == [
            range(0, 3),
            range(3, 7),
            range(7, 10),
        ]
        * 2
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.grad_accum=2", "grad_accum is not used"),
        ("rollout.num_generations=1", "at least 2"),
        ("rollout.temperature=0", "temperature must be > 0"),
        ("update.mini_batches=0", "update.mini_batches must be at least 1"),
        ("train.gradient_checkpointing=true", "not supported by RL recipes"),
    ],
)
def test_settings_the_loop_cannot_honour_are_refused(
    tmp_path, tiny_llama_dir, write_prompts, override, message
):
    cfg = tiny_grpo_config(tmp_path, tiny_llama_dir, write_prompts(tmp_path / "p.jsonl", 4), override)
    with pytest.raises(ConfigError, match=message):
        grpo.run(cfg)
    assert not (tmp_path / "run").exists()
