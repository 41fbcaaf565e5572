"""Mix several data files, each taken whole, subsampled or upsampled, into one shuffled list of records.

Amounts follow open-instruct: an integer is a count of records, a value with "." a fraction of the
source ("3.0" = three copies). Above the source size, every record is repeated the whole number of
times and the remainder is a seeded sample without replacement. The same builder mixes every data kind
(conversations, preference pairs); only the reader of one file differs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from lmadapt.config import SourceConfig
from lmadapt.data.formats import Conversation, load_conversations

logger = logging.getLogger("lmadapt")

R = TypeVar("R")


def sample_indices(size: int, amount: int, rng: random.Random) -> list[int]:
    """`amount` indices into range(size): amount // size full passes, then a sample without replacement."""
    copies, remainder = divmod(amount, size)
    return list(range(size)) * copies + rng.sample(range(size), remainder)


def read_conversations(source: SourceConfig) -> list[Conversation]:
    """The conversations of one chat-data source (the reader `build_mixture` takes for SFT data)."""
    return load_conversations(source.path, source.format)


def build_mixture(
    sources: Sequence[SourceConfig], seed: int, read: Callable[[SourceConfig], list[R]]
) -> list[R]:
    """Read (each file with `read`), subsample/upsample and shuffle all sources; the same seed always
    gives the same list."""
    mixed: list[R] = []
    for index, source in enumerate(sources):
        records = read(source)
        size = len(records)
        if source.count is not None:
            amount = source.count
        elif source.fraction is not None:
            amount = round(source.fraction * size)
        else:
            amount = size
        if amount > size:
            logger.info("upsampling %s: %d records -> %d", source.path, size, amount)
        rng = random.Random(f"{seed}/{index}")  # per-source stream: editing one source leaves others' samples
        mixed += [records[i] for i in sample_indices(size, amount, rng)]
    random.Random(seed).shuffle(mixed)
    logger.info("mixture of %d sources: %d records", len(sources), len(mixed))
    return mixed
