"""Reward-model evaluation: score held-out preference pairs with a trained scalar head.

A reward model is refused unless its checkpoint holds the score head's weights: transformers gives a
model without them (a plain LM, an SFT output) a randomly initialised head and only warns, and such a
head scores pairs by chance. A full model's head must not be among the keys transformers reports missing
on load; a LoRA adapter must carry (as `modules_to_save`) every weight its base model lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmadapt.data.preference import PreferencePair, TokenizedPair, collate_pairs
from lmadapt.errors import LmadaptError
from lmadapt.eval.progress import Progress
from lmadapt.losses.reward import bradley_terry
from lmadapt.models.load import local_dir

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


def _load_classifier(path: str | Path) -> tuple[Any, set[str]]:
    """(sequence-classification model with one label, the weight names its checkpoint lacked)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            local_dir(str(path), "model path"),
            num_labels=1,
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
        )
    except (OSError, ValueError) as e:
        raise LmadaptError(f"cannot load a sequence-classification model from '{path}': {e}") from None
    return model, set(info["missing_keys"])


def _adapter_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path / ADAPTER_WEIGHTS), "pt") as f:
        return {key.removeprefix(_PEFT_PREFIX) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def load_trained_reward_model(path: str | Path, pad_token_id: int, device: torch.device) -> Any:
    """A reward model from `lmadapt reward` (full or LoRA adapter), refused without a trained score head."""
    path = Path(path)
    adapter = (path / "adapter_config.json").is_file()
    if adapter:
        from peft import PeftConfig

        model, missing = _load_classifier(PeftConfig.from_pretrained(str(path)).base_model_name_or_path)
        if (path / ADAPTER_WEIGHTS).is_file():
            missing -= _adapter_keys(path)
    else:
        model, missing = _load_classifier(path)
    if missing:
        where = "the adapter or its base model" if adapter else "the checkpoint"
        raise LmadaptError(
            f"{path} is not a trained reward model: {', '.join(sorted(missing))} not in {where}, so the "
            "score head would be random; train one with `lmadapt reward CONFIG`"
        )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path))
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
