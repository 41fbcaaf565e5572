"""PPO with a reward model (Tulu 2.5): `lmadapt ppo CONFIG [key=value ...]`.

Samples completions of the prompts with the policy, scores them with a reward model trained by
`lmadapt reward` (plus an optional verifiable reward), and updates the policy and a value model
initialised from the reward model with PPO (rl/ppo.py) in the shared RL loop (rl/loop.py: accumulation,
checkpoints, exact resume). Saves the policy as a plain Hugging Face model or PEFT adapter.

Memory: policy, reference, reward model and value model. With LoRA the reference is the policy with its
adapters disabled and the value model trains LoRA adapters too (a copy of its score head in full); when
it starts from the reward model, the reward model is the value model with its adapters disabled: two
base models in memory instead of four.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lmadapt.config import PPOConfig
from lmadapt.errors import ConfigError
from lmadapt.eval.rewards import load_trained_reward_model
from lmadapt.models.load import apply_lora, disable_dropout, load_tokenizer, load_with_template
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.rl.grpo import adapters_off_scorer, frozen_scorer
from lmadapt.rl.loop import RLSettings, check_one_process, rl_fit, validate_settings
from lmadapt.rl.ppo import PolicyAndValue, PPOUpdate, frozen_reward_model, value_adapters_off
from lmadapt.rl.prompts import load_prompts
from lmadapt.rl.rewards import build_reward
from lmadapt.rl.rollout import TransformersRollout
from lmadapt.train.loop import FitResult
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


@dataclass
class PPOResult:
    out_dir: Path
    model: torch.nn.Module  # the trained policy (a PEFT model when LoRA is on)
    value_model: torch.nn.Module
    fit: FitResult


def check_ppo_settings(cfg: PPOConfig) -> None:
    ppo = cfg.ppo
    if not ppo.reward_model:
        raise ConfigError("ppo.reward_model is not set: give the directory of an `lmadapt reward` run")
    for name in ("kl_coef", "clip", "value_clip", "vf_coef"):
        if getattr(ppo, name) < 0:
            raise ConfigError(f"ppo.{name} must not be negative, got {getattr(ppo, name)}")
    if not (0 <= ppo.gamma <= 1 and 0 <= ppo.lam <= 1):
        raise ConfigError(f"ppo.gamma and ppo.lam must lie in [0, 1], got {ppo.gamma} and {ppo.lam}")
    if cfg.reward is None and ppo.verifiable_coef != 1.0:
        raise ConfigError("ppo.verifiable_coef is set but there is no `reward:` section (verifiable reward)")


def run(cfg: PPOConfig) -> PPOResult:
    settings = RLSettings(cfg.train, cfg.rollout, cfg.update)
    validate_settings(settings)
    check_ppo_settings(cfg)
    reward = build_reward(cfg.reward) if cfg.reward is not None else None
    run = start_run(cfg, cfg.train, has_eval_data=False)
    check_one_process(run.accelerator)
    loaded = load_with_template(cfg.model, cfg.data.template, run.device, causal_for="PPO")
    policy, kind, tokenizer, template = loaded.model, loaded.kind, loaded.tokenizer, loaded.template
    if load_tokenizer(cfg.ppo.reward_model, what="ppo.reward_model").get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"ppo.reward_model {cfg.ppo.reward_model}: its tokenizer differs from the policy's "
            f"(with the {template.name} template); train the reward model from the same base and template"
        )
    prompts = load_prompts(cfg.data, template, tokenizer, require_ground_truth=reward is not None)
    value_path = cfg.ppo.value_model or cfg.ppo.reward_model
    value_model = load_trained_reward_model(value_path, tokenizer.pad_token_id, run.device)
    temperature = cfg.rollout.temperature
    if cfg.model.lora.enabled:
        policy = apply_lora(policy, cfg.model.lora, kind, loaded.template_tokens, seed=cfg.train.seed)
        value_model = apply_lora(value_model, cfg.model.lora, "sequence_classification", seed=cfg.train.seed)
        reference = adapters_off_scorer(temperature)
        log.info("reference: the policy with LoRA adapters disabled")
    else:
        reference = frozen_scorer(copy.deepcopy(policy).to(run.device), temperature)
    if cfg.model.lora.enabled and Path(value_path).resolve() == Path(cfg.ppo.reward_model).resolve():
        reward_scorer = value_adapters_off()
        log.info("reward model: the value model with LoRA adapters disabled")
    else:
        reward_scorer = frozen_reward_model(
            load_trained_reward_model(cfg.ppo.reward_model, tokenizer.pad_token_id, run.device)
        )
    policy = policy.to(run.device)
    disable_dropout(policy)
    disable_dropout(value_model)
    update = PPOUpdate(
        cfg.ppo, temperature, cfg.train.batch_size, reward_scorer, reference, verifiable=reward is not None
    )
    run.create()
    model = PolicyAndValue(policy, value_model)
    backend = TransformersRollout(tokenizer)
    result = rl_fit(
        model, update, prompts, reward, backend, settings, run.out, run.accelerator, policy=policy
    )
    run.finish(
        result,
        lambda out: save_model_and_tokenizer(policy, tokenizer, out, template.jinja, result.full_state_dict),
    )
    return PPOResult(run.out, policy, value_model, result)
