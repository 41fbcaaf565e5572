"""Online RL with verifiable rewards (Tulu 3 RLVR, GRPO): `lmadapt grpo CONFIG [key=value ...]`.

Reads prompts with ground truth, samples G completions per prompt with the policy, rewards each with a
verifiable reward (rl/rewards.py), and updates the policy with GRPO (rl/grpo.py) in the shared RL loop
(rl/loop.py: accumulation, checkpoints, exact resume). Saves a plain Hugging Face model or PEFT adapter.
`run` takes an in-memory config, so other recipes (the demo) can call it directly.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lmadapt.config import GRPOConfig
from lmadapt.errors import ConfigError
from lmadapt.models.load import apply_lora, disable_dropout, load_with_template
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.rl.grpo import GRPOUpdate, ReferenceScorer, adapters_off_scorer, frozen_scorer
from lmadapt.rl.loop import RLSettings, check_one_process, rl_fit, validate_settings
from lmadapt.rl.prompts import load_prompts
from lmadapt.rl.rewards import build_reward
from lmadapt.rl.rollout import TransformersRollout
from lmadapt.train.loop import FitResult
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


@dataclass
class GRPOResult:
    out_dir: Path
    model: torch.nn.Module  # the trained policy (a PEFT model when LoRA is on)
    fit: FitResult


def run(cfg: GRPOConfig) -> GRPOResult:
    settings = RLSettings(cfg.train, cfg.rollout, cfg.update)
    validate_settings(settings)
    if cfg.rollout.num_generations < 2:
        raise ConfigError("rollout.num_generations must be at least 2: GRPO compares completions in a group")
    reward = build_reward(cfg.reward)
    run = start_run(cfg, cfg.train, has_eval_data=False)
    check_one_process(run.accelerator)
    loaded = load_with_template(cfg.model, cfg.data.template, run.device, causal_for="GRPO")
    model, kind, tokenizer, template = loaded.model, loaded.kind, loaded.tokenizer, loaded.template
    prompts = load_prompts(cfg.data, template, tokenizer)
    reference: ReferenceScorer | None = None
    temperature = cfg.rollout.temperature
    if cfg.grpo.beta > 0 and not cfg.model.lora.enabled:
        reference = frozen_scorer(copy.deepcopy(model).to(run.device), temperature)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, kind, loaded.template_tokens, seed=cfg.train.seed)
        if cfg.grpo.beta > 0:
            reference = adapters_off_scorer(temperature)
            log.info("reference: the base model with LoRA adapters disabled")
    disable_dropout(model)
    update = GRPOUpdate(cfg.grpo, temperature, cfg.rollout.max_new_tokens, cfg.train.batch_size, reference)
    run.create()
    result = rl_fit(
        model, update, prompts, reward, TransformersRollout(tokenizer), settings, run.out, run.accelerator
    )
    run.finish(
        result,
        lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja, result.full_state_dict),
    )
    return GRPOResult(run.out, model, result)
