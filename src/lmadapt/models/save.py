"""Save final outputs in plain Hugging Face formats, loadable without lmadapt."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase


def save_model_and_tokenizer(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    chat_template: str | None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """`save_pretrained` the model (a PEFT model saves only its adapter) and the tokenizer.

    The tokenizer is saved with the chat template used in training, so `apply_chat_template`
    in plain transformers renders prompts exactly as the model saw them. An adapter records its base
    as an absolute path (loadable from any directory) and carries the model's generation config
    (whose eos_token_id includes the template's end of turn). `state_dict`: the full weights gathered
    from a sharded (FSDP/DeepSpeed) run, saved in place of the model's own (sharded) parameters.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_config = getattr(model, "peft_config", None)
    if peft_config is not None:
        for adapter in peft_config.values():
            base = adapter.base_model_name_or_path
            if base and Path(base).expanduser().is_dir():
                adapter.base_model_name_or_path = str(Path(base).expanduser().resolve())
        generation_config = getattr(model.get_base_model(), "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)
