from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import byte_llama, logged_losses, save_with_byte_tokenizer, tiny_run_config
from transformers import AutoModelForCausalLM

from lmadapt.config import PPOConfig, RewardConfig, load_config, save_config
from lmadapt.errors import ConfigError, DataError
from lmadapt.recipes import ppo, reward

WORDS = ["abc", "fed", "cab", "bad", "dec", "ace", "bee", "fab"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, write_pairs) -> tuple[Path, Path]:
    """(tiny Llama dir, a reward model trained on it with `lmadapt reward`): built once for the module."""
    root = tmp_path_factory.mktemp("ppo-models")
    llama = save_with_byte_tokenizer(byte_llama(), root / "llama")
    pairs = write_pairs(root / "pairs.jsonl", 48)
    cfg = tiny_run_config(
        RewardConfig,
        root,
        llama,
        pairs,
        "train.lr=3e-3",
        "train.warmup_ratio=0",
        "train.max_steps=15",
        f"train.output_dir={root / 'rm'}",
    )
    return llama, reward.run(cfg).out_dir


def _prompts(path: Path, with_truth: bool = False) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for word in WORDS:
            record = {"prompt": f"rev {word}", **({"ground_truth": word[::-1]} if with_truth else {})}
            f.write(json.dumps(record) + "\n")
    return path


def _cfg(tmp_path: Path, models: tuple[Path, Path], *extra: str) -> PPOConfig:
    llama, rm = models
    base = [
        f"model.path={llama}",
        f"data.sources=[{_prompts(tmp_path / 'prompts.jsonl')}]",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"ppo.reward_model={rm}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.lr=1e-3",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
        "rollout.prompts_per_step=4",
        "rollout.max_new_tokens=6",
    ]
    return load_config(PPOConfig, None, [*base, *extra])


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


PPO_METRICS = (
    "score_mean",
    "score_std",
    "rm_score_mean",
    "kl",
    "entropy",
    "clip_fraction",
    "value_clip_fraction",
    "policy_loss",
    "value_loss",
    "explained_variance",
    "completion_length",
    "rollout_s",
    "update_s",
)


