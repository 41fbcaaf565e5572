from __future__ import annotations

import random

import pytest

from lmadapt.config import DataConfig
from lmadapt.data.preference import TokenizedPair
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.errors import ConfigError
from lmadapt.train.batching import BatchPlan, LengthGroupedPlan, lm_batches, pack_rows, pair_plan


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
    batches = lm_batches(train, evals, DataConfig(max_length=64, batching="packed"), "causal", 2, 0, 0)
    assert sorted(len(e.input_ids) for row in batches.train for e in row) == [5, 5, 10, 20, 30, 30, 60]
    assert len(batches.train) == 3 and batches.plan.micro_per_epoch == 2
    batch = batches.collate([batches.train[i] for i in batches.plan.indices(0)])
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 2
    assert sum(len(row) for row in batches.evals) == 3


@pytest.mark.parametrize(
    ("data", "kind", "match"),
    [
        (DataConfig(batching="packed"), "seq2seq", "causal"),
        (DataConfig(max_length=64, batching="packed", pack_length=32), "causal", "at least data.max_length"),
    ],
)
def test_lm_batches_refuses_inconsistent_settings(data, kind, match):
    with pytest.raises(ConfigError, match=match):
        lm_batches(_examples([4]), [], data, kind, 2, 0, 0)


def test_pairs_are_length_grouped_by_their_longer_side_and_never_packed():
    pairs = [
        TokenizedPair(TokenizedExample([1] * n, [1] * n), TokenizedExample([1] * (n + k), [1] * (n + k)))
        for n, k in [(3, 0), (40, 1), (5, 2), (38, 0), (4, 1), (41, 0), (2, 0), (39, 2)]
    ]
    plan = pair_plan(pairs, DataConfig(), batch_size=2, seed=0, recipe="dpo")
    batches = [plan.indices(m) for m in range(plan.micro_per_epoch)]
    assert sorted(i for b in batches for i in b) == list(range(8))
    longer = [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs]
    assert all(abs(longer[a] - longer[b]) <= 3 for a, b in batches)  # short with short, long with long
    shuffled = pair_plan(pairs, DataConfig(batching="random"), batch_size=2, seed=0, recipe="dpo")
    assert shuffled.indices(0) == BatchPlan(8, 2, 0).indices(0)
    with pytest.raises(ConfigError, match=r"data\.batching=packed is supported by the sft recipe only"):
        pair_plan(pairs, DataConfig(batching="packed"), batch_size=2, seed=0, recipe="dpo")
