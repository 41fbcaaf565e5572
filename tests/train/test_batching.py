from __future__ import annotations

import random

import pytest

from lmadapt.config import DataConfig
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.errors import ConfigError
from lmadapt.train.batching import BatchPlan, LengthGroupedPlan, lm_batches, pack_rows, require_unpacked


def _long_tailed_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [min(512, max(4, round(rng.lognormvariate(4.8, 0.8)))) for _ in range(n)]


def _padded_tokens(plan, lengths: list[int], micro: range) -> int:
    return sum(
        len(idx) * max(lengths[i] for i in idx) - sum(lengths[i] for i in idx)
        for idx in map(plan.indices, micro)
    )


def test_batch_plan_is_a_seeded_permutation_per_epoch():
    plan = BatchPlan(n_examples=10, batch_size=4, seed=3)
    epoch0 = [i for m in range(3) for i in plan.indices(m)]
    epoch1 = [i for m in range(3, 6) for i in plan.indices(m)]
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert plan.indices(4) == BatchPlan(10, 4, 3).indices(4)
    assert plan.indices(0) != BatchPlan(10, 4, 4).indices(0)


def test_length_grouped_plan_visits_every_example_once_per_epoch_in_a_seeded_order():
    lengths = _long_tailed_lengths(1000)
    plan = LengthGroupedPlan(lengths, batch_size=8, seed=3, group=16)
    assert plan.micro_per_epoch == BatchPlan(1000, 8, 3).micro_per_epoch == 125
    epochs = [[i for m in range(e * 125, (e + 1) * 125) for i in plan.indices(m)] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(1000))
    assert epochs[0] != epochs[1]
    # A pure function of (seed, micro-batch index): a fresh plan (a resumed run) gives the same batches.
    assert [LengthGroupedPlan(lengths, 8, 3, 16).indices(m) for m in (0, 130, 249)] == [
        plan.indices(m) for m in (0, 130, 249)
    ]
    assert plan.indices(0) != LengthGroupedPlan(lengths, 8, 4, 16).indices(0)
    # Not longest-first: the batches' longest examples come in no sorted order.
    longest = [max(lengths[i] for i in plan.indices(m)) for m in range(125)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_length_grouping_cuts_padding():
    lengths = _long_tailed_lengths(2000)
    epoch = range(250)
    shuffled = _padded_tokens(BatchPlan(2000, 8, 0), lengths, epoch)
    grouped = _padded_tokens(LengthGroupedPlan(lengths, 8, 0), lengths, epoch)
    assert grouped < 0.2 * shuffled


def test_pack_rows_fills_rows_without_splitting_or_losing_examples():
    lengths = _long_tailed_lengths(2000)
    rows = pack_rows(lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(2000))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    lower_bound = -(-sum(lengths) // 512)
    assert len(rows) <= 1.02 * lower_bound + 1  # best-fit decreasing is near-optimal here
    assert rows == pack_rows(lengths, 512)  # deterministic


def test_pack_rows_refuses_an_example_longer_than_a_row():
    with pytest.raises(ConfigError, match="pack_length=8"):
        pack_rows([3, 9, 2], 8)


def _examples(lengths: list[int]) -> list[TokenizedExample]:
    return [TokenizedExample(list(range(3, 3 + n)), list(range(3, 3 + n))) for n in lengths]


def test_lm_batches_packs_train_and_eval_rows_with_batch_size_counting_rows():
    train, evals = _examples([30, 30, 20, 10, 5, 5, 60]), _examples([40, 20, 4])
    batches = lm_batches(train, evals, DataConfig(max_length=64, packing=True), "causal", 2, 0, 0)
    assert sorted(len(e.input_ids) for row in batches.train for e in row) == [5, 5, 10, 20, 30, 30, 60]
    assert len(batches.train) == 3 and batches.plan.micro_per_epoch == 2
    batch = batches.collate([batches.train[i] for i in batches.plan.indices(0)])
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 2
    assert sum(len(row) for row in batches.evals) == 3


@pytest.mark.parametrize(
    ("data", "kind", "match"),
    [
        (DataConfig(packing=True), "seq2seq", "causal"),
        (DataConfig(packing=True, group_by_length=True), "causal", "unpacked"),
        (DataConfig(max_length=64, packing=True, pack_length=32), "causal", "at least data.max_length"),
    ],
)
def test_lm_batches_refuses_inconsistent_settings(data, kind, match):
    with pytest.raises(ConfigError, match=match):
        lm_batches(_examples([4]), [], data, kind, 2, 0, 0)


def test_recipes_without_packing_refuse_the_keys():
    with pytest.raises(ConfigError, match=r"data\.group_by_length is supported by the sft recipe only"):
        require_unpacked(DataConfig(group_by_length=True), "dpo")
    require_unpacked(DataConfig(), "dpo")
