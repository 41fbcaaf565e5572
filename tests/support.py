"""Plain helpers shared by the tests (importable as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import torch
from transformers import ByT5Tokenizer, PreTrainedModel

from lmadapt.config import load_config
from lmadapt.models.tiny import tiny_llama, tiny_t5

T = TypeVar("T")


def byte_llama(seed: int = 0) -> PreTrainedModel:
    """A tiny random Llama (hidden 32, 2 layers) over ByT5's byte vocabulary."""
    tok = ByT5Tokenizer()
    torch.manual_seed(seed)
    return tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok)


def byte_t5(seed: int = 0) -> PreTrainedModel:
    """A tiny random T5 (d_model 32, 2 layers) over ByT5's byte vocabulary."""
    tok = ByT5Tokenizer()
    torch.manual_seed(seed)
    return tiny_t5(len(tok), d_model=32, num_layers=2, num_heads=4, tokenizer=tok)


def save_with_byte_tokenizer(model: PreTrainedModel, out: Path) -> Path:
    """`model` and a ByT5 tokenizer saved to `out` in Hugging Face layout."""
    model.save_pretrained(out)
    ByT5Tokenizer().save_pretrained(out)
    return out


def tiny_run_config(cls: type[T], tmp_path: Path, model_dir: Path, data: Path, *overrides: str) -> T:
    """A recipe config for a quick test run: `model_dir`, one data file, a cache and run/ under
    `tmp_path`, short sequences, logging every step, no progress bar, one thread. Later overrides win."""
    base = [
        f"model.path={model_dir}",
        f"data.sources.0.path={data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_length=64",
        f"train.output_dir={tmp_path / 'run'}",
        "train.batch_size=8",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
    ]
    return load_config(cls, None, [*base, *overrides])


def logged_losses(run_dir: Path) -> list[float]:
    """The training losses logged in a run's metrics.jsonl, in order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def save_tiny_bert(out: Path, corpus: str, hidden_size: int = 48, seed: int = 3) -> Path:
    """A tiny BERT encoder (2 layers) built from a config, with a word-level tokenizer trained on `corpus`,
    saved as a local Hugging Face directory (a stand-in for a sentence-embedding model)."""
    from transformers import BertConfig, BertModel

    from lmadapt.models.tiny import word_level_tokenizer

    tokenizer = word_level_tokenizer([corpus], ())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
