"""Preference tuning of the DPO family: `lmadapt dpo CONFIG [key=value ...]`.

Reads preference pairs, tokenises them with the SFT chat template (only reply tokens count),
attaches reference log-probs (by default from a one-time pass cached on disk, before LoRA is
applied, so no reference model stays in memory), trains with the shared engine (accumulation,
checkpoints, exact resume, LoRA) and saves a plain Hugging Face model or PEFT adapter.
`run` takes an in-memory config, so other recipes (the demo) can call it directly.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator

from lmadapt.config import DPOConfig, PreferenceLossConfig
from lmadapt.data.pipeline import TokenizedData, load_tokenized
from lmadapt.data.preference import TokenizedPair, collate_pairs, with_reference
from lmadapt.errors import ConfigError
from lmadapt.models.load import (
    apply_lora,
    disable_dropout,
    load_model,
    load_with_template,
    resolve_dtype,
)
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.recipes.eval_suite import training_suite
from lmadapt.train.batching import pair_plan
from lmadapt.train.loop import FitResult, fit
from lmadapt.train.preference import (
    DirectPreference,
    ReferenceFn,
    adapters_off_reference,
    compute_reference_logps,
    frozen_reference,
    load_or_compute_reference,
    reference_cache_key,
)
from lmadapt.train.run import start_run

log = logging.getLogger("lmadapt")


def attach_cached_reference(
    cfg: DPOConfig,
    policy: torch.nn.Module,
    splits: list[TokenizedData],
    pad_token_id: int,
    accelerator: Accelerator,
) -> list[list[TokenizedPair]]:
    """Each split's pairs with reference log-probs from the on-disk cache, computing missing ones.

    The reference is `policy` itself (still untrained, before LoRA) unless dpo.reference_model
    names another model, which is loaded only on a cache miss and freed afterwards.
    """
    ref_path = cfg.dpo.reference_model or cfg.model.path
    ref_cfg = dataclasses.replace(cfg.model, path=ref_path, kind="causal")
    loaded: list[torch.nn.Module] = []

    def reference_model() -> torch.nn.Module:
        if ref_path == cfg.model.path:
            return policy
        if not loaded:
            loaded.append(load_model(ref_cfg, accelerator.device)[0])
        return loaded[0]

    precision = f"{resolve_dtype(cfg.model.dtype, accelerator.device)}/{accelerator.mixed_precision}"
    batch_size = cfg.dpo.reference_batch_size or cfg.train.batch_size
    attached = []
    for pairs, data_key in splits:
        if not pairs:
            attached.append(pairs)
            continue

        def compute(pairs: list[TokenizedPair] = pairs) -> torch.Tensor:
            with accelerator.autocast():
                return compute_reference_logps(
                    reference_model(), pairs, pad_token_id, batch_size, accelerator.device
                )

        key = reference_cache_key(ref_path, precision, data_key)
        logps, _ = load_or_compute_reference(cfg.data.cache_dir, key, len(pairs), compute)
        attached.append(with_reference(pairs, logps))
    loaded.clear()
    return attached


def online_reference(cfg: DPOConfig, policy: torch.nn.Module, device: torch.device) -> ReferenceFn:
    """The per-step reference: the LoRA policy with adapters disabled, else a frozen model."""
    separate = bool(cfg.dpo.reference_model) and cfg.dpo.reference_model != cfg.model.path
    if cfg.model.lora.enabled and not separate:
        return adapters_off_reference
    if separate:
        reference = load_model(dataclasses.replace(cfg.model, path=cfg.dpo.reference_model), device)[0]
    else:  # full finetuning: the untrained policy, kept frozen beside it
        reference = copy.deepcopy(policy)
    return frozen_reference(reference)


@dataclass
class DPOResult:
    out_dir: Path
    model: torch.nn.Module  # the trained policy (a PEFT model when LoRA is on)
    fit: FitResult


def run(cfg: DPOConfig) -> DPOResult:
    validate_preference_loss(cfg.dpo)
    run = start_run(cfg, cfg.train, has_eval_data=bool(cfg.data.eval_sources), generates=True)
    accelerator = run.accelerator
    loaded = load_with_template(cfg.model, cfg.data.template, run.device, causal_for="DPO")
    model, kind, tokenizer, template = loaded.model, loaded.kind, loaded.tokenizer, loaded.template
    train = load_tokenized(cfg.data.sources, cfg.data, tokenizer, template, "preference")
    evals = load_tokenized(cfg.data.eval_sources, cfg.data, tokenizer, template, "preference")
    reference: ReferenceFn | None = None
    if cfg.dpo.loss == "simpo":
        splits = [train[0], evals[0]]
    elif cfg.dpo.reference == "cached":
        splits = attach_cached_reference(cfg, model, [train, evals], tokenizer.pad_token_id, accelerator)
    else:
        splits = [train[0], evals[0]]
        reference = online_reference(cfg, model, run.device)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, kind, loaded.template_tokens, seed=cfg.train.seed)
    disable_dropout(model)
    if reference is adapters_off_reference:
        log.info("reference: the base model with LoRA adapters disabled, computed each step")
    plan = pair_plan(splits[0], cfg.data, cfg.train.batch_size, cfg.train.seed, "dpo")
    suite = training_suite(cfg.train, tokenizer, kind, template.jinja, run.out, run.accelerator)
    run.create()
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    result = fit(
        model,
        DirectPreference(cfg.dpo, reference),
        splits[0],
        collate,
        cfg.train,
        run.out,
        accelerator,
        splits[1],
        plan=plan,
        suite=suite,
    )
    run.finish(
        result,
        lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja, result.full_state_dict),
    )
    return DPOResult(run.out, model, result)


def validate_preference_loss(cfg: PreferenceLossConfig) -> None:
    """Refuse settings the chosen loss would ignore."""
    defaults = PreferenceLossConfig()
    ignored = []
    if cfg.loss == "ipo" and cfg.label_smoothing != defaults.label_smoothing:
        ignored.append("dpo.label_smoothing (IPO has no label smoothing)")
    if cfg.loss != "simpo" and cfg.gamma != defaults.gamma:
        ignored.append("dpo.gamma (SimPO's margin)")
    if cfg.loss == "simpo" and (cfg.reference_model or cfg.reference != defaults.reference):
        ignored.append("dpo.reference / dpo.reference_model (SimPO uses no reference model)")
    if cfg.reference == "online" and cfg.reference_batch_size:
        ignored.append("dpo.reference_batch_size (only the cached reference pass is batched)")
    if ignored:
        raise ConfigError(
            f"dpo.loss={cfg.loss} would ignore {'; '.join(ignored)}: remove it or change the loss"
        )
