"""Show what training sees: the rendered text, its token ids and labels, and a marked-up decoded view,
for conversations (SFT) and preference pairs (DPO, reward: each side as its own sequence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmadapt.data.formats import existing_file, load_conversations, read_records
from lmadapt.data.preference import load_preference_pairs, tokenize_pair
from lmadapt.data.templates import get_template
from lmadapt.data.tokenize import IGNORE_INDEX, tokenize_causal, tokenize_seq2seq

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def render_examples(
    path: str | Path,
    template_name: str,
    tokenizer: Any,
    max_length: int = 2048,
    format: str = "auto",
    kind: str = "causal",
    truncation: str = "truncate",
) -> list[dict[str, Any]]:
    """One dict per conversation of `path` that training keeps: {"line", "text", "input_ids", "labels"}.

    text is the template's rendering (causal: the whole conversation; seq2seq: the encoder prompt);
    input_ids/labels are exactly what tokenize_causal / tokenize_seq2seq produce (seq2seq uses max_length
    for both sides).
    """
    template = get_template(template_name, tokenizer)
    rendered = []
    for conversation in load_conversations(path, format):
        messages = conversation.messages
        if kind == "seq2seq":
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            text = template.generation_prompt(messages[:last])
            example = tokenize_seq2seq(messages, template, tokenizer, max_length, max_length, truncation)
        else:
            text = template.render(messages)
            example = tokenize_causal(messages, template, tokenizer, max_length, truncation)
        if example is not None:
            rendered.append(
                {
                    "line": conversation.line,
                    "text": text,
                    "input_ids": example.input_ids,
                    "labels": example.labels,
                }
            )
    return rendered


def is_preference_data(path: str | Path) -> bool:
    """Whether the first record of `path` is a preference pair (has "chosen" and "rejected")."""
    for _, record in read_records(existing_file(path)):
        return "chosen" in record and "rejected" in record
    return False


def render_pairs(
    path: str | Path, template_name: str, tokenizer: Any, max_length: int = 2048, truncation: str = "truncate"
) -> list[dict[str, Any]]:
    """One dict per preference pair of `path` that training keeps: {"line", "chosen", "rejected"}, each
    side {"input_ids", "labels"} exactly as DPO and reward training tokenise it (prompt + that reply)."""
    template = get_template(template_name, tokenizer)
    rendered = []
    for pair in load_preference_pairs(path):
        tokenized, _ = tokenize_pair(pair, template, tokenizer, max_length, truncation)
        if tokenized is not None:
            sides = {"chosen": tokenized.chosen, "rejected": tokenized.rejected}
            rendered.append(
                {"line": pair.line}
                | {name: {"input_ids": side.input_ids, "labels": side.labels} for name, side in sides.items()}
            )
    return rendered


def format_marked(tokenizer: Any, input_ids: list[int], labels: list[int]) -> str:
    """The decoded tokens with trained spans wrapped in ⟦ ⟧.

    Each contiguous run of trained (label != -100) or untrained tokens is decoded on its own, with
    special tokens kept, so what appears between ⟦ and ⟧ is exactly what the loss is computed on.
    When labels do not align with input_ids (seq2seq), the encoder input is shown plain, then a line
    "=> " followed by the marked decoder labels.
    """
    if len(labels) != len(input_ids):
        return f"{_decode(tokenizer, input_ids)}\n=> {format_marked(tokenizer, labels, labels)}"
    pieces, start = [], 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or (labels[end] == IGNORE_INDEX) != (labels[start] == IGNORE_INDEX):
            text = _decode(tokenizer, input_ids[start:end])
            pieces.append(text if labels[start] == IGNORE_INDEX else f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}")
            start = end
    return "".join(pieces)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
