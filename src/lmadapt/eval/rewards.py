"""Reward-model evaluation: score held-out preference pairs with a trained scalar head.

A reward model is refused unless its checkpoint holds the score head's weights: transformers gives a
model without them (a plain LM, an SFT output) a randomly initialised head and only warns, and such a
head scores pairs by chance. So the head's weights must be saved in the model directory or, for a LoRA
adapter, in the adapter (`modules_to_save`) or along its chain of base models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import ModelConfig
from lmadapt.data.preference import PreferencePair, TokenizedPair, collate_pairs, tokenize_pair
from lmadapt.data.templates import get_template
from lmadapt.errors import ConfigError, LmadaptError
from lmadapt.eval.progress import Progress
from lmadapt.losses.reward import bradley_terry
from lmadapt.models.load import adapter_base_path, is_adapter_dir, load_model, load_tokenizer

_PEFT_PREFIX = "base_model.model."


def _saved_weight_names(path: Path) -> set[str]:
    """Names of every weight stored in safetensors under `path` and, for an adapter, its base chain."""
    from safetensors import safe_open

    names: set[str] = set()
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            names |= {key.removeprefix(_PEFT_PREFIX) for key in f.keys()}  # noqa: SIM118
    if is_adapter_dir(path):
        names |= _saved_weight_names(adapter_base_path(path))
    return names


def load_trained_reward_model(path: str | Path, pad_token_id: int, device: torch.device) -> Any:
    """A reward model from `lmadapt reward` (full, LoRA adapter, or adapter chain, loaded as every other
    model is), refused unless its score head's weights were saved somewhere along that chain."""
    model, _ = load_model(ModelConfig(path=str(path)), device, head="score")
    head = {name for name in model.state_dict() if not name.startswith(model.base_model_prefix + ".")}
    missing = head - _saved_weight_names(Path(path))
    if missing:
        raise LmadaptError(
            f"{path} is not a trained reward model: {', '.join(sorted(missing))} not saved in it, so the "
            "score head would be random; train one with `lmadapt reward CONFIG`"
        )
    # The head scores the last token that is not padding, so the model must know the pad id.
    model.config.pad_token_id = pad_token_id
    return model.to(device).eval()


@torch.no_grad()
def score_pairs(
    model: Any,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[list[float], list[float]]:
    """(chosen scores, rejected scores) of every pair, `batch_size` pairs per forward pass."""
    chosen: list[float] = []
    rejected: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = collate_pairs(chunk, pad_token_id)
        scores = model(
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
        ).logits.squeeze(-1)
        c, r = scores.float().cpu().chunk(2)
        chosen += c.tolist()
        rejected += r.tolist()
        if progress is not None:
            progress.update(len(chunk))
    return chosen, rejected


@dataclass
class RewardScorer:
    """A trained reward model directory that scores preference pairs: each side tokenised through
    `template` ("tokenizer": the chat template saved with the model at training time) and cut to
    `max_length` tokens, `batch_size` pairs per forward pass. The model loads on first use."""

    path: str | Path
    template: str = "tokenizer"
    max_length: int = 1024
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        self.tokenizer = load_tokenizer(str(self.path))
        self.chat = get_template(self.template, self.tokenizer)

    def tokenize(self, pairs: Sequence[PreferencePair]) -> list[tuple[int, TokenizedPair]]:
        """(index in `pairs`, tokenised pair) of the pairs that keep a reply token within max_length."""
        return [
            (i, tokenized)
            for i, pair in enumerate(pairs)
            if (tokenized := tokenize_pair(pair, self.chat, self.tokenizer, self.max_length)[0]) is not None
        ]

    @functools.cached_property
    def model(self) -> Any:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return load_trained_reward_model(self.path, self.tokenizer.pad_token_id, device)

    def score(self, pairs: Sequence[TokenizedPair], desc: str) -> tuple[list[float], list[float]]:
        """(chosen scores, rejected scores), with a progress bar named `desc`."""
        with Progress(len(pairs), desc) as progress:
            return score_pairs(self.model, pairs, self.tokenizer.pad_token_id, self.batch_size, progress)


def reward_metrics(chosen: Sequence[float], rejected: Sequence[float], dropped: int) -> dict[str, Any]:
    """Pairwise accuracy (share of pairs scored chosen > rejected), mean scores and margin, and the mean
    Bradley-Terry loss; `dropped` pairs (too long to score) are counted beside them."""
    c, r = torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)
    return {
        "pairs": len(chosen),
        "dropped": dropped,
        "accuracy": (c > r).double().mean().item(),
        "mean_chosen": c.mean().item(),
        "mean_rejected": r.mean().item(),
        "mean_margin": (c - r).mean().item(),
        "loss": bradley_terry(c, r).mean().item(),
    }


def prediction_records(
    pairs: Sequence[PreferencePair], chosen: Sequence[float], rejected: Sequence[float]
) -> list[dict[str, Any]]:
    """One predictions.jsonl record per scored pair: where it came from and both scores."""
    return [
        {"source": pair.source, "line": pair.line, "chosen": c, "rejected": r, "correct": c > r}
        for pair, c, r in zip(pairs, chosen, rejected, strict=True)
    ]
