"""Which examples form each micro-batch: pure functions of (seed, micro-batch index).

Every plan maps a micro-batch index to example indices without state, so the optimizer step count
alone fixes the data position and a resumed run sees exactly the batches an uninterrupted one would.

- `BatchPlan`: a seeded permutation per epoch, cut into micro-batches (the default).
- `LengthGroupedPlan`: the same permutation, but each window of `group` micro-batches is sorted by
  length before it is cut, and the micro-batches are then shuffled, so a micro-batch holds examples
  of similar length (less padding) while the order stays random.
- `pack_rows`: packing of examples into rows of at most `pack_length` tokens (best-fit decreasing);
  the rows are then the items a `BatchPlan` draws from, `batch_size` rows per micro-batch.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch

from lmadapt.config import DataConfig
from lmadapt.data.collate import collate_causal, collate_packed
from lmadapt.data.preference import TokenizedPair
from lmadapt.data.tokenize import TokenizedExample
from lmadapt.errors import ConfigError


class MicroBatchPlan(Protocol):
    """What `fit` draws micro-batches from: item indices as a pure function of the micro-batch index."""

    @property
    def micro_per_epoch(self) -> int: ...

    def indices(self, micro_index: int) -> list[int]: ...


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


@dataclass
class BatchPlan:
    """Deterministic micro-batch order: an endless stream of seeded per-epoch permutations."""

    n_examples: int
    batch_size: int
    seed: int

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(self.n_examples / self.batch_size)

    def indices(self, micro_index: int) -> list[int]:
        epoch, within = divmod(micro_index, self.micro_per_epoch)
        perm = _epoch_permutation(self.n_examples, self.seed, epoch)
        return perm[within * self.batch_size : (within + 1) * self.batch_size].tolist()


@dataclass
class LengthGroupedPlan:
    """Micro-batches of similar-length examples, in a seeded random order (see the module docstring).

    An epoch has the same micro-batch count as `BatchPlan` and visits every example once.
    """

    lengths: Sequence[int]
    batch_size: int
    seed: int
    group: int = 64  # micro-batches per length-sorted window
    _epoch: tuple[int, list[list[int]]] | None = field(default=None, repr=False, compare=False)

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        perm = _epoch_permutation(len(self.lengths), self.seed, epoch).tolist()
        window = self.group * self.batch_size
        batches = []
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start : start + window], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        # A second seeded permutation orders the batches, so the longest ones do not come first.
        order = _epoch_permutation(len(batches), self.seed + 1, epoch).tolist()
        return [batches[i] for i in order]

    def indices(self, micro_index: int) -> list[int]:
        epoch, within = divmod(micro_index, self.micro_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:  # one sort per epoch, not per micro-batch
            self._epoch = (epoch, self.epoch_batches(epoch))
        return self._epoch[1][within]


def pack_rows(lengths: Sequence[int], pack_length: int) -> list[list[int]]:
    """Bin-pack example indices into rows whose lengths sum to at most `pack_length` (best-fit decreasing).

    Longest examples first, each into the fullest row it still fits. Returns rows in creation
    order, each a list of example indices (longest first). Deterministic in `lengths` alone: which
    examples share a row does not change any example's loss, since attention is isolated per example.
    """
    too_long = [i for i, n in enumerate(lengths) if n > pack_length]
    if too_long:
        raise ConfigError(
            f"data.pack_length={pack_length} is shorter than example {too_long[0]} "
            f"({lengths[too_long[0]]} tokens); set data.pack_length >= data.max_length"
        )
    rows: list[list[int]] = []
    # (free space, row index), sorted: the first entry with free >= n is the best fit.
    free: list[tuple[int, int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            rows.append([i])
            bisect.insort(free, (pack_length - n, len(rows) - 1))
        else:
            space, row = free.pop(at)
            rows[row].append(i)
            bisect.insort(free, (space - n, row))
    return rows


@dataclass
class Batches:
    """How a recipe's examples reach `fit`: the items it draws (examples, or packed rows of them), the
    collate that turns a list of items into a batch, and the plan that picks the items of each step."""

    train: Sequence[Any]
    evals: Sequence[Any]
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    plan: MicroBatchPlan


def lm_batches(
    train: Sequence[TokenizedExample],
    evals: Sequence[TokenizedExample],
    data: DataConfig,
    kind: str,
    batch_size: int,
    seed: int,
    pad_token_id: int,
) -> Batches:
    """Padded (optionally length-grouped) or, for causal models, packed language-modelling batches."""
    if data.batching == "packed":
        if kind != "causal":
            raise ConfigError("data.batching=packed needs a causal (decoder-only) model; use grouped")
        pack_length = data.pack_length or data.max_length
        if pack_length < data.max_length:
            raise ConfigError(
                f"data.pack_length ({pack_length}) must be at least data.max_length ({data.max_length})"
            )

        def rows(examples: Sequence[TokenizedExample]) -> list[list[TokenizedExample]]:
            packed = pack_rows([len(e.input_ids) for e in examples], pack_length)
            return [[examples[i] for i in row] for row in packed]

        train_rows = rows(train)
        return Batches(
            train_rows,
            rows(evals),
            partial(collate_packed, pad_token_id=pad_token_id),
            BatchPlan(len(train_rows), batch_size, seed),
        )
    plan: MicroBatchPlan = (
        # Both the inputs and (seq2seq) the labels are padded: group by their total length.
        LengthGroupedPlan([len(e.input_ids) + len(e.labels) for e in train], batch_size, seed)
        if data.batching == "grouped"
        else BatchPlan(len(train), batch_size, seed)
    )
    # Seq2seq batches pad like causal ones (collate_seq2seq is collate_causal).
    return Batches(train, evals, partial(collate_causal, pad_token_id=pad_token_id), plan)


def pair_plan(
    pairs: Sequence[TokenizedPair], data: DataConfig, batch_size: int, seed: int, recipe: str
) -> MicroBatchPlan:
    """The micro-batch plan of preference pairs: length-grouped by the longer side (both sides are padded
    to the longest of the batch), or random. Packing is refused: pairs are not packed (yet)."""
    if data.batching == "packed":
        raise ConfigError(f"data.batching=packed is supported by the sft recipe only, not {recipe}")
    if data.batching == "grouped":
        longer = [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs]
        return LengthGroupedPlan(longer, batch_size, seed)
    return BatchPlan(len(pairs), batch_size, seed)
