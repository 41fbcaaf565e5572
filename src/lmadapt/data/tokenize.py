"""Conversations -> token ids with loss labels (-100 = not trained), for causal and encoder-decoder models.

Text is tokenised piece by piece (template segments, and within them around the tokenizer's added
tokens, which map straight to their ids) with add_special_tokens=False. That keeps the labels aligned
exactly with the trained text and sidesteps added tokens that strip neighbouring whitespace (ByT5's
"</s>"). Special tokens come only from the template, plus one BOS in front when the tokenizer has one
and the rendered text does not already start with it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lmadapt.data.formats import Conversation
from lmadapt.data.templates import ChatTemplate
from lmadapt.errors import ConfigError, DataError, LmadaptError

IGNORE_INDEX = -100
TRUNCATION_POLICIES = ("truncate", "drop")
KINDS = ("causal", "seq2seq")

logger = logging.getLogger("lmadapt")


@dataclass
class TokenizedExample:
    """input_ids and labels; causal: same length, labels = input_ids or -100; seq2seq: decoder labels."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenizeStats:
    total: int = 0
    truncated: int = 0  # cut to the length limit and kept
    dropped: int = 0  # too long under "drop", or nothing trained left after truncation


@functools.lru_cache(maxsize=16)
def _added_token_splitter(tokens: tuple[str, ...]) -> re.Pattern[str]:
    longest_first = sorted(tokens, key=len, reverse=True)  # a token containing another one must win
    return re.compile("(" + "|".join(re.escape(token) for token in longest_first) + ")")


def encode_text(text: str, tokenizer: Any) -> list[int]:
    """Token ids of `text` with no special tokens added; added tokens in the text map to their ids."""
    added = tokenizer.get_added_vocab()
    if not added:
        return tokenizer.encode(text, add_special_tokens=False) if text else []
    ids: list[int] = []
    for index, piece in enumerate(_added_token_splitter(tuple(added)).split(text)):
        if index % 2:  # re.split puts the captured separators at odd positions
            ids.append(added[piece])
        elif piece:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    return ids


def _bos(tokenizer: Any, text: str) -> list[int]:
    bos = tokenizer.bos_token
    return [tokenizer.bos_token_id] if bos is not None and not text.startswith(bos) else []


def _eos(tokenizer: Any, text: str) -> list[int]:
    eos = tokenizer.eos_token
    return [tokenizer.eos_token_id] if eos is not None and not text.endswith(eos) else []


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} '{value}' (expected one of {', '.join(choices)})")


def encode_prompt(
    messages: list[dict[str, str]], template: ChatTemplate, tokenizer: Any, kind: str = "causal"
) -> list[int]:
    """Ids of the generation prompt for `messages`, encoded exactly as training encodes its prompts.

    causal: BOS (see module docstring) + prompt. seq2seq: the encoder input (BOS/EOS as the tokenizer has
    them). Use this at inference so generation sees the same tokens as training.
    """
    _check_choice("model kind", kind, KINDS)
    text = template.generation_prompt(messages)
    eos = _eos(tokenizer, text) if kind == "seq2seq" else []
    return _bos(tokenizer, text) + encode_text(text, tokenizer) + eos


def tokenize_causal(
    messages: list[dict[str, str]],
    template: ChatTemplate,
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
) -> TokenizedExample | None:
    """Causal-LM example: the whole rendered conversation, labels only on assistant replies (+ their eos).

    truncation="truncate" cuts from the right to max_length; "drop" drops longer examples. Returns None
    when dropped, including when truncation leaves no trained token.
    """
    return _causal(messages, template, tokenizer, max_length, truncation)[0]


def _causal(
    messages: list[dict[str, str]], template: ChatTemplate, tokenizer: Any, max_length: int, truncation: str
) -> tuple[TokenizedExample | None, bool]:
    """(example or None if dropped, whether it was longer than max_length)."""
    _check_choice("truncation", truncation, TRUNCATION_POLICIES)
    segments = template.segments(messages)
    input_ids = _bos(tokenizer, segments[0][0] if segments else "")
    labels = [IGNORE_INDEX] * len(input_ids)
    for text, trained in segments:
        ids = encode_text(text, tokenizer)
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    too_long = len(input_ids) > max_length
    if too_long and truncation == "drop":
        return None, True
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None, too_long
    return TokenizedExample(input_ids, labels), too_long


