"""Preference pairs: read, validate, tokenise and batch (mixing and caching: data.pipeline).

A record holds a prompt and two replies, `chosen` and `rejected`, in any file format SFT data
comes in (.jsonl, .json, .parquet, saved datasets):
  {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages}
`messages` may stand in for `prompt`. A string prompt is one user turn, a string reply one
assistant turn. A message-list reply is a whole conversation ending with the assistant reply
(UltraFeedback-binarized style); the turns before it are the prompt, and must equal `prompt`
when both are given. Every invalid record raises DataError naming file, line and field.

Each side is tokenised like inference sees it: the template's generation prompt (encoded as
`encode_prompt` does) followed by the reply as the template renders it (content + EOS for Tulu).
Only the reply tokens are trained, exactly the span SFT trains for that turn.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmadapt.config import SourceConfig
from lmadapt.data.collate import collate_causal
from lmadapt.data.formats import (
    Messages,
    RecordLocation,
    existing_file,
    message_list,
    read_records,
    record_unit,
    required_text,
)
from lmadapt.data.templates import ChatTemplate
from lmadapt.data.tokenize import (
    IGNORE_INDEX,
    TokenizedExample,
    TokenizeStats,
    encode_prompt,
    encode_text,
    tokenize_records,
)
from lmadapt.errors import ConfigError, DataError

logger = logging.getLogger("lmadapt")

TRUNCATION_POLICIES = ("truncate", "drop")


@dataclass
class PreferencePair:
    """A prompt (messages before the replies) and the preferred and dispreferred assistant replies."""

    prompt: Messages
    chosen: str
    rejected: str
    source: str
    line: int


@dataclass
class TokenizedPair:
    """Both sides tokenised (labels -100 outside the reply) and, once computed, the reference
    model's summed reply log-probs (chosen, rejected)."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    ref_logps: tuple[float, float] | None = None


# ---------------------------------------------------------------------------------------------
# Reading


def _side(record: dict[str, Any], name: str, where: RecordLocation) -> Messages:
    """A reply field as messages ending with the assistant reply."""
    value = record.get(name)
    if isinstance(value, list):
        messages = message_list(value, name, where)
        if not messages:
            raise where.error(name, "conversation is empty")
        if messages[-1]["role"] != "assistant":
            raise where.error(
                f"{name}[{len(messages) - 1}].role", "the last message must be the assistant reply"
            )
        return messages
    return [{"role": "assistant", "content": required_text(record, name, where)}]


def _prompt(record: dict[str, Any], where: RecordLocation) -> Messages | None:
    if "prompt" in record and "messages" in record:
        raise where.error("messages", "give the prompt as 'prompt' or as 'messages', not both")
    name = "messages" if "messages" in record else "prompt"
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        return message_list(value, name, where)
    return [{"role": "user", "content": required_text(record, name, where)}]


