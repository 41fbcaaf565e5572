"""Load Hugging Face models and tokenizers from local directories, and wrap them with LoRA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmadapt.config import LoraConfig, ModelConfig
from lmadapt.errors import LmadaptError

log = logging.getLogger("lmadapt")

ModelKind = Literal["causal", "seq2seq"]


def local_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise LmadaptError(
            f"{what} '{path}' is not a local directory; lmadapt never downloads at run time, "
            "so fetch the model first (e.g. `huggingface-cli download NAME --local-dir DIR`) and pass DIR"
        )
    return p


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(
            local_dir(path, "tokenizer path"), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise LmadaptError(f"cannot load a tokenizer from '{path}': {_first_line(e)}") from None
    if tok.pad_token is None:
        # Padding positions are masked out everywhere, so any id works; eos is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def detect_kind(path: str, trust_remote_code: bool = False) -> ModelKind:
    config = AutoConfig.from_pretrained(
        local_dir(path, "model path"), local_files_only=True, trust_remote_code=trust_remote_code
    )
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" means bf16 on accelerators and fp32 on CPU (bf16 matmul is far slower on most CPUs)."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, name)


def load_model(cfg: ModelConfig, device: torch.device | None = None) -> tuple[PreTrainedModel, ModelKind]:
    """Load a causal or seq2seq LM from a local directory (safetensors only: never unpickles weights)."""
    device = device or torch.device("cpu")
    kind: ModelKind = detect_kind(cfg.path, cfg.trust_remote_code) if cfg.kind == "auto" else cfg.kind
    auto_cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        model = auto_cls.from_pretrained(
            local_dir(cfg.path, "model path"),
            local_files_only=True,
            use_safetensors=True,
            dtype=resolve_dtype(cfg.dtype, device),
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise LmadaptError(f"cannot load a model from '{cfg.path}': {_first_line(e)}") from None
    return model, kind


def apply_lora(
    model: PreTrainedModel, cfg: LoraConfig, kind: ModelKind | Literal["sequence_classification"]
) -> PreTrainedModel:
    """Wrap `model` with PEFT LoRA adapters; only the adapters (and a classification head) train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    task = {
        "seq2seq": TaskType.SEQ_2_SEQ_LM,
        "causal": TaskType.CAUSAL_LM,
        "sequence_classification": TaskType.SEQ_CLS,
    }
    peft_cfg = PeftLoraConfig(
        task_type=task[kind],
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
    )
    peft_model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return peft_model
