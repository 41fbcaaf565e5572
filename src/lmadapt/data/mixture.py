"""Mix several instruction datasets, each taken whole, subsampled or upsampled, into one shuffled list.

Amounts follow open-instruct: an integer is a count of conversations, a value with "." a fraction of
the source ("3.0" = three copies). Above the source size, every conversation is repeated the whole
number of times and the remainder is a seeded sample without replacement.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from lmadapt.data.formats import Conversation, load_conversations
from lmadapt.errors import ConfigError

logger = logging.getLogger("lmadapt")


@dataclass
class MixtureSource:
    """One data file in a mixture; at most one of count/fraction, neither = every conversation once."""

    path: str
    format: str = "auto"
    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.fraction is not None:
            raise ConfigError(f"mixture source {self.path}: give count or fraction, not both")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)):
            raise ConfigError(f"mixture source {self.path}: count must be an integer, got {self.count!r}")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"mixture source {self.path}: count must be positive, got {self.count}")
        if self.fraction is not None and not self.fraction > 0:
            raise ConfigError(f"mixture source {self.path}: fraction must be positive, got {self.fraction}")


def parse_amount(value: int | float | str) -> dict[str, int | float]:
    """open-instruct style amount -> MixtureSource keyword: {"count": n} or {"fraction": f}.

    An int or a digit string is a count; a float or a string containing "." is a fraction.
    """
    if isinstance(value, bool):
        raise ConfigError(f"mixture amount must be a number, got {value!r}")
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, float):
        return {"fraction": value}
    text = str(value).strip()
    try:
        return {"fraction": float(text)} if "." in text else {"count": int(text)}
    except ValueError:
        raise ConfigError(
            f"mixture amount {value!r} is neither a count (int) nor a fraction (with '.')"
        ) from None


def sample_indices(size: int, amount: int, rng: random.Random) -> list[int]:
    """`amount` indices into range(size): amount // size full passes, then a sample without replacement."""
    copies, remainder = divmod(amount, size)
    return list(range(size)) * copies + rng.sample(range(size), remainder)


def build_mixture(sources: list[MixtureSource], seed: int) -> list[Conversation]:
    """Load, subsample/upsample and shuffle all sources; the same seed always gives the same list."""
    mixed: list[Conversation] = []
    for index, source in enumerate(sources):
        conversations = load_conversations(source.path, source.format)
        size = len(conversations)
        if source.count is not None:
            amount = source.count
        elif source.fraction is not None:
            amount = round(source.fraction * size)
        else:
            amount = size
        if amount > size:
            logger.info("upsampling %s: %d conversations -> %d", source.path, size, amount)
        rng = random.Random(f"{seed}/{index}")  # per-source stream: editing one source leaves others' samples
        mixed += [conversations[i] for i in sample_indices(size, amount, rng)]
    random.Random(seed).shuffle(mixed)
    logger.info("mixture of %d sources: %d conversations", len(sources), len(mixed))
    return mixed