def tokenize_seq2seq(
    messages: list[dict[str, str]],
    template: ChatTemplate,
    tokenizer: Any,
    max_source_length: int,
    max_target_length: int,
    truncation: str = "truncate",
) -> TokenizedExample | None:
    """Encoder-decoder example for the LAST assistant turn.

    input_ids: generation prompt of the messages before it, with BOS/EOS added as encoder-decoder
    tokenizers do (T5: "...</s>"); "truncate" cuts it from the LEFT (keeping BOS/EOS) so the newest turn
    survives. labels: the reply + EOS (no -100), cut from the right. "drop" returns None when either side
    is too long.
    """
    return _seq2seq(messages, template, tokenizer, max_source_length, max_target_length, truncation)[0]


def _seq2seq(
    messages: list[dict[str, str]],
    template: ChatTemplate,
    tokenizer: Any,
    max_source_length: int,
    max_target_length: int,
    truncation: str,
) -> tuple[TokenizedExample | None, bool]:
    _check_choice("truncation", truncation, TRUNCATION_POLICIES)
    if tokenizer.eos_token is None:
        raise ConfigError(f"seq2seq needs a tokenizer with an eos_token ({type(tokenizer).__name__})")
    replies = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    if not replies:
        raise LmadaptError("conversation has no assistant turn")
    text = template.generation_prompt(messages[: replies[-1]])
    # The BOS stays in front when the source is cut from the left, whether or not the template renders it.
    bos = tokenizer.bos_token
    head = [tokenizer.bos_token_id] if bos is not None else []
    body = encode_text(text.removeprefix(bos) if bos is not None else text, tokenizer)
    tail = _eos(tokenizer, text)
    labels = [*encode_text(messages[replies[-1]]["content"], tokenizer), tokenizer.eos_token_id]
    room = max_source_length - len(head) - len(tail)
    if room < 1:
        raise ConfigError(f"max_source_length {max_source_length} leaves no room for the prompt")
    too_long = len(body) > room or len(labels) > max_target_length
    if too_long and truncation == "drop":
        return None, True
    body = body[max(len(body) - room, 0) :]
    return TokenizedExample(head + body + tail, labels[:max_target_length]), too_long


def tokenize_all(
    conversations: Sequence[Conversation],
    template: ChatTemplate,
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
    kind: str = "causal",
    max_target_length: int | None = None,
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenise every conversation; max_length is the total (causal) or encoder (seq2seq) length limit.

    max_target_length (seq2seq only) defaults to max_length. Logs how many examples were truncated/dropped.
    """
    _check_choice("truncation", truncation, TRUNCATION_POLICIES)
    _check_choice("model kind", kind, KINDS)
    target_length = max_target_length or max_length

    def one(conversation: Conversation) -> tuple[TokenizedExample | None, bool]:
        if kind == "causal":
            return _causal(conversation.messages, template, tokenizer, max_length, truncation)
        return _seq2seq(conversation.messages, template, tokenizer, max_length, target_length, truncation)

    what = f"conversations ({kind}, max_length {max_length}, truncation={truncation})"
    return tokenize_records(conversations, one, "messages", what)


T = TypeVar("T")
R = TypeVar("R")


def tokenize_records(
    records: Sequence[T], tokenize_one: Callable[[T], tuple[R | None, bool]], field: str, what: str
) -> tuple[list[R], TokenizeStats]:
    """Apply `tokenize_one` (-> (result or None when dropped, whether it was too long)) to every record
    with `source`/`line`, count truncated and dropped ones, and log them as "tokenized N <what>".

    A template error becomes a DataError naming the record and `field`; config errors pass through.
    """
    results, stats = [], TokenizeStats()
    for record in records:
        stats.total += 1
        try:
            result, too_long = tokenize_one(record)
        except ConfigError:
            raise
        except LmadaptError as e:  # template problems: name the record that triggered them
            raise DataError(record.source, record.line, field, str(e)) from e  # type: ignore[attr-defined]
        if result is None:
            stats.dropped += 1
        else:
            stats.truncated += too_long
            results.append(result)
    logger.info(
        "tokenized %d %s: %d truncated, %d dropped", stats.total, what, stats.truncated, stats.dropped
    )
    return results, stats
