"""`lmadapt merge`: a LoRA adapter merged into its base, saved as a full model plain transformers loads."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import GenerationConfig

from lmadapt.config import ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.models.load import adapter_head, check_model_dir, is_adapter_dir, load_model, load_tokenizer


def merge_adapter(adapter: str | Path, out: str | Path, overwrite: bool = False, dtype: str = "auto") -> Path:
    """Write base + `adapter` (merged weights, safetensors), its tokenizer with the chat template and its
    generation config to `out`. Refuses a non-empty `out` unless `overwrite`, and never writes into the
    adapter itself. A reward-model adapter merges into a sequence-classification model."""
    adapter_dir = check_model_dir(adapter)
    if not is_adapter_dir(adapter_dir):
        raise LmadaptError(f"'{adapter}' is a full model, not a PEFT adapter: there is nothing to merge")
    out_dir = Path(out).expanduser().resolve()
    if out_dir == adapter_dir or adapter_dir in out_dir.parents:
        raise LmadaptError(f"--out '{out}' is inside the adapter '{adapter}'; choose another directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise LmadaptError(f"'{out}' already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    tokenizer = load_tokenizer(adapter_dir)
    cfg = ModelConfig(path=str(adapter_dir), dtype=dtype)  # type: ignore[arg-type]
    model, _ = load_model(cfg, head=adapter_head(adapter_dir))
    if (adapter_dir / "generation_config.json").is_file():  # saved with the adapter: the end-of-turn stop
        model.generation_config = GenerationConfig.from_pretrained(adapter_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
