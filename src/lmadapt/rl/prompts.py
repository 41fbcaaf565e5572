"""Prompts with ground truth for online RL, from JSONL files and from SuperNI-layout tasks.

A record is {"messages": [...]} (the conversation so far, ending with a user turn) or {"prompt": str}
(one user turn), plus "ground_truth": a string, a number, or a non-empty list of them (accepted
answers). A bad record raises DataError naming its file, line and field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmadapt.config import PromptDataConfig
from lmadapt.data.formats import (
    RecordLocation,
    existing_file,
    message_list,
    read_records,
    record_unit,
    required_text,
)
from lmadapt.data.superni import load_superni
from lmadapt.data.templates import ChatTemplate
from lmadapt.data.tokenize import encode_prompt
from lmadapt.errors import ConfigError

log = logging.getLogger("lmadapt")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class RLPrompt:
    """One prompt: its messages, accepted answers, token ids (chat template applied) and origin."""

    messages: Messages
    ground_truth: list[str]
    prompt_ids: list[int]
    source: str
    line: int


def _ground_truth(record: dict[str, Any], where: RecordLocation, required: bool) -> list[str]:
    if "ground_truth" not in record or record["ground_truth"] is None:
        if not required:
            return []
        raise where.error("ground_truth", "missing required field")
    value = record["ground_truth"]
    answers = value if isinstance(value, list) else [value]
    if not answers:
        raise where.error("ground_truth", "empty list: give at least one accepted answer")
    for i, answer in enumerate(answers):
        label = "ground_truth" if answers is not value else f"ground_truth[{i}]"
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise where.error(label, f"expected a string or a number, got {type(answer).__name__}")
    return [str(answer) for answer in answers]


def _messages(record: dict[str, Any], where: RecordLocation) -> Messages:
    if "messages" in record:
        messages = message_list(record["messages"], "messages", where)
        if not messages or messages[-1]["role"] != "user":
            raise where.error("messages", "must end with a user message (the turn to reply to)")
        return messages
    if "prompt" in record:
        return [{"role": "user", "content": required_text(record, "prompt", where)}]
    raise where.error("prompt", "missing required field (give 'prompt' or 'messages')")


def read_prompt_records(
    path: str, require_ground_truth: bool = True
) -> list[tuple[Messages, list[str], int]]:
    """(messages, ground truth ([] where optional and absent), line) of every record of a prompt file."""
    unit = record_unit(existing_file(path))
    out = []
    for line, record in read_records(path):
        where = RecordLocation(str(path), line, unit)
        out.append((_messages(record, where), _ground_truth(record, where, require_ground_truth), line))
    return out


def load_prompts(
    cfg: PromptDataConfig, template: ChatTemplate, tokenizer: Any, require_ground_truth: bool = True
) -> list[RLPrompt]:
    """Every prompt of `cfg.sources` then of `cfg.superni`'s train tasks, encoded with the chat template
    exactly as training encodes prompts; prompts over `cfg.max_prompt_length` tokens are dropped.
    require_ground_truth=False (PPO without a verifiable reward): records may omit it."""
    raw: list[tuple[Messages, list[str], str, int]] = []
    for path in cfg.sources:
        raw += [
            (m, truth, str(path), line) for m, truth, line in read_prompt_records(path, require_ground_truth)
        ]
    if cfg.superni:
        instances = load_superni(
            cfg.superni, cfg.superni_split, cfg.superni_encoding, "train", cfg.max_instances_per_task
        )
        for i, instance in enumerate(instances):
            messages = [{"role": "user", "content": instance.prompt}]
            raw.append((messages, list(instance.references), f"{cfg.superni}:{instance.task}", i + 1))
    if not raw:
        raise ConfigError("no prompts: set data.sources (prompt files) and/or data.superni")
    prompts, dropped = [], 0
    for messages, truth, source, line in raw:
        ids = encode_prompt(messages, template, tokenizer)
        if len(ids) > cfg.max_prompt_length:
            dropped += 1
            continue
        prompts.append(RLPrompt(messages, truth, ids, source, line))
    log.info(
        "loaded %d prompts (%d dropped: longer than %d tokens)", len(prompts), dropped, cfg.max_prompt_length
    )
    if not prompts:
        raise ConfigError(f"every prompt is longer than data.max_prompt_length={cfg.max_prompt_length}")
    return prompts


def ground_truths(prompts: Sequence[RLPrompt], group_size: int) -> list[list[str]]:
    """Each prompt's ground truth repeated for its `group_size` completions (rollout row order)."""
    return [prompt.ground_truth for prompt in prompts for _ in range(group_size)]
