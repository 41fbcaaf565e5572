"""Plain helpers shared by the tests (importable as `support`; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    ByT5Tokenizer,
    LlamaForSequenceClassification,
    PreTrainedModel,
)

from lmadapt.config import load_config
from lmadapt.data.templates import TULU_JINJA
from lmadapt.models.tiny import tiny_llama, tiny_t5, word_level_tokenizer

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


def save_byte_reward_model(out: Path, seed: int = 1) -> Path:
    """A tiny random Llama reward model (one score, its head saved) with a ByT5 tokenizer carrying the
    tulu chat template, as `lmadapt reward` leaves one."""
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = TULU_JINJA
    config = byte_llama().config
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_byte_classifier(out: Path, id2label: dict[int, str] | None = None) -> Path:
    """A tiny random two-label BERT text classifier over ByT5's bytes, with 64 positions (ByT5 states no
    length limit); `id2label` None keeps transformers' default names LABEL_0 / LABEL_1."""
    tokenizer = ByT5Tokenizer()
    labels = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        **labels,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
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


def write_reverse_file(path: Path, n: int, seed: int = 0) -> Path:
    """Chat data with a learnable rule: the reply reverses the user's word."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6)))
            messages = [
                {"role": "user", "content": f"rev {word}"},
                {"role": "assistant", "content": word[::-1]},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def write_pairs_file(path: Path, n: int, seed: int = 0) -> Path:
    """The chosen reply reverses the user's word; the rejected one echoes it with a suffix."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6)))
            rejected = word + "xy"[: rng.randint(1, 2)]
            f.write(json.dumps({"prompt": f"rev {word}", "chosen": word[::-1], "rejected": rejected}) + "\n")
    return path


def write_prompts_file(path: Path, n: int, seed: int = 0) -> Path:
    """Online-RL prompts with ground truth: reverse a short word."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            word = "".join(rng.choice("abc") for _ in range(rng.randint(2, 4)))
            f.write(json.dumps({"prompt": f"rev {word}", "ground_truth": word[::-1]}) + "\n")
    return path


_POOL_KINDS = {"rev": "reverse", "cnt": "count", "up": "uppercase"}


def write_pool_file(path: Path, n: int, seed: int = 0) -> Path:
    """Chats of three kinds (reverse / count / uppercase a word), each line's kind drawn with `seed`."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            kind = rng.choice(list(_POOL_KINDS))
            word = "".join(rng.choice("abcdef") for _ in range(rng.randint(3, 6)))
            reply = {"rev": word[::-1], "cnt": str(len(word)), "up": word.upper()}[kind]
            f.write(json.dumps({"prompt": f"{_POOL_KINDS[kind]} {word}", "completion": reply}) + "\n")
    return path


def save_tiny_bert(out: Path, corpus: str, hidden_size: int = 48, seed: int = 3) -> Path:
    """A tiny BERT encoder (2 layers) built from a config, with a word-level tokenizer trained on `corpus`,
    saved as a local Hugging Face directory (a stand-in for a sentence-embedding model)."""
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
