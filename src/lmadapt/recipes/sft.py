"""Supervised instruction tuning: `lmadapt sft CONFIG [key=value ...]`.

Reads a mixture of chat data, renders it with a chat template, trains on the assistant replies
only (full finetuning or LoRA), and saves a plain Hugging Face model (or PEFT adapter) plus the
tokenizer carrying the chat template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lmadapt.config import SFTConfig
from lmadapt.data.pipeline import load_tokenized
from lmadapt.models.load import apply_lora, load_with_template
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.recipes.eval_suite import training_suite
from lmadapt.train.batching import lm_batches
from lmadapt.train.loop import FitResult, fit
from lmadapt.train.objectives import LanguageModelling
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


@dataclass
class SFTResult:
    out_dir: Path
    model: torch.nn.Module  # the trained model (a PEFT model when LoRA is on)
    fit: FitResult


def run(cfg: SFTConfig) -> SFTResult:
    run = start_run(cfg, cfg.train, has_eval_data=bool(cfg.data.eval_sources), generates=True)
    loaded = load_with_template(cfg.model, cfg.data.template, run.device)
    model, kind, tokenizer, template = loaded.model, loaded.kind, loaded.tokenizer, loaded.template
    train = load_tokenized(cfg.data.sources, cfg.data, tokenizer, template, kind).records
    evals = load_tokenized(cfg.data.eval_sources, cfg.data, tokenizer, template, kind).records
    seed, pad_id = cfg.train.seed, tokenizer.pad_token_id
    batches = lm_batches(train, evals, cfg.data, kind, cfg.train.batch_size, seed, pad_id)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, kind, loaded.template_tokens, seed=cfg.train.seed)
    suite = training_suite(cfg.train, tokenizer, kind, template.jinja, run.out, run.accelerator)
    run.create()
    result = fit(
        model,
        LanguageModelling(kind),
        batches.train,
        batches.collate,
        cfg.train,
        run.out,
        run.accelerator,
        batches.evals,
        plan=batches.plan,
        suite=suite,
    )
    run.finish(
        result,
        lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja, result.full_state_dict),
    )
    return SFTResult(run.out, model, result)
