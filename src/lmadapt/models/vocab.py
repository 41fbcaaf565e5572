"""Fit a model to its chat template: rows for the template's new marker tokens, and generation that
stops at the end of an assistant turn."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from lmadapt.data.templates import ChatTemplate


def fit_model_to_template(model: PreTrainedModel, tokenizer: Any, template: ChatTemplate) -> list[int]:
    """Resize `model`'s embeddings to `tokenizer` (which `get_template` gave the template's markers) and add
    the template's end-of-turn token to `generation_config.eos_token_id`, so plain `generate` stops there.

    Returns the ids of the template's special tokens: their embedding rows must be trained (full
    finetuning trains them anyway; LoRA gets them as PEFT trainable tokens via `apply_lora`).
    """
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if template.end_of_turn is not None and getattr(model, "generation_config", None) is not None:
        eos = model.generation_config.eos_token_id
        ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        end_of_turn = tokenizer.convert_tokens_to_ids(template.end_of_turn)
        if end_of_turn not in ids:
            model.generation_config.eos_token_id = [*ids, end_of_turn]
    return [tokenizer.convert_tokens_to_ids(token) for token in template.special_tokens]
