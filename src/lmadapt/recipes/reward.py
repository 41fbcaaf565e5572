"""Reward models: `lmadapt reward CONFIG` trains one, `lmadapt eval rewards` measures one.

A reward model is the LM with a scalar head (AutoModelForSequenceClassification, num_labels=1)
scoring the last non-pad token of prompt + reply; it is trained on preference pairs with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). Pairs are read and tokenised exactly as
for DPO. The output is a plain Hugging Face sequence-classification model (or PEFT adapter).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedModel

from lmadapt.config import ModelConfig, RewardConfig, TrainConfig
from lmadapt.data.pipeline import load_tokenized
from lmadapt.data.preference import collate_pairs, load_preference_pairs, tokenize_pairs
from lmadapt.data.templates import get_template
from lmadapt.errors import LmadaptError
from lmadapt.models.load import apply_lora, load_model, load_tokenizer
from lmadapt.models.save import save_model_and_tokenizer
from lmadapt.models.vocab import fit_model_to_template
from lmadapt.train.batching import require_unpacked
from lmadapt.train.loop import FitResult, evaluate, fit, setup_accelerator
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
    require_unpacked(cfg.data, "reward")
    run = start_run(cfg, cfg.train, has_eval_data=bool(cfg.data.eval_sources))
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.trust_remote_code)
    torch.manual_seed(cfg.train.seed)  # the new head's initialisation
    model = load_reward_model(cfg.model, tokenizer.pad_token_id, run.device)
    template = get_template(cfg.data.template, tokenizer)
    template_tokens = fit_model_to_template(model, tokenizer, template)
    train = load_tokenized(cfg.data.sources, cfg.data, tokenizer, template, "preference").records
    evals = load_tokenized(cfg.data.eval_sources, cfg.data, tokenizer, template, "preference").records
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, "sequence_classification", template_tokens)
    run.create()
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    result = fit(model, BradleyTerryReward(), train, collate, cfg.train, run.out, run.accelerator, evals)
    run.finish(result, lambda out: save_model_and_tokenizer(model, tokenizer, out, template.jinja))
    return RewardResult(run.out, model, result)


def run_eval_rewards(
    model_path: str | Path,
    data: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    template: str = "tokenizer",
    max_length: int = 1024,
    batch_size: int = 8,
) -> dict[str, float]:
    """Pairwise accuracy of a reward model on held-out pairs; writes and returns <out_dir>/metrics.json.

    template "tokenizer" uses the chat template saved with the model at training time. Metrics:
    accuracy (share of pairs scored chosen > rejected), mean scores, mean margin, loss, pair count.
    """
    model_path = Path(model_path)
    accelerator = setup_accelerator(TrainConfig(progress=False))
    tokenizer = load_tokenizer(str(model_path))
    model = load_reward_model(ModelConfig(path=str(model_path)), tokenizer.pad_token_id, accelerator.device)
    chat = get_template(template, tokenizer)
    paths = [data] if isinstance(data, str | Path) else list(data)
    pairs, stats = tokenize_pairs(
        [p for path in paths for p in load_preference_pairs(path)], chat, tokenizer, max_length
    )
    if not pairs:
        raise LmadaptError(f"no evaluation pairs left from {', '.join(map(str, paths))}")
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    rewards = evaluate(model, BradleyTerryReward(), pairs, collate, batch_size, accelerator)
    metrics = {
        "pairs": len(pairs),
        "dropped": stats.dropped,
        "accuracy": rewards["eval_rewards/accuracies"],
        "mean_chosen": rewards["eval_rewards/chosen"],
        "mean_rejected": rewards["eval_rewards/rejected"],
        "mean_margin": rewards["eval_rewards/margins"],
        "loss": rewards["eval_loss"],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log.info("reward accuracy %.4f on %d pairs -> %s", metrics["accuracy"], len(pairs), out / "metrics.json")
    return metrics
