from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from lmadapt.config import SourceConfig
from lmadapt.data.mixture import build_mixture, read_conversations
from lmadapt.errors import ConfigError


def write_source(path: Path, name: str, size: int) -> str:
    """A messages file whose replies are "<name><i>", so every conversation is identifiable."""
    records = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"{name}{i}"}]}
        for i in range(size)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def sources(tmp_path):
    return {
        name: write_source(tmp_path / f"{name}.jsonl", name, size)
        for name, size in [("a", 10), ("b", 4), ("c", 5)]
    }


def replies(conversations) -> list[str]:
    return [c.messages[-1]["content"] for c in conversations]


def test_counts_fractions_and_whole_sources(sources):
    mixture = build_mixture(
        [
            SourceConfig(sources["a"], count=3),
            SourceConfig(sources["b"], fraction=0.5),
            SourceConfig(sources["c"]),
        ],
        1,
        read_conversations,
    )
    counts = Counter(reply[0] for reply in replies(mixture))
    assert counts == {"a": 3, "b": 2, "c": 5}
    assert len(set(replies(mixture))) == 10  # subsamples are without replacement
    assert sorted(r for r in replies(mixture) if r[0] == "c") == [f"c{i}" for i in range(5)]


def test_fraction_above_one_upsamples_whole_copies_plus_a_sample(sources, caplog):
    with caplog.at_level(logging.INFO, logger="lmadapt"):
        mixture = build_mixture([SourceConfig(sources["c"], fraction=2.4)], 3, read_conversations)
    counts = Counter(replies(mixture))
    assert len(mixture) == 12
    assert sorted(counts.values()) == [2, 2, 2, 3, 3]  # two full copies, then 2 distinct extras
    assert "upsampling" in caplog.text and "5 records -> 12" in caplog.text


def test_count_above_size_upsamples_the_same_way(sources):
    mixture = build_mixture([SourceConfig(sources["b"], count=7)], 0, read_conversations)
    assert sorted(Counter(replies(mixture)).values()) == [1, 2, 2, 2]


def test_seed_decides_sample_and_order(sources):
    spec = [
        SourceConfig(sources["a"], count=5),
        SourceConfig(sources["b"]),
        SourceConfig(sources["c"], count=3),
    ]
    first, again, other = (replies(build_mixture(spec, seed, read_conversations)) for seed in (7, 7, 8))
    assert first == again
    assert first != other
    lines = [(c.source, c.line) for c in build_mixture(spec, 7, read_conversations)]
    assert lines == [(c.source, c.line) for c in build_mixture(spec, 7, read_conversations)]


def test_sources_are_shuffled_together(sources):
    order = [
        reply[0]
        for reply in replies(
            build_mixture([SourceConfig(p) for p in sources.values()], 0, read_conversations)
        )
    ]
    assert sorted(order) == ["a"] * 10 + ["b"] * 4 + ["c"] * 5
    assert order != sorted(order, key="abc".index)  # not simply concatenated


def test_invalid_sources_are_config_errors():
    with pytest.raises(ConfigError, match="not both"):
        SourceConfig("x.jsonl", count=3, fraction=0.5)
    with pytest.raises(ConfigError, match="positive"):
        SourceConfig("x.jsonl", count=0)
    with pytest.raises(ConfigError, match="positive"):
        SourceConfig("x.jsonl", fraction=-1.0)
    with pytest.raises(ConfigError, match="integer"):
        SourceConfig("x.jsonl", count=2.5)
