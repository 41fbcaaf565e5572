"""The pool to select from: SFT data sources streamed one conversation at a time.

A pool source takes the amounts of an SFT mixture (all of it, `count` records, a `fraction`), drawn with
the same per-source seeded sample as `build_mixture`; it never upsamples (a copy cannot be chosen twice).
Pool ids number the kept conversations in source order, so (source, line) of every id is two small
arrays and no text is kept: the texts are read again only for the chosen examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lmadapt.config import SourceConfig
from lmadapt.data.formats import Conversation, iter_conversations, read_records
from lmadapt.data.mixture import sample_indices
from lmadapt.errors import ConfigError, DataError
from lmadapt.store import content_digest


@dataclass(frozen=True)
class PoolItem:
    id: int  # position in the pool
    source: int  # index of its source in the pool's sources
    conversation: Conversation


@dataclass(frozen=True)
class Pool:
    """The sources and which records of each are in the pool (None: all of them)."""

    sources: tuple[SourceConfig, ...]
    kept: tuple[frozenset[int] | None, ...]  # 0-based record numbers per source
    size: int

    def items(self) -> Iterator[PoolItem]:
        """Every pool conversation, in pool-id order (streamed from the files)."""
        next_id = 0
        for index, source in enumerate(self.sources):
            kept = self.kept[index]
            for number, conversation in enumerate(iter_conversations(source.path, source.format)):
                if kept is None or number in kept:
                    yield PoolItem(next_id, index, conversation)
                    next_id += 1

    def fingerprint(self, seed: int) -> str:
        """sha256 over what decides the pool's items in order: the files' bytes, amounts, seed."""
        description = {
            "files": [content_digest(source.path) for source in self.sources],
            "sources": [dataclasses.asdict(source) for source in self.sources],
            "seed": seed,
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def open_pool(sources: Sequence[SourceConfig], seed: int) -> Pool:
    """Count each source's records and draw the kept ones; ConfigError when a source would upsample."""
    if not sources:
        raise ConfigError("pool: no sources (list SFT data files under pool:)")
    kept: list[frozenset[int] | None] = []
    size = 0
    for index, source in enumerate(sources):
        records = sum(1 for _ in read_records(source.path))
        if records == 0:
            raise DataError(source.path, None, None, "no records found")
        if source.count is not None:
            amount = source.count
        elif source.fraction is not None:
            amount = round(source.fraction * records)
        else:
            kept.append(None)
            size += records
            continue
        if amount > records:
            raise ConfigError(
                f"pool source {source.path}: {amount} records asked of {records}; a pool cannot upsample"
            )
        rng = random.Random(f"{seed}/{index}")  # the per-source stream build_mixture uses
        kept.append(frozenset(sample_indices(records, amount, rng)))
        size += amount
    return Pool(tuple(sources), tuple(kept), size)


def chosen_conversations(pool: Pool, ids: Sequence[int]) -> dict[int, Conversation]:
    """The conversations of `ids`, read again from the files (only these are held)."""
    wanted = set(ids)
    found = {}
    for item in pool.items():
        if item.id in wanted:
            found[item.id] = item.conversation
            if len(found) == len(wanted):
                break
    return found
