from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer

from lmadapt.models.tiny import tiny_llama, tiny_t5


def _write_reverse_data(path: Path, n: int, seed: int = 0) -> Path:
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


@pytest.fixture
def write_reverse_data():
    return _write_reverse_data


@pytest.fixture
def tiny_llama_dir(tmp_path: Path) -> Path:
    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(len(tok), hidden_size=32, num_layers=2, num_heads=4, tokenizer=tok)
    out = tmp_path / "tiny-llama"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def tiny_t5_dir(tmp_path: Path) -> Path:
    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    model = tiny_t5(len(tok), d_model=32, num_layers=2, num_heads=4, tokenizer=tok)
    out = tmp_path / "tiny-t5"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