def test_ppo_trains_the_policy_and_the_value_model(tmp_path, models):
    llama, rm = models
    cfg = _cfg(tmp_path, models, "update.num_iterations=2", "update.mini_batches=2")
    result = ppo.run(cfg)
    records = [r for r in _records(result.out_dir) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        for key in PPO_METRICS:
            assert math.isfinite(record[key]), key
    assert records[0]["kl"] == 0.0  # the first rollout is sampled by the reference itself
    assert records[1]["kl"] != 0.0
    assert "accuracy" not in records[0]  # no verifiable reward
    # Both networks moved: the saved policy from the starting model, the value model from the reward model.
    start = AutoModelForCausalLM.from_pretrained(llama)
    trained = AutoModelForCausalLM.from_pretrained(result.out_dir)
    assert not torch.equal(start.lm_head.weight, trained.lm_head.weight)
    rm_head = load_file(str(rm / "model.safetensors"))["score.weight"]
    assert not torch.equal(result.value_model.score.weight.detach(), rm_head)
    assert (result.out_dir / "loss.png").is_file()


def test_lora_ppo_trains_adapters_against_the_policy_with_adapters_disabled(tmp_path, models):
    result = ppo.run(_cfg(tmp_path, models, "model.lora.enabled=true", "model.lora.r=4", "train.lr=1e-2"))
    records = [r for r in _records(result.out_dir) if "loss" in r]
    assert records[0]["kl"] == 0.0 and records[1]["kl"] != 0.0
    assert (result.out_dir / "adapter_config.json").is_file()
    trainable = {n for n, p in result.value_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    # The reward model is the value model with its adapters off: the first rollout (the same completions
    # as full finetuning draws: LoRA starts as the identity) gets the separate reward model's scores.
    full = ppo.run(_cfg(tmp_path, models, "train.max_steps=1", f"train.output_dir={tmp_path / 'full'}"))
    first_full = _records(full.out_dir)[0]
    assert records[0]["rm_score_mean"] == pytest.approx(first_full["rm_score_mean"], abs=1e-6)


def test_completions_without_eos_get_the_penalty_as_their_score(tmp_path, models):
    # Two new tokens are too few for a tiny random model to stop: every completion is cut.
    result = ppo.run(_cfg(tmp_path, models, "rollout.max_new_tokens=2", "ppo.missing_eos_penalty=-7.5"))
    record = _records(result.out_dir)[0]
    assert record["truncated"] == 1.0
    assert record["score_mean"] == -7.5 and record["score_std"] == 0.0
    assert record["rm_score_mean"] != -7.5


def test_a_verifiable_reward_adds_to_the_reward_model_score(tmp_path, models, monkeypatch):
    (tmp_path / "my_verifier.py").write_text(
        "def length(completion, ground_truth):\n    return len(completion) / 10\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _prompts(tmp_path / "truth.jsonl", with_truth=True)
    cfg = _cfg(
        tmp_path,
        models,
        f"data.sources=[{data}]",
        "reward.kind=verifier",
        "reward.verifier=my_verifier:length",
        "ppo.verifiable_coef=2.0",
        "train.max_steps=1",
    )
    record = _records(ppo.run(cfg).out_dir)[0]
    assert record["reward_mean"] > 0
    expected = record["rm_score_mean"] + 2.0 * record["reward_mean"]
    assert record["score_mean"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_ppo_raises_the_reward(tmp_path, models, monkeypatch):
    # A reward a tiny random policy almost never earns at first: the share of "a" in the completion.
    (tmp_path / "a_share.py").write_text(
        "def a_share(completion, ground_truth):\n    return completion.count('a') / max(len(completion), 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg(
        tmp_path,
        models,
        f"data.sources=[{_prompts(tmp_path / 'truth.jsonl', with_truth=True)}]",
        "reward.kind=verifier",
        "reward.verifier=a_share:a_share",
        "ppo.verifiable_coef=10",
        "ppo.kl_coef=0.01",
        "rollout.prompts_per_step=8",
        "rollout.max_new_tokens=8",
        "train.batch_size=8",
        "update.num_iterations=2",
        "train.lr=1e-2",
        "train.max_steps=20",
    )
    rewards = [r["reward_mean"] for r in _records(ppo.run(cfg).out_dir) if "reward_mean" in r]
    assert sum(rewards[:5]) / 5 < 0.02
    assert sum(rewards[-3:]) / 3 > 0.15


def test_prompts_need_ground_truth_only_with_a_verifiable_reward(tmp_path, models):
    with pytest.raises(DataError, match=r"prompts.jsonl:1: field .ground_truth.: missing"):
        ppo.run(_cfg(tmp_path, models, "reward.kind=exact_match"))
    assert not (tmp_path / "run").exists()


def test_a_reward_model_is_required(tmp_path, models):
    with pytest.raises(ConfigError, match=r"ppo\.reward_model is not set"):
        ppo.run(_cfg(tmp_path, models, "ppo.reward_model="))


def test_killed_run_resumes_to_identical_weights(tmp_path, models, kill_after_checkpoint, resume_cli):
    common = ["train.max_steps=6", "train.save_every=2", "update.num_iterations=2"]
    straight = ppo.run(_cfg(tmp_path, models, *common, f"train.output_dir={tmp_path / 'a'}"))
    run_dir = tmp_path / "b"
    save_config(_cfg(tmp_path, models, *common, f"train.output_dir={run_dir}"), tmp_path / "b.yaml")
    kill_after_checkpoint("ppo", tmp_path / "b.yaml", run_dir, 2)
    assert not (run_dir / "model.safetensors").exists()
    resume_cli("ppo", tmp_path / "b.yaml")
    a = load_file(str(straight.out_dir / "model.safetensors"))
    b = load_file(str(run_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logged_losses(run_dir) == logged_losses(straight.out_dir)
