"""Supervised instruction tuning: `lmadapt sft CONFIG [key=value ...]`.

Reads a mixture of chat data, renders it with a chat template, trains on the assistant replies
only (full finetuning or LoRA), and saves a plain Hugging Face model (or PEFT adapter) plus the
tokenizer carrying the chat template.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from lmadapt.config import DataConfig, SFTConfig, SourceConfig
from lmadapt.data.cache import cache_key, load_or_build
from lmadapt.data.collate import collate_causal, collate_seq2seq
from lmadapt.data.mixture import MixtureSource, build_mixture
from lmadapt.data.templates import ChatTemplate, get_template
from lmadapt.data.tokenize import TokenizedExample, tokenize_all
from lmadapt.models.load import ModelKind, apply_lora, load_model, load_tokenizer
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.train.loop import FitResult, fit
from lmadapt.train.objectives import LanguageModelling
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


def tokenized_sources(
    sources: list[SourceConfig],
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    kind: ModelKind,
) -> list[TokenizedExample]:
    """Mix, render and tokenise `sources`, through the on-disk cache."""
    if not sources:
        return []
    mixture = [
        MixtureSource(path=s.path, format=s.format, count=s.count, fraction=s.fraction) for s in sources
    ]
    key = cache_key(
        files=[s.path for s in sources],
        tokenizer=tokenizer,
        template=template.jinja,
        max_lengths=(data.max_length, data.max_target_length if kind == "seq2seq" else None),
        mixture=[asdict(m) for m in mixture],
        seed=data.seed,
        kind=kind,
        truncation=data.truncation,
    )

    def build() -> list[TokenizedExample]:
        conversations = build_mixture(mixture, seed=data.seed)
        examples, _ = tokenize_all(
            conversations, template, tokenizer, data.max_length, data.truncation, kind, data.max_target_length
        )
        return examples

    examples, hit = load_or_build(Path(data.cache_dir), key, build)
    log.info("%d tokenized examples (%s cache)", len(examples), "from" if hit else "written to")
    return examples


def collator(kind: ModelKind, tokenizer: PreTrainedTokenizerBase):
    collate = collate_seq2seq if kind == "seq2seq" else collate_causal
    return partial(collate, pad_token_id=tokenizer.pad_token_id)


@dataclass
class SFTResult:
    out_dir: Path
    model: torch.nn.Module  # the trained model (a PEFT model when LoRA is on)
    fit: FitResult


def run(cfg: SFTConfig) -> SFTResult:
    run = start_run(cfg, cfg.train, has_eval_data=bool(cfg.data.eval_sources))
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.trust_remote_code)
    model, kind = load_model(cfg.model, run.device)
    template = get_template(cfg.data.template, tokenizer)
    with run.accelerator.main_process_first():  # the token cache is built once, by rank 0
        train = tokenized_sources(cfg.data.sources, cfg.data, tokenizer, template, kind)
        evals = tokenized_sources(cfg.data.eval_sources, cfg.data, tokenizer, template, kind)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, kind)
    run.create()
    result = fit(
        model,
        LanguageModelling(kind),
        train,
        collator(kind, tokenizer),
        cfg.train,
        run.out,
        run.accelerator,
        evals,
    )
    run.finish(result, lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja))
    return SFTResult(run.out, model, result)
