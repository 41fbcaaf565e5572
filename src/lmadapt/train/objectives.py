"""Training objectives: how one micro-batch turns into a summed loss.

An objective returns the loss SUMMED over its units (trained tokens for language modelling) and
says, before any forward pass, how many units a batch holds. The engine divides by the unit count
of the whole effective batch, which makes gradient accumulation exact.
"""

from __future__ import annotations

from typing import Protocol

import torch

from lmadapt.losses.lm import count_trained_tokens, token_nll_sum


class Objective(Protocol):
    """What `fit` needs. An objective may also define `pop_metrics(split) -> dict[str, float]`:
    statistics gathered since the last call (e.g. DPO rewards), which `fit` logs at each log step."""

    def weight(self, batch: dict[str, torch.Tensor]) -> int:
        """Number of units (e.g. trained tokens) the batch's loss is summed over."""
        ...

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss summed over the batch's units (a scalar tensor with grad)."""
        ...


class LanguageModelling:
    """Cross-entropy on labelled tokens, for causal (`shift=True`) and seq2seq models."""

    def __init__(self, kind: str):
        self.shift = kind == "causal"

    def weight(self, batch: dict[str, torch.Tensor]) -> int:
        return count_trained_tokens(batch["labels"], self.shift)

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if not self.shift:
            # Passing decoder inputs (not labels) skips the model's own mean-reduced loss.
            inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        logits = model(**inputs, use_cache=False).logits
        loss, _ = token_nll_sum(logits, batch["labels"], self.shift)
        return loss
