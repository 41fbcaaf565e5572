"""The one way training data reaches a recipe: sources -> mixture -> tokenised records, via the token cache.

`load_tokenized(sources, data_cfg, tokenizer, template, kind)` does the same for every data kind: mix the
sources (count/fraction/seed semantics of `build_mixture`), tokenise, and keep the result in the token
cache under a key it derives from everything the tokens depend on. A data kind is a reader of one source
file plus a tokenise function (and, when an item is more than one sequence, how it is stored as rows), so
a new kind of data is one `DataKind` in `DATA_KINDS`.

When several processes load the same data (the ranks of a run, or runs sharing data.cache_dir), the
store's file lock lets the first build the entry while the others wait and then read it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from lmadapt.config import DataConfig, SourceConfig
from lmadapt.data.cache import cache_key, cached_examples
from lmadapt.data.mixture import build_mixture, read_conversations
from lmadapt.data.preference import TokenizedPair, read_preference_source, tokenize_pairs
from lmadapt.data.templates import ChatTemplate
from lmadapt.data.tokenize import TokenizedExample, tokenize_all

logger = logging.getLogger("lmadapt")

R = TypeVar("R")  # a record as read from a source file
T = TypeVar("T")  # a tokenised item

DataKindName = Literal["causal", "seq2seq", "preference"]


@dataclass(frozen=True)
class DataKind(Generic[R, T]):
    """How one kind of data is read, tokenised and stored in the token cache."""

    what: str  # plural noun for logs
    read: Callable[[SourceConfig], list[R]]  # the records of one source file, validated
    tokenize: Callable[[Sequence[R], ChatTemplate, Any, DataConfig], list[T]]
    lengths: Callable[[DataConfig], list[int | None]]  # the length limits the tokens depend on (cache key)
    rows: int = 1  # token sequences per item in the cache
    to_rows: Callable[[T], Sequence[TokenizedExample]] = lambda item: (item,)
    from_rows: Callable[[Sequence[TokenizedExample]], T] = lambda rows: rows[0]


class TokenizedData(NamedTuple):
    records: list[Any]
    key: str  # the token-cache key ("" without sources); caches derived from the data (reference) build on it


def _conversation_kind(model_kind: Literal["causal", "seq2seq"]) -> DataKind:
    def tokenize(conversations: Sequence[Any], template: ChatTemplate, tokenizer: Any, data: DataConfig):
        return tokenize_all(
            conversations,
            template,
            tokenizer,
            data.max_length,
            data.truncation,
            model_kind,
            data.max_target_length,
        )[0]

    def lengths(data: DataConfig) -> list[int | None]:
        return [data.max_length, data.max_target_length if model_kind == "seq2seq" else None]

    return DataKind("conversations", read_conversations, tokenize, lengths)


def _tokenize_pairs(pairs: Sequence[Any], template: ChatTemplate, tokenizer: Any, data: DataConfig):
    return tokenize_pairs(pairs, template, tokenizer, data.max_length, data.truncation)[0]


DATA_KINDS: dict[str, DataKind] = {
    "causal": _conversation_kind("causal"),
    "seq2seq": _conversation_kind("seq2seq"),
    "preference": DataKind(
        "preference pairs",
        read_preference_source,
        _tokenize_pairs,
        lambda data: [data.max_length],
        rows=2,
        to_rows=lambda pair: (pair.chosen, pair.rejected),
        from_rows=lambda rows: TokenizedPair(rows[0], rows[1]),
    ),
}


def load_tokenized(
    sources: Sequence[SourceConfig],
    data: DataConfig,
    tokenizer: Any,
    template: ChatTemplate,
    kind: DataKindName,
) -> TokenizedData:
    """Mix, tokenise and cache `sources` as `kind` data: (records, cache key); ([], "") without sources.

    kind: "causal" / "seq2seq" (conversations for that model kind, TokenizedExample records) or
    "preference" (TokenizedPair records).
    """
    if not sources:
        return TokenizedData([], "")
    spec = DATA_KINDS[kind]
    key = cache_key(
        files=[source.path for source in sources],
        tokenizer=tokenizer,
        template=template.jinja,
        max_lengths=spec.lengths(data),
        mixture=list(sources),
        seed=data.seed,
        kind=kind,
        truncation=data.truncation,
    )

    def build() -> list[TokenizedExample]:
        items = spec.tokenize(build_mixture(sources, data.seed, spec.read), template, tokenizer, data)
        return [row for item in items for row in spec.to_rows(item)]

    rows, hit = cached_examples(data.cache_dir, key, build)
    records = [spec.from_rows(rows[i : i + spec.rows]) for i in range(0, len(rows), spec.rows)]
    logger.info("%d tokenized %s (%s cache)", len(records), spec.what, "from" if hit else "written to")
    return TokenizedData(records, key)
