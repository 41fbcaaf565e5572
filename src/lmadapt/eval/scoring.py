"""The reply scorer: summed log-probability of each reply's tokens after its prompt, for a batch of sequences.

One function serves training and evaluation alike: DPO and its reference pass score chosen and rejected
replies with it (`train.preference`), multiple choice scores each choice with it (`eval.multiple_choice`).
`score_next_tokens` reads the same batches for the whole next-token distribution after each prompt, so
choices that are single tokens (MMLU's letters) cost one pass per prompt (`eval.mmlu`).

A batch is right-padded. Decoder-only: {"input_ids", "attention_mask", "labels"}, the labels the reply's
tokens at their positions and IGNORE_INDEX elsewhere. Encoder-decoder: the prompt in "input_ids" /
"attention_mask" for the encoder, and "decoder_input_ids" (decoder start token, then the reply) with
"labels" aligned to them the same way (IGNORE_INDEX under the start token). Either way position t predicts
label t+1, so one `losses.dpo.sequence_log_probs` reads both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmadapt.data.collate import pad_right
from lmadapt.errors import LmadaptError
from lmadapt.eval.progress import Progress
from lmadapt.losses.dpo import sequence_log_probs
from lmadapt.losses.lm import IGNORE_INDEX

Batch = dict[str, torch.Tensor]
# Padding is masked in the encoder and comes after every scored token elsewhere, so any id will do; 0 is
# in every vocabulary.
_PAD = 0


def _core(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a DDP wrapper (accelerate's prepare) and a PEFT wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.lru_cache(maxsize=8)
def _accepts_logits_to_keep(model_cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_cls.forward).parameters


def logits_to_keep(model: torch.nn.Module, keep: int) -> dict[str, int]:
    """{"logits_to_keep": keep} where the model (inside any DDP/PEFT wrapper) takes it, else {}."""
    return {"logits_to_keep": keep} if _accepts_logits_to_keep(type(_core(model))) else {}


def _aligned_logits(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, T', V], labels [N, T']) of a batch, position t of the logits predicting label t+1.

    A decoder-only model projects only the positions from the batch's earliest reply token on to the
    vocabulary (`logits_to_keep`, where the model takes it), so long prompts cost no [T, V] logits.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]
    if "decoder_input_ids" in batch:
        logits = model(
            input_ids=input_ids,
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
            use_cache=False,
        ).logits
        return logits, labels
    trained_columns = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    first = int(trained_columns[0]) if len(trained_columns) else 1
    keep = min(input_ids.size(1), input_ids.size(1) - first + 1)
    logits = model(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"],
        use_cache=False,
        **logits_to_keep(model, keep),
    ).logits
    return logits, labels[:, -logits.size(1) :]


def reply_log_probs(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed reply log-probs [N] float32, reply token counts [N] int64) of a batch (module docstring)."""
    return sequence_log_probs(*_aligned_logits(model, batch))


def next_token_log_probs(model: torch.nn.Module, batch: Batch, token_ids: Sequence[int]) -> torch.Tensor:
    """[N, C] float32: the log-probability of each of `token_ids` as the first reply token of each row of a
    batch (its reply's own first token is only a placeholder), under the model's full next-token
    distribution."""
    logits, labels = _aligned_logits(model, batch)
    first = (labels != IGNORE_INDEX).int().argmax(dim=1)  # each row's first reply column
    rows = logits[torch.arange(logits.size(0), device=logits.device), first.to(logits.device) - 1]
    return rows.float().log_softmax(dim=-1)[:, list(token_ids)]


def reply_batch(rows: Sequence[tuple[list[int], list[int]]], decoder_start_id: int | None) -> Batch:
    """The batch of (prompt ids, reply ids) rows: decoder-only when `decoder_start_id` is None, else
    encoder-decoder with that decoder start token."""
    if decoder_start_id is None:
        sequences = [prompt + reply for prompt, reply in rows]
        return {
            "input_ids": pad_right(sequences, _PAD),
            "attention_mask": pad_right([[1] * len(s) for s in sequences], 0),
            "labels": pad_right([[IGNORE_INDEX] * len(p) + r for p, r in rows], IGNORE_INDEX),
        }
    return {
        "input_ids": pad_right([prompt for prompt, _ in rows], _PAD),
        "attention_mask": pad_right([[1] * len(prompt) for prompt, _ in rows], 0),
        "decoder_input_ids": pad_right([[decoder_start_id, *reply] for _, reply in rows], _PAD),
        "labels": pad_right([[IGNORE_INDEX, *reply] for _, reply in rows], IGNORE_INDEX),
    }


def score_replies(
    model: Any,
    rows: Sequence[tuple[list[int], list[int]]],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[float]:
    """The summed log-probability of each (prompt ids, reply ids) row's reply, in the order of `rows`.

    Rows are sorted by length and scored `batch_size` at a time in eval mode without gradients (the
    model's mode is restored); `progress` advances by one per row.
    """
    return _map_batches(model, rows, batch_size, progress, lambda batch: reply_log_probs(model, batch)[0])


def score_next_tokens(
    model: Any,
    prompts: Sequence[list[int]],
    token_ids: Sequence[int],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[list[float]]:
    """For each prompt, the log-probability of each of `token_ids` as its next token: what `score_replies`
    gives each single-token reply, with one forward pass per prompt instead of one per token."""
    if not token_ids:
        raise LmadaptError("score_next_tokens needs at least one candidate token")
    rows = [(prompt, [token_ids[0]]) for prompt in prompts]
    return _map_batches(
        model, rows, batch_size, progress, lambda batch: next_token_log_probs(model, batch, token_ids)
    )


def _map_batches(
    model: Any,
    rows: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    progress: Progress | None,
    score: Callable[[Batch], torch.Tensor],
) -> list[Any]:
    """`score` of every (prompt ids, reply ids) row (a tensor with one entry per row of its batch), as
    lists in the order of `rows`: longest rows first, `batch_size` at a time, eval mode, no gradients."""
    if batch_size < 1:
        raise LmadaptError(f"batch_size must be at least 1, got {batch_size}")
    start_id = None
    if model.config.is_encoder_decoder:
        start_id = model.config.decoder_start_token_id
        if start_id is None:
            raise LmadaptError("the encoder-decoder model's config has no decoder_start_token_id")
    for prompt, reply in rows:
        if not reply or (not prompt and start_id is None):
            raise LmadaptError("every row needs reply tokens and (decoder-only) a prompt token")
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    scores: list[Any] = [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(order), batch_size):
                index = order[begin : begin + batch_size]
                batch = reply_batch([rows[i] for i in index], start_id)
                values = score({k: v.to(model.device) for k, v in batch.items()})
                for i, value in zip(index, values.tolist(), strict=True):
                    scores[i] = value
                if progress is not None:
                    progress.update(len(index))
    finally:
        model.train(was_training)
    return scores
