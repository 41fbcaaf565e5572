"""Language-modelling loss as a sum over trained tokens (normalisation is the caller's job)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the labelled tokens.

    logits: [B, T, V]; labels: [B, T] with IGNORE_INDEX on untrained positions.
    shift=True for causal LMs (position t predicts label t+1); False for seq2seq decoders, whose
    logits are already aligned with their labels.
    Returns (loss summed over trained tokens, number of trained tokens). Returning the sum lets
    gradient accumulation divide by the trained-token count of the whole effective batch, so
    one batch of 8 and four accumulated batches of 2 give the same update.
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    labels = labels.to(logits.device)
    n_tokens = int((labels != IGNORE_INDEX).sum())
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, n_tokens


def count_trained_tokens(labels: torch.Tensor, shift: bool) -> int:
    """Number of tokens `token_nll_sum` will average over. labels: [B, T]."""
    if shift:
        labels = labels[:, 1:]
    return int((labels != IGNORE_INDEX).sum())
