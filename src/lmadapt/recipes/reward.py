"""Reward models: `lmadapt reward CONFIG` trains one (`lmadapt eval rewards` measures it: recipes.evaluate).

A reward model is the LM with a scalar head (AutoModelForSequenceClassification, num_labels=1)
scoring the last non-pad token of prompt + reply; it is trained on preference pairs with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). Pairs are read and tokenised exactly as
for DPO. The output is a plain Hugging Face sequence-classification model (or PEFT adapter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedModel

from lmadapt.config import ModelConfig, RewardConfig
from lmadapt.data.pipeline import load_tokenized
from lmadapt.data.preference import collate_pairs
from lmadapt.data.templates import get_template
from lmadapt.models.load import apply_lora, load_model, model_tokenizer
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.models.vocab import fit_model_to_template
from lmadapt.train.batching import pair_plan
from lmadapt.train.loop import FitResult, fit
from lmadapt.train.preference import BradleyTerryReward
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


def load_reward_model(cfg: ModelConfig, pad_token_id: int, device: torch.device) -> PreTrainedModel:
    """The LM at cfg.path with a freshly initialised scalar head (or a trained reward model's own)."""
    model, _ = load_model(cfg, device, head="score")
    # The head scores the last token that is not padding, so the model must know the pad id.
    model.config.pad_token_id = pad_token_id
    return model.to(device)


@dataclass
class RewardResult:
    out_dir: Path
    model: torch.nn.Module
    fit: FitResult


def run(cfg: RewardConfig) -> RewardResult:
    run = start_run(cfg, cfg.train, has_eval_data=bool(cfg.data.eval_sources))
    tokenizer = model_tokenizer(cfg.model)
    torch.manual_seed(cfg.train.seed)  # the new head's initialisation
    model = load_reward_model(cfg.model, tokenizer.pad_token_id, run.device)
    template = get_template(cfg.data.template, tokenizer)
    template_tokens = fit_model_to_template(model, tokenizer, template)
    train = load_tokenized(cfg.data.sources, cfg.data, tokenizer, template, "preference").records
    evals = load_tokenized(cfg.data.eval_sources, cfg.data, tokenizer, template, "preference").records
    if cfg.model.lora.enabled:
        lora = cfg.model.lora
        model = apply_lora(model, lora, "sequence_classification", template_tokens, seed=cfg.train.seed)
    plan = pair_plan(train, cfg.data, cfg.train.batch_size, cfg.train.seed, "reward")
    run.create()
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    result = fit(
        model, BradleyTerryReward(), train, collate, cfg.train, run.out, run.accelerator, evals, plan=plan
    )
    run.finish(
        result,
        lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja, result.full_state_dict),
    )
    return RewardResult(run.out, model, result)
