from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from lmadapt.config import DataConfig, SourceConfig
from lmadapt.data.mixture import build_mixture, read_conversations
from lmadapt.data.pipeline import load_tokenized
from lmadapt.data.preference import read_preference_source, tokenize_pairs
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import tokenize_all

TOK = ByT5Tokenizer()
TULU = get_template("tulu", TOK)


def write_lines(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture
def chat_sources(tmp_path) -> list[SourceConfig]:
    def chat(i: int) -> dict:
        return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}

    return [
        SourceConfig(write_lines(tmp_path / "a.jsonl", [chat(i) for i in range(5)]), count=7),
        SourceConfig(write_lines(tmp_path / "b.jsonl", [chat(i) for i in range(10, 14)]), fraction=0.5),
    ]


@pytest.fixture
def pair_sources(tmp_path) -> list[SourceConfig]:
    records = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(4)]
    return [SourceConfig(write_lines(tmp_path / "p.jsonl", records), count=6)]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_conversations_equal_mixing_then_tokenising_and_come_back_from_the_cache(
    tmp_path, chat_sources, kind, caplog
):
    data = DataConfig(max_length=32, max_target_length=8, seed=3, cache_dir=str(tmp_path / "cache"))
    expected, _ = tokenize_all(
        build_mixture(chat_sources, 3, read_conversations), TULU, TOK, 32, "truncate", kind, 8
    )
    caplog.set_level("INFO", logger="lmadapt")
    first = load_tokenized(chat_sources, data, TOK, TULU, kind)
    assert first.records == expected and len(expected) == 9 and "cache hit" not in caplog.text
    again = load_tokenized(chat_sources, data, TOK, TULU, kind)
    assert again == first and "cache hit" in caplog.text


def test_preference_pairs_keep_their_sides_through_the_cache(tmp_path, pair_sources):
    data = DataConfig(max_length=64, cache_dir=str(tmp_path / "cache"))
    expected, _ = tokenize_pairs(build_mixture(pair_sources, 0, read_preference_source), TULU, TOK, 64)
    first = load_tokenized(pair_sources, data, TOK, TULU, "preference")
    again = load_tokenized(pair_sources, data, TOK, TULU, "preference")
    assert first.records == expected == again.records and len(expected) == 6
    assert sorted({TOK.decode(p.rejected.input_ids[-3:]) for p in again.records}) == [
        f"b{i}</s>" for i in range(4)
    ]


def test_the_key_follows_what_the_tokens_depend_on(tmp_path, chat_sources):
    data = DataConfig(max_length=32, max_target_length=8, cache_dir=str(tmp_path / "cache"))
    longer_targets = dataclasses.replace(data, max_target_length=16)

    def key(sources, data, kind):
        return load_tokenized(sources, data, TOK, TULU, kind).key

    causal, seq2seq = key(chat_sources, data, "causal"), key(chat_sources, data, "seq2seq")
    assert causal != seq2seq
    assert key(chat_sources, longer_targets, "causal") == causal  # causal tokens ignore the target limit
    assert key(chat_sources, longer_targets, "seq2seq") != seq2seq
    assert key(chat_sources, dataclasses.replace(data, seed=1), "causal") != causal
    assert key([dataclasses.replace(chat_sources[0], count=8), chat_sources[1]], data, "causal") != causal


def test_no_sources_means_no_data_and_no_key(tmp_path):
    assert load_tokenized([], DataConfig(cache_dir=str(tmp_path)), TOK, TULU, "preference") == ([], "")
    assert list(tmp_path.iterdir()) == []
