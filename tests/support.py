"""Plain helpers shared by the tests (importable as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
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


def tiny_grpo_config(tmp_path: Path, model_dir: Path, prompts: Path, *overrides: str):
    """A GRPO config for a quick test run: 2 prompts x 4 completions of up to 6 tokens per step, micro-batches
    of 4, logging every step, no progress bar. Later overrides win."""
    from lmadapt.config import GRPOConfig

    base = [
        f"model.path={model_dir}",
        f"data.sources.0={prompts}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.prompts_per_step=2",
        "rollout.num_generations=4",
        "rollout.max_new_tokens=6",
        "train.batch_size=4",
        "train.lr=1e-3",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
    ]
    return load_config(GRPOConfig, None, [*base, *overrides])


def logged_losses(run_dir: Path) -> list[float]:
    """The training losses logged in a run's metrics.jsonl, in order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def require_trl() -> ModuleType:
    """trl, for a parity test. A test may skip only when trl is missing and LMADAPT_ALLOW_SKIP_PARITY=1;
    otherwise a missing trl fails it (trl is in the dev extra, so `make test` runs every parity test)."""
    try:
        import trl
    except ImportError:
        if os.environ.get("LMADAPT_ALLOW_SKIP_PARITY") == "1":
            pytest.skip("trl is not installed (LMADAPT_ALLOW_SKIP_PARITY=1)")
        pytest.fail("trl is not installed: install the dev extra, or set LMADAPT_ALLOW_SKIP_PARITY=1 to skip")
    return trl
