"""Pure functions that turn tokenized examples into right-padded batch tensors.

A packing collator (several examples per row, per-example attention isolation) can sit beside these
with the same signature: list of TokenizedExample in, dict of tensors out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmadapt.data.tokenize import IGNORE_INDEX, TokenizedExample


def pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(batch, longest row) int64 tensor, each row followed by `value` up to the longest row."""
    width = max((len(row) for row in rows), default=0)
    batch = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return batch


def collate_causal(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids (B, T) padded with pad_token_id, attention_mask (B, T) 1 on real tokens, labels (B, T)
    padded with -100; T = longest example."""
    inputs = [example.input_ids for example in examples]
    return {
        "input_ids": pad_right(inputs, pad_token_id),
        "attention_mask": pad_right([[1] * len(row) for row in inputs], 0),
        "labels": pad_right([example.labels for example in examples], IGNORE_INDEX),
    }


# Encoder-decoder batches pad the same way: input_ids/attention_mask (B, S) for the encoder, labels
# (B, L) with -100 pads for the decoder (the model builds decoder inputs by shifting labels right).
collate_seq2seq = collate_causal