def parse_preference(record: dict[str, Any], where: RecordLocation) -> tuple[Messages, str, str]:
    """(prompt messages, chosen reply, rejected reply) of one record; DataError when invalid."""
    prompt = _prompt(record, where)
    chosen, rejected = _side(record, "chosen", where), _side(record, "rejected", where)
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        context = side[:-1]
        if prompt is not None and context and context != prompt:
            raise where.error(name, "the conversation before the last reply differs from the prompt")
    if prompt is None:
        if chosen[:-1] != rejected[:-1]:
            raise where.error("rejected", "chosen and rejected conversations differ before their last reply")
        prompt = chosen[:-1]
    if not prompt:
        raise where.error("prompt", "missing required field (chosen and rejected are single replies)")
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def load_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Read and validate every record of `path` as a preference pair."""
    path = existing_file(path)
    unit = record_unit(path)
    pairs = []
    for line, record in read_records(path):
        prompt, chosen, rejected = parse_preference(record, RecordLocation(str(path), line, unit))
        pairs.append(PreferencePair(prompt, chosen, rejected, str(path), line))
    if not pairs:
        raise DataError(str(path), None, None, "no records found")
    return pairs


def read_preference_source(source: SourceConfig) -> list[PreferencePair]:
    """The pairs of one preference source (the reader `build_mixture` takes for pairs)."""
    if source.format != "auto":
        raise ConfigError(f"preference source {source.path}: format must be 'auto', got '{source.format}'")
    return load_preference_pairs(source.path)


# ---------------------------------------------------------------------------------------------
# Tokenising


def _reply_ids(prompt: Messages, reply: str, template: ChatTemplate, tokenizer: Any) -> list[int]:
    """Ids of the reply exactly as the template renders and SFT trains it (e.g. content + eos)."""
    segments = template.segments([*prompt, {"role": "assistant", "content": reply}])
    return encode_text(next(text for text, trained in reversed(segments) if trained), tokenizer)


def tokenize_pair(
    pair: PreferencePair,
    template: ChatTemplate,
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
) -> tuple[TokenizedPair | None, bool]:
    """(tokenised pair, or None when dropped; whether a side exceeded max_length).

    "truncate" cuts each side to max_length from the right and drops the pair when a side keeps no
    reply token; "drop" drops pairs with a side longer than max_length.
    """
    if truncation not in TRUNCATION_POLICIES:
        raise ConfigError(
            f"unknown truncation '{truncation}' (expected one of {', '.join(TRUNCATION_POLICIES)})"
        )
    prompt_ids = encode_prompt(pair.prompt, template, tokenizer)
    sides = []
    for reply in (pair.chosen, pair.rejected):
        reply_ids = _reply_ids(pair.prompt, reply, template, tokenizer)
        sides.append(TokenizedExample(prompt_ids + reply_ids, [IGNORE_INDEX] * len(prompt_ids) + reply_ids))
    too_long = any(len(side.input_ids) > max_length for side in sides)
    if too_long and truncation == "drop":
        return None, True
    if len(prompt_ids) >= max_length:  # truncating would leave no reply token on either side
        return None, True
    chosen, rejected = (
        TokenizedExample(side.input_ids[:max_length], side.labels[:max_length]) for side in sides
    )
    return TokenizedPair(chosen, rejected), too_long


def tokenize_pairs(
    pairs: Sequence[PreferencePair],
    template: ChatTemplate,
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
) -> tuple[list[TokenizedPair], TokenizeStats]:
    """Tokenise every pair (see tokenize_pair); logs how many were truncated or dropped."""
    return tokenize_records(
        pairs,
        lambda pair: tokenize_pair(pair, template, tokenizer, max_length, truncation),
        "prompt",
        f"preference pairs (max_length {max_length}, truncation={truncation})",
    )


def with_reference(pairs: Sequence[TokenizedPair], ref_logps: torch.Tensor) -> list[TokenizedPair]:
    """Copies of `pairs` carrying reference log-probs; ref_logps: [N, 2] (chosen, rejected)."""
    if ref_logps.shape != (len(pairs), 2):
        raise ValueError(
            f"expected reference log-probs of shape ({len(pairs)}, 2), got {tuple(ref_logps.shape)}"
        )
    values = ref_logps.tolist()
    return [dataclasses.replace(pair, ref_logps=(c, r)) for pair, (c, r) in zip(pairs, values, strict=True)]


# ---------------------------------------------------------------------------------------------
# Batching


def collate_pairs(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> one batch of 2B rows for a single forward pass: the chosen sides, then the rejected.

    input_ids/attention_mask/labels: [2B, T], right-padded to the longest of all 2B sequences;
    ref_logps: [2B] float32 (chosen then rejected), present when the pairs carry them.
    """
    batch = collate_causal([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_token_id)
    if pairs and pairs[0].ref_logps is not None:
        chosen = [p.ref_logps[0] for p in pairs]  # type: ignore[index]
        rejected = [p.ref_logps[1] for p in pairs]  # type: ignore[index]
        batch["ref_logps"] = torch.tensor(chosen + rejected, dtype=torch.float32)
    return batch
