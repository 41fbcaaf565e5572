"""A tiny Llama with a word-level tokenizer (one id per word, a BOS) and chat data it can memorise."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lmadapt.config import SFTConfig, load_config
from lmadapt.models.tiny import tiny_llama, word_level_tokenizer
from lmadapt.recipes import sft

CONVERSATIONS = [("say red", "apple cherry"), ("say gold", "sun coin ring crown")]

# The tokenizer's own template (the "tokenizer" choice): Zephyr-like, with no BOS of its own.
OWN_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def messages(user: str, reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


@pytest.fixture
def chat_model_dir(tmp_path: Path) -> Path:
    words = " ".join(f"{user} {reply}" for user, reply in CONVERSATIONS) + " user assistant system"
    tok = word_level_tokenizer([words])
    tok.chat_template = OWN_TEMPLATE
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok)
    out = tmp_path / "base"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": messages(u, r)}) + "\n" for u, r in CONVERSATIONS))
    return path


@pytest.fixture
def train_sft(tmp_path: Path, chat_data: Path) -> Callable[..., sft.SFTResult]:
    """SFT that memorises CONVERSATIONS in 60 steps: train_sft(model_dir, "data.template=chatml", ...)."""

    def run(model_dir: Path | str, *overrides: str) -> sft.SFTResult:
        cfg = load_config(
            SFTConfig,
            None,
            [
                f"model.path={model_dir}",
                f"data.sources.0.path={chat_data}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"train.output_dir={tmp_path / 'run'}",
                "train.batch_size=2",
                "train.lr=3e-2",
                "train.max_steps=60",
                "train.warmup_ratio=0",
                "train.progress=false",
                "train.num_threads=1",
                "model.lora.r=8",
                *overrides,
            ],
        )
        return sft.run(cfg)

    return run
