"""Rollouts: G sampled completions per prompt, with the exact sampled ids and their log-probabilities.

`RolloutBackend` is what the RL loop asks for samples; `TransformersRollout` is the built-in one (plain
`model.generate`: KV cache, left-padded batches, temperature and nucleus sampling, stop at EOS or the
chat template's end-of-turn token). A faster engine (vLLM on a GPU) slots in by implementing the same
`generate`. Sampling is seeded by the caller (the loop derives the seed from the RL step), inside a
forked RNG scope, so a resumed run regenerates exactly the rollouts the uninterrupted one drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from lmadapt.config import RolloutConfig
from lmadapt.errors import LmadaptError
from lmadapt.eval.generate import generation_config
from lmadapt.train.objectives import unwrap_ddp


@dataclass
class Rollouts:
    """N = prompts x G sampled sequences, prompt-major (rows g*... of one prompt are adjacent).

    prompt_ids / prompt_mask: [N, P] left-padded; completion_ids / completion_mask: [N, C] right-padded,
    the mask covering every sampled token up to and including the first EOS. sampling_logps: [N, C]
    float32, the log-probability each token had under the sampler (after temperature and top-p), 0 under
    the mask's zeros. ended: [N] bool, whether the completion stopped at EOS (else it was cut at
    max_new_tokens). texts: the completions decoded without special tokens.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    sampling_logps: torch.Tensor
    ended: torch.Tensor
    texts: list[str]
    group_size: int

    def __len__(self) -> int:
        return self.completion_ids.size(0)


class RolloutBackend(Protocol):
    def generate(
        self, model: torch.nn.Module, prompt_ids: Sequence[list[int]], cfg: RolloutConfig, seed: int
    ) -> Rollouts:
        """cfg.num_generations sampled completions for each prompt, drawn with `seed`."""
        ...


class TransformersRollout:
    """Sampling with transformers' `generate`. A completion ends at the tokenizer's or the model's EOS
    (models/vocab.py adds the chat template's end-of-turn marker to the model's)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise LmadaptError("rollouts: the tokenizer has neither a pad token nor an EOS token to pad with")

    def generate(
        self, model: torch.nn.Module, prompt_ids: Sequence[list[int]], cfg: RolloutConfig, seed: int
    ) -> Rollouts:
        core = unwrap_ddp(model)
        # Plain sampling from the scores `SamplerLogProbs` returns: it applies temperature and top-p itself.
        config = generation_config(core, self.tokenizer, self.pad_id, cfg.max_new_tokens, True, 1.0, 1.0)
        eos_ids = list(config.eos_token_id or [])
        if not eos_ids:
            raise LmadaptError("rollouts: neither the tokenizer nor the model defines an EOS token")
        rows = [list(ids) for ids in prompt_ids for _ in range(cfg.num_generations)]
        chunk = cfg.batch_size or len(rows)
        device = core.device
        parts = []
        was_training = core.training
        core.eval()
        try:
            with torch.random.fork_rng(
                devices=[] if device.type == "cpu" else [device], device_type=device.type
            ):
                torch.manual_seed(seed)
                for start in range(0, len(rows), chunk):
                    batch = rows[start : start + chunk]
                    parts.append(self._sample(core, batch, config, eos_ids, cfg.temperature, cfg.top_p))
        finally:
            core.train(was_training)
        return _concatenate(parts, self.pad_id, cfg.num_generations)

    @torch.no_grad()
    def _sample(
        self,
        model: Any,
        rows: list[list[int]],
        config: Any,
        eos_ids: list[int],
        temperature: float,
        top_p: float,
    ) -> Rollouts:
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        recorder = SamplerLogProbs(temperature, top_p)
        sequences = model.generate(
            input_ids=prompt_ids.to(model.device),
            attention_mask=prompt_mask.to(model.device),
            generation_config=config,
            logits_processor=LogitsProcessorList([recorder]),
        )
        completion = sequences[:, prompt_ids.size(1) :].cpu()
        logps = recorder.completion_logps(completion)
        mask, ended = completion_mask(completion, eos_ids)
        logps = logps.masked_fill(mask == 0, 0.0)
        texts = self.tokenizer.batch_decode(
            completion.masked_fill(mask == 0, self.pad_id), skip_special_tokens=True
        )
        return Rollouts(prompt_ids, prompt_mask, completion, mask, logps, ended, texts, 1)


class SamplerLogProbs(LogitsProcessor):
    """The last logits processor of `generate`: applies temperature and top-p (transformers' own warpers)
    and keeps the log-probability each sampled token had under that final distribution, one [n] vector
    per step. Only one step's [n, V] distribution is alive at a time: at each call the previous step's
    token is the last column of `input_ids`."""

    def __init__(self, temperature: float, top_p: float):
        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        self.warpers = LogitsProcessorList(warpers)
        self.token_logps: list[torch.Tensor] = []  # [n] float32 per sampled position
        self.pending: torch.Tensor | None = None  # [n, V] log-probs whose token is not sampled yet

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._gather(input_ids[:, -1])
        scores = self.warpers(input_ids, scores)
        self.pending = scores.float().log_softmax(dim=-1)
        return scores

    def _gather(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.token_logps.append(self.pending.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).cpu())
            self.pending = None

    def completion_logps(self, completion: torch.Tensor) -> torch.Tensor:
        """[n, C] log-probs of the generated tokens `completion` [n, C] (its last one is gathered here)."""
        if self.pending is not None and len(self.token_logps) < completion.size(1):
            self._gather(completion[:, len(self.token_logps)].to(self.pending.device))
        return torch.stack(self.token_logps[: completion.size(1)], dim=1)


def completion_mask(completion: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """completion: [n, C] sampled ids -> (mask [n, C] long: 1 through the first EOS, ended [n] bool)."""
    is_eos = torch.isin(completion, torch.tensor(list(eos_ids), dtype=completion.dtype))
    ended = is_eos.any(dim=1)
    first = torch.where(ended, is_eos.int().argmax(dim=1), completion.size(1) - 1)
    positions = torch.arange(completion.size(1)).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).long(), ended


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids [n, W], mask [n, W]) padded on the left to the longest row."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - t.size(1)
    if missing == 0:
        return t
    fill = torch.full((t.size(0), missing), value, dtype=t.dtype)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def _concatenate(parts: list[Rollouts], pad_id: int, group_size: int) -> Rollouts:
    """Chunks of rollouts as one batch: prompts re-padded on the left, completions on the right."""
    p = max(part.prompt_ids.size(1) for part in parts)
    c = max(part.completion_ids.size(1) for part in parts)

    def cat(name: str, width: int, value: float, left: bool) -> torch.Tensor:
        return torch.cat([_pad_to(getattr(part, name), width, value, left) for part in parts])

    return Rollouts(
        prompt_ids=cat("prompt_ids", p, pad_id, True),
        prompt_mask=cat("prompt_mask", p, 0, True),
        completion_ids=cat("completion_ids", c, pad_id, False),
        completion_mask=cat("completion_mask", c, 0, False),
        sampling_logps=cat("sampling_logps", c, 0.0, False),
        ended=torch.cat([part.ended for part in parts]),
        texts=[text for part in parts for text in part.texts],
        group_size=group_size,
    )
