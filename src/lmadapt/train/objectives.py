"""Training objectives: how one micro-batch turns into a summed loss.

An objective returns the loss SUMMED over its units and says, before any forward pass, how many
units a batch holds (`weight`) and what a unit is (`unit`: trained tokens for language modelling,
pairs for preference objectives). The engine divides by the unit count of the whole effective
batch, which makes gradient accumulation exact. `trained_tokens` is always a real token count
(the tokens the loss is computed on), so throughput means the same thing in every recipe.
"""

from __future__ import annotations

from typing import Protocol

import torch

from lmadapt.losses.lm import count_trained_tokens, token_nll_sum
from lmadapt.models.packing import packed_attention_inputs

Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    """What `fit` needs from a training objective."""

    unit: str  # what `weight` counts ("tokens", "pairs"); the logged loss is per unit

    def weight(self, batch: Batch) -> int:
        """Number of units the batch's loss is summed over."""
        ...

    def trained_tokens(self, batch: Batch) -> int:
        """Number of tokens the loss is computed on (reply tokens for pairs)."""
        ...

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Loss summed over the batch's units (a scalar tensor with grad)."""
        ...

    def pop_metrics(self, split: str) -> dict[str, float]:
        """Statistics gathered on `split` ("train" or "eval") since the last call; {} when none."""
        ...


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (accelerate's prepare), else the model itself."""
    return getattr(model, "module", model)


class LanguageModelling:
    """Cross-entropy on labelled tokens, for causal (`shift=True`) and seq2seq models.

    Every batch entry but `labels` goes to the model (position ids of packed rows, a HINT model's
    instruction tensors), so one objective serves plain models and HINT alike.
    """

    unit = "tokens"

    def __init__(self, kind: str):
        self.shift = kind == "causal"

    def weight(self, batch: Batch) -> int:
        return count_trained_tokens(batch["labels"], self.shift)

    def trained_tokens(self, batch: Batch) -> int:
        return self.weight(batch)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "position_ids" in inputs and "attention_mask" not in inputs:
            # Packed rows (collate_packed): attention isolated per example on every backend.
            core = unwrap_ddp(model)
            dtype = next(core.parameters()).dtype
            inputs.update(packed_attention_inputs(core.config, inputs["position_ids"], dtype))
        if not self.shift:
            # Passing decoder inputs (not labels) skips the model's own mean-reduced loss.
            core = unwrap_ddp(model)
            inputs["decoder_input_ids"] = core.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        logits = model(**inputs, use_cache=False).logits
        loss, _ = token_nll_sum(logits, batch["labels"], self.shift)
        return loss

    def pop_metrics(self, split: str) -> dict[str, float]:
        return {}
