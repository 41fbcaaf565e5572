from __future__ import annotations

import random

import pytest

from lmadapt.config import SourceConfig
from lmadapt.data.mixture import sample_indices
from lmadapt.errors import ConfigError
from lmadapt.selection.pool import chosen_conversations, open_pool


def test_pool_amounts_draw_the_records_an_sft_mixture_draws(tmp_path, pool_file):
    other = pool_file.with_name("other.jsonl")
    other.write_text(pool_file.read_text())
    sources = [SourceConfig(path=str(pool_file), count=30), SourceConfig(path=str(other), fraction=0.5)]
    pool = open_pool(sources, seed=7)
    assert pool.size == 30 + 60
    items = list(pool.items())
    assert [item.id for item in items] == list(range(90))
    first = sorted(sample_indices(120, 30, random.Random("7/0")))
    assert [item.conversation.line for item in items[:30]] == [i + 1 for i in first]
    assert {item.source for item in items[30:]} == {1}
    chosen = chosen_conversations(pool, [45, 2])
    assert chosen[2] == items[2].conversation and chosen[45] == items[45].conversation


def test_a_pool_never_upsamples(pool_file):
    with pytest.raises(ConfigError, match="cannot upsample"):
        open_pool([SourceConfig(path=str(pool_file), count=121)], seed=0)
    with pytest.raises(ConfigError, match="no sources"):
        open_pool([], seed=0)
