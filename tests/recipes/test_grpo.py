from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from support import tiny_grpo_config

from lmadapt.config import GRPOConfig, load_config, save_config
from lmadapt.recipes import grpo


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _verifier_cfg(tmp_path, model_dir, prompts, verifier, *extra):
    return tiny_grpo_config(
        tmp_path, model_dir, prompts, "reward.kind=verifier", f"reward.verifier={verifier}", *extra
    )


def test_grpo_raises_the_reward_and_saves_a_model_with_metrics_and_plot(
    tmp_path, tiny_llama_dir, write_prompts, graded_verifier
):
    prompts = write_prompts(tmp_path / "p.jsonl", 16)
    cfg = _verifier_cfg(
        tmp_path,
        tiny_llama_dir,
        prompts,
        graded_verifier,
        "train.max_steps=30",
        "train.lr=1e-2",
        "rollout.num_generations=8",
    )
    result = grpo.run(cfg)
    records = _records(result.out_dir)
    rewards = [r["reward_mean"] for r in records]
    assert len(rewards) == 30
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.1
    for key in (
        "reward_std",
        "accuracy",
        "clip_fraction",
        "entropy",
        "completion_length",
        "zero_std_groups",
        "rollout_s",
        "update_s",
        "loss",
        "truncated",
    ):
        assert key in records[-1], key
    assert (result.out_dir / "loss.png").is_file()
    assert (result.out_dir / "model.safetensors").is_file()
    assert load_config(GRPOConfig, result.out_dir / "config.yaml") == cfg


def test_lora_reference_is_the_model_with_adapters_off(
    tmp_path, tiny_llama_dir, write_prompts, graded_verifier, caplog
):
    caplog.set_level("INFO", logger="lmadapt")
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    cfg = _verifier_cfg(
        tmp_path,
        tiny_llama_dir,
        prompts,
        graded_verifier,
        "train.max_steps=4",
        "train.lr=5e-2",
        "model.lora.enabled=true",
        "model.lora.r=4",
        "grpo.beta=0.1",
    )
    result = grpo.run(cfg)
    kl = [r["kl"] for r in _records(result.out_dir)]
    assert kl[0] == 0  # LoRA starts as the identity: the policy is its reference, exactly
    assert kl[-1] > 0
    assert "adapters disabled" in caplog.text
    assert (result.out_dir / "adapter_model.safetensors").is_file()


def test_resume_after_a_kill_is_bit_identical(
    tmp_path, tiny_llama_dir, write_prompts, graded_verifier, kill_after_checkpoint, resume_cli
):
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    common = ["train.max_steps=6", "train.save_every=1", "update.num_iterations=2", "grpo.beta=0.05"]
    straight = _verifier_cfg(
        tmp_path,
        tiny_llama_dir,
        prompts,
        graded_verifier,
        *common,
        f"train.output_dir={tmp_path / 'straight'}",
    )
    grpo.run(straight)
    killed = _verifier_cfg(
        tmp_path, tiny_llama_dir, prompts, graded_verifier, *common, f"train.output_dir={tmp_path / 'killed'}"
    )
    config = tmp_path / "grpo.yaml"
    save_config(killed, config)
    kill_after_checkpoint("grpo", config, tmp_path / "killed", step=2)
    assert not (tmp_path / "killed" / "result.json").exists()
    resume_cli("grpo", config)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    drop = ("rollout_s", "update_s", "tokens_per_s")
    same = [{k: v for k, v in r.items() if k not in drop} for r in _records(tmp_path / "straight")]
    assert [{k: v for k, v in r.items() if k not in drop} for r in _records(tmp_path / "killed")] == same


def test_a_bad_prompt_row_is_a_one_line_error_and_writes_nothing(tmp_path, tiny_llama_dir, cli):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "ground_truth": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    config = tmp_path / "grpo.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(tiny_llama_dir)},
                "data": {"sources": [str(prompts)]},
                "train": {"output_dir": str(tmp_path / "run")},
            }
        )
    )
    proc = cli("grpo", str(config), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert f"{prompts}:2: field 'ground_truth': missing required field" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("loss_type", ["dapo", "dr_grpo"])
def test_every_loss_type_trains(tmp_path, tiny_llama_dir, write_prompts, graded_verifier, loss_type):
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    cfg = _verifier_cfg(
        tmp_path,
        tiny_llama_dir,
        prompts,
        graded_verifier,
        "train.max_steps=3",
        f"grpo.loss_type={loss_type}",
        "grpo.scale_rewards=batch",
        "update.num_iterations=2",
    )
    records = _records(grpo.run(cfg).out_dir)
    assert len(records) == 3 and any(r["clip_fraction"] > 0 or r["loss"] != 0 for r in records)
