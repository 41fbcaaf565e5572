"""Batched text generation for evaluation: decoder-only and encoder-decoder models.

Prompts are tokenised once, sorted by length so each batch pads little, generated with `model.generate`
(KV cache; decoder-only batches padded on the left, so batched greedy decoding equals one-at-a-time
greedy decoding) and returned in the caller's order as continuation text only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from lmadapt.errors import LmadaptError
from lmadapt.eval.progress import Progress
from lmadapt.eval.prompts import raw_prompt_ids

# A checkpoint's generation_config.json fills every field left unset (Qwen2-Instruct ships
# repetition_penalty=1.05 and top_k=20), so every processor that could alter the requested decoding is pinned.
_PINNED = {
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
}
# Sampling is plain temperature + nucleus: no top-k (transformers' default is 50) or other truncation.
_PINNED_SAMPLING = {"top_k": 0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[list[int]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] | None = None,
    seed: int = 0,
    chat_template: bool = False,
    progress: Progress | None = None,
) -> list[str]:
    """Generate a continuation for each prompt; returns the texts in the order of `prompts`.

    A prompt may be given as token ids (e.g. from `data.tokenize.encode_prompt`, which encodes exactly as
    training did); those are used as they are. Each text is the generated part only, decoded without
    special tokens and cut before the first occurrence of any `stop` string. Generation of a row ends at
    EOS (the tokenizer's and the model's), at a stop string, or after `max_new_tokens` tokens. With
    `chat_template`, each prompt becomes one user message rendered by the tokenizer's chat template with
    the generation prompt appended (prompts are used as they are when the tokenizer has no template).
    Sampling is seeded with `seed` inside a forked RNG scope, so the caller's global RNG state is left as
    it was. The tokenizer is not modified; a tokenizer without a pad token pads with EOS. `progress`
    advances by one per prompt as its batch finishes.
    """
    _check_arguments(max_new_tokens, batch_size, do_sample, temperature, top_p, stop)
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise LmadaptError("generate: the tokenizer has neither a pad token nor an EOS token to pad with")
    encoder_decoder = bool(model.config.is_encoder_decoder)
    if chat_template and tokenizer.chat_template is None:
        warnings.warn("generate: the tokenizer has no chat template; prompts used as is", stacklevel=2)
    use_template = chat_template and tokenizer.chat_template is not None
    encoded = [_prompt_ids(tokenizer, p, use_template, encoder_decoder, i) for i, p in enumerate(prompts)]
    config = generation_config(model, tokenizer, pad_id, max_new_tokens, do_sample, temperature, top_p)

    # Longest first: similar lengths share a batch, and the largest batch (the memory peak) runs first.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    texts = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = model.device
    try:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
            torch.manual_seed(seed)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = _generate_batch(
                    model, tokenizer, [encoded[i] for i in rows], config, pad_id, encoder_decoder, stop or []
                )
                for i, text in zip(rows, batch, strict=True):
                    texts[i] = text
                if progress is not None:
                    progress.update(len(rows))
    finally:
        model.train(was_training)
    return texts


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    found = [at for at in (text.find(s) for s in stop) if at >= 0]
    return text[: min(found)] if found else text


class StopOnStrings(StoppingCriteria):
    """Marks a row finished as soon as its generated text contains any of the stop strings."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, list(stop), prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """input_ids: (batch, prompt_width + generated) -> (batch,) True where a stop string appeared."""
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _check_arguments(
    max_new_tokens: int,
    batch_size: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    stop: Sequence[str] | None,
) -> None:
    if max_new_tokens < 1:
        raise LmadaptError(f"generate: max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise LmadaptError(f"generate: batch_size must be at least 1, got {batch_size}")
    if do_sample and temperature <= 0:
        raise LmadaptError(f"generate: temperature must be > 0 when sampling, got {temperature}")
    if do_sample and not 0 < top_p <= 1:
        raise LmadaptError(f"generate: top_p must be in (0, 1], got {top_p}")
    if isinstance(stop, str):
        raise LmadaptError("generate: stop must be a list of strings, not a single string")
    if stop and not all(stop):
        raise LmadaptError("generate: stop strings must not be empty")


def _prompt_ids(
    tokenizer: Any, prompt: str | list[int], use_template: bool, encoder_decoder: bool, index: int
) -> list[int]:
    if isinstance(prompt, list):
        ids = prompt
    elif use_template:
        messages = [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template writes its own BOS (if any) as text; adding special tokens again would double it.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = raw_prompt_ids(tokenizer, prompt, encoder_decoder)
    if not ids:
        raise LmadaptError(f"generate: prompt {index} encodes to no tokens")
    return ids


def generation_config(
    model: Any,
    tokenizer: Any,
    pad_id: int,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
) -> GenerationConfig:
    eos_ids = model.generation_config.eos_token_id
    eos_ids = [] if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    sampling = {"temperature": temperature, "top_p": top_p, **_PINNED_SAMPLING} if do_sample else {}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=pad_id,
        eos_token_id=eos_ids or None,
        **_PINNED,
        **sampling,
    )


def _generate_batch(
    model: Any,
    tokenizer: Any,
    batch_ids: list[list[int]],
    config: GenerationConfig,
    pad_id: int,
    encoder_decoder: bool,
    stop: Sequence[str],
) -> list[str]:
    # Decoder-only rows are padded on the left so every row's next token follows its last prompt token;
    # encoder inputs are padded on the right, as encoders are trained.
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        columns = slice(0, len(ids)) if encoder_decoder else slice(width - len(ids), width)
        input_ids[row, columns] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, columns] = 1
    # Encoder-decoder outputs hold only the decoder's tokens (starting with a special start token).
    prompt_width = 0 if encoder_decoder else width
    criteria = StoppingCriteriaList([StopOnStrings(tokenizer, stop, prompt_width)]) if stop else None
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        generation_config=config,
        stopping_criteria=criteria,
    )
    texts = tokenizer.batch_decode(output[:, prompt_width:], skip_special_tokens=True)
    return [cut_at_stop(text, stop) for text in texts]
