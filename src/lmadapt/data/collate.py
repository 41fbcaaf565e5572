"""Pure functions that turn tokenized examples into batch tensors: right-padded, or packed several
examples to a row (padding-free)."""

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


def collate_packed(rows: Sequence[Sequence[TokenizedExample]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Examples concatenated within each row, rows right-padded to the longest: input_ids, labels and
    position_ids, all (R, T). No attention_mask: the model isolates examples by position_ids, which
    restart at 0 for each example (and for the padding tail, which is its own segment).

    The first label of every example is -100, so no token is predicted from the previous example's
    last token: each example trains exactly the tokens it trains unpacked.
    """
    ids, labels, positions = [], [], []
    for row in rows:
        ids.append([t for example in row for t in example.input_ids])
        labels.append([lab for example in row for lab in _unpredictable_first(example.labels)])
        positions.append([p for example in row for p in range(len(example.input_ids))])
    width = max((len(row) for row in ids), default=0)
    for row in positions:
        row.extend(range(width - len(row)))
    return {
        "input_ids": pad_right(ids, pad_token_id),
        "labels": pad_right(labels, IGNORE_INDEX),
        "position_ids": torch.tensor(positions, dtype=torch.long),
    }


def _unpredictable_first(labels: Sequence[int]) -> list[int]:
    """An example's labels with its first token untrained (nothing before it in its own example)."""
    return [IGNORE_INDEX, *labels[1:]] if labels else []


# Encoder-decoder batches pad the same way: input_ids/attention_mask (B, S) for the encoder, labels
# (B, L) with -100 pads for the decoder (the model builds decoder inputs by shifting labels right).
collate_seq2seq = collate_causal
