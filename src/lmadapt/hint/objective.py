"""The HINT training objective: cross-entropy of the underlying model with generated modules active."""

from __future__ import annotations

import torch

from lmadapt.losses.lm import count_trained_tokens, token_nll_sum


class HintObjective:
    """Summed token cross-entropy of a `HintModel` batch (from `collate_hint`), for the training engine."""

    def __init__(self, kind: str):
        self.shift = kind == "causal"

    def weight(self, batch: dict[str, torch.Tensor]) -> int:
        return count_trained_tokens(batch["labels"], self.shift)

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**batch)
        loss, _ = token_nll_sum(logits, batch["labels"], self.shift)
        return loss
