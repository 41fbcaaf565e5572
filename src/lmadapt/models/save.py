"""Save final outputs in plain Hugging Face formats, loadable without lmadapt."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase


def save_model_and_tokenizer(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, chat_template: str | None
) -> None:
    """`save_pretrained` the model (a PEFT model saves only its adapter) and the tokenizer.

    The tokenizer is saved with the chat template used in training, so `apply_chat_template`
    in plain transformers renders prompts exactly as the model saw them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)
