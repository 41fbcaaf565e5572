from __future__ import annotations

import json

import pytest
from transformers import ByT5Tokenizer

from lmadapt.data.render import format_marked, render_examples

CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hé!"},
    {"role": "user", "content": "More"},
    {"role": "assistant", "content": "Ok"},
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "chat.jsonl"
    long_prompt = [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y"}]
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n" + json.dumps({"messages": long_prompt}))
    return path


def test_render_examples_and_marked_view(data):
    tokenizer = ByT5Tokenizer()
    example, other = render_examples(data, "tulu", tokenizer, max_length=100, truncation="drop")
    assert (example["line"], other["line"]) == (1, 2)
    assert example["text"] == (
        "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\nHé!</s>\n<|user|>\nMore\n<|assistant|>\nOk</s>\n"
    )
    assert example["input_ids"][-4:] == [ord("O") + 3, ord("k") + 3, 1, ord("\n") + 3]
    assert example["labels"][-4:] == [ord("O") + 3, ord("k") + 3, 1, -100]
    assert format_marked(tokenizer, example["input_ids"], example["labels"]) == (
        "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\n⟦Hé!</s>⟧\n"
        "<|user|>\nMore\n<|assistant|>\n⟦Ok</s>⟧\n"
    )


def test_truncation_shows_what_is_kept_and_omits_dropped_examples(data):
    tokenizer = ByT5Tokenizer()
    prompt = "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\n"
    examples = render_examples(data, "tulu", tokenizer, max_length=len(prompt) + 1)
    assert [e["line"] for e in examples] == [1]  # line 2's prompt alone is longer: nothing trained is left
    assert format_marked(tokenizer, examples[0]["input_ids"], examples[0]["labels"]) == f"{prompt}⟦H⟧"


def test_seq2seq_view(data):
    tokenizer = ByT5Tokenizer()
    [example, _] = render_examples(data, "tulu", tokenizer, max_length=200, kind="seq2seq")
    prompt = "<|system|>\nBe kind.\n<|user|>\nHi\n<|assistant|>\nHé!</s>\n<|user|>\nMore\n<|assistant|>\n"
    assert example["text"] == prompt
    assert format_marked(tokenizer, example["input_ids"], example["labels"]) == f"{prompt}</s>\n=> ⟦Ok</s>⟧"
